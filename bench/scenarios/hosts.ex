# Scenario 9: many hosts. N hosts on this one machine (N = 50, 200, 1000), each a
# loopback address 127.1.x.y with its own EPMD; hosts 1-3 carry a real node each,
# `<prefix>_app@127.1.0.k` (`-name`, so a node that connects to it asks that address's EPMD).
#
# EPMDs (`Bench.Loopback` says how the hosts and their nodes are built and named). Each
# host's real epmd runs as `epmd -address 127.1.x.y -port Q` on a port of its own. In front
# of each host, for each poller, the driver listens at `127.1.x.y:P` (P: that poller's own
# EPMD port, as `ERL_EPMD_PORT` gives it to the poller's `Node.connect/1` too) with a
# counting front (`Bench.EpmdFront`): it counts every request, then forwards it to the
# host's real epmd. Real epmds for every host up to 200 hosts; at 1000, only the 3 carrying
# hosts have one, and the fronts of the other 997 answer as an empty epmd would (NAMES: no
# line; PORT_PLEASE2: not found).
#
# Pollers, in one round per N, all at once (fresh VMs, `-connect_all false` everywhere so
# that no node connects on another's behalf), interval 1 s, each with a private EPMD of its
# own at 127.0.0.1 that lists only itself (its `:local`):
#
#   local       - tinycluster, `hosts: [:local]`: the CPU baseline of the goal
#   paced       - tinycluster, `hosts: [:local | the N hosts]`, defaults (`:settled_interval`
#                 30 s): today's design
#   every poll  - the same with `settled_interval: 1_000`: every host asked every poll (the
#                 design before per-host pacing; `Pacing.answered/5` makes a settled host's
#                 wait `min(2 * interval, settled_interval)` = the interval)
#   dns_cluster - dns_cluster's approach: a list of the N addresses (its one DNS lookup,
#                 which costs no EPMD request), then `Node.connect(:"<prefix>_app@ip")` at
#                 once to every address not connected, 10 s timeout, the next poll 1 s after
#                 the last ended. Each connect asks that host's EPMD (PORT_PLEASE2); the 3
#                 connected hosts cost nothing, the N - 3 addresses without a node one
#                 request each per poll.
#   control     - a VM that runs nothing, on the same kind of node
#
# After a warm-up (40 s: a settled host's wait reaches 30 s after 1+2+4+8+16 s), over a
# window (60 s, two asks of a host at the cap): EPMD requests a second per poller, counted
# at the fronts (`:local`'s, one a poll, on the poller's own epmd, are not counted: all
# three tinycluster pollers make them alike), and CPU a second per poller from
# `/proc/<pid>/task/*/schedstat`: the BEAM's threads and the NIF runtime's ("tinycluster"),
# raw and net of the control. Also the most requests a poller made in one second of the
# window: hosts that settled together are asked together.
#
# Then, at 200 hosts, discovery, for each poller, timed by the driver from the node's start
# (its agent answers once it is registered) until the poller's node lists it:
#   restarted - the node of host 1 killed (SIGKILL) and started again under its name
#   new node  - a plain node `<prefix>_new@127.1.0.2` on host 2, settled, where one runs
# dns_cluster's approach cannot find the new node: it names one node per address.
# "A new address added to a DNS seed" is not measured: it needs a DNS seed (dnsmasq and
# network namespaces, as the `dns` scenario builds, root only), beyond this scenario's time.
defmodule Bench.Scenario.Hosts do
  alias Bench.{Child, Driver, EpmdFront, Loopback, Proc, Stats, VM}

  @interval 1_000
  @carrying 3
  @real_epmds_up_to 200
  @pollers [:local, :paced, :every, :dns_cluster]
  @timeout 45_000

  def run(ctx) do
    sizes = if ctx.smoke, do: [6], else: [50, 200, 1000]
    {warmup, window} = if ctx.smoke, do: {3_000, 3_000}, else: {40_000, 60_000}
    discover_at = if ctx.smoke, do: 6, else: 200

    results =
      for n <- sizes do
        Driver.progress("#{n} ")
        {n, measure(ctx, n, warmup, window, n == discover_at)}
      end

    report(results, window, discover_at)
  end

  ## The driver's side

  defp measure(ctx, n, warmup, window, discover?) do
    Driver.owning(fn own -> measure(ctx, n, warmup, window, discover?, own) end)
  end

  defp measure(ctx, n, warmup, window, discover?, own) do
    ips = Loopback.ips(n)
    counters = EpmdFront.counters(length(@pollers))

    # Smoke runs take both paths: real epmds for hosts 1-4 of 6, stand-ins for the rest.
    real =
      cond do
        ctx.smoke -> @carrying + 1
        n <= @real_epmds_up_to -> n
        true -> @carrying
      end

    host_epmds =
      for {ip, i} <- Enum.with_index(ips, 1), i <= real, into: %{} do
        {i, own.(:epmds, Loopback.epmd(ctx, Loopback.address(ip)))}
      end

    local_epmds =
      for p <- @pollers ++ [:control], into: %{}, do: {p, own.(:epmds, Loopback.epmd(ctx))}

    for {p, slot} <- Enum.with_index(@pollers), {ip, i} <- Enum.with_index(ips, 1) do
      target = if e = host_epmds[i], do: {:forward, e.port}, else: :empty
      own.(:fronts, EpmdFront.start(ip, local_epmds[p].port, counters, slot, target))
    end

    carriers =
      for i <- 1..@carrying do
        own.(:vms, Loopback.host_node(ctx, host_epmds[i], "app", Enum.at(ips, i - 1)))
      end

    app_nodes = Enum.map(carriers, & &1.node)
    hosts = Enum.map(ips, &Loopback.address/1)

    vms =
      for p <- @pollers ++ [:control], into: %{} do
        {p, own.(:vms, Loopback.measuring(ctx, "#{p}", local_epmds[p].port))}
      end

    for p <- @pollers do
      :ok = VM.call(vms[p], __MODULE__, :child_start, [p, hosts, local_epmds[p].port, ctx.prefix])
    end

    # Every poller has connected the three nodes before the warm-up counts.
    for p <- @pollers, p != :local do
      VM.call(vms[p], Child, :await_connected, [app_nodes, @timeout], @timeout + 5_000)
    end

    Process.sleep(warmup)
    settled_before = VM.call(vms[:paced], Child, :settled_hosts, [])
    cpu0 = for {p, vm} <- vms, into: %{}, do: {p, Proc.threads_cpu(vm.os_pid)}

    req0 =
      for {p, slot} <- Enum.with_index(@pollers),
          into: %{},
          do: {p, EpmdFront.count(counters, slot)}

    t0 = System.monotonic_time(:microsecond)
    groups = for {p, slot} <- Enum.with_index(@pollers), into: %{}, do: {p, [slot]}
    peaks = EpmdFront.peaks(counters, groups, window)
    cpu1 = for {p, vm} <- vms, into: %{}, do: {p, Proc.threads_cpu(vm.os_pid)}

    req1 =
      for {p, slot} <- Enum.with_index(@pollers),
          into: %{},
          do: {p, EpmdFront.count(counters, slot)}

    seconds = (System.monotonic_time(:microsecond) - t0) / 1.0e6
    settled_after = VM.call(vms[:paced], Child, :settled_hosts, [])

    steady =
      for p <- @pollers ++ [:control], into: %{} do
        cpu = Proc.by_category(cpu0[p], cpu1[p])
        total = Enum.sum(Map.values(cpu))

        req =
          if p == :control,
            do: nil,
            else: Map.new(req1[p], fn {k, v} -> {k, (v - req0[p][k]) / seconds} end)

        {p,
         %{
           cpu_per_s: total / seconds,
           nif_per_s: cpu.tinycluster / seconds,
           req: req,
           peak: peaks[p]
         }}
      end

    discovery =
      if discover?,
        do: discover(ctx, vms, host_epmds, ips, hd(carriers), own),
        else: nil

    %{steady: steady, settled: {settled_before, settled_after}, discovery: discovery}
  end

  defp discover(ctx, vms, host_epmds, ips, first, own) do
    Driver.progress("discovery ")
    waiters = @pollers -- [:local]

    # Restarted: every poller sees the node go down before it comes back.
    VM.kill(first)
    for p <- waiters, do: VM.call(vms[p], __MODULE__, :child_await_gone, [first.node, 10_000])
    restarted = Loopback.host_node(ctx, host_epmds[1], "app", Enum.at(ips, 0))
    own.(:vms, restarted)
    restart = time_until(vms, waiters, restarted.node)

    # A new plain node on host 2, settled (for :paced) since the warm-up.
    fresh = Loopback.host_node(ctx, host_epmds[2], "new", Enum.at(ips, 1))
    own.(:vms, fresh)
    new_node = time_until(vms, waiters -- [:dns_cluster], fresh.node)

    %{restarted: restart, new_node: new_node}
  end

  # From now (the node's agent has answered, so it is registered) until each poller lists it.
  defp time_until(vms, pollers, node) do
    t0 = System.monotonic_time(:microsecond)

    pollers
    |> Task.async_stream(
      fn p ->
        case VM.call(vms[p], Child, :await_connected, [[node], @timeout], @timeout + 5_000) do
          :ok -> {p, System.monotonic_time(:microsecond) - t0}
          :timeout -> {p, nil}
        end
      end,
      timeout: @timeout + 10_000
    )
    |> Map.new(fn {:ok, r} -> r end)
  end

  ## Inside a measuring node

  @doc false
  def child_start(:local, _hosts, _port, _prefix) do
    Bench.Approach.once(:tinycluster, interval: @interval, hosts: [:local])
    :ok
  end

  def child_start(:paced, hosts, port, _prefix) do
    hosts = [:local | for(h <- hosts, do: {h, port})]
    Bench.Approach.once(:tinycluster, interval: @interval, hosts: hosts)
    :ok
  end

  def child_start(:every, hosts, port, _prefix) do
    hosts = [:local | for(h <- hosts, do: {h, port})]
    opts = [interval: @interval, settled_interval: @interval, hosts: hosts]
    Bench.Approach.once(:tinycluster, opts)
    :ok
  end

  def child_start(:dns_cluster, hosts, _port, prefix) do
    nodes = for h <- hosts, do: :"#{prefix}_app@#{h}"
    spawn_link(fn -> dns_cluster_loop(nodes) end)
    :ok
  end

  defp dns_cluster_loop(nodes) do
    need = nodes -- Node.list()

    need
    |> Task.async_stream(&Node.connect/1,
      max_concurrency: max(1, length(need)),
      timeout: 10_000,
      on_timeout: :kill_task
    )
    |> Stream.run()

    Process.sleep(@interval)
    dns_cluster_loop(nodes)
  end

  @doc false
  def child_await_gone(node, timeout) do
    Bench.Util.wait_until(fn -> node not in Node.list() end, timeout)
    :ok
  end

  ## The report

  defp report(results, window, discover_at) do
    rows =
      for {n, r} <- results, p <- @pollers do
        s = r.steady[p]
        control = r.steady.control.cpu_per_s
        local = r.steady.local.cpu_per_s - control
        net = s.cpu_per_s - control

        "| #{n} | #{label(p)} | #{rate(s.req.names)} | #{rate(s.req.port_please)} | " <>
          "#{rate(s.req.names + s.req.port_please + s.req.other)} | #{s.peak} | " <>
          "#{ms(s.cpu_per_s)} | #{ms(s.nif_per_s)} | #{ms(net)} | #{Stats.ratio(net, local)} |"
      end

    controls = for {n, r} <- results, do: "#{n} hosts: #{ms(r.steady.control.cpu_per_s)}"
    settled = for {n, %{settled: {b, a}}} <- results, do: "#{n} hosts: #{b} / #{a}"

    {_, at} = List.keyfind(results, discover_at, 0) || {nil, nil}
    goals = goals(at, discover_at)

    discovery =
      if at && at.discovery do
        d = at.discovery

        for p <- @pollers -- [:local] do
          "| #{label(p)} | #{time(d.restarted[p])} | " <>
            if(p == :dns_cluster,
              do: "never: one name per address |",
              else: "#{time(d.new_node[p])} |"
            )
        end
        |> Enum.join("\n")
      end

    """
    ## 9. Many hosts: N loopback hosts with an EPMD each, 3 of them with a node

    Hosts `127.1.x.y`, each with its own EPMD; hosts 1-3 carry a real node each. Real
    `epmd -address A -port Q` behind a counting front for every host up to
    #{@real_epmds_up_to} hosts; at 1000 hosts, only the 3 carrying hosts have a real epmd and
    the other fronts answer as an empty epmd would (stand-ins). Pollers at `interval: #{@interval}`,
    all at once on fresh VMs, each with its own front per host: "paced" is tinycluster as
    it is (`:settled_interval` 30 s), "every poll" the same with `settled_interval: 1000`
    (every host every poll, as before per-host pacing), "local" a tinycluster poller of
    `:local` alone, "dns_cluster" its approach over the N addresses (`Node.connect/1` to
    each address not connected, every second). Steady state after a #{div(40_000, 1000)} s
    warm-up (less in smoke runs), over #{div(window, 1000)} s, one round per N. EPMD requests a
    second at the N hosts' EPMDs (`:local`'s one a poll on the poller's own EPMD not
    counted); CPU a second of the whole VM (BEAM and the NIF's threads) and of the NIF's
    runtime threads alone; "net" is the VM's minus the control's (a VM that runs nothing);
    the ratio is net against the "local" poller's net. "Most in one second": hosts that
    settled together are asked together, so a paced poller asks in bursts.

    | hosts | poller | NAMES/s | PORT_PLEASE2/s | EPMD requests/s | most in one second | CPU/s | of it NIF threads | net of control | vs local |
    |---|---|---|---|---|---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    Control VM's CPU a second: #{Enum.join(controls, "; ")}. Hosts "paced" holds settled at
    the window's start / end: #{Enum.join(settled, "; ")}.

    #{if discovery, do: "Discovery at #{discover_at} hosts, timed by the driver from the node's start (registered) until the poller lists it (one measurement each; timeout #{div(@timeout, 1000)} s):\n\n| poller | node restarted on a settled host | new plain node on a settled host |\n|---|---|---|\n#{discovery}\n", else: ""}
    A new address added to a DNS seed: not measured (it needs a DNS seed on dnsmasq and
    network namespaces, as the `dns` scenario builds them).

    Goals, at #{discover_at} settled hosts:
    #{goals}
    """
  end

  defp goals(nil, _n), do: "- not measured"

  defp goals(r, n) do
    paced = r.steady.paced
    requests = paced.req.names + paced.req.port_please + paced.req.other
    control = r.steady.control.cpu_per_s
    ratio = (paced.cpu_per_s - control) / max(r.steady.local.cpu_per_s - control, 1)
    raw_ratio = paced.cpu_per_s / max(r.steady.local.cpu_per_s, 1)

    lines = [
      "- at most 10 EPMD requests a second per poller: #{rate(requests)} at the #{n} hosts, " <>
        "#{rate(requests + 1)} with `:local`'s: #{met(requests + 1 <= 10)}",
      "- idle CPU a second at most 1.5x a poller of `:local` alone: " <>
        "#{:erlang.float_to_binary(ratio, decimals: 2)}x net of the control " <>
        "(#{:erlang.float_to_binary(raw_ratio, decimals: 2)}x raw): #{met(ratio <= 1.5)}"
    ]

    lines =
      case r.discovery do
        nil ->
          lines

        d ->
          lines ++
            [
              "- a node restarted on a settled host reconnected within 2 intervals: " <>
                "#{time(d.restarted[:paced])}: #{met(d.restarted[:paced] && d.restarted[:paced] <= 2 * @interval * 1000)}",
              "- a new node on a settled host connected within `:settled_interval` plus 1 " <>
                "interval (31 s): #{time(d.new_node[:paced])}: " <>
                "#{met(d.new_node[:paced] && d.new_node[:paced] <= 31_000_000)}"
            ]
      end

    Enum.join(lines, "\n")
  end

  defp met(true), do: "**met**"
  defp met(_), do: "**missed**"

  defp label(:local), do: "local"
  defp label(:paced), do: "paced (tinycluster)"
  defp label(:every), do: "every poll"
  defp label(:dns_cluster), do: "dns_cluster"

  defp rate(x), do: :erlang.float_to_binary(x / 1, decimals: 1)
  defp ms(ns), do: "#{:erlang.float_to_binary(ns / 1.0e6, decimals: 2)} ms"
  defp time(nil), do: "over #{div(@timeout, 1000)} s"
  defp time(us), do: Stats.ms(us)
end
