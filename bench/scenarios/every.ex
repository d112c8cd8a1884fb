# Scenario 8: every node polling. In an application, tinycluster sits in every node's
# supervision tree, so every node runs a poller. N fresh measuring nodes (16 and 32, each
# with Elixir and tinycluster loaded) on one private EPMD, and three ways to cluster them,
# each on fresh nodes of the same kind in the same round:
#
#   every    - all N start `{Tinycluster, interval: 1_000}` at once (the driver sends the N
#              calls concurrently): from cold, then one more node started late, which runs
#              a poller too.
#   one      - only the first node runs the poller; the late node runs none.
#   parallel - only the first node clusters, with the probe-less parallel `Node.connect/1`
#              (dns_cluster's approach), once.
#
# Measured: the time from the call to the full mesh (each node reports, on the OS clock,
# when it is connected to all others). In every node, a tracer on `net_kernel` counts the
# connection requests it gets (`connect_node` calls, tinycluster's told apart from the rest,
# which is mostly `global` meshing, and auto-connects), and for every handshake it accepts
# the node it came from and how `net_kernel` answered it: `ok`, `ok_pending` (the peer is
# told `ok_simultaneous`), `nok_pending` (`nok`), `up_pending` (`alive`); probes, which
# claim `tinycluster_probe_*` names, are counted apart. A logger handler counts every event
# each node logs, by level, and keeps the warnings. The pollers say which candidates they
# saw refuse a connection. Once meshed (tracing off), the CPU time of every node and of
# EPMD over a window, and the polls meanwhile: CPU per poll of a polling node, net of an
# idle node of the same mesh (the `one` variant's non-polling nodes). Then the late node,
# which boots undistributed and registers with EPMD only once its tracer runs (and in
# "every" starts its own poller a random 0..interval later, as an application's tree
# starts a while after the VM): time from its registration to its full mesh, and what it
# cost (connect requests and handshakes that involve it, with their outcomes; probes it
# got; refusals; log lines), until two intervals after its full mesh.
defmodule Bench.Scenario.Every do
  alias Bench.{Driver, Epmd, Proc, Stats, VM}

  @interval 1_000
  @variants [:every, :one, :parallel]

  def run(ctx) do
    sizes = if ctx.smoke, do: [4], else: [16, 32]
    window = if ctx.smoke, do: 2_000, else: 10_000

    results =
      Driver.with_epmd(ctx, fn ctx ->
        for round <- 1..ctx.runs,
            size <- sizes,
            variant <- if(rem(round, 2) == 0, do: Enum.reverse(@variants), else: @variants) do
          Driver.progress(".")
          {{size, variant}, measure(ctx, size, variant, window)}
        end
      end)

    report(results, sizes, window)
  end

  ## Driver side

  defp measure(ctx, size, variant, window) do
    nodes =
      1..size
      |> Task.async_stream(fn _ -> Driver.start_measuring(ctx, "e", mesh: size - 1) end,
        timeout: 120_000,
        max_concurrency: 8
      )
      |> Enum.map(fn {:ok, vm} -> vm end)

    Driver.settle(ctx, nodes, 10_000)
    each(nodes, :child_prepare, [])
    clustering = if variant == :every, do: nodes, else: [hd(nodes)]
    approach = if variant == :parallel, do: :parallel, else: :tinycluster

    t0 = System.os_time(:microsecond)
    starts = each(clustering, :child_start, [approach])
    done = Enum.map(nodes, &VM.await_event(&1, fn e -> match?({:mesh, _, _}, e) end, 60_000))
    times = for {:mesh, t, _} <- done, do: t
    complete = length(times) == size
    # Two more intervals: whatever the pollers still do about the cold start is counted.
    Process.sleep(2 * @interval + 500)
    cold = collect(nodes, [])

    result = %{
      complete: complete,
      mesh_us: if(complete, do: Enum.max(times) - t0),
      start_spread_us: Enum.max(starts) - Enum.min(starts),
      cold: cold
    }

    result =
      if variant == :parallel,
        do: result,
        else: Map.merge(result, after_mesh(ctx, nodes, clustering, variant, window))

    Driver.kill(nodes ++ List.wrap(result[:late_vm]))
    Epmd.wait_empty(ctx.epmd, 30_000)
    Map.delete(result, :late_vm)
  end

  # Once meshed: the idle cost of the pollers and EPMD, then the late node.
  defp after_mesh(ctx, nodes, pollers, variant, window) do
    each(nodes, :child_trace, [false])
    Process.sleep(1_000)
    polls0 = each(pollers, :child_polls, [])
    cpu0 = Enum.map(nodes, &Proc.cpu_ns(&1.os_pid))
    epmd0 = Proc.cpu_ns(ctx.epmd.os_pid)
    w0 = System.monotonic_time(:microsecond)
    Process.sleep(window)
    cpu1 = Enum.map(nodes, &Proc.cpu_ns(&1.os_pid))
    epmd1 = Proc.cpu_ns(ctx.epmd.os_pid)
    wall = System.monotonic_time(:microsecond) - w0
    polls = Enum.zip_with(each(pollers, :child_polls, []), polls0, &-/2)
    cpu = Enum.zip_with(cpu1, cpu0, &-/2)
    {poller_cpu, idle_cpu} = Enum.split(cpu, length(pollers))

    each(nodes, :child_trace, [true])
    each(nodes, :child_reset, [])
    # The late node boots undistributed and registers only once its tracer can watch
    # net_kernel from the start: the pollers would otherwise connect it during its boot.
    late_alive = Driver.name(ctx, "late")
    late = Driver.start_measuring(ctx, "late", alive: nil, mesh: length(nodes))
    registered = VM.call(late, __MODULE__, :child_late, [late_alive, variant == :every])

    late_mesh =
      case VM.await_event(late, &match?({:mesh, _, _}, &1), 60_000) do
        {:mesh, t, _} -> t - registered
        nil -> nil
      end

    Process.sleep(2 * @interval + 500)
    late_stats = collect(nodes ++ [late], [Atom.to_string(Bench.Util.node_name(late_alive))])

    %{
      window_us: wall,
      polls: polls,
      poller_cpu_ns: poller_cpu,
      idle_cpu_ns: idle_cpu,
      epmd_cpu_ns: epmd1 - epmd0,
      late_mesh_us: late_mesh,
      late: late_stats,
      late_vm: late
    }
  end

  defp each(vms, fun, args) do
    vms
    |> Task.async_stream(&VM.call(&1, __MODULE__, fun, args), timeout: 60_000, max_concurrency: 64)
    |> Enum.map(fn {:ok, result} -> result end)
  end

  # Every node's counts, summed; with `about`, only what involves those nodes (by name) and
  # what the node of that name itself did.
  defp collect(vms, about) do
    stats = each(vms, :child_stats, [about])

    Enum.reduce(stats, %{}, fn s, acc ->
      Map.merge(acc, s, fn
        :warnings, a, b -> Enum.take(a ++ b, 5)
        _, a, b -> a + b
      end)
    end)
  end

  ## Inside a measuring node

  @doc false
  # The recorder: traces net_kernel and receives this node's log events (see the top).
  def child_prepare do
    parent = self()

    pid =
      spawn(fn ->
        Process.register(self(), :bench_every)
        send(parent, :ready)
        recorder(fresh(), %{})
      end)

    receive do: (:ready -> :ok)
    :ok = :logger.add_handler(:bench_every, __MODULE__, %{level: :all})
    trace(pid, true)
    :ok
  end

  defp trace(pid, on) do
    case Process.whereis(:net_kernel) do
      nil -> 0
      net_kernel -> :erlang.trace(net_kernel, on, [:send, :receive, {:tracer, pid}])
    end
  end

  @doc false
  # The late node: the recorder, then distribution and the trace, then (for "every") its
  # poller, a random 0..interval later, as an application starts its supervision tree a
  # while after the VM registered: the other pollers may find it first. Returns the OS
  # time of its registration with EPMD.
  def child_late(alive, poll?) do
    :ok = child_prepare()
    {:ok, _} = Node.start(String.to_atom(alive), :shortnames)
    registered = System.os_time(:microsecond)
    child_trace(true)

    if poll? do
      home = self()

      spawn(fn ->
        Process.sleep(:rand.uniform(@interval) - 1)
        send(home, {:start_poller, self()})
      end)

      # The poller is started by the agent's home process, which owns it.
      receive do: ({:start_poller, _} -> Bench.Approach.once(:tinycluster, interval: @interval))
    end

    registered
  end

  @doc false
  def child_trace(on) do
    trace(Process.whereis(:bench_every), on)
    :ok
  end

  @doc false
  def child_reset, do: call(:reset)

  @doc false
  def child_start(approach) do
    t0 = System.os_time(:microsecond)

    case approach do
      :tinycluster -> Bench.Approach.once(:tinycluster, interval: @interval)
      :parallel -> spawn(fn -> Bench.Approach.once(:parallel, []) end)
    end

    t0
  end

  @doc false
  def child_polls, do: Tinycluster.status(:bench_poller).scans

  @doc false
  # This node's counts. With `about` (node names), only what involves them: connection
  # requests for them, handshakes from them; all of it if this node is one of them.
  def child_stats(about) do
    %{counts: counts, warnings: warnings, logs: logs} = call(:get)
    me = Atom.to_string(node())
    keep? = fn name -> about == [] or me in about or name in about end

    sum = fn kind ->
      Enum.sum(for {{^kind, name, _}, n} <- counts, keep?.(name), do: n)
    end

    outcome = fn ret ->
      Enum.sum(for {{:accept, name, ^ret}, n} <- counts, keep?.(name), do: n)
    end

    refusals =
      case Process.whereis(:bench_poller) do
        nil ->
          0

        _ ->
          Tinycluster.status(:bench_poller).candidates
          |> Enum.count(fn {name, c} ->
            keep?.(name) and (c.attempts > 0 or c.state == :rejected)
          end)
      end

    %{
      tc_connects: sum.(:tc_connect),
      other_connects: sum.(:connect),
      auto_connects: sum.(:auto_connect),
      probes: sum.(:probe),
      ok: outcome.(:ok),
      ok_simultaneous: outcome.(:ok_pending),
      nok: outcome.(:nok_pending),
      alive: outcome.(:up_pending) + outcome.(:already_pending),
      refusals: refusals,
      info_logs: Map.get(logs, :info, 0) + Map.get(logs, :notice, 0) + Map.get(logs, :debug, 0),
      warning_logs: Enum.sum(for {l, n} <- logs, l not in [:info, :notice, :debug], do: n),
      warnings: warnings
    }
  end

  @doc false
  # logger handler callback: every event this node logs goes to the recorder.
  def log(%{level: level, msg: msg, meta: meta}, _config) do
    text =
      if Logger.compare_levels(level, :warning) != :lt do
        msg |> format(meta) |> String.slice(0, 200)
      end

    send(:bench_every, {:log, level, text})
    :ok
  end

  defp format({:string, s}, _), do: IO.chardata_to_string(s)

  defp format({:report, r}, %{report_cb: cb}) when is_function(cb, 1) do
    {f, a} = cb.(r)
    f |> :io_lib.format(a) |> IO.chardata_to_string()
  end

  defp format({:report, r}, _), do: inspect(r)
  defp format({f, a}, _), do: f |> :io_lib.format(a) |> IO.chardata_to_string()

  defp call(request) do
    send(:bench_every, {request, self()})

    receive do
      {:bench_every, reply} -> reply
    after
      10_000 -> raise "the recorder did not answer"
    end
  end

  defp fresh, do: %{counts: %{}, warnings: [], logs: %{}}

  defp recorder(state, pending) do
    receive do
      # A handshake net_kernel was asked to accept, and its answer to the acceptor.
      {:trace, _, :receive, {acceptor, {:accept_pending, _me, node, _type}}} ->
        recorder(state, Map.put(pending, acceptor, Atom.to_string(node)))

      {:trace, _, :send, {_, {:accept_pending, ret}}, acceptor}
      when is_map_key(pending, acceptor) ->
        {name, pending} = Map.pop(pending, acceptor)

        key =
          if String.starts_with?(name, "tinycluster_probe_"),
            do: {:probe, name, nil},
            else: {:accept, name, ret}

        recorder(bump(state, key), pending)

      {:trace, _, :receive, {:"$gen_call", {caller, _}, {:connect, :normal, node}}} ->
        kind = if tinycluster?(caller), do: :tc_connect, else: :connect
        recorder(bump(state, {kind, Atom.to_string(node), nil}), pending)

      # global's transitive connections.
      {:trace, _, :receive, {:"$gen_call", _, {:passive_cnct, node}}} ->
        recorder(bump(state, {:connect, Atom.to_string(node), nil}), pending)

      {:trace, _, :receive, {:auto_connect, node, _}} ->
        recorder(bump(state, {:auto_connect, Atom.to_string(node), nil}), pending)

      {:trace, _, _, _} ->
        recorder(state, pending)

      {:trace, _, _, _, _} ->
        recorder(state, pending)

      {:log, level, text} ->
        warnings =
          if text && length(state.warnings) < 5,
            do: state.warnings ++ [text],
            else: state.warnings

        logs = Map.update(state.logs, level, 1, &(&1 + 1))
        recorder(%{state | logs: logs, warnings: warnings}, pending)

      {:get, from} ->
        send(from, {:bench_every, state})
        recorder(state, pending)

      {:reset, from} ->
        send(from, {:bench_every, :ok})
        recorder(fresh(), pending)
    end
  end

  defp bump(state, key), do: %{state | counts: Map.update(state.counts, key, 1, &(&1 + 1))}

  # tinycluster connects in tasks, which know the poller that started them.
  defp tinycluster?(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, dict} ->
        callers = Keyword.get(dict, :"$callers", [])
        poller = Process.whereis(:bench_poller)
        poller != nil and poller in callers

      nil ->
        false
    end
  end

  ## Report

  defp report(results, sizes, window) do
    by = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))

    mesh_rows =
      for size <- sizes, variant <- @variants do
        rs = by[{size, variant}]
        ok = Enum.filter(rs, & &1.complete)
        one = Stats.median(for r <- by[{size, :one}], r.complete, do: r.mesh_us)
        mesh = Stats.median(Enum.map(ok, & &1.mesh_us))
        incomplete = length(rs) - length(ok)

        "| #{size} | #{label(variant)} | #{Stats.spread(Enum.map(ok, & &1.mesh_us))}" <>
          "#{if incomplete > 0, do: " (#{incomplete} incomplete in 60 s)", else: ""} | " <>
          "#{Stats.ratio(mesh, one)} | #{spread(variant, rs)} | #{counts(rs, & &1.cold)} |"
      end

    cpu_rows =
      for size <- sizes, variant <- [:every, :one] do
        rs = by[{size, variant}]
        idle = idle_per_s(by[{size, :one}])

        per_poll =
          for r <- rs, {cpu, polls} <- Enum.zip(r.poller_cpu_ns, r.polls), polls > 0 do
            (cpu - idle * r.window_us / 1.0e6) / polls / 1000
          end

        epmd_per_s = for r <- rs, do: r.epmd_cpu_ns / (r.window_us / 1.0e6) / 1000
        requests = for r <- rs, do: Enum.sum(r.polls)

        epmd_per_req =
          for r <- rs, Enum.sum(r.polls) > 0, do: r.epmd_cpu_ns / Enum.sum(r.polls) / 1000

        "| #{size} | #{label(variant)} | #{Stats.spread(per_poll, &Stats.us/1)} | " <>
          "#{Stats.us(idle / 1000)} | #{Stats.spread(epmd_per_s, &Stats.us/1)} | " <>
          "#{Stats.spread(epmd_per_req, &Stats.us/1)} | #{Stats.spread(requests, &"#{round(&1)}")} |"
      end

    late_rows =
      for size <- sizes, variant <- [:every, :one] do
        rs = by[{size, variant}]

        "| #{size} | #{label(variant)} | #{Stats.spread(for(r <- rs, r.late_mesh_us, do: r.late_mesh_us))} | " <>
          "#{counts(rs, & &1.late)} |"
      end

    warnings =
      for {_, r} <- results, phase <- [r.cold, r[:late]], phase, w <- phase.warnings do
        w
      end
      |> Enum.uniq()
      |> Enum.take(8)

    largest = List.last(sizes)
    every = Stats.median(for r <- by[{largest, :every}], r.complete, do: r.mesh_us)
    one = Stats.median(for r <- by[{largest, :one}], r.complete, do: r.mesh_us)
    # A full mesh needs one handshake per connection, N for the late node; every one beyond
    # is redundant (a simultaneous pair, `ok_simultaneous` and `nok`, is one too many).
    extra = fn r -> attempts(r.late) - largest end

    late_extra = Stats.median(for r <- by[{largest, :every}], do: extra.(r))
    late_extra_one = Stats.median(for r <- by[{largest, :one}], do: extra.(r))

    """
    ## 8. Every node polling: N pollers, from cold and with a late node

    Fresh measuring nodes for every measurement (Elixir and tinycluster loaded); pollers at
    `interval: #{@interval}`. "every": all N nodes start a poller at once (the late node
    too); "one": only the first node polls; "parallel": only the first node runs the
    probe-less parallel connect, once. Times from the call (the earliest, for "every") to
    the full mesh. Counts are per measurement, summed over every node, median (min–max):
    connection requests to `net_kernel` (`connect_node` from tinycluster / `connect_node`
    from anything else and global's `passive_cnct` / auto-connects), handshakes by how the accepting node answered, probes accepted,
    candidates a poller saw refuse a connection, log events (warning and above / info).

    | nodes | approach | full mesh from cold | vs one poller | pollers' starts within | connect requests (tc / other / auto) | handshakes ok / ok_simultaneous / nok / alive | probes | refused | logs (warning+ / info) |
    |---|---|---|---|---|---|---|---|---|---|
    #{Enum.join(mesh_rows, "\n")}

    Once meshed, over #{div(window, 1000)} s: CPU per poll of a polling node (net of an idle
    node of the same mesh: the "one" variant's non-polling nodes), and EPMD's CPU.

    | nodes | pollers | CPU per poll, net | idle node, per s | EPMD CPU per s | EPMD CPU per NAMES request | NAMES requests |
    |---|---|---|---|---|---|---|
    #{Enum.join(cpu_rows, "\n")}

    One more node, started late (with its own poller in "every"): time from its
    registration with EPMD to its full mesh, and what involved it, summed over all nodes,
    from its registration until two intervals after its full mesh.

    | nodes | approach | late node registered to full mesh | connect requests (tc / other / auto) | handshakes ok / ok_simultaneous / nok / alive | probes | refused | logs (warning+ / info) |
    |---|---|---|---|---|---|---|---|
    #{Enum.join(late_rows, "\n")}

    Warnings logged (first few, all nodes): #{if warnings == [], do: "none", else: Enum.map_join(warnings, "; ", &"`#{&1}`")}

    - Goal #{largest} pollers to the full mesh no slower than 1.2x one poller: #{Stats.ratio(every, one)}, #{if every && one && every <= 1.2 * one, do: "met", else: "**missed**"}
    - Goal a late node sees at most a few connection attempts: handshakes that involve it beyond the #{largest} its connections need, at #{largest} pollers: #{fmt_count(late_extra)} (one poller, global doing the rest: #{fmt_count(late_extra_one)}), #{if late_extra && late_extra <= 3, do: "met", else: "**missed**"}
    """
  end

  defp spread(:every, rs), do: Stats.spread(Enum.map(rs, & &1.start_spread_us))
  defp spread(_, _), do: "-"

  defp idle_per_s(rs) do
    Stats.median(for r <- rs, cpu <- r.idle_cpu_ns, do: cpu / (r.window_us / 1.0e6)) || 0
  end

  defp attempts(s), do: s.ok + s.ok_simultaneous + s.nok + s.alive

  defp counts(rs, get) do
    rs = rs |> Enum.map(get) |> Enum.reject(&is_nil/1)
    c = fn key -> Stats.spread(Enum.map(rs, &Map.fetch!(&1, key)), &fmt_count/1) end

    "#{c.(:tc_connects)} / #{c.(:other_connects)} / #{c.(:auto_connects)} | " <>
      "#{c.(:ok)} / #{c.(:ok_simultaneous)} / #{c.(:nok)} / #{c.(:alive)} | " <>
      "#{c.(:probes)} | #{c.(:refusals)} | #{c.(:warning_logs)} / #{c.(:info_logs)}"
  end

  defp fmt_count(nil), do: "-"
  defp fmt_count(v), do: "#{round(v)}"

  defp label(:every), do: "every node polls"
  defp label(:one), do: "one poller"
  defp label(:parallel), do: "parallel connect, no probe (one node)"
end
