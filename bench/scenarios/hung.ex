# Scenario 1: a hung node. 6 live plain nodes and 1 frozen with `kill -STOP` (it still
# accepts TCP connections, as a paused VM or a stuck kernel does, and answers nothing).
# A fresh measuring node runs one approach and we time, from its call (for tinycluster,
# `start_link`), until all 6 live nodes are connected (nodeup on the measuring node). Every
# measurement gets fresh nodes, the measuring node included, so none starts with a
# connection or a half-open socket left by the one before.
#
# Order matters to the sequential approaches, and `:erl_epmd.names/0` lists the oldest
# registration first: "hung first" starts the frozen node before the live ones (the case
# the issue measured), "hung last" after them (measured for the sequential approaches only;
# the others do not depend on it).
#
# Peers, "cold": plain `erl` nodes in interactive mode that never had a connection, so
# their first handshake loads the distribution's code from disk (a dev node started with
# `iex --sname`); "warm": the same after one hidden connection from a throwaway node, as a
# release (embedded mode, code loaded at boot) or any node that had a connection before.
# The cases run in a rotated order each round, so that none always follows the same one.
#
# "tinycluster, Logger at :warning" is tinycluster again with the measuring node's Logger
# level raised: the poller logs one info line per node it connects, on the critical path
# of the next node's connect, and the baselines log nothing.
defmodule Bench.Scenario.Hung do
  alias Bench.{Approach, Child, Driver, Stats, Util, VM}

  @live 6
  @order Bench.Approach.all() ++ [:tinycluster_quiet]
  @smoke_live 3

  def run(ctx) do
    orders =
      if ctx.smoke,
        do: [{:first, Approach.all()}],
        else: [
          {:first, Approach.all() ++ [:tinycluster_quiet]},
          {:last, [:world_list, :sequential]}
        ]

    peers = if ctx.smoke, do: [:cold], else: [:cold, :warm]

    cases =
      for p <- peers, {position, approaches} <- orders, a <- approaches, do: {a, position, p}

    results =
      Driver.with_epmd(ctx, fn ctx ->
        for round <- 1..ctx.runs, {approach, position, peers} <- rotate(cases, round) do
          Driver.progress(".")
          {{approach, position, peers}, measure(ctx, approach, position, peers)}
        end
      end)

    report(ctx, results)
  end

  defp rotate(list, round) do
    {a, b} = Enum.split(list, rem(round - 1, length(list)))
    b ++ a
  end

  defp measure(ctx, approach, position, peers) do
    start_hung = fn ->
      hung = VM.start(ctx, alive: Driver.name(ctx, "hung"))
      :ok = VM.freeze(hung)
      hung
    end

    start_live = fn ->
      count = if ctx.smoke, do: @smoke_live, else: @live
      VM.start_many(ctx, for(_ <- 1..count, do: [alive: Driver.name(ctx, "live")]))
    end

    {hung, live} =
      case position do
        :first ->
          {start_hung.(), start_live.()}

        :last ->
          live = start_live.()
          {start_hung.(), live}
      end

    if peers == :warm, do: warm(ctx, live)
    # In smoke runs a connection to the hung node gives up after 1 s instead of 7.
    args = if ctx.smoke, do: ["-kernel", "net_setuptime", "1"], else: []
    m = Driver.start_measuring(ctx, "m", args: args)
    # Let the fresh VMs finish booting before the clock starts.
    Driver.settle(ctx, [m, hung | live])
    # Waiting for the call to return costs a net_setuptime (7 s) per measurement; it is
    # cheap only where the hung node comes first, so it is awaited only there.
    await_return = position == :first and approach in [:world_list, :sequential]
    live_nodes = Enum.map(live, & &1.node)

    result =
      VM.call(m, __MODULE__, :child_measure, [approach, live_nodes, hung.alive, await_return])

    Driver.kill([m, hung | live])
    Bench.Epmd.wait_empty(ctx.epmd)
    result
  end

  # One hidden connection to each live node and back: their handshake code is loaded, and
  # (hidden) it makes no global connections between them.
  defp warm(ctx, live) do
    warmer = VM.start(ctx, alive: Driver.name(ctx, "warmer"), args: ["-hidden"])
    for vm <- live, do: true = VM.call(warmer, :net_kernel, :connect_node, [vm.node])
    Driver.kill([warmer])
  end

  @doc false
  # In the measuring node: run `approach` once and time the nodeups of the live nodes.
  def child_measure(approach, live, hung_alive, await_return) do
    watcher = Child.watch_nodes()
    {:ok, names} = :erl_epmd.names()
    order = Enum.map(names, fn {name, _port} -> List.to_string(name) end)
    caller = self()
    t0 = Util.mono_us()

    spawn(fn ->
      case approach do
        :tinycluster_quiet ->
          Logger.configure(level: :warning)
          Approach.once(:tinycluster, [])

        _ ->
          Approach.once(approach, [])
      end

      send(caller, {:returned, Util.mono_us()})
      # Stay: a poller started here is linked to this process.
      Process.sleep(:infinity)
    end)

    {status, ups} = Child.await_nodes(watcher, live, 30_000)

    returned =
      receive do
        {:returned, t} -> t - t0
      after
        if(await_return, do: 15_000, else: 0) -> nil
      end

    up_times = Enum.map(ups, fn {_node, t} -> t - t0 end)
    probe = if approach in [:tinycluster, :tinycluster_quiet], do: probe_view()

    %{
      status: status,
      all_live_us: if(status == :ok, do: Enum.max(up_times)),
      first_live_us: if(up_times != [], do: Enum.min(up_times)),
      returned_us: returned,
      hung_position: (Enum.find_index(order, &(&1 == hung_alive)) || -1) + 1,
      listed: length(order),
      probe: probe
    }
  end

  # What tinycluster's first scan saw: its duration and the live probes' latencies.
  defp probe_view do
    status = Tinycluster.status(:bench_poller)

    %{
      scan_us: status.last_scan && status.last_scan.duration_us,
      latencies_us: for({_, c} <- status.candidates, c.latency_us, do: c.latency_us)
    }
  end

  ## Report

  defp report(ctx, results) do
    live = if ctx.smoke, do: @smoke_live, else: @live
    by_case = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))
    failures = for {c, rs} <- by_case, r <- rs, r.status != :ok, do: c
    all_live = fn c -> for r <- Map.get(by_case, c, []), r.all_live_us, do: r.all_live_us end
    median = fn c -> Stats.median(all_live.(c)) end

    rows =
      for {approach, position, peers} = c <- Enum.sort_by(Map.keys(by_case), &sort_key/1) do
        rs = by_case[c]
        tc = median.({:tinycluster, :first, peers})
        returned = for r <- rs, r.returned_us, do: r.returned_us
        pos = rs |> Enum.map(&"#{&1.hung_position}/#{&1.listed}") |> Enum.uniq() |> Enum.join(",")
        probes = for r <- rs, r.probe, l <- r.probe.latencies_us, do: l

        "| #{peers} | #{label(approach)} | #{position} (#{pos}) | #{Stats.spread(all_live.(c))} | " <>
          "#{if approach == :tinycluster, do: "1x", else: Stats.ratio(median.(c), tc)} | " <>
          "#{if returned == [], do: "-", else: Stats.spread(returned)} | " <>
          "#{if probes == [], do: "-", else: Stats.ms(Stats.median(probes))} |"
      end

    goals =
      for peers <- [:cold, :warm], Map.has_key?(by_case, {:tinycluster, :first, peers}) do
        tc = median.({:tinycluster, :first, peers})
        world = median.({:world_list, :first, peers})
        parallel = median.({:parallel, :first, peers})
        quiet = median.({:tinycluster_quiet, :first, peers})

        lines = [
          goal(
            "#{peers} peers, hung node first: world_list / tinycluster",
            world && tc && world / tc,
            ">= 50x",
            &(&1 >= 50)
          ),
          goal(
            "#{peers} peers, hung node first: tinycluster / parallel connect",
            tc && parallel && tc / parallel,
            "<= 1.5x",
            &(&1 <= 1.5)
          )
        ]

        note =
          if quiet && parallel,
            do: [
              "  - with Logger at `:warning`: #{Stats.ratio(quiet, parallel)} the parallel connect"
            ],
            else: []

        Enum.join(lines ++ note, "\n")
      end

    """
    ## 1. Hung node: #{live} live nodes and 1 frozen, time until all live nodes are connected

    Fresh nodes for every measurement; #{ctx.runs} rounds. Peers: "cold" never had a
    connection (their first handshake loads the distribution code, as on a dev node);
    "warm" had one hidden connection before (as a release, which loads its code at boot).
    Position: where the frozen node is in `:erl_epmd.names/0` (oldest first), as
    `position/listed` (the list includes the measuring node). Ratio: the approach's median
    over tinycluster's, same peers. "Call returned": when the approach's own call returned,
    awaited only where it is cheap (the sequential approaches with the hung node first).
    Probe: the median latency of tinycluster's probes of the live nodes.

    | peers | approach | hung node | all #{live} live connected: median (min–max) | ratio to tinycluster | call returned | probe |
    |---|---|---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    #{Enum.join(goals, "\n")}
    #{if failures == [], do: "", else: "Timed out (30 s) in: #{inspect(Enum.frequencies(failures))}"}
    """
  end

  defp sort_key({approach, position, peers}),
    do: {peers, position != :first, Enum.find_index(@order, &(&1 == approach))}

  @doc false
  def label(:tinycluster), do: "tinycluster (`start_link`)"
  def label(:tinycluster_quiet), do: "tinycluster, Logger at `:warning`"
  def label(:world_list), do: "`:net_adm.world_list/1` (the seed)"
  def label(:sequential), do: "sequential `connect_node` (libcluster LocalEpmd)"
  def label(:parallel), do: "parallel connect, no probe (dns_cluster)"

  defp goal(what, nil, target, _ok?), do: "- Goal #{what} #{target}: not measured"

  defp goal(what, value, target, ok?) do
    verdict = if ok?.(value), do: "met", else: "**missed**"
    "- Goal #{what} #{target}: #{:erlang.float_to_binary(value / 1, decimals: 2)}x, #{verdict}"
  end
end
