defmodule Tinycluster.ScanTaskTest do
  # `mix tinycluster.scan` on real nodes (plain, hidden, another cookie, frozen): in this
  # VM, as this repository runs it, and as an OS process from a project that depends on
  # tinycluster, with its exit statuses. Also the JSON encoder it prints with.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias Tinycluster.{JSON, JSONDecode, TestNodes}

  @moduletag timeout: 300_000

  setup do
    {:ok, prefix: "sc#{System.pid()}x#{System.unique_integer([:positive])}x"}
  end

  # One node of each kind, all named with `prefix`, so that the scan can be kept to them.
  defp start_kinds(prefix) do
    named = fn opts -> TestNodes.start([name: TestNodes.unique_alive(prefix)] ++ opts) end

    kinds = %{
      plain: named.([]),
      hidden: named.(hidden: true),
      other_cookie: named.(cookie: "another_cookie"),
      frozen: named.([])
    }

    TestNodes.freeze(kinds.frozen)
    kinds
  end

  defp run_task(argv) do
    Mix.Task.reenable("tinycluster.scan")
    capture_io(fn -> Mix.Tasks.Tinycluster.Scan.run(argv) end)
  end

  defp line_of(output, node) do
    output |> String.split("\n") |> Enum.find(&String.starts_with?(&1, Atom.to_string(node.name)))
  end

  test "prints one line per host and one per candidate, with the reason in words",
       %{prefix: prefix} do
    kinds = start_kinds(prefix)
    output = run_task(["--only", prefix])

    # The round trip, and the probe timeout in force: loopback is near, so the option's.
    assert output =~ ~r/^local\s+127\.0\.0\.1:\d+\s+[\d.]+ ms\s+300 ms\s+answered: \d+ names?$/m

    assert line_of(output, kinds.plain) =~
             ~r/\slocal\s+live\s+[\d.]+ ms\s+answered the probe; not connected$/

    assert line_of(output, kinds.hidden) =~ ~r/\shidden\s+[\d.]+ ms\s+a hidden node/

    # It connects nothing, so a node with another cookie looks live to a probe: the cookie
    # matters only from the challenge reply on, which the probe never sends.
    assert line_of(output, kinds.other_cookie) =~ ~r/\slive\s/

    assert line_of(output, kinds.frozen) =~
             ~r/\sunreachable\s+[\d.]+ ms\s+listed by EPMD but silent within the probe timeout/

    # Only the nodes the filter lets through, and none of them connected.
    candidates = output |> String.split("\n") |> Enum.filter(&(&1 =~ ~r/^\S+@\S+\s/))
    assert length(candidates) == 4
    for {_, node} <- kinds, do: refute(node.name in Node.list(:connected))
  end

  test "--json prints one object with every host and candidate", %{prefix: prefix} do
    kinds = start_kinds(prefix)
    json = JSONDecode.decode!(run_task(["--json", "--only", prefix, "--probe-timeout", "500"]))

    assert %{"node" => node, "duration_us" => us, "hosts" => [host], "candidates" => list} = json
    assert node == Atom.to_string(node())
    assert is_integer(us) and us > 0
    assert %{"label" => "local", "status" => "ok", "reason" => nil, "names" => n} = host
    assert n >= 4
    assert %{"latency_us" => rtt, "probe_timeout_ms" => 500} = host
    assert is_integer(rtt) and rtt > 0

    by_name = Map.new(list, &{&1["name"], &1})
    state = fn kind -> by_name[Atom.to_string(kinds[kind].name)]["state"] end

    assert {state.(:plain), state.(:hidden), state.(:other_cookie), state.(:frozen)} ==
             {"live", "hidden", "live", "unreachable"}

    frozen = by_name[Atom.to_string(kinds.frozen.name)]
    assert %{"reason" => "timeout", "latency_us" => latency, "description" => words} = frozen
    assert latency >= 500_000
    assert words =~ "silent within the probe timeout"
    assert by_name[Atom.to_string(kinds.plain.name)]["latency_us"] < 500_000
  end

  test "flags: hosts with ports, regex filters, and errors that exit non-zero",
       %{prefix: prefix} do
    plain = TestNodes.start(name: TestNodes.unique_alive(prefix))
    other = TestNodes.start(name: TestNodes.unique_alive(prefix))
    [_, other_suffix] = String.split(other.alive, prefix)

    # The system EPMD by address and port, an --except regex that keeps the other node out.
    output =
      run_task(["--host", "127.0.0.1:4369", "--only", prefix, "--except", "/#{other_suffix}@/"])

    assert output =~ ~r/^127\.0\.0\.1\s+127\.0\.0\.1:4369\s/m
    assert line_of(output, plain) =~ ~r/\slive\s/
    refute line_of(output, other)

    # No host answers: the hosts say why, and the task exits 1. (An IPv6 address in
    # brackets with a port; this VM's distribution is IPv4, which the answer says.)
    closed = Tinycluster.TestEpmd.free_port()
    Mix.Task.reenable("tinycluster.scan")
    argv = ["--host", "127.0.0.1:#{closed}", "--host", "[::1]:#{closed}"]

    output =
      capture_io(fn ->
        assert catch_exit(Mix.Tasks.Tinycluster.Scan.run(argv)) == {:shutdown, 1}
      end)

    assert output =~
             ~r/^127\.0\.0\.1\s+127\.0\.0\.1:#{closed}\s+.*failed: connection refused/m

    assert output =~ ~r/^::1\s+\[::1\]:#{closed}\s+.*failed: .*IPv4/m

    for {argv, message} <- [
          {["--host", "a:b"], ~r/not a port number/},
          {["--bogus"], ~r/unknown or invalid flags/},
          {["--only", "/(/"], ~r/bad regex/},
          {["--dns", "app.test", "--nameserver", "127.0.0.1"], ~r/ADDRESS:PORT/},
          {["--probe-timeout", "0"], ~r/:probe_timeout/}
        ] do
      Mix.Task.reenable("tinycluster.scan")
      error = assert_raise Mix.Error, message, fn -> Mix.Tasks.Tinycluster.Scan.run(argv) end
      # Mix exits with the status this field holds.
      assert error.mix == 2
    end
  end

  test "--dns with --nameserver asks a real DNS server for the hosts", %{prefix: prefix} do
    case Tinycluster.Dnsmasq.available() do
      {:error, why} ->
        IO.puts("skipped: #{why}")

      :ok ->
        plain = TestNodes.start(name: TestNodes.unique_alive(prefix))
        dns = Tinycluster.Dnsmasq.start(hosts: [{"127.0.0.1", "app.test"}])
        server = "#{dns.address}:#{dns.port}"
        output = run_task(["--dns", "app.test", "--nameserver", server, "--only", prefix])

        # The seed's one address is a host like any other, named by itself.
        assert output =~ ~r/^127\.0\.0\.1\s+127\.0\.0\.1:\d+\s+[\d.]+ ms\s+300 ms\s+answered/m
        assert line_of(output, plain) =~ ~r/\s127\.0\.0\.1\s+live\s/
    end
  end

  test "JSON: strings escaped, unicode kept, bytes that are not UTF-8 shown as Elixir does" do
    term = %{
      "quote\"back\\slash" => ["tab\tnew\nline", "\u0001", "é€😀", "\u2028"],
      nested: %{list: [1, -2, 3.5, true, false, nil, :atom]},
      bad: <<0xFF, 0xFE>>
    }

    text = term |> JSON.encode!() |> IO.iodata_to_binary()
    refute text =~ "\n"
    assert text =~ ~S("\u0001")
    assert text =~ ~S("\u2028")

    assert JSONDecode.decode!(text) == %{
             "quote\"back\\slash" => ["tab\tnew\nline", "\u0001", "é€😀", "\u2028"],
             "nested" => %{"list" => [1, -2, 3.5, true, false, nil, "atom"]},
             "bad" => ~S(<<255, 254>>)
           }

    assert_raise ArgumentError, fn -> JSON.encode!({:a, :tuple}) end
  end

  @tag :tmp_dir
  test "runs as an OS process from a project that depends on tinycluster",
       %{prefix: prefix, tmp_dir: dir} do
    File.write!(Path.join(dir, "mix.exs"), """
    defmodule ScanUser.MixProject do
      use Mix.Project

      def project do
        [app: :scan_user, version: "0.1.0", deps: [{:tinycluster, path: #{inspect(File.cwd!())}}]]
      end

      def application, do: [extra_applications: [:logger]]
    end
    """)

    # Its own _build, whatever build root and environment this run uses (.ci/otp/test sets
    # both): a dependency compiled into this run's build would replace the test build.
    env = [{"MIX_ENV", "dev"}, {"MIX_BUILD_ROOT", nil}, {"MIX_BUILD_PATH", nil}]
    opts = [cd: dir, env: env, stderr_to_stdout: true]
    {out, 0} = System.cmd("mix", ["compile"], opts)
    # Built into the dependent project's own _build, NIF included (what cargo printed, if
    # anything, depends on what it had built before).
    built = Path.join(dir, "_build/dev/lib/tinycluster")
    assert File.exists?(Path.join(built, "ebin/Elixir.Tinycluster.Native.beam")), out
    assert File.exists?(Path.join(built, "priv/native/libtinycluster_nif.so")), out
    kinds = start_kinds(prefix)

    # stdout only, so that it is nothing but JSON.
    {out, status} =
      System.cmd("mix", ["tinycluster.scan", "--json", "--only", prefix], cd: dir, env: env)

    assert status == 0, out
    json = JSONDecode.decode!(out)

    # It ran as the hidden, listen-less node `tinycluster_scan`, which EPMD does not list.
    assert json["node"] == "tinycluster_scan@#{Tinycluster.Demo.OSNode.host()}"
    refute TestNodes.registered?("tinycluster_scan")

    states = Map.new(json["candidates"], &{&1["name"], &1["state"]})

    assert states == %{
             Atom.to_string(kinds.plain.name) => "live",
             Atom.to_string(kinds.hidden.name) => "hidden",
             Atom.to_string(kinds.other_cookie.name) => "live",
             Atom.to_string(kinds.frozen.name) => "unreachable"
           }

    # Nothing was connected: the plain node never saw the scanning node.
    refute Enum.any?(:erpc.call(kinds.plain.name, :erlang, :nodes, [:connected]), fn n ->
             n |> Atom.to_string() |> String.starts_with?("tinycluster_scan@")
           end)

    # The text form, and the exit statuses.
    {out, 0} = System.cmd("mix", ["tinycluster.scan", "--only", prefix, "--sname", "sc_x"], opts)
    assert out =~ "tinycluster scan from sc_x@"
    assert line_of(out, kinds.hidden) =~ "a hidden node"

    closed = Integer.to_string(Tinycluster.TestEpmd.free_port())
    {out, 1} = System.cmd("mix", ["tinycluster.scan", "--host", "127.0.0.1:" <> closed], opts)
    assert out =~ "connection refused"
    {out, 2} = System.cmd("mix", ["tinycluster.scan", "--nope"], opts)
    assert out =~ "unknown or invalid flags"
  end
end
