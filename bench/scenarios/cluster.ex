# Scenario 12: every node polling many hosts. In an
# application every node runs a poller (as in `every`), and with `:hosts` every poller asks
# every host: N pollers of H hosts make N x H EPMD requests an interval, cluster-wide, unless
# settled hosts are asked less often. This counts them at the hosts.
#
# Hosts: 12 loopback addresses 127.1.0.1-12 (`Bench.Loopback`: a real epmd each, on a port
# of its own), hosts 1-3 each carrying a plain node `<prefix>_app@127.1.0.k`. Pollers: 30
# fresh measuring nodes `...@127.0.0.1` on the scenario's private EPMD, which is their
# `:local` (they find each other there) and whose port P they ask every host at. So one
# counting front per host, at `127.1.0.k:P`, sees every poller's requests to that host (and
# their `Node.connect/1`'s PORT_PLEASE2): the fronts' sum is the cluster-wide figure. The
# pollers' asks of `:local` (one a poll each, at the private EPMD, no front) are not
# counted: they are the same in both variants. `-connect_all false` as in `hosts`, so each
# poller connects every node itself.
#
# Variants, one after the other on the same hosts, each on 30 fresh pollers that all start
# `{Tinycluster, hosts: [:local | the 12 hosts], interval: 1000}` together:
#
#   paced       - defaults: a settled host's wait doubles from 1 s to `:settled_interval`
#                 30 s, cut by up to a quarter
#   every poll  - `settled_interval: 1000`: every host every poll, as before per-host pacing
#                 (the wait is `min(2 * interval, settled_interval)` = the interval)
#
# Once every poller is connected to the 3 hosts' nodes and to the 29 other pollers, a
# warm-up (40 s: a settled host's wait reaches 30 s after 1+2+4+8+16 s), then over a window
# (60 s, two asks of a host at the cap): requests a second summed over the 12 fronts, and
# the most in one second; the hosts' epmds' CPU; each poller's CPU (whole VM); the hosts the
# pollers hold settled, summed, at the window's start and end. The model it is compared
# with: each poller asks each settled host once per `:settled_interval`, N x H / settled
# interval a second; the spread cuts each wait by up to a quarter, an eighth on average, so
# the paced figure is expected near 8/7 of it.
defmodule Bench.Scenario.Cluster do
  alias Bench.{Child, Driver, EpmdFront, Loopback, Proc, Stats, VM}

  @interval 1_000
  @settled_interval 30_000
  @carrying 3
  @variants [:paced, :every]
  @timeout 60_000

  def run(ctx) do
    # Smoke runs: the same steps at a size and length that only show they still work.
    {pollers, hosts} = if ctx.smoke, do: {3, 4}, else: {30, 12}
    {warmup, window} = if ctx.smoke, do: {3_000, 3_000}, else: {40_000, 60_000}

    results =
      Driver.with_epmd(ctx, fn ctx ->
        Driver.owning(fn own ->
          built = build_hosts(ctx, hosts, own)

          # At most 2 rounds: a round takes 5 minutes, and the counts barely move between rounds.
          for round <- 1..min(ctx.runs, 2),
              variant <- if(rem(round, 2) == 0, do: Enum.reverse(@variants), else: @variants) do
            Driver.progress("#{variant} ")
            {variant, measure(ctx, built, variant, pollers, warmup, window)}
          end
        end)
      end)

    report(results, pollers, hosts, warmup, window)
  end

  ## The driver's side

  # The hosts, kept for both variants: their epmds, one front each at the private EPMD's
  # port (slot i - 1 for host i), and the carrying hosts' nodes.
  defp build_hosts(ctx, n, own) do
    ips = Loopback.ips(n)
    counters = EpmdFront.counters(n)

    epmds = for ip <- ips, do: own.(:epmds, Loopback.epmd(ctx, Loopback.address(ip)))

    for {{ip, epmd}, slot} <- Enum.with_index(Enum.zip(ips, epmds)) do
      own.(:fronts, EpmdFront.start(ip, ctx.epmd_port, counters, slot, {:forward, epmd.port}))
    end

    carriers =
      for {ip, epmd} <- Enum.zip(ips, epmds) |> Enum.take(@carrying) do
        own.(:vms, Loopback.host_node(ctx, epmd, "app", ip))
      end

    %{
      addresses: Enum.map(ips, &Loopback.address/1),
      epmds: epmds,
      counters: counters,
      slots: Enum.to_list(0..(n - 1)),
      app_nodes: Enum.map(carriers, & &1.node)
    }
  end

  defp measure(ctx, built, variant, n, warmup, window) do
    # Only tinycluster's modules are preloaded: requests are counted here, not times, and
    # loading everything in 30 VMs on this machine's 2 cores would take a minute a variant.
    vms =
      1..n
      |> Task.async_stream(fn _ -> Loopback.measuring(ctx, "c", ctx.epmd_port, all: false) end,
        timeout: 120_000,
        max_concurrency: 8
      )
      |> Enum.map(fn {:ok, vm} -> vm end)

    try do
      pollers = Enum.map(vms, & &1.node)
      each(vms, __MODULE__, :child_start, [variant, built.addresses, ctx.epmd_port])

      # Every poller connected to everyone before the warm-up counts.
      everyone = built.app_nodes ++ pollers
      each(vms, __MODULE__, :child_await, [everyone, @timeout], @timeout + 5_000)
      Process.sleep(warmup)

      settled0 = Enum.sum(each(vms, Child, :settled_hosts, []))
      cpu0 = cpu(vms)
      epmd0 = cpu(built.epmds)
      req0 = EpmdFront.count_all(built.counters, built.slots)
      t0 = System.monotonic_time(:microsecond)
      peaks = EpmdFront.peaks(built.counters, %{all: built.slots}, window)
      seconds = (System.monotonic_time(:microsecond) - t0) / 1.0e6
      req1 = EpmdFront.count_all(built.counters, built.slots)
      epmd1 = cpu(built.epmds)
      cpu1 = cpu(vms)
      settled1 = Enum.sum(each(vms, Child, :settled_hosts, []))
      # Every poller still connected to all: the window saw no reconnection.
      connected = each(vms, __MODULE__, :child_await, [everyone, 0])

      %{
        req: Map.new(req1, fn {k, v} -> {k, (v - req0[k]) / seconds} end),
        peak: peaks.all,
        epmd_cpu_per_s: Enum.sum(Enum.zip_with(epmd1, epmd0, &-/2)) / seconds,
        poller_cpu_per_s: Enum.zip_with(cpu1, cpu0, &((&1 - &2) / seconds)),
        settled: {settled0, settled1, n * length(built.slots)},
        all_connected: Enum.all?(connected, &(&1 == :ok))
      }
    after
      Driver.kill(vms)
      Bench.Epmd.wait_empty(ctx.epmd, 30_000)
    end
  end

  defp cpu(processes), do: Enum.map(processes, &(Proc.cpu_ns(&1.os_pid) || 0))

  defp each(vms, module, fun, args, timeout \\ 60_000) do
    vms
    |> Task.async_stream(&VM.call(&1, module, fun, args, timeout),
      timeout: timeout + 5_000,
      max_concurrency: 64
    )
    |> Enum.map(fn {:ok, result} -> result end)
  end

  ## Inside a measuring node

  @doc false
  def child_start(variant, addresses, port) do
    hosts = [:local | for(a <- addresses, do: {a, port})]
    settled = if variant == :every, do: [settled_interval: @interval], else: []
    Bench.Approach.once(:tinycluster, [interval: @interval, hosts: hosts] ++ settled)
    :ok
  end

  @doc false
  def child_await(nodes, timeout), do: Child.await_connected(nodes -- [node()], timeout)

  ## The report

  defp report(results, n, h, warmup, window) do
    by = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))
    total = fn r -> r.req.names + r.req.port_please + r.req.other end
    requests = fn v -> Stats.median(Enum.map(by[v], total)) end

    rows =
      for v <- @variants do
        rs = by[v]
        model = n * h / (settled_interval(v) / 1000)

        "| #{label(v)} | #{n} | #{h} | #{fig(rs, & &1.req.names)} | " <>
          "#{fig(rs, & &1.req.port_please)} | **#{fig(rs, total)}** | " <>
          "#{fig(rs, &(total.(&1) / n))} | #{fig(rs, & &1.peak, &"#{round(&1)}")} | " <>
          "#{rate(model)} | #{Stats.ratio(requests.(v), model)} | " <>
          "#{fig(rs, & &1.epmd_cpu_per_s, &ms/1)} | " <>
          "#{fig(rs, &Stats.median(&1.poller_cpu_per_s), &ms/1)} | " <>
          "#{Enum.map_join(rs, ", ", &settled/1)} |"
      end

    paced = requests.(:paced)
    every = requests.(:every)
    spread_model = n * h / (@settled_interval / 1000 * 7 / 8)
    lost = for {v, r} <- results, not r.all_connected, do: label(v)

    """
    ## 12. Every node polling many hosts: #{n} pollers of #{h} loopback hosts

    Hosts `127.1.0.1`–`127.1.0.#{h}`, each a real `epmd -address A -port Q` behind one
    counting front; hosts 1–#{@carrying} carry a plain node each. #{n} fresh measuring nodes on
    the scenario's private EPMD (their `:local`) all run `{Tinycluster, hosts: [:local | the
    #{h} hosts], interval: #{@interval}}`, started together: "paced" with the default
    `:settled_interval` (#{div(@settled_interval, 1000)} s), "every poll" with
    `settled_interval: #{@interval}` (every host every poll, as before per-host pacing). Each
    variant on fresh pollers, the same hosts. Once every poller is connected to the
    #{@carrying} hosts' nodes and to the other pollers, #{div(warmup, 1000)} s of warm-up,
    then #{div(window, 1000)} s counted. EPMD requests a second summed over the #{h} hosts'
    fronts: cluster-wide (the pollers' asks of `:local`, one a poll each at the private EPMD,
    are not counted: the same in both variants); per poller; the most in one second. The
    model: each poller asks each host once per `:settled_interval`, N x H / settled interval.
    CPU a second of the #{h} hosts' epmds, and of a poller (whole VM, median over the #{n}).
    Settled: the hosts the pollers hold settled, summed over the pollers, at the window's
    start / end, of N x H. #{if ctx_runs(results) > 1, do: "Median (min–max) over #{ctx_runs(results)} rounds.", else: "One round."}

    | variant | pollers | hosts | NAMES/s | PORT_PLEASE2/s | EPMD requests/s, cluster-wide | per poller | most in one second | model N x H / settled interval | measured / model | hosts' epmds' CPU/s | CPU/s per poller | settled (start / end of all) |
    |---|---|---|---|---|---|---|---|---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    - every poll / paced: **#{Stats.ratio(every, paced)}** (#{rate(every)} against #{rate(paced)} requests a second)
    - the paced model with the spread (each settled wait cut by up to a quarter, an eighth on average): #{rate(spread_model)} a second; measured / that: #{Stats.ratio(paced, spread_model)}
    - every poller stayed connected to all through the window: #{if lost == [], do: "yes", else: "**no**: #{Enum.join(Enum.uniq(lost), ", ")}"}
    """
  end

  defp ctx_runs(results), do: div(length(results), length(@variants))

  defp settled_interval(:paced), do: @settled_interval
  defp settled_interval(:every), do: @interval

  defp settled(%{settled: {a, b, all}}), do: "#{a} / #{b} of #{all}"

  # One round: the figure; more: median (min–max).
  defp fig(rs, get, fmt \\ &rate/1)
  defp fig([r], get, fmt), do: fmt.(get.(r))
  defp fig(rs, get, fmt), do: Stats.spread(Enum.map(rs, get), fmt)

  defp label(:paced), do: "paced (tinycluster)"
  defp label(:every), do: "every poll"

  defp rate(x), do: :erlang.float_to_binary(x / 1, decimals: 1)
  defp ms(ns), do: "#{:erlang.float_to_binary(ns / 1.0e6, decimals: 2)} ms"
end
