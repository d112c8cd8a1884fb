defmodule Tinycluster.TlsTest do
  # Nodes using TLS distribution (`-proto_dist inet_tls`), for real: a plain poller next to
  # them must cost each at most one notice, ever, and report them as TLS; a poller on a node
  # that runs TLS distribution must connect them without a word in their logs. Every TLS
  # node logs at `logger_level all` and registers with a private EPMD, so that no poller of
  # another test run probes it. Needs openssl for a throwaway certificate.
  use ExUnit.Case, async: false

  alias Tinycluster.{Candidate, TestEpmd, TestNodes, TlsNodes}

  @moduletag :tmp_dir
  @moduletag timeout: 180_000

  setup %{tmp_dir: dir} do
    if TlsNodes.available?(),
      do: {:ok, conf: TlsNodes.configs(dir), epmd: TestEpmd.start()},
      else: {:ok, skip: true}
  end

  defp skip?(ctx) do
    if ctx[:skip], do: IO.puts("skipped: no openssl to make a certificate for TLS nodes")
    ctx[:skip]
  end

  test "a plain poller: one notice at most on a TLS node over many polls, reported as TLS",
       ctx do
    unless skip?(ctx) do
      hosts = [{"127.0.0.1", ctx.epmd.port}]
      tls12 = TlsNodes.start(ctx.conf.tls12, epmd_port: ctx.epmd.port)
      tls13 = TlsNodes.start(ctx.conf.tls13, epmd_port: ctx.epmd.port)
      plain = TestNodes.start(epmd_port: ctx.epmd.port)
      Process.sleep(1_000)
      booted = Map.new([tls12, tls13], &{&1.alive, TlsNodes.reports(TlsNodes.lines(&1))})

      poller = TestNodes.poller_name()

      start_supervised!(
        {Tinycluster,
         name: poller, hosts: hosts, interval: 100, probe_timeout: 5_000, connect: false}
      )

      TestNodes.wait_until(
        fn -> Tinycluster.status(poller).scans >= 40 end,
        "forty scans",
        60_000
      )

      status = Tinycluster.status(poller)
      stop_supervised!({Tinycluster, poller})
      # What the last probes left in the TLS nodes' logs has time to arrive.
      Process.sleep(500)

      for node <- [tls12, tls13] do
        c = Enum.find_value(status.candidates, fn {_, c} -> c.alive == node.alive && c end)
        assert {c.state, c.reason, c.node} == {:tls, :server_hello, nil}
        assert c.description =~ "TLS distribution"
        refute Candidate.describe(c) =~ "connect it;"

        reports = TlsNodes.reports(TlsNodes.lines(node))
        assert booted[node.alive]["NOTICE"] == nil
        # The first probe was plain: its alert is the one notice; the forty ClientHello
        # probes after it closed mid-handshake and were not logged at all.
        assert reports["NOTICE"] == 1, "#{node.alive} logged #{inspect(reports)}"
        assert Map.drop(reports, ["NOTICE", "PROGRESS"]) == %{}, inspect(reports)
      end

      # The plain node next to them is still probed in plain distribution, and found live.
      assert status.candidates[Atom.to_string(plain.name)].state == :live
    end
  end

  test "a TLS poller connects TLS nodes silently and rejects one with another cookie", ctx do
    unless skip?(ctx) do
      epmd = [epmd_port: ctx.epmd.port]
      a = TlsNodes.start(ctx.conf.tls13, epmd)
      b = TlsNodes.start(ctx.conf.tls12, epmd)
      other = TlsNodes.start(ctx.conf.tls12, [cookie: "another_cookie"] ++ epmd)
      plain = TestNodes.start([args: ["-kernel", "logger_level", "all"]] ++ epmd)
      Process.sleep(1_000)
      for node <- [a, b, other, plain], do: TlsNodes.lines(node)

      poller =
        TlsNodes.start_poller(
          ctx.conf.tls13,
          "[{interval, 200}, {probe_timeout, 5000}, {max_backoff, 600000}]",
          epmd
        )

      names = Enum.sort([a.name, b.name])

      TlsNodes.await_line(poller, fn line ->
        line == "nodes [#{Enum.join(names, ",")}]"
      end)

      # The other-cookie node refused: rejected, and (with backoff) not retried at once.
      TlsNodes.await_line(poller, &(&1 == "state #{other.name} rejected connect_failed"))
      TlsNodes.await_line(poller, &(&1 == "state #{a.name} connected nil"))
      # A plain node closes on the TLS hello at once, and says nothing about it.
      TlsNodes.await_line(poller, &(&1 == "state #{plain.name} bad_reply not_tls"))
      Process.sleep(2_000)

      # Probes from the first poll were ClientHellos: the peers logged no notice, warning or
      # error at all (the connection itself is logged only as progress reports).
      for node <- [a, b] do
        reports = TlsNodes.reports(TlsNodes.lines(node))
        assert Map.drop(reports, ["PROGRESS"]) == %{}, "#{node.alive}: #{inspect(reports)}"
      end

      assert TlsNodes.reports(TlsNodes.lines(plain)) == %{}

      # The other-cookie node logs the one refused connection attempt, not one per poll.
      other_reports = TlsNodes.reports(TlsNodes.lines(other))
      assert Map.get(other_reports, "NOTICE") == nil, inspect(other_reports)
    end
  end
end
