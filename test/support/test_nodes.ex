defmodule Tinycluster.TestNodes do
  @moduledoc """
  Real BEAM nodes for the tests: plain `erl` processes started as OS processes, on this
  host's real `epmd`, with `Tinycluster.Demo.OSNode`. A node never outlives the test VM; `kill/1`
  stops it by pid, which works on a frozen node too.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  alias Tinycluster.Demo.OSNode

  @doc """
  The cookie the test VM and the default test nodes share: one per test run, so that two
  runs on one machine (or a benchmark) never join each other's nodes.
  """
  def cookie, do: "tinycluster_test_" <> System.pid()

  @doc """
  Starts a plain `erl -sname` node and waits until EPMD lists it. Options: `:cookie`,
  `:hidden`, `:args` (extra `erl` arguments), `:name` (alive part), `:epmd_port` (register
  with the EPMD on that port instead of the system one), `:erl` (another OTP release's
  `erl`, see `Tinycluster.OTPReleases`). Stopped on test exit,
  and by its guard if the test VM dies first (see `Tinycluster.Demo.OSNode`).
  """
  def start(opts \\ []) do
    alive = Keyword.get_lazy(opts, :name, &unique_alive/0)
    cookie = Keyword.get(opts, :cookie, cookie())

    {:ok, node} =
      OSNode.start(alive, cookie, Keyword.take(opts, [:hidden, :args, :epmd_port, :erl, :long]))

    on_exit(fn -> kill(node) end)
    node
  end

  @doc """
  A fresh alive part: the test VM's OS pid keeps it apart from the nodes of other test runs
  on the same host, which share its EPMD.
  """
  def unique_alive(prefix \\ "tc"),
    do: "#{prefix}#{System.pid()}_#{System.unique_integer([:positive])}"

  @doc "Starts `count` plain nodes."
  def start_many(count, opts \\ []), do: for(_ <- 1..count, do: start(opts))

  @doc "Stops a node by its OS pid (SIGKILL works on a frozen node too) and waits for it."
  def kill(node) do
    OSNode.stop(node)

    wait_until(
      fn -> not OSNode.registered?(node.alive, node.epmd_port) end,
      "#{node.alive} to leave EPMD",
      10_000
    )
  end

  @doc "Freezes a node with SIGSTOP: it still accepts TCP connections, and answers nothing."
  defdelegate freeze(node), to: OSNode

  @doc "Resumes a frozen node with SIGCONT."
  defdelegate thaw(node), to: OSNode

  @doc "Whether EPMD lists `alive` on this host."
  defdelegate registered?(alive), to: OSNode

  @doc "The nodes `node` is connected to, asked over distribution."
  def nodes_of(node), do: :erpc.call(node, :erlang, :nodes, [], 5_000)

  @doc "Polls `fun` until it returns truthy, or flunks after `timeout` ms."
  def wait_until(fun, what, timeout \\ 15_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, what, deadline)
  end

  defp do_wait(fun, what, deadline) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        ExUnit.Assertions.flunk("timed out waiting for #{what}")

      true ->
        Process.sleep(50)
        do_wait(fun, what, deadline)
    end
  end

  @doc "The state poller `poller` gives `node`, or nil while it has not seen it."
  def state_of(poller, node) do
    case Tinycluster.status(poller).candidates[Atom.to_string(node.name)] do
      nil -> nil
      candidate -> candidate.state
    end
  end

  @doc "Waits until poller `poller` gives `node` the state `state`, or flunks."
  def wait_state(poller, node, state, timeout \\ 15_000) do
    wait_until(
      fn -> state_of(poller, node) == state end,
      "#{node.name} to be #{inspect(state)} (is #{inspect(state_of(poller, node))})",
      timeout
    )
  end

  @doc "A poller name unique to this call, so tests never share probe names or state."
  def poller_name, do: :"tinycluster_test_#{System.unique_integer([:positive])}"
end
