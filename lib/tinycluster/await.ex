defmodule Tinycluster.Await do
  @moduledoc """
  `Tinycluster.await/1`: waits until the cluster has formed, as a poller sees it, so that
  the processes that need the cluster start only then. This is the one description of the
  wait; `Tinycluster` and the README point here.

  It waits on the poller's own notifications (the end of each scan, each connection
  attempt, each node up or down), never by asking it in a loop.

      :ok = Tinycluster.await(timeout: 10_000)
      {:ok, nodes} = Tinycluster.await(min_nodes: 2, timeout: 30_000)
      {:error, {:timeout, status}} = Tinycluster.await(min_nodes: 5, timeout: 1_000)

  ## Options

    * `:server` - the poller to wait on: its name or pid. Default `Tinycluster`.
    * `:timeout` - milliseconds to wait, or `:infinity`. Default `5000`. With `0` it answers
      at once from what the poller knows (a readiness check).
    * `:min_nodes` - wait until this node is connected to at least this many visible nodes
      (not counting itself), whoever connected them.
    * `:only` and `:except` - patterns, in the forms the poller's options take (see
      `Tinycluster.Filter`), for the nodes the wait counts: with `:min_nodes`, only the
      connected nodes they let through count, so a remote shell (`iex --remsh`), which is
      a visible node too, cannot meet a readiness check; without, only the candidates they
      let through are waited for. Default: every node.

  ## Results

    * `:ok` (no `:min_nodes`) - a scan has finished, and no candidate is left that the
      poller would still connect: none `:connecting`, none `:live` that it would connect. A
      node first in its cluster returns after its first scan. Nodes that refused the
      connection, hidden, frozen or filtered ones are not waited for.
    * `{:ok, nodes}` (with `:min_nodes`) - the visible nodes connected (`Node.list/0`)
      that `:only`/`:except` let through, at least `:min_nodes` of them.
    * `{:error, {:timeout, status}}` - the time is up; `status` is the poller's last
      `Tinycluster.status/1`.
    * `{:error, {:not_running, server}}` - no poller runs under that name.
    * `{:error, {:poller_down, reason}}` - the poller stopped or crashed while waited on.
    * `{:error, {:poller_unresponsive, pid}}` - the poller did not answer within 5 s.

  The calling process receives nothing from the wait (see "How it waits").

  ## As a start phase

  A child placed after `{Tinycluster, ...}` in the supervision tree waits in its `init/1`.
  A supervisor starts its children in order, one at a time, so the children after it start
  only once the cluster has formed:

      defmodule MyApp.ClusterReady do
        # Blocks the supervisor's start until this node sees 2 others, or 30 s have passed.
        use GenServer
        require Logger

        def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

        @impl true
        def init(_opts) do
          case Tinycluster.await(min_nodes: 2, timeout: 30_000) do
            {:ok, _nodes} ->
              :ignore

            {:error, {:timeout, status}} ->
              seen = Map.keys(status.candidates)
              Logger.warning("cluster incomplete after 30 s; seen: \#{inspect(seen)}")
              :ignore

            {:error, reason} ->
              {:stop, reason}
          end
        end
      end

      children = [
        {Tinycluster, interval: 1_000},
        MyApp.ClusterReady,
        MyApp.Worker              # started once the cluster has formed (or 30 s passed)
      ]

  `:ignore` lets the supervisor go on without keeping a process. When the timeout expires,
  choose: `:ignore` (as above) starts the rest anyway, on a partial cluster; `{:stop,
  reason}` fails the supervisor's start, and with it the application's (a release then
  stops, and its orchestrator restarts it). Keep the timeout well under any start timeout
  around your release. Without `:min_nodes`, `Tinycluster.await(timeout: 10_000)` waits only
  until the nodes that exist are connected, so the first node of a cluster does not wait.

  ## In a readiness check

  `timeout: 0` answers at once from what the poller knows. Give it the cluster's names, so
  that a remote shell or a tool connected to the node does not count:

      def ready? do
        match?({:ok, _}, Tinycluster.await(min_nodes: 2, only: ["myapp"], timeout: 0))
      end

  ## How it waits

  The waiter never asks the poller in a loop. It monitors the poller with an alias
  (`:erlang.monitor/3` with `alias: :demonitor`) and registers that alias with it once; the
  poller answers with its status, and sends its status again to every registered alias at
  the end of each scan, when a connection attempt ends and when a node goes up or down.
  The waiter checks its condition on each of those, and nothing else wakes it.

  When the wait ends, however it ends, the waiter removes the monitor, which also
  deactivates the alias: a notification already on its way is dropped by the runtime, so
  the caller's mailbox (a `GenServer`'s, during `init/1`) never sees a stray message. The
  poller monitors each waiter and forgets it when it unregisters or dies.

  The poller's side is three small functions (`subscribe/3`, `unsubscribe/2`, `notify/2`)
  over an opaque map, so that the poller keeps one job.
  """

  alias Tinycluster.{Filter, Options}
  alias Tinycluster.Candidate.States

  @typedoc "The waiters a poller notifies: the poller's monitor of each, to its alias."
  @opaque subscribers :: %{reference() => reference()}

  @default_timeout 5_000

  @doc """
  Waits for the cluster; see the moduledoc for the options and the results.
  """
  @spec await(keyword()) ::
          :ok
          | {:ok, [node()]}
          | {:error,
             {:timeout, Tinycluster.status()}
             | {:not_running, GenServer.server()}
             | {:poller_down, term()}
             | {:poller_unresponsive, pid()}}
  def await(opts \\ []) do
    {server, timeout, min_nodes, filter} = options!(opts)
    deadline = if timeout == :infinity, do: :infinity, else: now() + timeout

    case GenServer.whereis(server) do
      nil -> {:error, {:not_running, server}}
      poller -> subscribe_and_wait(poller, {min_nodes, filter}, deadline)
    end
  end

  # `min_nodes` travels with the `:only`/`:except` filter as one condition.
  defp subscribe_and_wait(poller, min_nodes, deadline) do
    alias = :erlang.monitor(:process, poller, alias: :demonitor)

    # The subscription's answer is the poller's status now, so even `timeout: 0` (a
    # readiness check) waits for it; a poller that gives none within 5 s is stuck.
    try do
      GenServer.call(poller, {:tinycluster_subscribe, alias}, max(remaining(deadline), 5_000))
    catch
      :exit, {:timeout, _} -> finish(alias, poller, {:error, {:poller_unresponsive, poller}})
      :exit, {reason, _} -> finish(alias, poller, {:error, {:poller_down, reason}})
    else
      {:ok, status} -> check(alias, poller, min_nodes, deadline, status)
    end
  end

  defp check(alias, poller, {count, filter} = min_nodes, deadline, status) do
    case done(status, count, filter) do
      false -> wait(alias, poller, min_nodes, deadline, status)
      result -> finish(alias, poller, result)
    end
  end

  defp wait(alias, poller, min_nodes, deadline, status) do
    receive do
      {:tinycluster_status, ^alias, status} ->
        check(alias, poller, min_nodes, deadline, status)

      {:DOWN, ^alias, :process, _, reason} ->
        {:error, {:poller_down, reason}}
    after
      remaining(deadline) ->
        finish(alias, poller, {:error, {:timeout, status}})
    end
  end

  # Removing the monitor deactivates the alias too; the flush takes what arrived before.
  defp finish(alias, poller, result) do
    Process.demonitor(alias, [:flush])
    GenServer.cast(poller, {:tinycluster_unsubscribe, alias})
    flush(alias)
    result
  end

  defp flush(alias) do
    receive do
      {:tinycluster_status, ^alias, _} -> flush(alias)
    after
      0 -> :ok
    end
  end

  @doc """
  The result of the wait for this `status`, or `false` while the condition is not met.

  With `min_nodes`, `{:ok, nodes}` once this node is connected to that many visible nodes
  that `filter` (an `Options` struct whose `:only`/`:except` are the wait's, or `nil` for
  all) lets through. Without, `:ok` once a scan has finished and no candidate `filter` lets
  through is left that the poller would still connect: none `:connecting`, and none
  `:live` that it would connect (none at all while this node has left the cluster).
  """
  @spec done(Tinycluster.status(), nil | non_neg_integer(), nil | Options.t()) ::
          false | :ok | {:ok, [node()]}
  def done(status, min_nodes, filter \\ nil)

  def done(_status, min_nodes, filter) when is_integer(min_nodes) do
    nodes = Enum.filter(Node.list(:visible), &wanted?(filter, Atom.to_string(&1)))
    length(nodes) >= min_nodes && {:ok, nodes}
  end

  # A node that left connects nothing: nothing is pending.
  def done(%{scans: scans, left: left}, nil, _filter) when left != nil, do: scans > 0 && :ok

  def done(%{scans: scans, candidates: candidates, options: opts}, nil, filter) do
    scans > 0 and
      not Enum.any?(candidates, fn {_, c} -> wanted?(filter, c.name) and pending?(c, opts) end) &&
      :ok
  end

  defp wanted?(nil, _name), do: true
  defp wanted?(filter, name), do: Filter.allowed?(filter, name)

  # Which states are still pending is the states table's (`Tinycluster.Candidate.States`).
  defp pending?(%{state: state, name: name}, opts) do
    case States.pending(state) do
      :if_connected -> opts.connect and Filter.allowed?(opts, name)
      pending -> pending
    end
  end

  defp options!(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "Tinycluster.await/1 takes a keyword list, got: #{inspect(opts)}"
    end

    filter =
      Enum.reduce(opts, nil, fn
        {:server, _}, filter -> filter
        {:timeout, t}, filter when t == :infinity or (is_integer(t) and t >= 0) -> filter
        {:min_nodes, n}, filter when is_integer(n) and n >= 0 -> filter
        {key, value}, filter when key in [:only, :except] -> pattern!(filter, key, value)
        {key, value}, _ when key in [:timeout, :min_nodes] -> invalid!(key, value)
        {key, _}, _ -> unknown!(key)
      end)

    {Keyword.get(opts, :server, Tinycluster), Keyword.get(opts, :timeout, @default_timeout),
     Keyword.get(opts, :min_nodes), filter}
  end

  defp unknown!(key) do
    known = [:server, :timeout, :min_nodes, :only, :except]

    raise ArgumentError,
          "unknown Tinycluster.await/1 option #{inspect(key)}" <>
            Options.did_you_mean(key, known)
  end

  # The patterns as the poller takes them, held in the struct `Filter` reads.
  defp pattern!(filter, key, value) do
    case Filter.patterns(value) do
      {:ok, patterns} -> Map.put(filter || %Options{}, key, patterns)
      :error -> invalid!(key, value)
    end
  end

  defp invalid!(key, value) do
    expected =
      case key do
        :timeout -> "a non-negative integer of milliseconds or :infinity"
        :min_nodes -> "a non-negative integer"
        _ -> "a pattern or a list of patterns: name prefixes, regexes or 1-arity functions"
      end

    raise ArgumentError,
          "invalid value for Tinycluster.await/1 option #{inspect(key)}: #{inspect(value)} " <>
            "(expected #{expected})"
  end

  defp now, do: System.monotonic_time(:millisecond)
  defp remaining(:infinity), do: :infinity
  defp remaining(deadline), do: max(deadline - now(), 0)

  ## The poller's side

  @doc false
  @spec subscribers() :: subscribers()
  def subscribers, do: %{}

  @doc false
  # Registers the waiter `pid`, reached at `alias`; the poller forgets it when it dies.
  @spec subscribe(subscribers(), pid(), reference()) :: subscribers()
  def subscribe(subscribers, pid, alias) do
    Map.put(subscribers, Process.monitor(pid), alias)
  end

  @doc false
  # Forgets the waiter at `alias`, or the one whose monitor `ref` fired.
  @spec unsubscribe(subscribers(), reference()) :: subscribers()
  def unsubscribe(subscribers, ref) do
    case Enum.find(subscribers, fn {monitor, alias} -> ref in [monitor, alias] end) do
      nil ->
        subscribers

      {monitor, _} ->
        Process.demonitor(monitor, [:flush])
        Map.delete(subscribers, monitor)
    end
  end

  @doc false
  # Sends the status to every waiter; `status` is a function so that no one waiting costs
  # nothing.
  @spec notify(subscribers(), (() -> Tinycluster.status())) :: :ok
  def notify(subscribers, _status) when map_size(subscribers) == 0, do: :ok

  def notify(subscribers, status) do
    status = status.()
    Enum.each(subscribers, fn {_, alias} -> send(alias, {:tinycluster_status, alias, status}) end)
  end
end
