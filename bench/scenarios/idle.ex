# Scenario 3: the idle cost of polling. A cluster where every node is already connected, so
# a poll has nothing new to find: 4 plain nodes and, for each round, three measuring nodes:
# one runs tinycluster (`interval: 1000`), one the parallel-connect baseline's loop (EPMD
# names, skip the connected: what a probe-less poller costs), and one runs nothing (the
# control: what an idle VM in this cluster burns anyway, ticks included). All rounds run at
# once, over the same window of at least 60 polls, so they share the machine's conditions.
#
# CPU time comes from `/proc/self/task/*/schedstat` (nanoseconds per thread), split into
# the BEAM's schedulers, its dirty schedulers, the NIF runtime's threads ("tinycluster")
# and the rest; `stat`'s tick counts are kept as a cross-check. The cost of a poll is the
# poller's CPU time minus the control's, divided by the polls in the window. EPMD's own
# CPU time per NAMES request is measured too: it is part of what a poll costs the host.
#
# The floor of the NIF runtime's share: `examples/epmd_floor.rs` (native/tinycluster_nif)
# makes the same NAMES request to the same EPMD, with the same listing, blocking from a plain
# thread and on a runtime built as the NIF's, outside any BEAM; what the runtime's threads
# spend in a measuring node beyond that is the cost of telling the BEAM (encode, send, wake).
defmodule Bench.Scenario.Idle do
  alias Bench.{Approach, Driver, Proc, Stats, VM}

  @peers 4

  # The BEAM's schedulers spin a while before they sleep (`+sbwt`, default medium): CPU
  # a wake-up costs whatever woke it. The second variant turns the spinning off on the
  # measuring nodes, to tell the work of a poll from the spinning it triggers.
  @variants [
    {"default flags", []},
    {"`+sbwt none +sbwtdcpu none +sbwtdio none`",
     ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]}
  ]

  def run(ctx) do
    window = if ctx.smoke, do: 2_000, else: 61_000
    variants = if ctx.smoke, do: Enum.take(@variants, 1), else: @variants

    floor_bin = build_floor()

    sections =
      for {label, args} <- variants do
        {results, epmd_ns, total, floor} = measure(ctx, args, window, floor_bin)
        report(label, results, epmd_ns, total, window, floor)
      end

    """
    ## 3. Idle cost: a poll with nothing new to find

    #{Enum.join(sections, "\n")}
    """
  end

  @crate Path.expand("../../native/tinycluster_nif", __DIR__)

  # The floor's program, built once per run (release, without the NIF layer).
  defp build_floor do
    args = ~w(build --release --quiet --no-default-features --example epmd_floor)
    {out, status} = System.cmd("cargo", args, cd: @crate, stderr_to_stdout: true)
    if status != 0, do: raise("cargo build of examples/epmd_floor failed: #{out}")
    Path.join([@crate, "target", "release", "examples", "epmd_floor"])
  end

  # `%{blocking_us, runtime_us, runtime_switches}` per request, against this cluster's EPMD.
  defp floor(bin, ctx, requests) do
    {out, 0} = System.cmd(bin, [to_string(ctx.epmd.port), to_string(requests)])

    for pair <- String.split(String.trim(out)), into: %{} do
      [key, value] = String.split(pair, "=")
      {String.to_atom(key), String.to_float(value)}
    end
  end

  defp measure(ctx, args, window, floor_bin) do
    rounds = ctx.runs

    Driver.with_epmd(ctx, fn ctx ->
      peers = VM.start_many(ctx, for(_ <- 1..@peers, do: [alive: Driver.name(ctx, "peer")]))

      vms =
        for kind <- [:tinycluster, :parallel, :control], _ <- 1..rounds do
          {kind, Driver.start_measuring(ctx, "m", args: args)}
        end

      for {kind, vm} <- vms, kind != :control do
        VM.call(vm, Approach, :start_polling, [kind, []])
      end

      total = length(peers) + length(vms)
      all = peers ++ Enum.map(vms, &elem(&1, 1))
      wait_mesh(all, total)
      # A few polls with nothing new, and the cluster's own chatter (global) settled.
      Process.sleep(if ctx.smoke, do: 1_000, else: 3_000)
      Driver.settle(ctx, all)
      Driver.progress(".")

      epmd0 = Proc.cpu_ns(ctx.epmd.os_pid)

      results =
        vms
        |> Task.async_stream(
          fn {kind, vm} -> {kind, VM.call(vm, __MODULE__, :child_window, [kind, window])} end,
          timeout: window + 30_000,
          max_concurrency: length(vms)
        )
        |> Enum.map(fn {:ok, result} -> result end)

      epmd_ns = Proc.cpu_ns(ctx.epmd.os_pid) - epmd0
      # After the window, so that it disturbs nothing measured there.
      floor = floor(floor_bin, ctx, if(ctx.smoke, do: 20, else: 200))
      {results, epmd_ns, total, floor}
    end)
  end

  defp wait_mesh(vms, total) do
    Bench.Util.wait_until(
      fn -> Enum.all?(vms, &(VM.call(&1, :bench_node, :nodes_count, []) == total - 1)) end,
      60_000
    ) || raise "the idle cluster never became a full mesh of #{total} nodes"
  end

  @doc false
  # In a measuring node: its CPU time over `window` ms, and the polls it made meanwhile.
  def child_window(kind, window) do
    polls0 = polls(kind)
    threads0 = Proc.threads_cpu()
    ticks0 = Proc.threads_cpu_ticks()
    t0 = System.monotonic_time(:microsecond)
    Process.sleep(window)
    threads1 = Proc.threads_cpu()
    ticks1 = Proc.threads_cpu_ticks()
    wall = System.monotonic_time(:microsecond) - t0

    %{
      polls: polls(kind) - polls0,
      wall_us: wall,
      cpu: Proc.by_category(threads0, threads1),
      ticks_ns: Enum.sum(for {tid, ns} <- ticks1, do: ns - Map.get(ticks0, tid, 0)),
      scan:
        if kind == :tinycluster do
          status = Tinycluster.status(:bench_poller)
          %{candidates: status.last_scan.candidates, duration_us: status.last_scan.duration_us}
        end
    }
  end

  defp polls(:tinycluster), do: Tinycluster.status(:bench_poller).scans
  defp polls(:parallel), do: Approach.polls()
  defp polls(:control), do: 0

  ## Report

  defp report(variant, results, epmd_ns, total, window, floor) do
    by = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))
    total_ns = fn r -> r.cpu |> Map.values() |> Enum.sum() end
    # The control's CPU per second of window, to subtract from the pollers'.
    control_per_s = Stats.median(for r <- by.control, do: total_ns.(r) / (r.wall_us / 1.0e6))

    net_per_poll = fn r ->
      (total_ns.(r) - control_per_s * r.wall_us / 1.0e6) / max(r.polls, 1) / 1000
    end

    row = fn kind, label ->
      rs = by[kind]
      per = fn f -> Stats.spread(Enum.map(rs, f), &Stats.us/1) end
      per_poll = fn cat -> per.(&(&1.cpu[cat] / max(&1.polls, 1) / 1000)) end

      "| #{label} | #{Stats.spread(Enum.map(rs, & &1.polls), fn v -> "#{round(v)}" end)} | " <>
        "#{per_poll.(:scheduler)} | #{per_poll.(:dirty)} | #{per_poll.(:tinycluster)} | " <>
        "#{per_poll.(:other)} | #{per.(&(total_ns.(&1) / max(&1.polls, 1) / 1000))} | " <>
        "#{per.(net_per_poll)} | #{share(Stats.median(Enum.map(rs, net_per_poll)))} |"
    end

    tc_net = Stats.median(Enum.map(by.tinycluster, net_per_poll))
    base_net = Stats.median(Enum.map(by.parallel, net_per_poll))
    ratio = tc_net && base_net && base_net > 0 && tc_net / base_net

    threads =
      Stats.median(for r <- by.tinycluster, do: r.cpu.tinycluster / max(r.polls, 1) / 1000)

    polls = Enum.sum(for {kind, r} <- results, kind != :control, do: r.polls)
    ticks = Stats.median(for r <- by.tinycluster, do: r.ticks_ns / max(r.polls, 1) / 1000)
    scan = hd(by.tinycluster).scan

    control_row =
      "| control (no poller), per second | - | " <>
        Enum.map_join([:scheduler, :dirty, :tinycluster, :other], " | ", fn cat ->
          Stats.spread(
            Enum.map(by.control, &(&1.cpu[cat] / (&1.wall_us / 1.0e6) / 1000)),
            &Stats.us/1
          )
        end) <>
        " | #{Stats.us(control_per_s / 1000)} | - | - |"

    """
    ### Measuring nodes with #{variant}

    A full mesh of #{total} nodes (every poll lists #{total} names, all connected); #{length(by.tinycluster)} VMs of each
    kind measured at once over #{div(window, 1000)} s. CPU time per poll in µs, median
    (min–max over the VMs); "net" subtracts the control VM's CPU over the same time.
    A tinycluster scan here took #{Stats.us(scan && scan.duration_us)} (wall) for #{scan && scan.candidates} candidates.

    | poller | polls | schedulers | dirty | tinycluster threads | other threads | total | net of control | share of one core at 1 s |
    |---|---|---|---|---|---|---|---|---|
    #{row.(:tinycluster, "tinycluster")}
    #{row.(:parallel, "baseline loop: `:erl_epmd.names/0` + skip connected")}
    #{control_row}

    - EPMD's CPU per NAMES request: #{Stats.us(epmd_ns / max(polls, 1) / 1000)} (#{polls} requests from all pollers).
    - Cross-check from `/proc/self/task/*/stat` (10 ms ticks, so coarse): #{Stats.us(ticks)} per tinycluster poll, before subtracting the control.
    - The NIF runtime's threads per poll: #{Stats.us(threads)}. The same request outside the BEAM (same EPMD and listing, 20 ms apart): blocking from a plain thread #{Stats.us(floor.blocking_us)}, on a runtime built as the NIF's #{Stats.us(floor.runtime_us)} (#{floor.runtime_switches} wake-ups of its threads per request). Threads per poll / the blocking floor: #{ratio_text(threads, floor.blocking_us)}.
    - Goal tinycluster under 0.05% of a core at 1 s (500 µs per poll), #{variant}: #{share(tc_net)}, #{if tc_net && tc_net < 500, do: "met", else: "**missed**"}
    - Goal tinycluster / baseline loop <= 1.0x (net of control), #{variant}: #{ratio_text(tc_net, base_net)}, #{if ratio && ratio <= 1.0, do: "met", else: "**missed**"}
    """
  end

  defp ratio_text(a, b) when is_number(a) and is_number(b) and b > 0,
    do: "#{:erlang.float_to_binary(a / b, decimals: 2)}x"

  defp ratio_text(_a, _b), do: "-"

  defp share(nil), do: "-"
  defp share(us), do: "#{:erlang.float_to_binary(us / 1.0e6 * 100, decimals: 4)}%"
end
