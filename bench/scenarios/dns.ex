# Scenario 7: a DNS seed. Network namespaces as hosts (Tinycluster.Netns, root only): host 1
# runs dnsmasq and the measuring node; hosts 2-4 each run one live node, `app@198.18.0.i`.
# The name `app.test` has five A records: the three live hosts and two addresses that
# black-hole (a permanent neighbour entry nobody answers for, so a connect hangs as to a
# host that is down behind a router). A fresh measuring node runs one approach and we time,
# from its call, until all three live nodes are connected (nodeup on the measuring node),
# and until the approach's first round is over (when its next poll can start).
#
# tinycluster: `{:dns, "app.test", nameservers: [...]}` with the default timeouts; its
# first scan ends when the black-holed EPMDs' `:epmd_timeout` (1 s) passes. dns_cluster's
# approach: resolve the name, then `Node.connect(:"app@#{ip}")` to every address at once in
# `Task.async_stream` with its default 10 s connect timeout; the round ends when every
# connect returned (a black-holed one after `net_setuptime`, 7 s). Both ask the same dnsmasq.
# Every measurement gets fresh live nodes and a fresh measuring node.
defmodule Bench.Scenario.Dns do
  alias Bench.{Driver, Stats}
  alias Tinycluster.{Dnsmasq, Netns}

  @approaches [:tinycluster, :dns_cluster]
  @blackholes ["198.18.0.98", "198.18.0.99"]

  def run(ctx) do
    case Netns.available() do
      :ok -> measure_all(ctx)
      {:error, why} -> "## 7. DNS seed\n\nSkipped: #{why}.\n"
    end
  end

  defp measure_all(ctx) do
    net = Netns.new(4, ctx.cookie)

    try do
      Netns.setup!(net)
      [h1 | live_hosts] = net.hosts
      Enum.each(@blackholes, &Netns.blackhole(h1, &1))

      records =
        for(h <- live_hosts, do: {h.ipv4, "app.test"}) ++
          for(b <- @blackholes, do: {b, "app.test"})

      dns = Netns.start_dnsmasq(h1, hosts: records, port: 5353, on_exit: false)

      try do
        results =
          for round <- 1..ctx.runs, approach <- rotate(@approaches, round) do
            Driver.progress(".")
            {approach, measure(ctx, net, dns, approach)}
          end

        report(ctx, results)
      after
        Dnsmasq.stop(dns)
      end
    after
      Netns.teardown(net)
    end
  end

  defp rotate(list, round), do: if(rem(round, 2) == 0, do: Enum.reverse(list), else: list)

  defp measure(ctx, net, dns, approach) do
    [h1 | live_hosts] = net.hosts
    live = for h <- live_hosts, do: Netns.start_node(net, h, "app")

    agent =
      Netns.start_agent(net, h1,
        name: "m#{System.unique_integer([:positive])}",
        extra: ["-pa", ctx.agent_dir]
      )

    try do
      nameserver = Dnsmasq.nameserver(dns)
      live_names = Enum.map(live, & &1.name)
      Netns.call!(agent, __MODULE__, :child_measure, [approach, nameserver, live_names], 60_000)
    after
      Enum.each([agent | live], &Netns.stop/1)
    end
  end

  @doc false
  # In the measuring node: run `approach` once and time the live nodes' nodeups and the end
  # of the first round.
  def child_measure(approach, nameserver, live) do
    :ok = :net_kernel.monitor_nodes(true)
    caller = self()
    t0 = System.monotonic_time(:microsecond)

    spawn(fn ->
      case approach do
        :tinycluster ->
          seed = {:dns, "app.test", nameservers: [nameserver]}
          {:ok, _} = Tinycluster.start_link(name: :bench_dns, hosts: [seed], log: :warning)
          wait_first_scan()

        :dns_cluster ->
          Bench.Approach.dns_cluster(nameserver)
      end

      send(caller, {:round, System.monotonic_time(:microsecond)})
      Process.sleep(:infinity)
    end)

    ups = await_nodeups(live, %{}, System.monotonic_time(:millisecond) + 30_000)

    round =
      receive do
        {:round, t} -> t - t0
      after
        20_000 -> nil
      end

    %{
      status: if(map_size(ups) == length(live), do: :ok, else: :timeout),
      all_live_us: if(map_size(ups) == length(live), do: Enum.max(Map.values(ups)) - t0),
      round_us: round
    }
  end

  defp wait_first_scan do
    if Tinycluster.status(:bench_dns).scans >= 1 do
      :ok
    else
      Process.sleep(5)
      wait_first_scan()
    end
  end

  defp await_nodeups(live, ups, deadline) do
    if map_size(ups) == length(live) do
      ups
    else
      left = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {:nodeup, node} ->
          ups =
            if node in live,
              do: Map.put(ups, node, System.monotonic_time(:microsecond)),
              else: ups

          await_nodeups(live, ups, deadline)
      after
        left -> ups
      end
    end
  end

  ## Report

  defp report(ctx, results) do
    by = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))
    values = fn a, key -> for r <- Map.get(by, a, []), r[key], do: r[key] end
    failures = for {a, rs} <- by, r <- rs, r.status != :ok, do: a
    tc_live = Stats.median(values.(:tinycluster, :all_live_us))
    tc_round = Stats.median(values.(:tinycluster, :round_us))

    rows =
      for a <- @approaches do
        live = values.(a, :all_live_us)
        round = values.(a, :round_us)

        "| #{label(a)} | #{Stats.spread(live)} | " <>
          "#{if a == :tinycluster, do: "1x", else: Stats.ratio(Stats.median(live), tc_live)} | " <>
          "#{Stats.spread(round)} | " <>
          "#{if a == :tinycluster, do: "1x", else: Stats.ratio(Stats.median(round), tc_round)} |"
      end

    """
    ## 7. DNS seed: 3 live hosts and 2 black-holed addresses in one name

    Network namespaces as hosts; one A record per host and two for addresses that never
    answer. Fresh nodes for every measurement; #{ctx.runs} rounds. "All live connected":
    from the call until the three live nodes are connected. "First round over": until the
    approach could start its next poll (tinycluster: its first scan ended; dns_cluster: every
    `Node.connect` returned). Ratios: the approach's median over tinycluster's.

    | approach | all live connected | ratio | first round over | ratio |
    |---|---|---|---|---|
    #{Enum.join(rows, "\n")}
    #{if failures == [], do: "", else: "\nIncomplete measurements: #{inspect(Enum.frequencies(failures))}\n"}
    """
  end

  defp label(:tinycluster), do: "tinycluster, `{:dns, \"app.test\"}`"

  defp label(:dns_cluster),
    do: "dns_cluster's approach (`Node.connect` to `app@ip`, 10 s timeout)"
end
