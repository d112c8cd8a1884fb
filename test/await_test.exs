defmodule Tinycluster.AwaitTest do
  # `Tinycluster.await/1` on real nodes: a node first in its cluster returns after one scan;
  # `:min_nodes` met by nodes that start later; a timeout returns what was known; a poller
  # that is not running or crashes is a clear error; and the wait is driven by the poller's
  # notifications, not by calls in a loop, and leaves nothing in the caller's mailbox.
  use ExUnit.Case, async: false

  alias Tinycluster.TestNodes

  @moduletag timeout: 120_000

  # Every test sees only its own nodes: its pollers take only names of its prefix, and
  # `:min_nodes` counts every visible node this VM is connected to, so the connections
  # earlier tests left (a killed node's may not be down yet) are cut first.
  setup do
    prefix = "aw#{System.pid()}x#{System.unique_integer([:positive])}x"
    for node <- Node.list(), do: Node.disconnect(node)
    TestNodes.wait_until(fn -> Node.list() == [] end, "this VM to be connected to no node")
    {:ok, prefix: prefix}
  end

  defp start_poller(prefix, opts \\ []) do
    name = TestNodes.poller_name()
    opts = Keyword.merge([name: name, interval: 200, only: [prefix]], opts)
    start_supervised!(Supervisor.child_spec({Tinycluster, opts}, restart: :temporary))
    name
  end

  defp start_node(prefix, opts \\ []),
    do: TestNodes.start(Keyword.put(opts, :name, TestNodes.unique_alive(prefix)))

  defp elapsed_ms(started), do: System.monotonic_time(:millisecond) - started

  # The `$gen_call`s a process receives while `fun` runs.
  defp calls_received(pid, fun) do
    1 = :erlang.trace(pid, true, [:receive])

    try do
      result = fun.()
      :erlang.trace(pid, false, [:receive])
      {result, collect_calls(pid, 0)}
    after
      :erlang.trace(pid, false, [:receive])
    end
  end

  defp collect_calls(pid, n) do
    receive do
      {:trace, ^pid, :receive, {:"$gen_call", _, _}} -> collect_calls(pid, n + 1)
      {:trace, ^pid, :receive, _} -> collect_calls(pid, n)
    after
      200 -> n
    end
  end

  test "a node first in its cluster returns after the first scan", %{prefix: prefix} do
    # An interval longer than the test: only the first scan can end the wait.
    started = System.monotonic_time(:millisecond)
    poller = start_poller(prefix, interval: 600_000)
    assert :ok = Tinycluster.await(server: poller, timeout: 10_000)
    assert elapsed_ms(started) < 5_000
    assert Tinycluster.status(poller).scans == 1

    # Asked again, it answers at once from what the poller knows.
    assert :ok = Tinycluster.await(server: poller, timeout: 0)
  end

  test "without :min_nodes, it returns once the nodes that exist are connected",
       %{prefix: prefix} do
    nodes = for _ <- 1..3, do: start_node(prefix)
    hidden = start_node(prefix, hidden: true)
    other = start_node(prefix, cookie: "another_cookie")
    frozen = start_node(prefix)
    TestNodes.freeze(frozen)

    # A generous probe timeout: a node just started, on a loaded machine, may answer its
    # first probe late, and this test is about what await waits for, not about speed.
    poller = start_poller(prefix, interval: 600_000, probe_timeout: 3_000)
    assert :ok = Tinycluster.await(server: poller, timeout: 30_000)

    # Returned from the first scan and its connects, with every live node connected, and
    # without waiting on the hidden, refusing and frozen ones.
    status = Tinycluster.status(poller)
    assert status.scans == 1
    for node <- nodes, do: assert(node.name in Node.list())
    states = Map.new(status.candidates, fn {name, c} -> {name, c.state} end)
    assert states[Atom.to_string(hidden.name)] == :hidden
    assert states[Atom.to_string(other.name)] == :rejected
    assert states[Atom.to_string(frozen.name)] == :unreachable
  end

  test ":min_nodes is met by nodes started later", %{prefix: prefix} do
    poller = start_poller(prefix)
    test = self()

    waiter =
      Task.async(fn ->
        result = Tinycluster.await(server: poller, min_nodes: 2, timeout: 30_000)
        send(test, :returned)
        result
      end)

    # The waiter has subscribed and is waiting before the nodes exist.
    TestNodes.wait_until(fn -> watches?(poller, waiter.pid) end, "the waiter to subscribe")

    first = start_node(prefix)
    TestNodes.wait_until(fn -> first.name in Node.list() end, "the first node to connect")
    refute_received :returned
    second = start_node(prefix)

    assert {:ok, nodes} = Task.await(waiter, 35_000)
    assert Enum.sort(nodes) == Enum.sort([first.name, second.name])
    # The poller forgot the waiter.
    TestNodes.wait_until(fn -> not watches?(poller, waiter.pid) end, "the poller to forget it")
  end

  test "a timeout returns what the poller knew", %{prefix: prefix} do
    node = start_node(prefix)
    poller = start_poller(prefix)
    started = System.monotonic_time(:millisecond)
    want = 5

    assert {:error, {:timeout, status}} =
             Tinycluster.await(server: poller, min_nodes: want, timeout: 1_500)

    assert elapsed_ms(started) in 1_500..4_000
    assert status.scans >= 1
    assert %{state: :connected} = status.candidates[Atom.to_string(node.name)]

    # A readiness check: answers at once.
    started = System.monotonic_time(:millisecond)

    assert {:error, {:timeout, %{scans: _}}} =
             Tinycluster.await(server: poller, min_nodes: want, timeout: 0)

    assert elapsed_ms(started) < 1_000
  end

  test ":only and :except keep nodes outside the cluster, a remote shell's, out of the count",
       %{prefix: prefix} do
    poller = start_poller(prefix)
    # A node outside the cluster that connected to this one, as `iex --remsh` does.
    shell = TestNodes.start(name: TestNodes.unique_alive("remsh"))
    true = Node.connect(shell.name)
    first = start_node(prefix)
    TestNodes.wait_until(fn -> first.name in Node.list() end, "the first node to connect")
    both = [prefix, "remsh"]

    # Counted alone, the shell makes two; the patterns leave it out.
    assert {:ok, _} = Tinycluster.await(server: poller, min_nodes: 2, timeout: 0)
    await = &Tinycluster.await(Keyword.merge([server: poller, min_nodes: 2, timeout: 0], &1))
    assert {:error, {:timeout, _}} = await.(only: prefix)
    assert {:error, {:timeout, _}} = await.(only: both, except: [~r/^remsh/])
    assert {:ok, nodes} = await.(only: both)
    assert Enum.sort(nodes) == Enum.sort([first.name, shell.name])

    # The nodes returned are the ones that match.
    second = start_node(prefix)
    assert {:ok, nodes} = await.(only: [prefix], timeout: 30_000)
    assert Enum.sort(nodes) == Enum.sort([first.name, second.name])

    # Without :min_nodes they narrow whom the wait is for, as the poller's own do.
    assert :ok = Tinycluster.await(server: poller, only: [prefix], timeout: 10_000)

    for {opts, message} <- [
          {[only: 5], ~r/Tinycluster.await\/1 option :only: 5 \(expected a pattern/},
          {[except: [:atom]], ~r/Tinycluster.await\/1 option :except: \[:atom\]/}
        ] do
      assert_raise ArgumentError, message, fn -> Tinycluster.await([server: poller] ++ opts) end
    end
  end

  defmodule ClusterReady do
    # The start phase of Tinycluster's docs: blocks the supervisor's start in init/1.
    use GenServer

    def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

    @impl true
    def init(opts) do
      case Tinycluster.await(opts) do
        {:ok, _nodes} -> :ignore
        {:error, reason} -> {:stop, reason}
      end
    end
  end

  test "as a start phase, the children after the waiter start once the cluster formed",
       %{prefix: prefix} do
    poller = TestNodes.poller_name()
    want = 2
    test = self()

    children = [
      {Tinycluster, name: poller, interval: 200, only: [prefix]},
      {ClusterReady, server: poller, min_nodes: want, timeout: 30_000},
      {Task, fn -> send(test, {:worker_started, Node.list()}) end}
    ]

    # The supervisor's parent, which the start blocks; the supervisor stops when it does.
    starter =
      spawn(fn ->
        send(test, {:started, Supervisor.start_link(children, strategy: :one_for_one)})
        receive do: (:stop -> :ok)
      end)

    on_exit(fn -> send(starter, :stop) end)
    TestNodes.wait_until(fn -> Process.whereis(poller) != nil end, "the poller to start")
    refute_receive {:worker_started, _}, 500
    first = start_node(prefix)
    refute_receive {:worker_started, _}, 500
    second = start_node(prefix)

    assert_receive {:worker_started, nodes}, 30_000
    assert first.name in nodes and second.name in nodes
    assert_receive {:started, {:ok, _sup}}
    send(starter, :stop)
    TestNodes.wait_until(fn -> Process.whereis(poller) == nil end, "the poller to stop")

    # When the time is up, {:stop, reason} fails the supervisor's start, before the worker.
    Process.flag(:trap_exit, true)
    ready = {ClusterReady, server: poller, min_nodes: 1_000, timeout: 500}

    assert {:error, {:shutdown, {:failed_to_start_child, ClusterReady, {:timeout, _}}}} =
             Supervisor.start_link(List.replace_at(children, 1, ready), strategy: :one_for_one)

    refute_received {:worker_started, _}
  end

  test "timeout: :infinity waits until the cluster has formed", %{prefix: prefix} do
    poller = start_poller(prefix)

    waiter =
      Task.async(fn -> Tinycluster.await(server: poller, min_nodes: 1, timeout: :infinity) end)

    assert Task.yield(waiter, 1_000) == nil
    node = start_node(prefix)
    assert Task.await(waiter, 30_000) == {:ok, [node.name]}
  end

  test "a poller that is not running is an error" do
    assert {:error, {:not_running, :no_such_tinycluster_poller}} =
             Tinycluster.await(server: :no_such_tinycluster_poller, timeout: 1_000)

    assert {:error, {:not_running, Tinycluster}} = Tinycluster.await(timeout: 0)
  end

  test "a poller that crashes while waited on is an error, at once", %{prefix: prefix} do
    poller = start_poller(prefix)
    pid = Process.whereis(poller)

    waiter =
      Task.async(fn -> Tinycluster.await(server: poller, min_nodes: 1_000, timeout: 60_000) end)

    TestNodes.wait_until(fn -> watches?(poller, waiter.pid) end, "the waiter to subscribe")

    started = System.monotonic_time(:millisecond)
    Process.exit(pid, :kill)
    assert {:error, {:poller_down, :killed}} = Task.await(waiter, 10_000)
    assert elapsed_ms(started) < 2_000
  end

  test "a poller that does not answer is an error after 5 s, and forgets the waiter",
       %{prefix: prefix} do
    poller = start_poller(prefix)
    pid = Process.whereis(poller)
    :ok = :sys.suspend(pid)
    started = System.monotonic_time(:millisecond)
    assert {:error, {:poller_unresponsive, ^pid}} = Tinycluster.await(server: poller, timeout: 0)
    assert elapsed_ms(started) in 5_000..7_000
    :ok = :sys.resume(pid)

    TestNodes.wait_until(fn -> not watches?(poller, self()) end, "the poller to forget it")

    # Neither the late reply nor a notification reached this process.
    Process.sleep(300)
    assert {:messages, []} = Process.info(self(), :messages)
  end

  test "bad options are an ArgumentError" do
    assert_raise ArgumentError, ~r/:timeout/, fn -> Tinycluster.await(timeout: -1) end
    assert_raise ArgumentError, ~r/:min_nodes/, fn -> Tinycluster.await(min_nodes: :two) end
    assert_raise ArgumentError, ~r/:bogus$/, fn -> Tinycluster.await(bogus: 1) end

    assert_raise ArgumentError, ~r/option :min_node \(did you mean :min_nodes\?\)/, fn ->
      Tinycluster.await(min_node: 2)
    end
  end

  test "it waits on notifications: one call to the poller, nothing left in the mailbox",
       %{prefix: prefix} do
    poller = start_poller(prefix, interval: 100)
    pid = Process.whereis(poller)
    :ok = Tinycluster.await(server: poller, timeout: 10_000)

    # 2 s of waiting across ~20 scans: a poller asked in a loop would get a call per check.
    {result, calls} =
      calls_received(pid, fn ->
        Tinycluster.await(server: poller, min_nodes: 1_000, timeout: 2_000)
      end)

    assert {:error, {:timeout, status}} = result
    assert status.scans >= 5
    assert calls == 1

    # The notifications stop with the wait: none reaches the caller afterwards.
    TestNodes.wait_until(fn -> Tinycluster.status(poller).scans >= status.scans + 3 end, "scans")
    refute_received {:tinycluster_status, _, _}
    TestNodes.wait_until(fn -> not watches?(poller, self()) end, "the poller to forget it")
  end

  test "a waiter that dies is forgotten by the poller", %{prefix: prefix} do
    poller = start_poller(prefix)
    waiter = spawn(fn -> Tinycluster.await(server: poller, min_nodes: 1_000, timeout: 60_000) end)

    TestNodes.wait_until(fn -> watches?(poller, waiter) end, "the waiter to subscribe")
    Process.exit(waiter, :kill)
    TestNodes.wait_until(fn -> not watches?(poller, waiter) end, "the poller to forget it")
  end

  # Whether the poller watches `pid` as a waiter: it monitors each waiter while subscribed,
  # and only then (seen from outside, with no look at its state).
  defp watches?(poller, pid) do
    {:monitors, monitors} = Process.info(Process.whereis(poller), :monitors)
    {:process, pid} in monitors
  end
end
