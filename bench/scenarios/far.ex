# Scenario 10: a far host. Network namespaces as hosts (Tinycluster.Netns, root only): host 1
# runs the measuring node; host 2 is made far by a userspace delay line
# (Tinycluster.DelayLine, Tinycluster.FarHost; the kernel has no netem) in front of its EPMD
# and its nodes' fixed distribution ports, which listen on its loopback only. The line holds
# every chunk 0, 100 or 250 ms each way, and a connect itself costs nothing through it, as
# in the tests (see DelayLine's moduledoc for what that means against a real network); at
# 100 and 250 ms we measure again with a connect that costs its round trip too, as on a
# real network.
#
# At each delay, a fresh measuring node runs one approach against a fresh node of host 2,
# and we time from its call until the node is connected (nodeup on the measuring node):
# tinycluster (`start_link` with `hosts: ["198.18.0.2"]`, the default `probe_timeout` of
# 300 ms, `epmd_timeout: 3_000`, only that node) and dns_cluster's probe-less
# `Node.connect/1`. For tinycluster we also keep what its status says of the host (the EPMD
# round trip, the probe timeout in force) and its warnings: a live far node taken for a
# frozen one is one.
defmodule Bench.Scenario.Far do
  alias Bench.{Driver, Stats}
  alias Tinycluster.{DelayLine, FarHost, Netns}

  # {one-way delay in ms, whether a connect costs a round trip}
  @cases [{0, false}, {100, false}, {250, false}, {100, true}, {250, true}]
  @approaches [:tinycluster, :connect]
  @far "198.18.0.2"
  @first_port 9100
  # EPMD's request to a host 250 ms away costs 1 s when a connect costs its round trip: the
  # default `:epmd_timeout`, which fails the host. Raised, as the README says to for hosts
  # that far; it bounds a failing host only, and changes nothing for one that answers.
  @epmd_timeout 3_000

  def run(ctx) do
    case Netns.available() do
      :ok -> measure_all(ctx)
      {:error, why} -> "## 10. Far host\n\nSkipped: #{why}.\n"
    end
  end

  defp measure_all(ctx) do
    net = Netns.new(2, ctx.cookie)
    # One fresh node, on a port of its own, per measurement.
    count = length(@cases) * length(@approaches) * ctx.runs
    ports = Enum.to_list(@first_port..(@first_port + count - 1))

    try do
      Netns.setup!(net, loopback_epmd: [2])
      line = FarHost.start_line(Enum.at(net.hosts, 1), ports)

      try do
        plan =
          for c <- @cases,
              round <- 1..ctx.runs,
              approach <- rotate(@approaches, round),
              do: {c, approach}

        results =
          for {{{delay, connect_rtt} = c, approach}, port} <- Enum.zip(plan, ports) do
            Driver.progress(".")
            DelayLine.set_delay(line, delay)
            DelayLine.set_connect_rtt(line, connect_rtt)
            {c, approach, measure(ctx, net, approach, port)}
          end

        report(ctx, results)
      after
        DelayLine.stop(line)
      end
    after
      Netns.teardown(net)
    end
  end

  defp rotate(list, round), do: if(rem(round, 2) == 0, do: Enum.reverse(list), else: list)

  defp measure(ctx, net, approach, port) do
    [h1, h2] = net.hosts
    alive = "n#{port}"
    node = FarHost.start_node(net, h2, alive, port)

    agent =
      Netns.start_agent(net, h1,
        name: "m#{System.unique_integer([:positive])}",
        extra: ["-pa", ctx.agent_dir]
      )

    try do
      Netns.call!(agent, __MODULE__, :child_measure, [approach, node.name], 60_000)
    after
      Enum.each([agent, node], &Netns.stop/1)
    end
  end

  @doc false
  # In the measuring node: run `approach` once and time `target`'s nodeup.
  def child_measure(approach, target) do
    :ok = :net_kernel.monitor_nodes(true)
    handler = :bench_far_warnings
    :ok = :logger.add_handler(handler, FarHost, %{level: :warning, config: %{to: self()}})
    t0 = System.monotonic_time(:microsecond)

    case approach do
      :tinycluster ->
        only = [target |> Atom.to_string() |> String.split("@") |> hd() |> Kernel.<>("@")]
        opts = [name: :bench_far, hosts: [@far], only: only, epmd_timeout: @epmd_timeout]
        {:ok, _} = Tinycluster.start_link(opts)

      :connect ->
        spawn(fn -> Node.connect(target) end)
    end

    up =
      receive do
        {:nodeup, ^target} -> System.monotonic_time(:microsecond) - t0
      after
        30_000 -> nil
      end

    host = if approach == :tinycluster, do: Tinycluster.status(:bench_far).hosts[@far]
    :ok = :logger.remove_handler(handler)

    warnings =
      Stream.repeatedly(fn ->
        receive do
          {:far_host_log, _} -> 1
        after
          0 -> nil
        end
      end)
      |> Enum.take_while(& &1)
      |> length()

    %{
      connected_us: up,
      rtt_us: host && host.latency_us,
      probe_timeout_ms: host && host.probe_timeout_ms,
      warnings: warnings
    }
  end

  ## Report

  defp report(ctx, results) do
    rows =
      for {delay, connect_rtt} = c <- @cases do
        of = fn approach, key ->
          for {^c, ^approach, r} <- results, r[key] != nil, do: r[key]
        end

        tc = of.(:tinycluster, :connected_us)
        connect = of.(:connect, :connected_us)
        missing = ctx.runs * 2 - length(tc) - length(connect)

        goal = if connect != [], do: 1.5 * Stats.median(connect) + 500_000

        met =
          cond do
            goal == nil or tc == [] -> "-"
            Stats.median(tc) <= goal -> "met"
            true -> "**not met**"
          end

        "| #{delay} ms#{if connect_rtt, do: ", connect 1 RTT"} | #{Stats.spread(tc)} | #{Stats.spread(connect)} | " <>
          "#{Stats.ratio(Stats.median(tc), Stats.median(connect))} | #{Stats.ms(goal)} | #{met} | " <>
          "#{Stats.spread(of.(:tinycluster, :rtt_us))} | " <>
          "#{Stats.spread(of.(:tinycluster, :probe_timeout_ms), &"#{round(&1)} ms")} | " <>
          "#{Enum.sum(of.(:tinycluster, :warnings))}" <>
          if(missing > 0, do: " (#{missing} not connected within 30 s)", else: "") <> " |"
      end

    """
    ## 10. Far host: connect time 0, 100 and 250 ms away

    Network namespaces as hosts; host 2's EPMD and node behind a userspace delay line that
    holds every chunk the given time each way. A connect costs nothing through it (as in
    `test/far_hosts_test.exs`), so an exchange is one round trip where a real network costs
    a connect's round trip more; the rows "connect 1 RTT" make a connect cost it too (EPMD's
    request and a probe then cost 2 round trips, `Node.connect/1` 5 instead of 3).
    Fresh nodes for every measurement; #{ctx.runs} rounds per delay. "Connected": from the
    call until the node's nodeup on the measuring node. tinycluster runs with the default
    `probe_timeout` (300 ms) and `epmd_timeout: 3_000` (at 250 ms with a connect's round
    trip, EPMD's answer takes the default 1 s); "EPMD round trip" and "probe timeout" are
    what its status says of the host; "warnings" counts its warnings over all rounds (a
    live far node taken for a frozen one is one). Ratio: tinycluster's median over the
    probe-less connect's; goal: 1.5x the probe-less connect's median plus
    500 ms, which tinycluster's median meets or not (the bound this benchmark, not a test,
    checks: a timed test on a loaded machine measures the machine).

    | one-way delay | tinycluster connected | `Node.connect/1` without a probe | ratio | goal | goal met | EPMD round trip | probe timeout in force | warnings |
    |---|---|---|---|---|---|---|---|---|
    #{Enum.join(rows, "\n")}
    """
  end
end
