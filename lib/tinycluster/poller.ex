defmodule Tinycluster.Poller do
  # The GenServer behind `Tinycluster`: polls on a timer, runs one scan at a time, connects
  # the live candidates in supervised tasks, and keeps the state `Tinycluster.status/1` shows.
  # Every change of a candidate's state goes through `put_candidate/3`, which hands it to
  # `Tinycluster.Poller.Report` (the words of every log line and node event), so that each
  # change is reported once and nothing per poll.
  #
  # When a scan ends, the next one is asked for at once, to start an interval after the last
  # started (`delay_ms`, native/tinycluster_nif/src/pending.rs): an idle poll then wakes this
  # process once, for the report, instead of twice (timer, then report), and each wake-up of
  # a scheduler costs more than the poll's own work (bench idle). What the request depends
  # on may change meanwhile (a node connects or goes down, a connect fails); then the
  # waiting scan is called off and asked for again with the same start (`refresh/1`). With
  # DNS seeds, which are looked up just before each scan, a timer starts every poll.
  @moduledoc false

  use GenServer

  alias Tinycluster.Poller.Report

  alias Tinycluster.{
    Await,
    Backoff,
    Batch,
    Candidate,
    Discovery,
    DnsSeed,
    Filter,
    Hosts,
    Native,
    NodeName,
    Options,
    Telemetry,
    Tls
  }

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
      dns: DnsSeed.new(opts.hosts),
      connecting: %{},
      tls: %{},
      last_scan: nil,
      scans: 0,
      warned_not_distributed: false,
      warned_hosts: false,
      refreshing: false,
      subscribers: Await.subscribers()
    }

    {:ok, state, {:continue, :poll}}
  end

  @impl true
  def handle_continue(:poll, state), do: {:noreply, poll(state)}

  @impl true
  def handle_call(:status, _from, state), do: {:reply, status(state), state}

  # `Tinycluster.await/1`: see `Tinycluster.Await` for who is notified when.
  def handle_call({:tinycluster_subscribe, alias}, {pid, _}, state) do
    subscribers = Await.subscribe(state.subscribers, pid, alias)
    {:reply, {:ok, status(state)}, %{state | subscribers: subscribers}}
  end

  @impl true
  def handle_cast({:tinycluster_unsubscribe, alias}, state),
    do: {:noreply, %{state | subscribers: Await.unsubscribe(state.subscribers, alias)}}

  @impl true
  def handle_info(:poll, state), do: {:noreply, poll(state)}

  def handle_info(:refresh_scan, state), do: {:noreply, refresh(%{state | refreshing: false})}

  # With the others of the same scan already queued: see `Tinycluster.Batch`.
  def handle_info({:tinycluster_scan, id, {:candidates, list}}, %{scan: %{id: id}} = state),
    do: {:noreply, candidates(Batch.take_queued(id, list), state)}

  def handle_info({:tinycluster_scan, id, event}, %{scan: %{id: id}} = state) do
    state = handle_event(event, state)
    if match?({:done, _}, event), do: notify(state)
    {:noreply, state}
  end

  # A late message from a scan the watchdog already gave up on.
  def handle_info({:tinycluster_scan, _id, _event}, state), do: {:noreply, state}

  def handle_info({:scan_timeout, id}, %{scan: %{id: id}} = state) do
    Report.log(
      state.opts,
      :warning,
      "tinycluster: a scan did not finish in time; starting over",
      []
    )

    # Its candidates' events may be lost: the next scan reports every candidate again.
    hosts = Map.new(state.hosts, fn {label, host} -> {label, Map.put(host, :listing, nil)} end)
    {:noreply, %{state | scan: nil, hosts: hosts} |> schedule(0)}
  end

  def handle_info({:scan_timeout, _id}, state), do: {:noreply, state}

  def handle_info({ref, answers}, %{scan: %{dns: ref}} = state) do
    Process.demonitor(ref, [:flush])
    {:noreply, seeds_answered(state, answers)}
  end

  def handle_info({:DOWN, ref, :process, _, _reason}, %{scan: %{dns: ref}} = state) do
    answers = Map.new(state.dns, fn {name, _} -> {name, {:error, :lookup_crashed}} end)
    {:noreply, seeds_answered(state, answers)}
  end

  def handle_info({ref, result}, %{connecting: connecting} = state)
      when is_map_key(connecting, ref) do
    Process.demonitor(ref, [:flush])
    {key, connecting} = Map.pop(connecting, ref)
    state = connected(%{state | connecting: connecting}, key, result)
    {:noreply, state |> request_changed() |> notify()}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{connecting: connecting} = state)
      when is_map_key(connecting, ref) do
    {key, connecting} = Map.pop(connecting, ref)
    state = connected(%{state | connecting: connecting}, key, {:crashed, reason})
    {:noreply, state |> request_changed() |> notify()}
  end

  # Said after the work already queued (other candidates' connects), not before it.
  def handle_info({:tinycluster_connected, entry}, state) do
    meta = [tinycluster_node: entry.name, tinycluster_state: :connected]
    Report.log(state.opts, :info, "tinycluster: connected to #{entry.name}", meta)
    Report.node(state.opts, :connected, entry)
    {:noreply, state}
  end

  def handle_info({:DOWN, ref, :process, _, _}, state) when is_map_key(state.subscribers, ref),
    do: {:noreply, %{state | subscribers: Await.unsubscribe(state.subscribers, ref)}}

  def handle_info({:nodeup, node, _info}, state),
    do: {:noreply, node_event(state, node, :up) |> request_changed() |> notify()}

  def handle_info({:nodedown, node, info}, state) do
    state = node_event(state, node, {:down, info[:nodedown_reason]})
    {:noreply, state |> request_changed() |> notify()}
  end

  def handle_info(_other, state), do: {:noreply, state}

  ## Polling

  defp poll(state, delay_ms \\ 0)

  defp poll(%{scan: %{}} = state, _delay_ms), do: state

  defp poll(state, delay_ms) do
    case Discovery.request(state.opts, Node.list(:connected), state.tls) do
      {:ok, request} ->
        state |> warn_hosts_once() |> look_up_seeds(request, delay_ms)

      {:error, :not_distributed} ->
        unless state.warned_not_distributed do
          Report.log(
            state.opts,
            :warning,
            "tinycluster: this node is not distributed (#{node()}), so it cannot connect to " <>
              "other nodes; start it with --sname or --name, or call Node.start/2. " <>
              "tinycluster starts clustering as soon as it is.",
            []
          )
        end

        schedule(%{state | warned_not_distributed: true}, state.opts.interval)
    end
  end

  # Hosts given in a form this node's naming mode or address family cannot use: said once,
  # when the node is first distributed (the mode is not known before).
  defp warn_hosts_once(%{warned_hosts: true} = state), do: state

  defp warn_hosts_once(state) do
    for line <- Hosts.warnings(state.opts.hosts), do: Report.log(state.opts, :warning, line, [])
    %{state | warned_hosts: true}
  end

  # DNS seeds are looked up in a task, never here, and the scan starts when they answered;
  # `scan` holds the lookup meanwhile, so that no second poll starts.
  defp look_up_seeds(state, request, delay_ms) when map_size(state.dns) == 0,
    do: start_scan(state, request, delay_ms)

  defp look_up_seeds(state, request, _delay_ms) do
    args = [state.opts.hosts, request.family, Options.dns_timeout(state.opts)]
    task = Task.Supervisor.async_nolink(state.tasks, DnsSeed, :lookup_all, args)
    %{state | scan: %{dns: task.ref, request: request}}
  end

  defp seeds_answered(state, answers) do
    {dns, lines} = DnsSeed.update(state.dns, answers)
    for {level, line, meta} <- lines, do: Report.log(state.opts, level, line, meta)
    request = Discovery.with_seeds(state.scan.request, dns)
    start_scan(%{state | dns: dns, scan: nil}, request, 0)
  end

  defp start_scan(state, request, delay_ms) do
    # A candidate that failed is left alone, probe included, until it is due (see Backoff)
    # when the scan starts; the scan still reports it as listed, and probes it at once at a
    # new port.
    now_ms = System.monotonic_time(:millisecond)
    request = Map.put(request, :hold, Backoff.holds(state.candidates, now_ms + delay_ms))
    # A host whose answer lists what it did last time, all connected or held, sends no
    # event of its own; the report carries it (native/tinycluster_nif/src/unchanged.rs).
    listings =
      for {label, %{listing: digest}} when is_integer(digest) <- state.hosts,
          do: {label, digest}

    request = Map.put(request, :last_listings, listings)

    request = if delay_ms > 0, do: Map.put(request, :delay_ms, delay_ms), else: request

    case Native.start_scan(request) do
      {:ok, id} ->
        started(state, id, request, nil, delay_ms)

      {:ok, id, pending} ->
        started(state, id, request, pending, delay_ms)

      {:error, reason} ->
        Report.log(
          state.opts,
          :error,
          "tinycluster: could not start a scan: #{inspect(reason)}",
          []
        )

        schedule(state, state.opts.interval)
    end
  end

  defp started(state, id, request, pending, delay_ms) do
    # Cancelled when the scan ends: a stale timeout would wake the scheduler once more per
    # poll for nothing.
    deadline = Discovery.deadline(state.opts) + delay_ms
    watchdog = Process.send_after(self(), {:scan_timeout, id}, deadline)
    delay = System.convert_time_unit(delay_ms, :millisecond, :native)

    start = %{
      measurements: %{
        system_time: System.system_time() + delay,
        monotonic_time: System.monotonic_time() + delay
      },
      metadata: %{
        poller: state.opts.name,
        hosts: Enum.map(request.hosts, & &1.label),
        seeds: DnsSeed.counts(state.dns)
      }
    }

    # A scan that waits for its start tells of it with its report: nothing wakes this
    # process when it starts.
    if pending == nil, do: emit_start(start)

    scan = %{
      id: id,
      started: start.measurements.monotonic_time,
      start_event: start,
      request: request,
      pending: pending,
      watchdog: watchdog
    }

    %{state | scan: scan, warned_not_distributed: false}
  end

  defp emit_start(%{measurements: measurements, metadata: metadata}),
    do: Telemetry.execute([:tinycluster, :scan, :start], measurements, metadata)

  # The scan that waits for its start no longer fits what changed: called off and asked for
  # again, to start when it would have. Changes come in bursts (a batch of connects), so
  # they are gathered into one `:refresh_scan` message.
  defp request_changed(%{scan: %{pending: pending}, refreshing: false} = state)
       when pending != nil do
    send(self(), :refresh_scan)
    %{state | refreshing: true}
  end

  defp request_changed(state), do: state

  defp refresh(%{scan: %{pending: pending} = scan} = state) when pending != nil do
    case Native.call_off(pending) do
      :ok ->
        :erlang.cancel_timer(scan.watchdog, async: true, info: false)
        now = System.monotonic_time()
        wait = System.convert_time_unit(scan.started - now, :native, :millisecond)
        poll(%{state | scan: nil}, max(wait, 0))

      # It started on what it was given; the next one will fit.
      {:error, :started} ->
        state
    end
  end

  defp refresh(state), do: state

  # The next poll comes `interval` after the start of the last, or at once if it overran.
  defp schedule(state, delay) do
    Process.send_after(self(), :poll, max(delay, 0))
    state
  end

  ## Scan events

  defp handle_event({:listed, listed}, state) do
    Discovery.admit(state.opts, state.scan.request, state.scan.id, listed)
    state
  end

  defp handle_event({:host, host}, state), do: host_answered(state, host)

  defp handle_event({:done, report}, state) do
    :erlang.cancel_timer(state.scan.watchdog, async: true, info: false)
    if state.scan.pending != nil, do: emit_start(state.scan.start_event)
    # An unchanged host sent no event of its own (native/tinycluster_nif/src/unchanged.rs).
    state =
      for %{unchanged: true} = host <- report.hosts,
          reduce: state,
          do: (acc -> host_answered(acc, host))

    scan_done(state, report)
  end

  defp host_answered(state, host) do
    previous = Map.get(state.hosts, host.label)
    Report.host(state.opts, previous, host)
    last_ok = if host.status == :ok, do: DateTime.utc_now(), else: previous[:last_ok_at]
    host = Map.put(host, :last_ok_at, last_ok)
    %{state | hosts: Map.put(state.hosts, host.label, host)}
  end

  defp scan_done(state, report) do
    listed = MapSet.new(report.candidates, &{&1.host, &1.alive})
    answered = for %{status: :ok, label: label} <- report.hosts, into: MapSet.new(), do: label
    # A host no longer asked is an address that left a DNS seed's answer.
    asked = MapSet.new(state.scan.request.hosts, & &1.label)

    state =
      Enum.reduce(state.candidates, state, fn {{host, _} = key, entry}, acc ->
        gone? = MapSet.member?(answered, host) or not MapSet.member?(asked, host)

        if gone? and not MapSet.member?(listed, key) do
          gone(acc, key, entry)
        else
          acc
        end
      end)

    now = System.monotonic_time()
    elapsed_ms = System.convert_time_unit(now - state.scan.started, :native, :millisecond)
    counts = Enum.frequencies_by(report.candidates, & &1.state)
    failed = for %{status: {:error, _}, label: label} <- report.hosts, do: label

    Telemetry.execute(
      [:tinycluster, :scan, :stop],
      %{
        duration: now - state.scan.started,
        candidates: length(report.candidates),
        live: Map.get(counts, :live, 0) + Map.get(counts, :hidden, 0),
        connected: Enum.count(state.candidates, fn {_, c} -> c.state == :connected end)
      },
      %{
        poller: state.opts.name,
        hosts: Enum.map(report.hosts, & &1.label),
        failed_hosts: failed,
        seeds: DnsSeed.counts(state.dns)
      }
    )

    %{
      state
      | scan: nil,
        hosts: Map.take(state.hosts, MapSet.to_list(asked)),
        scans: state.scans + 1,
        tls: Map.take(state.tls, Map.keys(state.candidates)),
        last_scan: %{
          at: DateTime.utc_now(),
          duration_us: report.duration_us,
          hosts: length(report.hosts),
          failed_hosts: failed,
          candidates: length(report.candidates),
          by_state: counts
        }
    }
    |> next_scan(state.opts.interval - elapsed_ms)
  end

  defp next_scan(state, delay_ms) when delay_ms > 0 and map_size(state.dns) == 0,
    do: poll(state, delay_ms)

  defp next_scan(state, delay_ms), do: schedule(state, delay_ms)

  # Every connect of the batch starts first; logs, telemetry and the rest come after.
  # Held back candidates are still listed (the scan's report says so): nothing new to learn.
  defp candidates(maps, state) do
    now = DateTime.utc_now()
    now_ms = System.monotonic_time(:millisecond)

    {changes, state} =
      for %{state: probed_state} = map <- maps, probed_state != :held do
        Candidate.from_native(map)
      end
      |> Enum.map_reduce(state, fn probed, state ->
        key = {probed.host, probed.alive}
        old = Map.get(state.candidates, key)

        entry =
          case old do
            nil -> %Candidate{probed | first_seen: now, last_seen: now}
            old -> merge(Backoff.restarted(old, probed), probed, now)
          end
          |> Backoff.after_probe(state.opts, now_ms)

        {state, entry} = maybe_connect(state, key, entry)
        {{old, entry, probed}, %{state | candidates: Map.put(state.candidates, key, entry)}}
      end)

    Enum.reduce(changes, state, fn {old, entry, probed}, state ->
      report_if_changed(state, old, entry)
      %{state | tls: Tls.learn(state.tls, probed)}
    end)
  end

  # What a fresh probe says wins, except that the poller's own view of a connection in
  # progress or refused is kept until the connect attempt says otherwise, and a connection
  # until its nodedown: a probe sent before the connection came up may answer after it.
  defp merge(old, probed, now) do
    state =
      cond do
        old.state == :connected and probed.state in [:live, :hidden] -> :connected
        old.state == :connecting and probed.state in [:live, :hidden, :not_allowed] -> :connecting
        old.state == :rejected and probed.state in [:live, :hidden, :not_allowed] -> :rejected
        true -> probed.state
      end

    reason =
      cond do
        state == probed.state -> probed.reason
        probed.state == :not_allowed -> :not_allowed
        true -> old.reason
      end

    %Candidate{
      probed
      | state: state,
        reason: reason,
        node: probed.node || old.node,
        latency_us: probed.latency_us || old.latency_us,
        first_seen: old.first_seen,
        last_seen: now,
        attempts: old.attempts,
        retry_at: old.retry_at
    }
  end

  defp gone(state, key, %Candidate{state: :gone, last_seen: last}) do
    if DateTime.diff(DateTime.utc_now(), last, :millisecond) > @forget_gone_after_ms,
      do: %{state | candidates: Map.delete(state.candidates, key)},
      else: state
  end

  defp gone(state, key, entry),
    do: put_candidate(state, key, %{entry | state: :gone, reason: nil})

  ## Connecting

  defp maybe_connect(%{opts: %{connect: false}} = state, _key, entry), do: {state, entry}

  defp maybe_connect(state, key, entry) do
    if connectable?(entry, state.opts) and due?(entry) do
      # A node that answered `not_allowed` named no one: its name is the one its host's EPMD
      # listed, which the answer proved to be a live distribution listener.
      case node_of(entry) do
        {:ok, node} ->
          task = Task.Supervisor.async_nolink(state.tasks, Node, :connect, [node])
          state = %{state | connecting: Map.put(state.connecting, task.ref, key)}
          reason = if entry.state == :not_allowed, do: :not_allowed, else: entry.reason
          {state, %{entry | state: :connecting, node: node, reason: reason}}

        {:error, reason} ->
          {state, %{entry | state: :bad_reply, reason: reason}}
      end
    else
      {state, entry}
    end
  end

  defp node_of(%Candidate{node: nil, name: name}), do: NodeName.to_atom(name)
  defp node_of(%Candidate{node: node}), do: {:ok, node}

  # The probe confirmed the name, and for another host that name may differ from the one
  # EPMD implied: the filters see the confirmed one too. A node with an allow list answers
  # every probe `not_allowed`, since no list names the probe; only a real attempt can tell
  # whether it lets this node in.
  defp connectable?(entry, opts) do
    Filter.allowed?(opts, entry.name) and
      ((entry.node != nil and entry.state in [:live, :rejected]) or
         entry.state == :not_allowed or
         (entry.node != nil and entry.state == :hidden and opts.include_hidden))
  end

  defp due?(%Candidate{state: :rejected, retry_at: retry_at}),
    do: retry_at != nil and System.monotonic_time(:millisecond) >= retry_at

  defp due?(_entry), do: true

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
    reason =
      cond do
        failure == false and entry.reason == :not_allowed -> :not_allowed
        failure == false -> :connect_failed
        true -> failure
      end

    Backoff.after_connect(entry, reason, opts, System.monotonic_time(:millisecond))
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

  ## Bookkeeping, logs and events

  defp put_candidate(state, key, entry) do
    report_if_changed(state, Map.get(state.candidates, key), entry)
    %{state | candidates: Map.put(state.candidates, key, entry)}
  end

  defp report_if_changed(state, old, entry) do
    if old == nil or old.state != entry.state, do: Report.change(state.opts, old, entry)
  end

  defp notify(state) do
    Await.notify(state.subscribers, fn -> status(state) end)
    state
  end

  # A scan that waits for its start is not under way yet.
  defp scanning?(nil), do: false

  defp scanning?(%{pending: pending, started: at}) when pending != nil,
    do: System.monotonic_time() >= at

  defp scanning?(_scan), do: true

  defp status(state) do
    now = System.monotonic_time(:millisecond)

    candidates =
      Map.new(state.candidates, fn {_key, entry} ->
        retry_in = entry.retry_at && max(entry.retry_at - now, 0)
        {entry.name, %{entry | description: Candidate.describe(entry), retry_in_ms: retry_in}}
      end)

    %{
      node: node(),
      options: state.opts,
      scanning: scanning?(state.scan),
      scans: state.scans,
      last_scan: state.last_scan,
      hosts: state.hosts,
      dns: DnsSeed.status(state.dns),
      candidates: candidates,
      by_host: Hosts.group(candidates, state.hosts, state.opts.hosts)
    }
  end
end
