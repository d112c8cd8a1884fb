defmodule Tinycluster.Poller do
  # The GenServer behind `Tinycluster`. It only routes: each message goes to the module that
  # owns its state, and the poller applies what comes back (timers, the scan under way,
  # connect tasks, notifications to waiters). The flow of one poll is the README's
  # "Architecture"; a scan that outlives its deadline is cancelled in the NIF and the next
  # one starts at once.
  @moduledoc false

  use GenServer

  alias Tinycluster.{Await, Candidate, Discovery, DnsSeed, Leave, LocalNode, NodeName}
  alias Tinycluster.Poller.{Batch, Candidates, HostTable, Report}
  alias Tinycluster.Status
  alias Tinycluster.Poller.Candidates.Stalls

  @doc false
  def start_link(%Tinycluster.Options{} = opts) do
    GenServer.start_link(__MODULE__, opts, name: opts.name)
  end

  @impl true
  def init(opts) do
    {:ok, tasks} = Task.Supervisor.start_link()
    # Every node type (a hidden node's connection going down matters as much), with reasons.
    :ok = :net_kernel.monitor_nodes(true, [:nodedown_reason, node_type: :all])

    state = %{
      opts: opts,
      tasks: tasks,
      # The DNS seeds' lookup under way (`%{ref: ref, started: ms}`), or nil.
      lookup: nil,
      # The scans under way, by id: each asks the hosts no other scan asks.
      scans: %{},
      # The hosts of the latest poll, asked or not: a candidate of another is gone.
      known: MapSet.new(),
      # The hosts `known` was made of.
      known_of: nil,
      candidates: Candidates.new(),
      hosts: HostTable.new(),
      dns: DnsSeed.Table.new(opts.hosts),
      # Connect tasks: task ref -> candidate key.
      connecting: %{},
      scans_done: 0,
      last_scan: nil,
      # One-time warnings said, and not to be said again: see `Report.once/3`.
      warned: MapSet.new(),
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

  # Leaving and joining: see `Tinycluster.Leave` for who sends what, and
  # `Tinycluster.Poller.Candidates.Left` for what each one makes of the candidates. A peer's leave
  # is a call, answered once it holds the node, and checked against the caller's node.
  def handle_call({:tinycluster_leave, name, creation}, {pid, _}, state)
      when is_binary(name) and is_integer(creation) and is_pid(pid) do
    message = %{name: name, creation: creation, sender: node(pid)}
    {result, candidates, changes} = Candidates.leave(state.candidates, message, now())
    Report.told(state.opts, :leave, result, message)
    {:reply, result, state |> apply_changes({candidates, changes}) |> notify()}
  end

  def handle_call({:tinycluster_leave_self, tell}, _from, state) do
    creation = :erlang.system_info(:creation)
    tell = tell || [state.opts.name]
    candidates = Candidates.leave_self(state.candidates, creation, tell, DateTime.utc_now())
    Report.self_left(state.opts)
    state = notify(%{state | candidates: candidates})
    {:reply, {:ok, %{creation: creation, tell: tell}}, state}
  end

  def handle_call({:tinycluster_told, nodes}, _from, state),
    do: {:reply, :ok, %{state | candidates: Candidates.told(state.candidates, nodes)}}

  def handle_call(:tinycluster_join_self, _from, state) do
    if state.candidates.left.self, do: Report.self_joined(state.opts)
    {:reply, :ok, notify(%{state | candidates: Candidates.join_self(state.candidates)})}
  end

  # Anything else, a malformed leave from another node say, must not crash the poller.
  def handle_call(_other, _from, state), do: {:reply, {:error, :unknown_call}, state}

  @impl true
  def handle_cast({:tinycluster_unsubscribe, alias}, state),
    do: {:noreply, %{state | subscribers: Await.unsubscribe(state.subscribers, alias)}}

  def handle_cast({:tinycluster_join, name, creation, pid}, state)
      when is_binary(name) and is_integer(creation) and is_pid(pid) do
    message = %{name: name, creation: creation, sender: node(pid)}
    {result, candidates, changes} = Candidates.join(state.candidates, message)
    Report.told(state.opts, :join, result, message)
    {:noreply, state |> apply_changes({candidates, changes}) |> notify()}
  end

  def handle_cast(_other, state), do: {:noreply, state}

  @impl true
  def handle_info(:poll, state), do: {:noreply, poll(state)}

  def handle_info({:tinycluster_scan, id, event}, state) when is_map_key(state.scans, id),
    do: {:noreply, scan_event(event, id, state)}

  # A late message from a scan the watchdog already cancelled.
  def handle_info({:tinycluster_scan, _id, _event}, state), do: {:noreply, state}

  def handle_info({:scan_timeout, id}, state) when is_map_key(state.scans, id) do
    {scan, scans} = Map.pop(state.scans, id)
    Discovery.cancel(scan)
    Report.unreachable(state.opts, Enum.reverse(scan.unreachable))
    Report.scan_timed_out(state.opts)
    # Its candidates' events may be lost: the next scan reports every candidate again.
    hosts = HostTable.forget_listings(state.hosts)
    {:noreply, %{state | scans: scans, hosts: hosts}}
  end

  def handle_info({:scan_timeout, _id}, state), do: {:noreply, state}

  def handle_info({ref, answers}, %{lookup: %{ref: ref}} = state) do
    Process.demonitor(ref, [:flush])
    {:noreply, seeds_answered(state, answers)}
  end

  def handle_info({:DOWN, ref, :process, _, _reason}, %{lookup: %{ref: ref}} = state) do
    answers = Map.new(state.dns, fn {name, _} -> {name, {:error, :lookup_crashed}} end)
    {:noreply, seeds_answered(state, answers)}
  end

  def handle_info({ref, {result, cookie}}, state) when is_map_key(state.connecting, ref) do
    Process.demonitor(ref, [:flush])
    {:noreply, connect_ended(state, ref, result, cookie)}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, state)
      when is_map_key(state.connecting, ref),
      do: {:noreply, connect_ended(state, ref, {:crashed, reason}, nil)}

  def handle_info({:DOWN, ref, :process, _, _}, state) when is_map_key(state.subscribers, ref),
    do: {:noreply, %{state | subscribers: Await.unsubscribe(state.subscribers, ref)}}

  # Waiters are told of every node that comes or goes: `await(min_nodes: n)` counts nodes
  # whoever connected them. A nodeup may call for telling that node of a leave or a join
  # (`Tinycluster.Poller.Candidates.Left.node_up/4`).
  def handle_info({:nodeup, node, info}, state) do
    creation = :erlang.system_info(:creation)
    type = Keyword.get(info, :node_type, :visible)
    {candidates, action} = Candidates.tell_on_node_up(state.candidates, node, type, creation)
    tell(state, action)
    changed = Candidates.node_up(candidates, node)
    {:noreply, state |> apply_changes(changed) |> notify()}
  end

  def handle_info({:nodedown, node, info}, state) do
    changed = Candidates.node_down(state.candidates, node, info[:nodedown_reason])
    {:noreply, state |> apply_changes(changed) |> notify()}
  end

  def handle_info(_other, state), do: {:noreply, state}

  ## Polls

  # Every `interval`, from start to start: a scan still under way does not delay the next
  # poll, which asks the hosts due that no scan is asking (a slow or hostile host's late
  # probes hold back no other host).
  defp poll(%{lookup: nil} = state) do
    state = schedule(state, state.opts.interval)
    candidates = Candidates.cookies(state.candidates, &:erlang.get_cookie/1)

    {hosts, specs} = HostTable.specs(state.hosts, state.opts.hosts, node(), LocalNode.family())

    state = %{state | candidates: candidates, hosts: hosts}

    case Discovery.request(state.opts, specs) do
      {:ok, request} ->
        state = %{state | warned: Report.once(state.opts, state.warned, :hosts)}

        if map_size(state.dns) == 0,
          do: start_scan(state, request, System.monotonic_time()),
          else: look_up(state, request)

      {:error, :not_distributed} ->
        %{state | warned: Report.once(state.opts, state.warned, :not_distributed)}
    end
  end

  # A timer while the seeds are looked up: their answer starts the scan.
  defp poll(state), do: schedule(state, state.opts.interval)

  # DNS seeds are looked up in a task, never here, and the scan starts when they answered.
  defp look_up(state, request) do
    args = [state.opts.hosts, request.family, state.opts.dns_timeout]
    task = Task.Supervisor.async_nolink(state.tasks, DnsSeed.Lookup, :lookup_all, args)
    %{state | lookup: %{ref: task.ref, request: request, started: System.monotonic_time()}}
  end

  defp seeds_answered(state, answers) do
    {dns, lines} = DnsSeed.Table.update(state.dns, answers, DateTime.utc_now())
    Report.lines(state.opts, lines)
    request = Discovery.with_seeds(state.lookup.request, dns)
    start_scan(%{state | dns: dns, lookup: nil}, request, state.lookup.started)
  end

  # Only the hosts due are asked (`Tinycluster.Poller.Pacing`), and of those only the ones no
  # scan under way asks; the others are still known (the latest poll's hosts, whichever scan
  # ends), so that their candidates are not taken for gone.
  defp start_scan(state, request, started) do
    state = known(state, request.hosts)
    due = HostTable.due(state.hosts, request.hosts, ms(started), state.opts)
    due = if map_size(state.scans) == 0, do: due, else: not_busy(due, state.scans)

    if due == [] and map_size(state.scans) > 0 do
      state
    else
      begin_scan(state, %{request | hosts: due}, started)
    end
  end

  # The labels of a poll's hosts, made again only when its hosts changed (a DNS seed's
  # answer): a poll of hundreds of settled hosts asks a few, and spent more on this set
  # than on them. The same hosts are the same term (`HostTable.specs/4` keeps them), so
  # telling them unchanged costs no walk of the list.
  defp known(%{known_of: hosts} = state, hosts), do: state

  defp known(state, hosts),
    do: %{state | known: MapSet.new(hosts, & &1.label), known_of: hosts}

  defp not_busy(due, scans) do
    busy = for {_id, scan} <- scans, label <- scan.labels, into: MapSet.new(), do: label
    Enum.reject(due, &MapSet.member?(busy, &1.label))
  end

  defp begin_scan(state, request, started) do
    case Discovery.start(request) do
      {:ok, scan} ->
        labels = Enum.map(request.hosts, & &1.label)
        started = Report.scan_start(state.opts, labels, DnsSeed.Table.counts(state.dns), started)
        deadline = Discovery.deadline(state.opts)
        watchdog = Process.send_after(self(), {:scan_timeout, scan.id}, deadline)

        more = %{
          probed: [],
          labels: labels,
          started: started,
          watchdog: watchdog,
          unreachable: []
        }

        scans = Map.put(state.scans, scan.id, Map.merge(scan, more))
        %{state | scans: scans, warned: Report.scan_started(state.warned)}

      # Said once per reason: the next polls would most often meet the same refusal.
      {:error, reason} ->
        %{state | warned: Report.once(state.opts, state.warned, {:scan_not_started, reason})}
    end
  end

  # The next poll comes `delay` ms from now.
  defp schedule(state, delay) do
    Process.send_after(self(), :poll, max(delay, 0))
    state
  end

  ## A scan's events

  # The hosts that answered together: each one's listing planned here, once
  # (`Tinycluster.Poller.Plan`), and the targets handed to the NIF at once, in one call. A
  # host whose listing changed nothing sends no candidate of its own.
  defp scan_event({:listed, listings}, id, state) do
    context = Discovery.context(state.candidates, state.opts, System.monotonic_time(:millisecond))
    last_of = &HostTable.listing(state.hosts, &1)
    {scan, planned} = Discovery.listed(state.scans[id], listings, context, last_of)
    state = %{state | scans: Map.put(state.scans, id, scan)}
    state = Enum.reduce(planned, state, fn {host, _plan}, acc -> host_answered(acc, host) end)

    case for({_host, %{unchanged: false, planned: maps}} <- planned, map <- maps, do: map) do
      [] -> state
      maps -> candidates(state, id, maps)
    end
  end

  # With the others of the same scan already queued: see `Tinycluster.Poller.Batch`.
  defp scan_event({:candidates, maps}, id, state) do
    maps = Batch.take_queued(id, maps)
    scan = state.scans[id]
    Discovery.learn(scan, maps)
    maps = Discovery.confirmed(maps, Discovery.connected(), scan.tls_local)
    scans = Map.put(state.scans, id, %{scan | probed: Enum.reverse(maps, scan.probed)})
    candidates(%{state | scans: scans}, id, maps)
  end

  defp scan_event({:done, done}, id, state) do
    {scan, scans} = Map.pop(state.scans, id)
    :erlang.cancel_timer(scan.watchdog, async: true, info: false)
    state = %{state | scans: scans}
    # Its candidates as they came, read then (`candidates/3`): a node connected since is
    # counted as the probe found it.
    report = Discovery.report(scan, %{done | candidates: Enum.reverse(scan.probed)})

    # A host whose plan came too late probed nothing: its status says so.
    state =
      for %{status: {:error, :plan_timeout}} = host <- report.hosts, reduce: state do
        acc -> host_answered(acc, host)
      end

    Report.unreachable(state.opts, Enum.reverse(scan.unreachable))
    now = now()
    listing = Discovery.listing(scan, report, state.known)
    warned = Report.deferred(state.opts, state.warned, length(listing.deferred))

    # Every host refused its EPMD connection: the nodes may run without EPMD, which a
    # poller follows only with -erl_epmd_port. Said once.
    warned =
      if report.hosts != [] and Enum.all?(report.hosts, &(&1.status == {:error, :econnrefused})),
        do: Report.once(state.opts, warned, :no_epmd),
        else: warned

    {candidates, changes} = Candidates.scan_ended(state.candidates, listing, now)
    connected = Candidates.count(candidates, :connected)
    Report.scan_stop(state.opts, scan.started, report, connected, DnsSeed.Table.counts(state.dns))

    hosts =
      state.hosts
      |> HostTable.keep(state.known)
      |> HostTable.paced(report.hosts, state.opts, ms(scan.started))

    %{
      state
      | warned: warned,
        hosts: hosts,
        scans_done: state.scans_done + 1,
        last_scan: Status.last_scan(report, candidates, now.at)
    }
    |> apply_changes({candidates, changes})
    |> notify()
  end

  # Candidate maps of scan `id`, probed or planned: merged into the table, their connects
  # started first (every one of the batch), then logs, telemetry and the rest.
  defp candidates(state, id, maps) do
    now = now()
    {candidates, connects, changes} = Candidates.probed(state.candidates, maps, state.opts, now)

    # The atoms of the names the table chose to connect are made here, at its edge.
    connects = NodeName.to_atoms(connects)
    candidates = Candidates.named(candidates, connects)

    connecting =
      Enum.reduce(connects, state.connecting, fn {key, node}, acc ->
        task = Task.Supervisor.async_nolink(state.tasks, fn -> connect(node) end)
        Map.put(acc, task.ref, key)
      end)

    # Said together at the scan's end (`Report.unreachable/2`).
    unreachable = for {_, %Candidate{} = entry} <- changes, Report.at_scan_end?(entry), do: entry
    scans = Map.update!(state.scans, id, &%{&1 | unreachable: unreachable ++ &1.unreachable})
    apply_changes(%{state | connecting: connecting, scans: scans}, {candidates, changes})
  end

  defp host_answered(state, host) do
    {hosts, previous} = HostTable.answered(state.hosts, host, DateTime.utc_now())
    Report.host(state.opts, previous, host)
    %{state | hosts: hosts}
  end

  ## Connections

  # In a task: the connection attempt, and the digest of the cookie it was made with. A
  # `false` is timed here, where it happens, since only its duration tells a stall from a
  # refusal (`Stalls`).
  defp connect(node) do
    cookie = Candidates.cookie_digest(:erlang.get_cookie(node))
    setup_ms = Stalls.setup_ms(:application.get_env(:kernel, :net_setuptime))
    started = System.monotonic_time(:millisecond)
    result = Node.connect(node)
    took_ms = System.monotonic_time(:millisecond) - started
    {Stalls.classify(result, took_ms, setup_ms), cookie}
  end

  defp connect_ended(state, ref, result, cookie) do
    {key, connecting} = Map.pop(state.connecting, ref)
    now = now()

    {candidates, _} =
      changed = Candidates.connect_ended(state.candidates, key, result, state.opts, now, cookie)

    # A connection that came up for a node that left while it was in flight is undone.
    if node = Candidates.undo(candidates, key, result), do: Node.disconnect(node)
    %{state | connecting: connecting} |> apply_changes(changed) |> notify()
  end

  # The telling a nodeup calls for: a leave (and the disconnection after it) in a task, since
  # it waits for the peer's answer; a join at once, since it waits for nothing.
  defp tell(_state, nil), do: :ok

  defp tell(state, {:leave, node, names, creation}) do
    args = [node, names, creation]
    {:ok, _} = Task.Supervisor.start_child(state.tasks, Leave, :tell_and_disconnect, args)
    :ok
  end

  defp tell(_state, {:join, node, names, creation}), do: Leave.tell_join(node, names, creation)

  # Takes the candidates' table a rule returned, reports its changes, and reopens the hosts
  # they call for (`HostTable.reopen_for/4`).
  defp apply_changes(state, {candidates, changes}) do
    Report.changes(state.opts, changes)
    now = System.monotonic_time(:millisecond)
    hosts = HostTable.reopen_for(state.hosts, changes, now, state.opts)
    %{state | candidates: candidates, hosts: hosts}
  end

  defp ms(native), do: System.convert_time_unit(native, :native, :millisecond)

  # The time as the candidates' rules take it: read here, so that they stay pure.
  defp now, do: %{ms: System.monotonic_time(:millisecond), at: DateTime.utc_now()}

  defp notify(state) do
    Await.notify(state.subscribers, fn -> status(state) end)
    state
  end

  defp status(state) do
    parts = Map.take(state, [:opts, :last_scan, :hosts, :dns, :candidates])
    parts = Map.merge(parts, %{scans: state.scans_done, scanning: map_size(state.scans) > 0})
    Status.build(parts, System.monotonic_time(:millisecond))
  end
end
