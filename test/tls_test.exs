defmodule Tinycluster.TlsTest do
  # A node using TLS distribution answers the plain-text probe with a TLS alert: it must be
  # reported as such, never connected, and never crash anything. Needs openssl for a
  # throwaway certificate; skipped with a message where there is none.
  use ExUnit.Case, async: false

  alias Tinycluster.{Candidate, TestNodes}

  @moduletag :tmp_dir

  test "a TLS distribution node is reported as :bad_reply with reason :tls", %{tmp_dir: dir} do
    case System.find_executable("openssl") do
      nil ->
        IO.puts("skipped: no openssl to make a certificate for a TLS distribution node")

      openssl ->
        {key, cert} = {Path.join(dir, "key.pem"), Path.join(dir, "cert.pem")}

        {_, 0} =
          System.cmd(
            openssl,
            ~w(req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=tinycluster) ++
              ["-keyout", key, "-out", cert],
            stderr_to_stdout: true
          )

        conf = Path.join(dir, "ssl_dist.conf")

        File.write!(conf, """
        [{server, [{certfile, "#{cert}"}, {keyfile, "#{key}"}]},
         {client, [{verify, verify_none}]}].
        """)

        tls = TestNodes.start(args: ["-proto_dist", "inet_tls", "-ssl_dist_optfile", conf])
        name = to_string(tls.name)
        # A generous timeout: a TLS node on a busy machine answers slowly.
        assert {:ok, [%Candidate{name: ^name} = c]} =
                 Tinycluster.scan(only: name, probe_timeout: 5_000)

        assert {c.state, c.reason, c.node} == {:bad_reply, :tls, nil}
        assert Candidate.describe(c) =~ "TLS"
    end
  end
end
