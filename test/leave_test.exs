defmodule Tinycluster.LeaveTest do
  # Leaving and coming back against real nodes: OS nodes on the suite's EPMD, each running a
  # poller under the default name and printing every nodeup and nodedown it gets. This VM
  # talks to them over hidden connections only, so that it is no cluster member: a leave does
  # not cut it, global does not mesh it, and a node that left does not push it away. The
  # race guards are tested one by one, without nodes, in test/left_test.exs.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{TestEpmd, TestNodes}

  @moduletag timeout: 240_000

  @interval 500
  # What a loaded machine (two cores shared with other test runs) adds to a wait the issue
  # states in intervals.
  @slack 3_000

  # Prints the node's own nodeups and nodedowns (visible nodes only, as a cluster member
  # sees them): the test reads them from its output.
  @watcher """
  spawn(fun() ->
    ok = net_kernel:monitor_nodes(true),
    io:format("watching~n"),
    Loop = fun L() ->
      receive
        {nodeup, N} -> io:format("nodeup ~s~n", [N]), L();
        {nodedown, N} -> io:format("nodedown ~s~n", [N]), L()
      end
    end,
    Loop()
  end).
  """

  # A node that runs a poller (default name, `only:` this test's nodes) when `poller`,
  # else a plain `erl` node; both print their node events. `opts`: `:port` (a fixed
  # distribution port), `:cookie`, `:args` (more `erl` arguments).
  defp start_node(prefix, alive, opts \\ []) do
    port_args =
      case opts[:port] do
        nil -> []
        port -> ~w(-kernel inet_dist_listen_min #{port} inet_dist_listen_max #{port})
      end

    poller =
      if Keyword.get(opts, :poller, true) do
        """
        {ok, _} = application:ensure_all_started(tinycluster),
        {ok, Pid} = 'Elixir.Tinycluster':start_link(
          [{interval, #{@interval}}, {only, [<<"#{prefix}">>]}]),
        unlink(Pid),
        io:format("poller_started~n").
        """
      else
        "io:format(\"poller_started~n\")."
      end

    node =
      TestNodes.start(
        [
          name: alive,
          args:
            TestNodes.code_path_args() ++
              port_args ++ Keyword.get(opts, :args, []) ++ ["-eval", @watcher, "-eval", poller]
        ] ++ Keyword.take(opts, [:cookie])
      )

    # The watcher prints from a process of its own: either line may come first.
    await_lines(node, ["watching", "poller_started"])
    node
  end

  defp await_lines(_node, []), do: :ok

  defp await_lines(node, texts) do
    line = TestNodes.next_line(node)
    await_lines(node, texts -- [line])
  end

  defp prefix, do: "tclv#{System.pid()}_#{System.unique_integer([:positive])}_"

  # Over a hidden connection, made first if there is none: a visible one would make this VM
  # a member of the cluster under test.
  defp rpc(node, m, f, a) do
    unless node.name in Node.list(:hidden), do: true = :net_kernel.hidden_connect_node(node.name)
    :erpc.call(node.name, m, f, a, 15_000)
  end

  defp nodes_of(node), do: rpc(node, :erlang, :nodes, [])
  defp status(node), do: rpc(node, Tinycluster, :status, [])
  defp candidate(node, other), do: status(node).candidates[name(other)]
  defp state_of(node, other), do: candidate(node, other) && candidate(node, other).state
  defp name(node), do: Atom.to_string(node.name)

  defp meshed?(members) do
    Enum.all?(members, fn member ->
      Enum.all?(members -- [member], &(&1.name in nodes_of(member)))
    end)
  end

  defp wait_meshed(members, timeout, what),
    do: TestNodes.wait_until(fn -> meshed?(members) end, what, timeout)

  # Waits until the cluster has settled: meshed, and no member printed a node event for two
  # intervals; what the members printed before is read and dropped. A disconnection by hand
  # sets off reconnections, and under `prevent_overlapping_partitions` global's own
  # disconnections, for some hundreds of ms after the mesh is first seen (longer on a loaded
  # machine): an event of those read after a leave would look like a reconnection.
  defp wait_settled(members) do
    TestNodes.wait_until(
      fn ->
        Enum.each(members, &TestNodes.lines/1)
        Process.sleep(2 * @interval)

        meshed?(members) and
          Enum.all?(members, fn member ->
            not Enum.any?(
              TestNodes.lines(member),
              &String.starts_with?(&1, ["nodeup ", "nodedown "])
            )
          end)
      end,
      "the cluster to settle",
      30_000
    )
  end

  defp elapsed_ms(since), do: System.monotonic_time(:millisecond) - since

  test "of 3 nodes, C leaves: never reconnected, left everywhere; then it joins" do
    prefix = prefix()
    [a, b, c] = for x <- ~w(a b c), do: start_node(prefix, prefix <> x)
    wait_meshed([a, b, c], 30_000, "the three to mesh")

    # Disconnected by hand, without a leave: reconnected, as always.
    rpc(a, Node, :disconnect, [c.name])
    wait_meshed([a, b, c], 2 * @interval + @slack, "C to be reconnected after a disconnect")

    # C's own creation is what its peers' probes read (the NIF's challenge, to status).
    creation = rpc(c, :erlang, :system_info, [:creation])
    assert candidate(a, c).creation in [creation, nil]

    wait_settled([a, b, c])
    assert {:ok, %{told: told, disconnected: gone}} = rpc(c, Tinycluster, :leave, [[]])
    assert Enum.sort(told) == Enum.sort([a.name, b.name])
    assert Enum.sort(gone) == Enum.sort([a.name, b.name])

    # Ten intervals: C is connected to nothing, and neither peer gets a nodeup for it.
    for _ <- 1..10 do
      Process.sleep(@interval)
      assert nodes_of(c) == []
    end

    for peer <- [a, b] do
      printed = TestNodes.lines(peer)
      refute "nodeup #{c.name}" in printed, "#{peer.alive} since the leave: #{inspect(printed)}"
    end

    for peer <- [a, b] do
      assert %{state: :left, creation: ^creation} = status(peer).candidates[name(c)]
      assert status(peer).candidates[name(c)].description =~ "left the cluster"
      assert c.name not in nodes_of(peer)
    end

    assert %{creation: ^creation, told: told_c} = status(c).left
    assert Enum.sort(told_c) == Enum.sort([a.name, b.name])
    assert a.name in nodes_of(b)

    # C joins: all three meshed within an interval or two.
    assert rpc(c, Tinycluster, :join, [[]]) == :ok
    started = System.monotonic_time(:millisecond)
    wait_meshed([a, b, c], 2 * @interval + @slack, "the three to mesh after the join")
    IO.puts("leave_test: meshed #{elapsed_ms(started)} ms after the join")
    assert status(c).left == nil

    # The join reached both peers' pollers: a disconnection by hand is undone again.
    TestNodes.wait_until(
      fn -> state_of(a, c) == :connected and state_of(b, c) == :connected end,
      "A and B to show C connected"
    )

    rpc(b, Node, :disconnect, [c.name])
    wait_meshed([a, b, c], 2 * @interval + @slack, "C to be reconnected after the join")
  end

  test "C leaves, then restarts under the same name at the same port: meshed without a join" do
    prefix = prefix()
    port = TestEpmd.free_port()
    [a, b] = for x <- ~w(a b), do: start_node(prefix, prefix <> x)
    c = start_node(prefix, prefix <> "c", port: port)
    wait_meshed([a, b, c], 30_000, "the three to mesh")
    old_creation = rpc(c, :erlang, :system_info, [:creation])

    assert {:ok, %{told: [_, _]}} = rpc(c, Tinycluster, :leave, [[]])
    TestNodes.wait_until(fn -> state_of(a, c) == :left end, "A to hold C as left")
    TestNodes.kill(c)

    # The same name at the same port: only its creation tells it from the one that left.
    c = start_node(prefix, prefix <> "c", port: port)
    started = System.monotonic_time(:millisecond)
    creation = rpc(c, :erlang, :system_info, [:creation])
    assert creation != old_creation

    wait_meshed([a, b, c], 2 * @interval + @slack, "the new C to mesh")
    IO.puts("leave_test: the restarted C meshed #{elapsed_ms(started)} ms after it answered")

    for peer <- [a, b] do
      try do
        TestNodes.wait_until(
          fn -> match?(%{state: :connected}, candidate(peer, c)) end,
          "#{peer.alive} to show the new C connected"
        )
      rescue
        e in ExUnit.AssertionError ->
          for n <- [a, b, c],
              do:
                IO.puts(
                  "== #{n.alive} (#{inspect(nodes_of(n))})\n" <>
                    Enum.join(TestNodes.lines(n), "\n")
                )

          reraise %{e | message: "#{e.message}: #{inspect(status(peer))}"}, __STACKTRACE__
      end
    end

    # A's poller probed the new incarnation (the port is the same, the creation new) or saw
    # it connect first (creation unknown until a probe).
    assert candidate(a, c).creation in [creation, nil]
  end

  test "a node refused twice for its cookie, restarted with the right one at the same port" do
    prefix = prefix()
    port = TestEpmd.free_port()
    alive = prefix <> "x"
    poller = TestNodes.poller_name()

    log =
      capture_log(fn ->
        x = start_node(prefix, alive, port: port, poller: false, cookie: "another_cookie")
        pid = start_supervised!({Tinycluster, name: poller, interval: @interval, only: [prefix]})

        TestNodes.wait_until(
          fn -> match?(%{state: :rejected, retry_at: :never}, TestNodes.candidate(poller, x)) end,
          "x to be left alone after two refusals"
        )

        old_creation = Tinycluster.status(poller).candidates[name(x)].creation
        assert is_integer(old_creation)

        # The poller waits while the node restarts, so that no scan sees it gone from EPMD
        # in between: only the creation can tell the new node from the old.
        :ok = :sys.suspend(pid)
        TestNodes.kill(x)
        x = start_node(prefix, alive, port: port, poller: false)
        :ok = :sys.resume(pid)
        resumed = System.monotonic_time(:millisecond)

        TestNodes.wait_state(poller, x, :connected, 2 * @interval + @slack)
        IO.puts("leave_test: the restarted node connected #{elapsed_ms(resumed)} ms after")
        assert %{creation: creation, attempts: 0} = Tinycluster.status(poller).candidates[name(x)]
        assert creation == :erpc.call(x.name, :erlang, :system_info, [:creation])
        assert creation != old_creation
      end)

    assert log =~ "connected to #{alive}"
  end

  test "a plain erl peer: leave disconnects it, and nothing else happens" do
    prefix = prefix()
    c = start_node(prefix, prefix <> "c")

    plain =
      start_node(prefix, prefix <> "plain", poller: false, args: ~w(-kernel logger_level all))

    wait_meshed([c, plain], 30_000, "C's poller to connect the plain node")
    wait_settled([c, plain])

    assert {:ok, %{told: [], disconnected: [disconnected]}} = rpc(c, Tinycluster, :leave, [[]])
    assert disconnected == plain.name

    Process.sleep(5 * @interval)
    # One nodedown, and not a line more: no nodeup, no log event of any kind.
    assert TestNodes.lines(plain) == ["nodedown #{c.name}"]
    assert nodes_of(c) == [] and nodes_of(plain) == []
    assert status(c).left.told == []
  end
end
