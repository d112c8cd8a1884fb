# Scenario 4: scale. N plain nodes (8, 16, 32, 64), started fresh and connected to nobody;
# then one fresh measuring node clusters them, and we time from its call (tinycluster's
# `start_link`) until the full mesh: every node connected to every other. Each node reports,
# on the OS clock, the moment it is connected to all N others (net_kernel:monitor_nodes in
# its agent), so the full mesh is the latest of N + 1 reports. Two stages are told apart:
# the measuring node connected to all N (the clustering library's own work), and the rest of
# the mesh (global's transitive connections among the plain nodes, `connect_all`, which
# every approach relies on). The parallel-connect baseline runs on fresh nodes of the same
# size in the same round. The machine's busy share during the mesh says whether it is CPU
# that limits it.
defmodule Bench.Scenario.Scale do
  alias Bench.{Approach, Driver, Proc, Stats, VM}

  def run(ctx) do
    sizes = if ctx.smoke, do: [4], else: [8, 16, 32, 64]
    approaches = [:tinycluster, :parallel]

    results =
      Driver.with_epmd(ctx, fn ctx ->
        for round <- 1..ctx.runs,
            size <- sizes,
            approach <- if(rem(round, 2) == 0, do: Enum.reverse(approaches), else: approaches) do
          Driver.progress(".")
          {{size, approach}, measure(ctx, size, approach)}
        end
      end)

    report(results, sizes)
  end

  defp measure(ctx, size, approach) do
    opts = for _ <- 1..size, do: [alive: Driver.name(ctx, "n"), mesh: size]
    nodes = VM.start_many(ctx, opts)
    spawned = System.os_time(:microsecond)
    m = Driver.start_measuring(ctx, "m", mesh: size)
    booted = System.os_time(:microsecond) - spawned
    Driver.settle(ctx, [m | nodes], 10_000)

    jiffies0 = Proc.cpu_jiffies()
    t0 = VM.call(m, __MODULE__, :child_start, [approach, size])
    mesh = fn vm -> VM.await_event(vm, &match?({:mesh, _, _}, &1), 60_000) end
    {:mesh, m_done, _} = mesh.(m) || {:mesh, nil, nil}
    done = Enum.map(nodes, &mesh.(&1))
    jiffies1 = Proc.cpu_jiffies()
    times = for {:mesh, t, _} <- done, do: t
    complete = length(times) == size and m_done != nil

    scan = if approach == :tinycluster, do: VM.call(m, __MODULE__, :child_scan, [])
    Driver.kill([m | nodes])
    Bench.Epmd.wait_empty(ctx.epmd, 30_000)

    %{
      complete: complete,
      m_all_us: m_done && m_done - t0,
      mesh_us: if(complete, do: Enum.max([m_done | times]) - t0),
      busy: Proc.busy_share(jiffies0, jiffies1),
      boot_us: booted,
      scan: scan
    }
  end

  @doc false
  # In the measuring node: start clustering; return the OS time just before. For
  # tinycluster, a watcher records what its first scan found, and how many scans it took
  # until the measuring node was connected to all `size` nodes.
  def child_start(approach, size) do
    t0 = System.os_time(:microsecond)

    case approach do
      :tinycluster ->
        Approach.once(:tinycluster, [])
        spawn(fn -> watch_scans(size, nil) end)

      other ->
        spawn(fn -> Approach.once(other, []) end)
    end

    t0
  end

  defp watch_scans(size, nil) do
    Process.sleep(10)
    status = Tinycluster.status(:bench_poller)

    if status.scans >= 1 do
      states = Enum.frequencies_by(Map.values(status.candidates), & &1.state)
      watch_scans(size, %{duration_us: status.last_scan.duration_us, states: states})
    else
      watch_scans(size, nil)
    end
  end

  defp watch_scans(size, first) do
    if length(Node.list()) >= size do
      scans = Tinycluster.status(:bench_poller).scans
      :persistent_term.put({__MODULE__, :scans}, %{first: first, scans: scans})
    else
      Process.sleep(10)
      watch_scans(size, first)
    end
  end

  @doc false
  def child_scan, do: :persistent_term.get({__MODULE__, :scans}, nil)

  defp report(results, sizes) do
    by = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))

    rows =
      for size <- sizes, approach <- [:tinycluster, :parallel] do
        rs = by[{size, approach}]
        ok = Enum.filter(rs, & &1.complete)
        incomplete = length(rs) - length(ok)

        "| #{size} | #{Bench.Scenario.Hung.label(approach)} | " <>
          "#{Stats.spread(for(r <- rs, r.m_all_us, do: r.m_all_us))} | " <>
          "#{Stats.spread(Enum.map(ok, & &1.mesh_us))}#{if incomplete > 0, do: " (#{incomplete} incomplete in 60 s)", else: ""} | " <>
          "#{Stats.spread(Enum.map(ok, &(&1.busy * 100)), &pct/1)} |"
      end

    scan_line =
      Enum.map_join(sizes, "\n", fn size ->
        rs = for r <- by[{size, :tinycluster}], r.scan, do: r.scan
        durations = Enum.map(rs, & &1.first.duration_us)
        needed = rs |> Enum.map(& &1.scans) |> Enum.frequencies() |> Enum.sort()
        late = rs |> Enum.map(&Map.get(&1.first.states, :unreachable, 0)) |> Enum.frequencies()

        "- #{size} nodes: first scan #{Stats.spread(durations)}; scans until connected to all " <>
          "(scans: rounds) #{inspect(needed)}; candidates the first scan found unreachable " <>
          "(probe timeout, 300 ms) (count: rounds) #{inspect(Enum.sort(late))}"
      end)

    # The whole machine's CPU time per connection of the mesh (every pair, the measuring
    # node included), from the busy share over the time to the full mesh.
    cores = :erlang.system_info(:logical_processors_available)
    cores = if is_integer(cores), do: cores, else: :erlang.system_info(:logical_processors)

    per_connection =
      Enum.map_join(sizes, "; ", fn size ->
        pairs = div((size + 1) * size, 2)

        values =
          for {{^size, _}, rs} <- by, r <- rs, r.complete, do: r.busy * cores * r.mesh_us / pairs

        "#{size} nodes (#{pairs} connections): #{Stats.ms(Stats.median(values))}"
      end)

    largest = List.last(sizes)
    tc = Stats.median(for r <- by[{largest, :tinycluster}], r.complete, do: r.mesh_us)
    boot = Stats.median(for {_, rs} <- by, r <- rs, do: r.boot_us)

    """
    ## 4. Scale: cold start of one tinycluster node to the full mesh

    Fresh plain nodes for every measurement, then a fresh measuring node; times from its call
    (tinycluster: `start_link`). "Measuring node connected to all" is the library's own
    work; "full mesh" adds global's transitive connections among the plain nodes. Busy: the
    share of both cores in use (whole machine) between the call and the full mesh.
    The measuring node's own boot (BEAM, Elixir, Logger, tinycluster loaded) took #{Stats.ms(boot)}
    (median), before the clock starts.

    | nodes | approach | measuring node connected to all | full mesh | machine busy |
    |---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    tinycluster's scans (a scan: EPMD and every probe, wall time):
    #{scan_line}

    CPU time of the whole machine per connection of the full mesh, both approaches
    (busy share × cores × time to the full mesh ÷ connections; includes everything else
    that ran): #{per_connection}.

    - Goal #{largest} nodes to the full mesh under 2 s: #{Stats.ms(tc)}, #{if tc && tc < 2_000_000, do: "met", else: "**missed**"}
    """
  end

  defp pct(v), do: "#{round(v)}%"
end
