# Scenario 5: scheduler impact. 64 plain nodes; a fresh measuring node with
# `:erlang.system_monitor(pid, long_schedule: 1)` (every process or port that ran 1 ms or
# more without being scheduled out is reported, with where it was scheduled in and out)
# runs scans of the 64 candidates three ways: `Tinycluster.Native.start_scan/1` directly,
# answering each host's listing with a plan of all 64 names (`Tinycluster.Native.plan/2`,
# which decodes 64 targets) and awaiting the scan's end; the same with a plan of no name (as
# when every node is connected); and a poller (`connect: false`), which
# adds the handling of the 66 messages per scan in a GenServer. A control does the same
# number of polls in Erlang alone. Scans are paced (one per `@pace` ms) so that the 64 peers
# answering probes do not saturate the two cores by themselves.
#
# `long_schedule` measures wall time: a scheduler thread the OS preempts makes whatever
# process it runs look stalled. So each phase also counts the OS's involuntary context
# switches of the scheduler threads, and names the process of each stall. The NIF call is
# timed with the monotonic clock around it; its first call, which starts the runtime, is
# reported apart; a BIF timed the same way gives the clock's noise floor. A positive
# control shows the monitor catches a real stall: `:crypto.hash(:sha256, 50 MB)`.
defmodule Bench.Scenario.Sched do
  alias Bench.{Driver, Stats, VM}

  @pace 200

  def run(ctx) do
    {size, scans, polls} = if ctx.smoke, do: {8, 10, 5}, else: {64, 100, 50}

    results =
      Driver.with_epmd(ctx, fn ctx ->
        nodes = VM.start_many(ctx, for(_ <- 1..size, do: [alive: Driver.name(ctx, "n")]))
        names = Enum.map(nodes, &Atom.to_string(&1.node))

        for _ <- 1..ctx.runs do
          Driver.progress(".")
          m = Driver.start_measuring(ctx, "m")
          Driver.settle(ctx, [m | nodes], 10_000)
          result = VM.call(m, __MODULE__, :child_run, [names, scans, polls])
          Driver.kill([m])
          result
        end
      end)

    report(results, size, scans, polls)
  end

  @doc false
  def child_run(_names, scans, polls) do
    opts = Tinycluster.Options.new!(name: :bench_sched)
    {:ok, request} = Tinycluster.Discovery.request(opts)
    {cold_ns, _plan_ns, candidates} = timed_scan(request, :all)

    # Warm up: load every module a poller uses, as a release would have at boot, so that
    # code loading (erl_prim_loader) is not mistaken for the poller's stalls.
    run_poller(:bench_sched_warmup, 3)
    _ = preempted()
    _ = take(spawn(fn -> collect([]) end), %{})
    _ = Bench.Proc.cpu_jiffies()

    monitor = spawn(fn -> collect([]) end)
    :erlang.system_monitor(monitor, long_schedule: 1)

    phase = fn fun ->
      switches = preempted()
      jiffies = Bench.Proc.cpu_jiffies()
      {result, names} = fun.()

      %{
        result: result,
        stalls: take(monitor, Map.put(names, self(), "the measuring process")),
        preempted: preempted() - switches,
        busy: Bench.Proc.busy_share(jiffies, Bench.Proc.cpu_jiffies())
      }
    end

    paced = fn fun ->
      for _ <- 1..scans do
        t0 = System.monotonic_time(:millisecond)
        result = fun.()
        Process.sleep(max(0, @pace - (System.monotonic_time(:millisecond) - t0)))
        result
      end
    end

    direct = phase.(fn -> {paced.(fn -> timed_scan(request, :all) end), %{}} end)
    skipping = phase.(fn -> {paced.(fn -> timed_scan(request, :none) end), %{}} end)
    poller = phase.(fn -> run_poller(:bench_sched_poller, polls) end)
    # The same number of polls without the NIF: EPMD's names, a map and a message per name.
    control = phase.(fn -> {erlang_polls(polls), %{}} end)
    :erlang.system_monitor(:undefined)
    # Apart, so that tracing does not disturb the phases above: how long the poller runs
    # each time it is scheduled in, and its reductions per poll.
    runs = traced_poller(polls)
    # The wall-clock noise floor: a pure BIF over the same request, timed the same way.
    noise = for _ <- 1..scans, do: timed(fn -> :erlang.phash2(request) end)

    # The positive control: a call that does not yield.
    big = :binary.copy(<<1>>, 50_000_000)
    :erlang.system_monitor(monitor, long_schedule: 1)
    positive = phase.(fn -> {:crypto.hash(:sha256, big), %{}} end)

    %{
      cold_ns: cold_ns,
      candidates: candidates,
      direct_ns: Enum.map(direct.result, &elem(&1, 0)),
      plan_ns: Enum.map(direct.result, &elem(&1, 1)),
      skip_ns: Enum.map(skipping.result, &elem(&1, 0)),
      skip_plan_ns: Enum.map(skipping.result, &elem(&1, 1)),
      noise_ns: noise,
      phases: %{
        direct: Map.delete(direct, :result),
        skip: Map.delete(skipping, :result),
        poller: Map.delete(poller, :result),
        control: Map.delete(control, :result)
      },
      positive: positive.stalls,
      runs: runs
    }
  end

  defp traced_poller(polls) do
    name = :bench_sched_traced
    {:ok, poller} = Tinycluster.start_link(name: name, interval: @pace, connect: false)
    Bench.Util.wait_until(fn -> Tinycluster.status(name).scans >= 2 end, 60_000)
    caller = self()
    tracer = spawn(fn -> runs(nil, [], caller) end)
    :erlang.trace(poller, true, [:running, :monotonic_timestamp, {:tracer, tracer}])
    {:reductions, r0} = Process.info(poller, :reductions)
    s0 = Tinycluster.status(name).scans
    Bench.Util.wait_until(fn -> Tinycluster.status(name).scans >= s0 + polls end, 120_000)
    {:reductions, r1} = Process.info(poller, :reductions)
    s1 = Tinycluster.status(name).scans
    :erlang.trace(poller, false, [:running])
    send(tracer, :done)
    Process.unlink(poller)
    Process.exit(poller, :kill)

    receive do
      {:runs, runs} -> %{runs_us: runs, polls: s1 - s0, reductions: r1 - r0}
    end
  end

  defp runs(scheduled_in, acc, caller) do
    receive do
      {:trace_ts, _, :in, _, t} ->
        runs(t, acc, caller)

      {:trace_ts, _, :out, _, t} when scheduled_in != nil ->
        us = System.convert_time_unit(t - scheduled_in, :native, :microsecond)
        runs(nil, [us | acc], caller)

      {:trace_ts, _, _, _, _} ->
        runs(scheduled_in, acc, caller)

      :done ->
        send(caller, {:runs, acc})
    end
  end

  defp run_poller(name, polls) do
    {:ok, poller} = Tinycluster.start_link(name: name, interval: @pace, connect: false)
    Bench.Util.wait_until(fn -> Tinycluster.status(name).scans >= polls end, 120_000)
    Process.unlink(poller)
    Process.exit(poller, :kill)
    {:ok, %{poller => "the tinycluster poller"}}
  end

  defp erlang_polls(polls) do
    for _ <- 1..polls do
      t0 = System.monotonic_time(:millisecond)
      {:ok, names} = :erl_epmd.names()
      me = self()

      for {name, port} <- names,
          do: send(me, {:candidate, %{name: List.to_string(name), port: port}})

      for _ <- names, do: receive(do: ({:candidate, _} -> :ok))
      Process.sleep(max(0, @pace - (System.monotonic_time(:millisecond) - t0)))
    end
  end

  # How often the OS took a CPU away from the BEAM's schedulers (involuntary switches):
  # on a busy machine each is a possible "long schedule" that no Erlang code caused.
  defp preempted do
    for {tid, {name, _}} <- Bench.Proc.threads_cpu(),
        Bench.Proc.category(name) == :scheduler,
        {:ok, text} <- [File.read("/proc/self/task/#{tid}/status")],
        [_, n] <- [Regex.run(~r/nonvoluntary_ctxt_switches:\s+(\d+)/, text)],
        reduce: 0 do
      acc -> acc + String.to_integer(n)
    end
  end

  defp timed(fun) do
    t0 = System.monotonic_time(:nanosecond)
    fun.()
    System.monotonic_time(:nanosecond) - t0
  end

  # One scan: the NIF call's own duration, and how many candidates the scan reported.
  # `targets`: `:all` probes every name each host lists, as a poller with nothing held back
  # plans it; `:none` probes none, as when every node is connected. Returns the wall time of
  # the `start_scan/1` call, of the `plan/2` calls, and the count of candidates.
  defp timed_scan(request, targets) do
    t0 = System.monotonic_time(:nanosecond)
    {:ok, id, handle} = Tinycluster.Native.start_scan(request)
    t1 = System.monotonic_time(:nanosecond)
    {plan_ns, candidates} = await(id, targets, 0)
    # Held until the scan is done: a handle collected earlier would cancel it.
    :ok = Tinycluster.Native.cancel(handle)
    {t1 - t0, plan_ns, candidates}
  end

  defp await(id, targets, plan_ns) do
    receive do
      {:tinycluster_scan, ^id, {:done, report}} ->
        {plan_ns, length(report.candidates)}

      {:tinycluster_scan, ^id, {:listed, listings}} ->
        plans =
          for l <- listings do
            {l.index, for({a, p, _} <- l.names, targets == :all, do: {a, p, :send_name})}
          end

        t0 = System.monotonic_time(:nanosecond)
        :ok = Tinycluster.Native.plan(id, plans)
        await(id, targets, plan_ns + System.monotonic_time(:nanosecond) - t0)

      {:tinycluster_scan, ^id, _event} ->
        await(id, targets, plan_ns)
    after
      30_000 -> raise "scan #{id} did not finish"
    end
  end

  defp collect(acc) do
    receive do
      {:monitor, who, :long_schedule, info} ->
        # No inspect/1 here: loading its protocol code would itself stall the scheduler.
        collect([%{who: who, ms: info[:timeout], in: info[:in], out: info[:out]} | acc])

      {:take, from} ->
        send(from, {:stalls, Enum.reverse(acc)})
        collect([])
    end
  end

  # The stalls so far, each with its process named: `names` for the ones we know, else
  # its registered name or initial call.
  defp take(monitor, names) do
    # Let a stall that just ended be reported first.
    Process.sleep(50)
    send(monitor, {:take, self()})

    receive do
      {:stalls, stalls} -> Enum.map(stalls, &%{&1 | who: name(&1.who, names)})
    end
  end

  defp name(who, names) when is_map_key(names, who), do: Map.fetch!(names, who)

  defp name(who, _names) when is_pid(who) do
    case Process.info(who, :registered_name) do
      {:registered_name, name} when is_atom(name) -> inspect(name)
      _ -> who |> :proc_lib.translate_initial_call() |> format_mfa()
    end
  end

  defp name(who, _names), do: if(is_port(who), do: "a port", else: "?")

  defp report(results, size, scans, polls) do
    direct = Enum.flat_map(results, & &1.direct_ns) ++ Enum.flat_map(results, & &1.skip_ns)
    plans = Enum.flat_map(results, & &1.plan_ns)
    skip = Enum.flat_map(results, & &1.skip_plan_ns)
    noise = Enum.flat_map(results, & &1.noise_ns)
    cold = Enum.map(results, & &1.cold_ns)
    us = fn ns -> Stats.us(ns / 1000) end

    line = fn values ->
      "#{us.(Stats.median(values))} | #{us.(Stats.percentile(values, 99))} | " <>
        "#{us.(Enum.max(values))} | #{us.(Enum.min(values))} | #{length(values)}"
    end

    phase = fn key -> Enum.map(results, & &1.phases[key]) end
    stalls = fn key -> Enum.flat_map(phase.(key), & &1.stalls) end
    preempted = fn key -> Enum.sum(Enum.map(phase.(key), & &1.preempted)) end

    stall_row = fn key, label ->
      list = stalls.(key)
      longest = Enum.max_by(list, & &1.ms, fn -> nil end)
      busy = phase.(key) |> Enum.map(&(&1.busy * 100)) |> Stats.median()

      who =
        list
        |> Enum.group_by(& &1.who, & &1.ms)
        |> Enum.sort_by(fn {_, ms} -> -length(ms) end)
        |> Enum.map_join(", ", fn {who, ms} ->
          "#{who}: #{length(ms)}, up to #{Enum.max(ms)} ms"
        end)

      "| #{label} | #{round(busy)}% | #{preempted.(key)} | #{length(list)} | " <>
        "#{if longest, do: "#{longest.ms} ms", else: "-"} | #{if who == "", do: "-", else: who} |"
    end

    ours = ["the measuring process", "the tinycluster poller"]
    tc_stalls = for k <- [:direct, :skip, :poller], st <- stalls.(k), st.who in ours, do: st
    worst = Enum.max_by(tc_stalls, & &1.ms, fn -> nil end)
    control_worst = stalls.(:control) |> Enum.map(& &1.ms) |> Enum.max(fn -> 0 end)
    positive = Enum.flat_map(results, & &1.positive)
    nif_p99 = Stats.percentile(direct ++ plans ++ skip, 99)
    all_runs = Enum.flat_map(results, & &1.runs.runs_us)
    run_polls = Enum.sum(Enum.map(results, & &1.runs.polls))

    runs_line =
      "#{div(Enum.sum(Enum.map(results, & &1.runs.reductions)), max(run_polls, 1))} reductions " <>
        "and #{Stats.ms(Enum.sum(all_runs) / max(run_polls, 1))} of running (wall) per poll; " <>
        "each time it is scheduled in it runs #{Stats.us(Stats.median(all_runs))} (median), " <>
        "#{Stats.us(Stats.percentile(all_runs, 99))} (p99), #{Stats.us(Enum.max(all_runs, fn -> 0 end))} (max); " <>
        "#{Enum.count(all_runs, &(&1 >= 1000))} of #{length(all_runs)} runs reach 1 ms."

    nif_median = Stats.median(direct ++ plans ++ skip)

    """
    ## 5. Scheduler impact: scans of #{size} candidates

    #{length(results)} fresh measuring nodes; in each, after a warm-up, #{scans} direct scans planned to probe
    all #{size} names, #{scans} planned to probe none (every node connected), #{polls} polls of a poller (`connect: false`), and as a
    control the same number of polls done in Erlang alone (EPMD names, a map and a message
    per name), all one per #{@pace} ms. Each scan reported #{Enum.map_join(Enum.uniq(Enum.map(results, & &1.candidates)), ",", &to_string/1)} candidates.

    | call, wall clock | median | p99 | max | min | n |
    |---|---|---|---|---|---|
    | `start_scan/1`, first call in a VM (starts the runtime) | #{line.(cold)} |
    | `start_scan/1`, later calls | #{line.(direct)} |
    | `plan/2` of #{size} targets | #{line.(plans)} |
    | `plan/2` of no target | #{line.(skip)} |
    | noise floor: `:erlang.phash2/1` of the same request | #{line.(noise)} |

    The stalls below are wall time; "preempted" counts the times the OS took a core from the
    measuring node's scheduler threads during the phase, and "busy" is the whole machine's
    busy share: on a saturated machine a preempted scheduler makes any process look stalled.

    | phase | machine busy | schedulers preempted by the OS | long schedules (>= 1 ms) | longest | by process |
    |---|---|---|---|---|---|
    #{stall_row.(:direct, "direct scans")}
    #{stall_row.(:skip, "direct scans, no target")}
    #{stall_row.(:poller, "poller")}
    #{stall_row.(:control, "control: the same polls in Erlang only")}

    The poller, traced apart (`:erlang.trace/3` with `:running`): #{runs_line}

    Positive control (`:crypto.hash(:sha256, 50 MB)`, which does not yield): #{case positive do
      [] -> "not reported"
      list -> "reported, #{Enum.max_by(list, & &1.ms).ms} ms"
    end}.

    - Goal no stall over 1 ms (tinycluster's poller and the process calling the NIF): #{if worst && worst.ms > 1, do: "**missed** (#{worst.ms} ms in #{worst.who}, scheduled in at #{format_mfa(worst.in)}; the Erlang-only control's longest: #{control_worst} ms)", else: "met"}
    - Goal NIF call under 50 µs: median #{us.(nif_median)}, p99 #{us.(nif_p99)}: #{if nif_p99 < 50_000, do: "met", else: if(nif_median < 50_000, do: "median met, p99 **missed**", else: "**missed**")}; first call #{us.(Stats.median(cold))} (median)
    """
  end

  defp format_mfa({m, f, a}), do: "#{inspect(m)}.#{f}/#{a}"
  defp format_mfa(other), do: inspect(other)
end
