defmodule Tinycluster.TlsTest do
  # Nodes using TLS distribution (`-proto_dist inet_tls`), for real: a plain poller next to
  # them must cost each at most one notice, ever, and report them as TLS; a poller on a node
  # that runs TLS distribution must connect them without a word in their logs. Every TLS
  # node logs at `logger_level all` and registers with a private EPMD, so that no poller of
  # another test probes it. Needs openssl for a throwaway certificate.
  use ExUnit.Case, async: false

  alias Tinycluster.{Candidate, TestEpmd, TestNodes, TlsNodes}

  @moduletag :tmp_dir
  @moduletag timeout: 180_000

  unless TlsNodes.available?() do
    @moduletag skip: "no openssl to make a certificate for TLS nodes (apt-get install openssl)"
  end

  setup %{tmp_dir: dir} do
    {:ok, conf: TlsNodes.configs(dir), epmd: TestEpmd.start()}
  end

  defp start_poller(ctx, opts) do
    poller = TestNodes.poller_name()
    hosts = [{"127.0.0.1", ctx.epmd.port}]
    start_supervised!({Tinycluster, [name: poller, hosts: hosts] ++ opts})
    poller
  end

  # The log events a node booted with.
  defp booted(node), do: TlsNodes.reports(TlsNodes.flushed_lines(node))

  # A TLS node's name as a plain poller of its host's address reports it: the name EPMD
  # implies, since no challenge names it.
  defp tls_name(node), do: "#{node.alive}@127.0.0.1"

  test "a plain poller: one notice at most on a TLS node over many polls, reported as TLS",
       ctx do
    tls12 = TlsNodes.start(ctx.conf.tls12, epmd_port: ctx.epmd.port)
    tls13 = TlsNodes.start(ctx.conf.tls13, epmd_port: ctx.epmd.port)
    plain = TestNodes.start(epmd_port: ctx.epmd.port)
    booted = Map.new([tls12, tls13], &{&1.alive, booted(&1)})

    poller = start_poller(ctx, interval: 100, probe_timeout: 5_000, connect: false)
    TestNodes.wait_scans(poller, 40, 60_000)
    status = Tinycluster.status(poller)
    stop_supervised!({Tinycluster, poller})

    for node <- [tls12, tls13] do
      c = Enum.find_value(status.candidates, fn {_, c} -> c.alive == node.alive && c end)
      assert {c.state, c.reason, c.node} == {:tls, :server_hello, nil}
      assert c.description =~ "TLS distribution"
      refute Candidate.describe(c) =~ "connect it;"

      # Everything the probes made it log, written out.
      reports = TlsNodes.reports(TlsNodes.flushed_lines(node, 2))
      assert booted[node.alive]["NOTICE"] == nil
      # The first probe was plain: its alert is the one notice; the forty ClientHello
      # probes after it closed mid-handshake and were not logged at all.
      assert reports["NOTICE"] == 1, "#{node.alive} logged #{inspect(reports)}"
      assert Map.drop(reports, ["NOTICE", "PROGRESS"]) == %{}, inspect(reports)
    end

    # The plain node next to them is still probed in plain distribution, and found live.
    assert status.candidates[Atom.to_string(plain.name)].state == :live
  end

  test "a TLS node restarted at a new port gets the plain probe again", ctx do
    first = TlsNodes.start(ctx.conf.tls12, epmd_port: ctx.epmd.port)
    booted(first)
    poller = start_poller(ctx, interval: 100, probe_timeout: 5_000, connect: false)

    # Learned: probed with the ClientHello, which a TLS node answers with a ServerHello.
    TestNodes.wait_until(
      fn ->
        match?(
          %{state: :tls, reason: :server_hello},
          TestNodes.candidate(poller, tls_name(first))
        )
      end,
      "the poller to probe #{first.alive} with the ClientHello"
    )

    TestNodes.kill(first)
    again = TlsNodes.start(ctx.conf.tls12, epmd_port: ctx.epmd.port, name: first.alive)
    assert booted(again)["NOTICE"] == nil

    # The new node may run plain TCP now: the first probe is plain, which a TLS node
    # answers with an alert and logs once; the ones after it are ClientHellos again.
    TestNodes.await_line(again, &String.starts_with?(&1, "=NOTICE REPORT===="))
    at = TestNodes.scans(poller)
    TestNodes.wait_scans(poller, at + 10)
    TestNodes.wait_state(poller, tls_name(again), :tls)
    stop_supervised!({Tinycluster, poller})
    reports = TlsNodes.reports(TlsNodes.flushed_lines(again, 2))
    assert reports["NOTICE"] == nil, "more notices after the first: #{inspect(reports)}"
  end

  test "a TLS node whose server refuses the ClientHello is a :bad_reply {:tls_alert, name}",
       %{tmp_dir: dir} = ctx do
    # TLS 1.2 with only a cipher suite the probe does not offer: the handshake fails.
    conf = Path.join(dir, "rsa_only.conf")

    File.write!(
      conf,
      File.read!(ctx.conf.tls12)
      |> String.replace(
        "{server, [",
        ~s|{server, [{versions, ['tlsv1.2']}, {ciphers, "AES128-SHA"}, |
      )
    )

    node = TlsNodes.start(conf, epmd_port: ctx.epmd.port)
    poller = start_poller(ctx, interval: 100, probe_timeout: 5_000, connect: false)

    TestNodes.wait_state(poller, tls_name(node), :bad_reply)
    # The alert OTP's ssl sends for no cipher suite in common.
    assert %{reason: {:tls_alert, alert}, description: words} =
             TestNodes.candidate(poller, tls_name(node))

    assert alert in [:insufficient_security, :handshake_failure]
    assert words =~ "refused the probe's TLS hello (alert #{inspect(alert)})"
  end

  test "a TLS poller connects TLS nodes silently and rejects one with another cookie", ctx do
    epmd = [epmd_port: ctx.epmd.port]
    a = TlsNodes.start(ctx.conf.tls13, epmd)
    b = TlsNodes.start(ctx.conf.tls12, epmd)
    other = TlsNodes.start(ctx.conf.tls12, [cookie: "another_cookie"] ++ epmd)
    plain = TestNodes.start([args: TlsNodes.logging_args()] ++ epmd)
    for node <- [a, b, other, plain], do: booted(node)

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

    # The other-cookie node refused: rejected. It logs each refused connection attempt, one
    # error report each.
    TlsNodes.await_line(poller, &(&1 == "state #{other.name} rejected connect_failed"))
    TlsNodes.await_line(poller, &(&1 == "state #{a.name} connected nil"))
    # A plain node closes on the TLS hello at once, and says nothing about it.
    TlsNodes.await_line(poller, &(&1 == "state #{plain.name} bad_reply not_tls"))
    other_lines = until_refused(other, poller, 2, [])
    # Ten more polls: 2 s, in which backoff alone (200, 400, 800 ms...) would try again.
    for _ <- 1..10, do: TlsNodes.await_line(poller, &String.starts_with?(&1, "nodes "))

    # Probes from the first poll were ClientHellos: the peers logged no notice, warning or
    # error at all (the connection itself is logged only as progress reports).
    for node <- [a, b] do
      reports = TlsNodes.reports(TlsNodes.flushed_lines(node, 2))
      assert Map.drop(reports, ["PROGRESS"]) == %{}, "#{node.alive}: #{inspect(reports)}"
    end

    assert TlsNodes.reports(TlsNodes.flushed_lines(plain, 2)) == %{}

    # Two refused attempts, then the node is left alone, TLS or not.
    other_lines = other_lines ++ TlsNodes.flushed_lines(other, 2)
    other_reports = TlsNodes.reports(other_lines)
    assert Map.drop(other_reports, ["PROGRESS", "ERROR"]) == %{}, inspect(other_reports)
    assert {refusals(other_lines, poller), other_reports["ERROR"]} == {2, 2}
  end

  # The connection attempts from `poller` that `node` logged.
  defp refusals(lines, poller),
    do: Enum.count(lines, &(&1 =~ "Connection attempt from node #{poller.name} "))

  # What `node` logged, read until it logged `count` refused attempts from `poller`, or
  # for 20 s (its log is written out every 200 ms).
  defp until_refused(node, poller, count, lines, rounds \\ 100) do
    lines = lines ++ TlsNodes.flushed_lines(node, 1)

    if refusals(lines, poller) >= count or rounds == 0,
      do: lines,
      else: until_refused(node, poller, count, lines, rounds - 1)
  end

  test "a TLS poller that connects nothing reports TLS nodes :live, reason :tls", ctx do
    epmd = [epmd_port: ctx.epmd.port]
    a = TlsNodes.start(ctx.conf.tls13, epmd)
    booted(a)

    poller = TlsNodes.start_poller(ctx.conf.tls13, "[{interval, 200}, {connect, false}]", epmd)

    TlsNodes.await_line(poller, &(&1 == "state #{a.name} live tls"))
    TlsNodes.await_line(poller, &(&1 == "nodes []"))
    assert TlsNodes.reports(TlsNodes.flushed_lines(a, 2)) |> Map.drop(["PROGRESS"]) == %{}
  end
end
