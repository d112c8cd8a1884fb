defmodule Tinycluster.Poller do
  # The GenServer behind `Tinycluster`: polls on a timer, runs one scan at a time, connects
  # the live candidates in supervised tasks, and keeps the state `Tinycluster.status/1` shows.
  @moduledoc false

  use GenServer
  require Logger

  alias Tinycluster.{Candidate, Discovery, Native, Options}

  # A candidate no longer listed anywhere is forgotten after this long, so that the status
  # of a node with many short-lived nodes (remote shells, scripts) stays bounded.
  @forget_gone_after_ms 3_600_000

  @doc false
  def start_link(%Options{} = opts) do
    GenServer.start_link(__MODULE__, opts, name: opts.name)
  end

  @impl true
  def init(%Options{} = opts) do
    {:ok, tasks} = Task.Supervisor.start_link()
    # Every node type: a hidden node's connection going down matters as much.
    :ok = :net_kernel.monitor_nodes(true, node_type: :all)

    state = %{
      opts: opts,
      tasks: tasks,
      scan: nil,
      candidates: %{},
      hosts: %{},
      connecting: %{},
      last_scan: nil,
      scans: 0,
      warned_not_distributed: false
    }

    {:ok, state, {:continue, :poll}}
  end

  @impl true
  def handle_continue(:poll, state), do: {:noreply, poll(state)}

  @impl true
  def handle_call(:status, _from, state), do: {:reply, status(state), state}

  @impl true
  def handle_info(:poll, state), do: {:noreply, poll(state)}

  def handle_info({:tinycluster_scan, id, event}, %{scan: %{id: id}} = state) do
    {:noreply, handle_event(event, state)}
  end

  # A late message from a scan the watchdog already gave up on.
  def handle_info({:tinycluster_scan, _id, _event}, state), do: {:noreply, state}

  def handle_info({:scan_timeout, id}, %{scan: %{id: id}} = state) do
    Logger.warning("tinycluster: a scan did not finish in time; starting over")
    {:noreply, state |> Map.put(:scan, nil) |> schedule(0)}
  end

  def handle_info({:scan_timeout, _id}, state), do: {:noreply, state}

  def handle_info({ref, result}, %{connecting: connecting} = state)
      when is_map_key(connecting, ref) do
    Process.demonitor(ref, [:flush])
    {key, connecting} = Map.pop(connecting, ref)
    {:noreply, connected(%{state | connecting: connecting}, key, result)}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{connecting: connecting} = state)
      when is_map_key(connecting, ref) do
    {key, connecting} = Map.pop(connecting, ref)
    {:noreply, connected(%{state | connecting: connecting}, key, {:crashed, reason})}
  end

  def handle_info({:nodeup, node, _info}, state), do: {:noreply, node_event(state, node, :up)}

  def handle_info({:nodedown, node, info}, state) do
    {:noreply, node_event(state, node, {:down, info[:nodedown_reason]})}
  end

  def handle_info(_other, state), do: {:noreply, state}

  ## Polling

  defp poll(%{scan: %{}} = state), do: state

  defp poll(state) do
    case Discovery.request(state.opts, Node.list(:connected)) do
      {:ok, request} ->
        start_scan(state, request)

      {:error, :not_distributed} ->
        unless state.warned_not_distributed do
          Logger.warning(
            "tinycluster: this node is not distributed (#{node()}), so it cannot connect to " <>
              "other nodes; start it with --sname or --name, or call Node.start/2. " <>
              "tinycluster starts clustering as soon as it is."
          )
        end

        schedule(%{state | warned_not_distributed: true}, state.opts.interval)
    end
  end

  defp start_scan(state, request) do
    case Native.start_scan(request) do
      {:ok, id} ->
        Process.send_after(self(), {:scan_timeout, id}, Discovery.deadline(state.opts))
        now = System.monotonic_time(:millisecond)
        %{state | scan: %{id: id, started: now}, warned_not_distributed: false}

      {:error, reason} ->
        Logger.error("tinycluster: could not start a scan: #{inspect(reason)}")
        schedule(state, state.opts.interval)
    end
  end

  # The next poll comes `interval` after the start of the last, or at once if it overran.
  defp schedule(state, delay) do
    Process.send_after(self(), :poll, max(delay, 0))
    state
  end

  ## Scan events

  defp handle_event({:host, host}, state) do
    previous = Map.get(state.hosts, host.label)
    log_host(previous, host)
    %{state | hosts: Map.put(state.hosts, host.label, host)}
  end

  defp handle_event({:candidate, map}, state) do
    probed = Candidate.from_native(map)
    key = {probed.host, probed.alive}
    now = DateTime.utc_now()

    entry =
      case Map.get(state.candidates, key) do
        nil -> %Candidate{probed | first_seen: now, last_seen: now}
        old -> merge(old, probed, now)
      end

    state
    |> put_candidate(key, entry)
    |> maybe_connect(key)
  end

  defp handle_event({:done, report}, state) do
    now_ms = System.monotonic_time(:millisecond)
    elapsed = now_ms - state.scan.started
    listed = MapSet.new(report.candidates, &{&1.host, &1.alive})
    answered = for %{status: :ok, label: label} <- report.hosts, into: MapSet.new(), do: label

    state =
      Enum.reduce(state.candidates, state, fn {{host, _} = key, entry}, acc ->
        if MapSet.member?(answered, host) and not MapSet.member?(listed, key) do
          gone(acc, key, entry)
        else
          acc
        end
      end)

    %{
      state
      | scan: nil,
        scans: state.scans + 1,
        last_scan: %{
          at: DateTime.utc_now(),
          duration_us: report.duration_us,
          hosts: length(report.hosts),
          candidates: length(report.candidates)
        }
    }
    |> schedule(state.opts.interval - elapsed)
  end

  # What a fresh probe says wins, except that the poller's own view of a connection in
  # progress or refused is kept until the connect attempt says otherwise.
  defp merge(old, probed, now) do
    state =
      cond do
        old.state == :connecting and probed.state == :live -> :connecting
        old.state == :rejected and probed.state == :live -> :rejected
        true -> probed.state
      end

    %Candidate{
      probed
      | state: state,
        reason: if(state == probed.state, do: probed.reason, else: old.reason),
        node: probed.node || old.node,
        latency_us: probed.latency_us || old.latency_us,
        first_seen: old.first_seen,
        last_seen: now,
        attempts: old.attempts,
        retry_at: old.retry_at
    }
  end

  defp gone(state, key, %Candidate{state: :gone, last_seen: last} = _entry) do
    if DateTime.diff(DateTime.utc_now(), last, :millisecond) > @forget_gone_after_ms,
      do: %{state | candidates: Map.delete(state.candidates, key)},
      else: state
  end

  defp gone(state, key, entry),
    do: put_candidate(state, key, %{entry | state: :gone, reason: nil})

  ## Connecting

  defp maybe_connect(%{opts: %{connect: false}} = state, _key), do: state

  defp maybe_connect(state, key) do
    entry = Map.fetch!(state.candidates, key)
    now = System.monotonic_time(:millisecond)

    due? =
      entry.state == :live or
        (entry.state == :rejected and entry.retry_at != nil and now >= entry.retry_at)

    if due? and entry.node != nil do
      task = Task.Supervisor.async_nolink(state.tasks, Node, :connect, [entry.node])
      state = %{state | connecting: Map.put(state.connecting, task.ref, key)}
      put_candidate(state, key, %{entry | state: :connecting})
    else
      state
    end
  end

  defp connected(state, key, result) do
    case Map.get(state.candidates, key) do
      nil -> state
      entry -> put_candidate(state, key, after_connect(entry, result, state.opts))
    end
  end

  defp after_connect(entry, true, _opts),
    do: %{entry | state: :connected, reason: nil, attempts: 0, retry_at: nil}

  # The local node stopped being distributed meanwhile; the next scan will tell.
  defp after_connect(entry, :ignored, _opts), do: %{entry | state: :live}

  defp after_connect(entry, failure, opts) do
    attempts = entry.attempts + 1
    backoff = min(opts.interval * Integer.pow(2, min(attempts - 1, 20)), opts.max_backoff)
    retry_at = System.monotonic_time(:millisecond) + backoff
    reason = if failure == false, do: :connect_failed, else: failure
    %{entry | state: :rejected, reason: reason, attempts: attempts, retry_at: retry_at}
  end

  defp node_event(state, node, event) do
    name = Atom.to_string(node)

    case Enum.find(state.candidates, fn {_key, entry} -> entry.name == name end) do
      nil ->
        state

      {key, entry} ->
        case event do
          :up -> put_candidate(state, key, %{entry | state: :connected, node: node, reason: nil})
          {:down, reason} -> put_candidate(state, key, %{entry | state: :down, reason: reason})
        end
    end
  end

  ## Bookkeeping and logs

  defp put_candidate(state, key, entry) do
    old = Map.get(state.candidates, key)
    if old == nil or old.state != entry.state, do: log_transition(entry)
    %{state | candidates: Map.put(state.candidates, key, entry)}
  end

  defp log_transition(%Candidate{} = entry) do
    meta = [tinycluster_node: entry.name, tinycluster_state: entry.state]

    case entry.state do
      :connected ->
        Logger.info("tinycluster: connected to #{entry.name}", meta)

      # A refusal is retried with backoff; only the first of a run is worth a line.
      :rejected when entry.attempts > 1 ->
        :ok

      state when state in [:rejected, :not_allowed, :name_mismatch, :bad_reply, :unreachable] ->
        Logger.warning("tinycluster: #{entry.name} #{Candidate.describe(entry)}", meta)

      :down ->
        Logger.info("tinycluster: lost the connection to #{entry.name}", meta)

      _ ->
        :ok
    end
  end

  defp log_host(previous, host) do
    meta = [tinycluster_host: host.label]

    case {previous && previous.status, host.status} do
      {:ok, :ok} ->
        :ok

      {nil, :ok} ->
        :ok

      {{:error, _}, :ok} ->
        Logger.info("tinycluster: EPMD on #{host.label} answers again", meta)

      {{:error, _}, {:error, _}} ->
        :ok

      {_, {:error, reason}} ->
        Logger.warning(
          "tinycluster: cannot list the nodes of #{host.label} " <>
            "(EPMD at #{host.address}:#{host.epmd_port}): #{inspect(reason)}",
          meta
        )
    end

    if host.malformed != [] and (previous == nil or previous.malformed == []) do
      Logger.warning(
        "tinycluster: EPMD on #{host.label} listed #{length(host.malformed)} malformed " <>
          "entries, skipped: #{inspect(Enum.take(host.malformed, 3))}",
        meta
      )
    end
  end

  defp status(state) do
    %{
      node: node(),
      options: state.opts,
      scanning: state.scan != nil,
      scans: state.scans,
      last_scan: state.last_scan,
      hosts: state.hosts,
      candidates: Map.new(state.candidates, fn {_key, entry} -> {entry.name, entry} end)
    }
  end
end
