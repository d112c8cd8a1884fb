defmodule Tinycluster.StalledHandshakeTest do
  # A node whose handshakes stall (a long GC pause, an overloaded or frozen node) has not
  # refused anything: it is retried as an unreachable node is, never left alone, and
  # connected once a handshake goes through. test/stalls_test.exs has the rule on its own.
  #
  # The poller runs in a node of its own, on a private EPMD that lists the target at a
  # proxy's port (`Tinycluster.StallProxy`): its probes and its connections both reach the
  # target through the proxy, which lets the probes through and stalls connections at the
  # challenge reply, or holds them there while the test freezes the target. That node's
  # `net_setuptime` is 2 s, so that a stall ends soon; this VM keeps OTP's default.
  use ExUnit.Case, async: false

  alias Tinycluster.{StallProxy, SuiteEpmd, TestEpmd, TestNodes}

  @moduletag timeout: 240_000

  @interval 500
  @poller :stall_poller

  test "a node whose handshakes stall is never taken for a refusal, and joins once they pass" do
    {target, proxy, poller} = start_behind_proxy(:stall)

    # Three stalled attempts, each ended by the poller's net_setuptime, and the third's end.
    watch(poller, target, fn _ -> StallProxy.stalled(proxy) >= 3 end)

    last =
      watch(poller, target, &match?(%{reason: :connect_timeout, attempts: n} when n >= 3, &1))

    assert %{state: :unreachable, retry_at: nil, retry_in_ms: retry_in} = last
    assert retry_in <= 2 * @interval, "retried in #{retry_in} ms"

    # The next attempt is the first the proxy forwards, and it connects.
    StallProxy.set_mode(proxy, :forward)
    assert %{attempts: 0} = watch(poller, target, &match?(%{state: :connected}, &1))
    assert StallProxy.forwarded(proxy) == 1
    assert target.name in :erpc.call(poller.name, Node, :list, [], 10_000)

    # Said once, as the run of stalls began; no refusal said.
    output = TestNodes.lines(poller)
    stalled = Enum.filter(output, &(&1 =~ "#{target.name} answered the probe, but"))
    assert length(stalled) == 1, Enum.join(output, "\n")
    assert hd(stalled) =~ "handshake stalled"
    refute Enum.any?(output, &(&1 =~ "refused")), Enum.join(output, "\n")
  end

  test "a node frozen during its handshakes, thawed before the next probe, joins" do
    {target, proxy, poller} = start_behind_proxy({:hold, self()})

    # Twice: the target answered the probe and sent its challenge; frozen now, it reads the
    # reply only after the poller gave up on it, and is thawed before the next probe.
    for round <- 1..2 do
      assert_receive {StallProxy, :reply_held, conn}, 60_000
      TestNodes.freeze(target)
      StallProxy.release(conn)
      last = watch(poller, target, &match?(%{reason: :connect_timeout, attempts: ^round}, &1))
      assert %{state: :unreachable, retry_in_ms: retry_in} = last
      assert retry_in <= 2 * @interval, "retried in #{retry_in} ms"
      if round == 2, do: StallProxy.set_mode(proxy, :forward)
      TestNodes.thaw(target)
    end

    watch(poller, target, &match?(%{state: :connected}, &1))
    assert target.name in :erpc.call(poller.name, Node, :list, [], 10_000)
  end

  # The target on the suite's EPMD, the proxy in front of it in `mode`, a private EPMD that
  # lists the target at the proxy's port, and the poller's node on that EPMD.
  defp start_behind_proxy(mode) do
    target = TestNodes.start()
    proxy = StallProxy.start(TestEpmd.port_of(SuiteEpmd.port(), target.alive), mode)
    epmd = TestEpmd.start()
    _listed = TestEpmd.register(epmd.port, target.alive, proxy.port)
    {target, proxy, start_poller_node(epmd, target)}
  end

  # Nothing but the poller connects that node to the target. This VM is listed on its EPMD,
  # and it connects to this VM, so that the test can ask it; but no EPMD the target asks
  # lists it, so that the target cannot connect to it by itself (it would, after a thaw,
  # to answer a handshake it read late); and with `-connect_all false`, `global` does not
  # connect it to the nodes this VM knows.
  defp start_poller_node(epmd, target) do
    [alive, _host] = node() |> Atom.to_string() |> String.split("@")
    _listed = TestEpmd.register(epmd.port, alive, TestEpmd.port_of(SuiteEpmd.port(), alive))

    eval = """
    true = net_kernel:connect_node('#{node()}'),
    {ok, _} = application:ensure_all_started(tinycluster),
    {ok, Pid} = 'Elixir.Tinycluster':start_link([{name, #{@poller}},
      {interval, #{@interval}}, {only, [<<"#{target.alive}">>]}]),
    unlink(Pid),
    io:format("poller_started~n").
    """

    args = ["-connect_all", "false", "-kernel", "net_setuptime", "2", "-eval", eval]
    node = TestNodes.start(epmd_port: epmd.port, args: TestNodes.code_path_args() ++ args)
    TestNodes.await_line(node, "poller_started")
    node
  end

  # Reads what the poller says of `target` every 50 ms until `done?` holds for it, and
  # returns it. Never a refusal, all along: a stall is not one.
  defp watch(poller, target, done?, timeout \\ 90_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    watch(poller, target, done?, deadline, [])
  end

  # `seen`: the states, reasons and attempts it went through, the latest first.
  defp watch(poller, target, done?, deadline, seen) do
    status = :erpc.call(poller.name, Tinycluster, :status, [@poller], 10_000)
    candidate = status.candidates[Atom.to_string(target.name)]

    seen =
      if candidate,
        do: Enum.dedup([Map.take(candidate, [:state, :reason, :attempts]) | seen]),
        else: seen

    if candidate do
      refute candidate.state == :rejected, "taken for a refusal: #{inspect(candidate)}"
      refute candidate.retry_at == :never, "left alone: #{inspect(candidate)}"
    end

    cond do
      candidate && done?.(candidate) ->
        candidate

      System.monotonic_time(:millisecond) > deadline ->
        flunk("timed out; the poller saw #{target.name} as: #{inspect(Enum.reverse(seen))}")

      true ->
        Process.sleep(50)
        watch(poller, target, done?, deadline, seen)
    end
  end
end
