defmodule Tinycluster.Poller do
  # The GenServer behind `Tinycluster`. It only routes: each message goes to the module that
  # owns its state, and the poller applies what comes back (timers, the scan under way,
  # connect tasks, notifications to waiters). The flow of one poll is the README's
  # "Architecture"; a scan that outlives its deadline is cancelled in the NIF and the next
  # one starts at once.
  @moduledoc false

  use GenServer

  alias Tinycluster.{Await, Batch, Candidates, Discovery, DnsSeed, HostTable, Hosts, Leave}
  alias Tinycluster.{Report, Status}

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
      # nil, %{dns: ref, request: request} while the seeds are looked up, or the scan.
      scan: nil,
      candidates: Candidates.new(),
      hosts: HostTable.new(),
      dns: DnsSeed.new(opts.hosts),
      # Connect tasks: task ref -> candidate key.
      connecting: %{},
      scans: 0,
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
  # `Tinycluster.Candidates.Left` for what each one makes of the candidates. A peer's leave
  # is a call, answered once it holds the node, and checked against the caller's node.
  def handle_call({:tinycluster_leave, name, creation}, {pid, _}, state)
      when is_binary(name) and is_integer(creation) and is_pid(pid) do
    message = %{name: name, creation: creation, sender: node(pid)}
    {result, candidates, changes} = Candidates.leave(state.candidates, message, Candidates.now())
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

  def handle_info({:tinycluster_scan, id, event}, %{scan: %{id: id}} = state),
    do: {:noreply, scan_event(event, state)}

  # A late message from a scan the watchdog already cancelled.
  def handle_info({:tinycluster_scan, _id, _event}, state), do: {:noreply, state}

  def handle_info({:scan_timeout, id}, %{scan: %{id: id} = scan} = state) do
    Discovery.cancel(scan)
    Report.unreachable(state.opts, Enum.reverse(scan.unreachable))
    Report.scan_timed_out(state.opts)
    # Its candidates' events may be lost: the next scan reports every candidate again.
    hosts = HostTable.forget_listings(state.hosts)
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
  # (`Tinycluster.Candidates.Left.node_up/4`).
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

  defp poll(%{scan: nil} = state) do
    candidates = Candidates.cookies(state.candidates, &:erlang.get_cookie/1)
    {hosts, specs} = HostTable.specs(state.hosts, state.opts.hosts, node(), Hosts.family())
    state = %{state | candidates: candidates, hosts: hosts}

    connected = Node.list(:connected)

    extra = %{
      hosts: specs,
      hold: Candidates.holds(candidates, System.monotonic_time(:millisecond), connected),
      tls: Candidates.tls_probes(candidates),
      first: Candidates.first(candidates)
    }

    case Discovery.request(state.opts, connected, extra) do
      {:ok, request} ->
        warned = Report.once(state.opts, state.warned, :hosts)

        warned =
          if request.capped == [],
            do: warned,
            else: Report.once(state.opts, warned, {:capped, request.capped})

        state = %{state | warned: warned}
        if map_size(state.dns) == 0, do: start_scan(state, request), else: look_up(state, request)

      {:error, :not_distributed} ->
        warned = Report.once(state.opts, state.warned, :not_distributed)
        schedule(%{state | warned: warned}, state.opts.interval)
    end
  end

  # A timer from before a scan that is still under way: that scan's end schedules the next.
  defp poll(state), do: state

  # DNS seeds are looked up in a task, never here, and the scan starts when they answered;
  # `scan` holds the lookup meanwhile, so that no second poll starts.
  defp look_up(state, request) do
    args = [state.opts.hosts, request.family, state.opts.dns_timeout]
    task = Task.Supervisor.async_nolink(state.tasks, DnsSeed, :lookup_all, args)
    %{state | scan: %{dns: task.ref, request: request}}
  end

  defp seeds_answered(state, answers) do
    {dns, lines} = DnsSeed.update(state.dns, answers)
    Report.lines(state.opts, lines)
    request = Discovery.with_seeds(state.scan.request, dns)
    start_scan(%{state | dns: dns, scan: nil}, request)
  end

  # Only the hosts due are asked (`Tinycluster.Pacing`); the others are still known, so
  # that their candidates are not taken for gone.
  defp start_scan(state, request) do
    started = System.monotonic_time()
    known = MapSet.new(request.hosts, & &1.label)

    due = HostTable.due(state.hosts, request.hosts, ms(started), state.opts)

    request =
      Map.merge(request, %{hosts: due, last_listings: HostTable.listings(state.hosts, due)})

    case Discovery.start(request) do
      {:ok, scan} ->
        labels = Enum.map(request.hosts, & &1.label)
        started = Report.scan_start(state.opts, labels, DnsSeed.counts(state.dns), started)
        deadline = Discovery.deadline(state.opts)
        watchdog = Process.send_after(self(), {:scan_timeout, scan.id}, deadline)
        more = %{request: request, known: known, started: started, watchdog: watchdog}
        scan = scan |> Map.merge(more) |> Map.put(:unreachable, [])
        %{state | scan: scan, warned: Report.scan_started(state.warned)}

      # Said once per reason: the next polls would most often meet the same refusal.
      {:error, reason} ->
        warned = Report.once(state.opts, state.warned, {:scan_not_started, reason})
        schedule(%{state | warned: warned}, state.opts.interval)
    end
  end

  # The next poll comes `delay` ms from now, or at once.
  defp schedule(state, delay) do
    Process.send_after(self(), :poll, max(delay, 0))
    state
  end

  ## A scan's events

  defp scan_event({:listed, listed}, state) do
    Discovery.admit(state.opts, state.scan, listed)
    state
  end

  defp scan_event({:host, host}, state), do: host_answered(state, host)

  # With the others of the same scan already queued: see `Tinycluster.Batch`.
  defp scan_event({:candidates, maps}, state) do
    maps = Batch.take_queued(state.scan.id, maps)
    now = Candidates.now()
    {candidates, connects, changes} = Candidates.probed(state.candidates, maps, state.opts, now)
    # Every connect of the batch starts first; logs, telemetry and the rest come after.
    connecting =
      Enum.reduce(connects, state.connecting, fn {key, node}, acc ->
        task = Task.Supervisor.async_nolink(state.tasks, fn -> connect(node) end)
        Map.put(acc, task.ref, key)
      end)

    # Said together at the scan's end (`Report.unreachable/2`).
    unreachable = for {_, %{state: :unreachable} = entry} <- changes, do: entry
    scan = %{state.scan | unreachable: unreachable ++ state.scan.unreachable}
    apply_changes(%{state | connecting: connecting, scan: scan}, {candidates, changes})
  end

  defp scan_event({:done, report}, state) do
    :erlang.cancel_timer(state.scan.watchdog, async: true, info: false)
    # An unchanged host sent no event of its own (native/tinycluster_nif/src/unchanged.rs).
    state =
      for %{unchanged: true} = host <- report.hosts, reduce: state do
        acc -> host_answered(acc, host)
      end

    %{known: known, started: started} = state.scan
    Report.unreachable(state.opts, Enum.reverse(state.scan.unreachable))
    now = Candidates.now()
    listing = Discovery.listing(report, known)
    warned = Report.deferred(state.opts, state.warned, length(listing.deferred))
    {candidates, changes} = Candidates.scan_ended(state.candidates, listing, now)
    connected = Candidates.count(candidates, :connected)
    Report.scan_stop(state.opts, started, report, connected, DnsSeed.counts(state.dns))
    elapsed = ms(System.monotonic_time() - started)

    hosts =
      HostTable.keep(state.hosts, known) |> HostTable.paced(report.hosts, state.opts, ms(started))

    %{
      state
      | scan: nil,
        warned: warned,
        hosts: hosts,
        scans: state.scans + 1,
        last_scan: Status.last_scan(report, candidates, now.at)
    }
    |> apply_changes({candidates, changes})
    |> notify()
    |> schedule(state.opts.interval - elapsed)
  end

  defp host_answered(state, host) do
    {hosts, previous} = HostTable.answered(state.hosts, host, DateTime.utc_now())
    Report.host(state.opts, previous, host)
    %{state | hosts: hosts}
  end

  ## Connections

  # In a task: the connection attempt, and the digest of the cookie it was made with.
  defp connect(node) do
    cookie = Candidates.cookie_digest(:erlang.get_cookie(node))
    {Node.connect(node), cookie}
  end

  defp connect_ended(state, ref, result, cookie) do
    {key, connecting} = Map.pop(state.connecting, ref)
    now = Candidates.now()

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

  defp notify(state) do
    Await.notify(state.subscribers, fn -> status(state) end)
    state
  end

  defp status(state) do
    parts = Map.take(state, [:opts, :scans, :last_scan, :hosts, :dns, :candidates])
    scanning = match?(%{id: _}, state.scan)
    Status.build(Map.put(parts, :scanning, scanning), System.monotonic_time(:millisecond))
  end
end
