# Scenario 13: clusters without EPMD. Network namespaces as hosts (Tinycluster.Netns, root
# only), as in the DNS seed scenario: host 1 runs dnsmasq and the measuring node; hosts 2-4
# each run one node, `app@198.18.0.i`, and the name `app.test` has their three A records.
# A fresh measuring node runs one way of clustering and we time, from its call, until it is
# connected to the three (its nodeups) and until the full mesh: every one of the four
# nodes connected to the three others (each app node prints the OS time at which it had
# three visible nodes; global connects them to each other once the measuring node has).
# All times are OS clock readings of processes on this machine.
#
# Three ways, in the same run, on the same hosts:
#   EPMD-less: every node (the measuring node too) runs `-start_epmd false -erl_epmd_port
#     6789`; no epmd runs in any host. The measuring node runs
#     `{Tinycluster, hosts: [{:dns, "app.test", nameservers: [...]}]}`, which probes port
#     6789 on each address the name gives.
#   With EPMD: an epmd in every host, plain nodes; the same poller, which asks each host's
#     epmd for its names first.
#   dns_cluster's approach, EPMD-less: resolve the name and `Node.connect(:"app@#{ip}")` to
#     every address at once (10 s timeout), in the EPMD-less hosts: OTP answers 6789 for
#     every node.
# The two setups differ in whether an epmd runs, so each round builds the namespaces
# without EPMD, measures the two EPMD-less ways, deletes them, and builds them again with an
# epmd in each host for the EPMD way (in the other order every other round). Every
# measurement gets fresh app nodes and a fresh measuring node, stopped by OS pid.
defmodule Bench.Scenario.Epmdless do
  alias Bench.{Driver, Stats}
  alias Tinycluster.{Dnsmasq, Netns}

  @ways [:epmdless, :epmd, :dns_cluster]
  @dist_port 6789
  @dns_port 5353
  @wait 30_000
  @goal 1.1

  def run(ctx) do
    case {Netns.available(), Dnsmasq.available()} do
      {:ok, :ok} -> measure_all(ctx)
      {{:error, why}, _} -> skipped(why)
      {_, {:error, why}} -> skipped(why)
    end
  end

  defp skipped(why), do: "## 13. Clusters without EPMD\n\nSkipped: #{why}.\n"

  defp measure_all(ctx) do
    results =
      for round <- 1..ctx.runs,
          setup <- rotate([:without_epmd, :with_epmd], round),
          result <- with_hosts(ctx, setup, &measure_setup(ctx, &1, &2, setup, round)),
          do: result

    report(ctx, results)
  end

  defp rotate(list, round), do: if(rem(round, 2) == 0, do: Enum.reverse(list), else: list)

  # Builds the 4 hosts (with or without an epmd in each) and dnsmasq in host 1, runs `fun`,
  # and deletes them all, also when `fun` raises.
  defp with_hosts(ctx, setup, fun) do
    net = Netns.new(4, ctx.cookie)

    try do
      Netns.setup!(net, epmd: setup == :with_epmd)
      [h1 | app_hosts] = net.hosts
      records = for h <- app_hosts, do: {h.ipv4, "app.test"}
      dns = Netns.start_dnsmasq(h1, hosts: records, port: @dns_port, on_exit: false)

      try do
        fun.(net, dns)
      after
        Dnsmasq.stop(dns)
        File.rm_rf(dns.dir)
      end
    after
      Netns.teardown(net)
    end
  end

  defp measure_setup(ctx, net, dns, :with_epmd, _round), do: [measure(ctx, net, dns, :epmd)]

  defp measure_setup(ctx, net, dns, :without_epmd, round) do
    for way <- rotate([:epmdless, :dns_cluster], round), do: measure(ctx, net, dns, way)
  end

  defp measure(ctx, net, dns, way) do
    Driver.progress(".")
    [h1 | app_hosts] = net.hosts
    without = if way == :epmd, do: [], else: [dist_port: @dist_port]
    others = length(app_hosts)

    apps =
      for h <- app_hosts do
        app = Netns.start_node(net, h, "app", without ++ [extra: ["-eval", watcher(others)]])
        await_line(app, "bench_mesh watching")
        app
      end

    agent =
      Netns.start_agent(
        net,
        h1,
        [name: Driver.name(ctx, "m"), extra: ["-pa", ctx.agent_dir]] ++ without
      )

    Bench.Noise.own(ctx.noise, Enum.map([agent | apps], & &1.os_pid))

    try do
      # Whether an epmd runs in any host, now that every node of the measurement is up.
      epmds = Enum.count(Enum.flat_map(net.hosts, &Netns.commands/1), &(&1 == "epmd"))
      app_names = Enum.map(apps, & &1.name)
      args = [way, Dnsmasq.nameserver(dns), app_names]
      child = Netns.call!(agent, __MODULE__, :child_measure, args, @wait + 10_000)
      meshed = Enum.map(apps, &await_mesh(&1, System.monotonic_time(:millisecond) + @wait))
      probed = if way != :dns_cluster, do: Netns.call!(agent, __MODULE__, :child_ports, [])

      all = if map_size(child.ups) == others, do: Enum.max(Map.values(child.ups))
      mesh = if all && Enum.all?(meshed), do: Enum.max([all | meshed])

      %{
        way: way,
        status: if(mesh, do: :ok, else: :timeout),
        all_us: all && all - child.t0,
        mesh_us: mesh && mesh - child.t0,
        epmds: epmds,
        probed: probed
      }
    after
      Enum.each([agent | apps], &stop/1)
    end
  end

  # Erlang for an app node's `-eval`: print a line once it watches for nodeups, and the OS
  # time once it has `count` visible nodes.
  defp watcher(count) do
    "spawn(fun() -> ok = net_kernel:monitor_nodes(true), " <>
      ~s|io:format("bench_mesh watching~n"), | <>
      "(fun W() -> receive {nodeup, _} -> case length(nodes()) >= #{count} of " <>
      ~s|true -> io:format("bench_mesh ~b~n", [os:system_time(microsecond)]); | <>
      "false -> W() end end end)() end)."
  end

  defp await_line(%{port: port} = node, text) do
    receive do
      {^port, {:data, {_, ^text}}} -> :ok
      {^port, {:data, _}} -> await_line(node, text)
    after
      @wait -> raise "#{node.name} never printed #{inspect(text)}"
    end
  end

  # The OS time (µs) at which an app node had all the others, or nil by `deadline`.
  defp await_mesh(%{port: port} = node, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, {_, "bench_mesh " <> us}}} -> String.to_integer(us)
      {^port, {:data, _}} -> await_mesh(node, deadline)
    after
      left -> nil
    end
  end

  # Stops a node by its OS pid and waits until the process is gone, so that the next
  # measurement's node finds its port (or its name at the host's epmd) free; then drops
  # what the node printed from the driver's mailbox.
  defp stop(%{os_pid: os_pid, port: port} = node) do
    Netns.stop(node)
    gone = fn -> not alive?(os_pid) end
    Bench.Util.wait_until(gone, 10_000) || raise "node #{os_pid} did not stop"
    drain(port)
  end

  defp alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not String.contains?(stat, ") Z ")
      {:error, _} -> false
    end
  end

  defp drain(port) do
    receive do
      {^port, _} -> drain(port)
    after
      0 -> :ok
    end
  end

  @doc false
  # In the measuring node: start `way` and wait for the app nodes' nodeups. Returns the OS
  # time of the call and of each nodeup (µs).
  def child_measure(way, nameserver, apps) do
    :ok = :net_kernel.monitor_nodes(true)
    t0 = System.os_time(:microsecond)

    spawn(fn ->
      case way do
        :dns_cluster ->
          Bench.Approach.dns_cluster(nameserver)

        _poller ->
          seed = {:dns, "app.test", nameservers: [nameserver]}
          {:ok, _} = Tinycluster.start_link(name: :bench_epmdless, hosts: [seed], log: :warning)
      end

      Process.sleep(:infinity)
    end)

    %{t0: t0, ups: await_nodeups(apps, %{}, System.monotonic_time(:millisecond) + @wait)}
  end

  @doc false
  # In the measuring node: the ports the poller asked its hosts on, as its status says
  # (`{:dist_port, P}` when it probed the node's port, `{:epmd_port, P}` when it asked EPMD).
  def child_ports do
    for {_label, host} <- Tinycluster.status(:bench_epmdless).hosts, uniq: true do
      if host.dist_port, do: {:dist_port, host.dist_port}, else: {:epmd_port, host.epmd_port}
    end
  end

  defp await_nodeups(apps, ups, deadline) do
    if map_size(ups) == length(apps) do
      ups
    else
      left = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {:nodeup, node} ->
          ups = if node in apps, do: Map.put(ups, node, System.os_time(:microsecond)), else: ups
          await_nodeups(apps, ups, deadline)
      after
        left -> ups
      end
    end
  end

  ## Report

  defp report(ctx, results) do
    of = fn way, key -> for %{way: ^way} = r <- results, r[key], do: r[key] end
    median = fn way, key -> Stats.median(of.(way, key)) end
    failures = for %{status: status, way: way} <- results, status != :ok, do: way

    rows =
      for way <- @ways do
        ratio = fn key ->
          if way == :epmd, do: "1x", else: Stats.ratio(median.(way, key), median.(:epmd, key))
        end

        "| #{label(way)} | #{Stats.spread(of.(way, :mesh_us))} | #{ratio.(:mesh_us)} | " <>
          "#{Stats.spread(of.(way, :all_us))} | #{ratio.(:all_us)} |"
      end

    mesh_ratio = ratio_value(median.(:epmdless, :mesh_us), median.(:epmd, :mesh_us))
    all_ratio = ratio_value(median.(:epmdless, :all_us), median.(:epmd, :all_us))
    epmds = fn ways -> results |> Enum.filter(&(&1.way in ways)) |> Enum.map(& &1.epmds) end
    probed = fn way -> way |> of.(:probed) |> List.flatten() |> Enum.uniq() end

    """
    ## 13. Clusters without EPMD: 4 hosts to the full mesh, with and without EPMD

    Network namespaces as hosts: host 1 runs dnsmasq and the measuring node, hosts 2–4 one
    node each (`app@198.18.0.i`), all three in the A records of `app.test`. "EPMD-less":
    every node, the measuring one too, runs `-start_epmd false -erl_epmd_port #{@dist_port}`
    and no epmd runs in any host; "with EPMD": an epmd in each host and plain nodes. The
    measuring node runs `{Tinycluster, hosts: [{:dns, "app.test", nameservers: [...]}]}`
    in both, or dns_cluster's approach (`Node.connect/1` to `app@ip` for every A record at
    once) in the EPMD-less hosts. Fresh nodes for every measurement, the namespaces rebuilt
    for each setup; #{ctx.runs} rounds. "Full mesh": from the call until every one of the 4
    nodes has the 3 others (global connects the app nodes to each other); "measuring node
    connected": until its nodeups of the 3. Ratios: the way's median over tinycluster's
    with EPMD.

    | way | full mesh | ratio | measuring node connected to all 3 | ratio |
    |---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    - Goal EPMD-less / with EPMD <= #{@goal}x (full mesh): #{Stats.ratio(mesh_ratio, 1)}, #{verdict(mesh_ratio)}
      - measuring node connected to all 3: #{Stats.ratio(all_ratio, 1)}
    - epmd processes in the hosts, EPMD-less measurements: #{inspect(epmds.([:epmdless, :dns_cluster]))}; with EPMD: #{inspect(epmds.([:epmd]))}
    - what tinycluster asked its hosts on (its status): EPMD-less #{inspect(probed.(:epmdless))}, with EPMD #{inspect(probed.(:epmd))}
    #{if failures == [], do: "", else: "- Incomplete measurements: #{inspect(Enum.frequencies(failures))}\n"}
    """
  end

  defp ratio_value(a, b) when is_number(a) and is_number(b) and b > 0, do: a / b
  defp ratio_value(_a, _b), do: nil

  defp verdict(nil), do: "not measured"
  defp verdict(ratio) when ratio <= @goal, do: "met"
  defp verdict(_ratio), do: "**missed**"

  defp label(:epmdless),
    do: "tinycluster, EPMD-less (`-start_epmd false -erl_epmd_port #{@dist_port}`)"

  defp label(:epmd), do: "tinycluster, with EPMD (an epmd per host)"

  defp label(:dns_cluster),
    do: "dns_cluster's approach, EPMD-less (`Node.connect` to `app@ip`, 10 s timeout)"
end
