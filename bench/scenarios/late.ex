# Scenario 2: late starters. Two measuring nodes poll at `interval: 1000`: one runs
# tinycluster, the other the parallel-connect baseline (dns_cluster's loop). Then late
# nodes start one after another; each boots undistributed, waits a random 0..999 ms (so its
# registration falls at a random phase of the polls), starts distribution, and reports on
# its own clock when `net_kernel:start/1` returned (it is then registered with EPMD and
# listening) and when each measuring node came up. The delay is nodeup minus registration.
#
# Both measuring nodes run with `-kernel connect_all false`, so that neither connects a
# late node because the other did (global's transitive connections): each figure is that
# poller's own. A late node is killed once both pollers have connected it. 60 late nodes,
# so that p99 is more than the largest sample.
defmodule Bench.Scenario.Late do
  alias Bench.{Approach, Driver, Stats, VM}

  @interval 1_000

  def run(ctx) do
    count = if ctx.smoke, do: 2, else: max(60, 12 * ctx.runs)

    samples =
      Driver.with_epmd(ctx, fn ctx ->
        pollers =
          for approach <- [:tinycluster, :parallel] do
            m = Driver.start_measuring(ctx, "m", args: ["-kernel", "connect_all", "false"])
            VM.call(m, Approach, :start_polling, [approach, [interval: @interval]])
            {approach, m}
          end

        Driver.settle(ctx, Enum.map(pollers, &elem(&1, 1)))

        for _ <- 1..count do
          Driver.progress(".")
          measure(ctx, pollers)
        end
      end)

    report(samples, count)
  end

  defp measure(ctx, pollers) do
    alive = Driver.name(ctx, "late")
    late = VM.start(ctx, late: {alive, :rand.uniform(@interval) - 1})
    {_, {:registered, _before, registered}} = await(late, &match?({:registered, _, _}, &1))

    delays =
      for {approach, %VM{node: node}} <- pollers, into: %{} do
        case await(late, &match?({:nodeup, ^node, _}, &1)) do
          {_, {:nodeup, _, up}} -> {approach, up - registered}
          nil -> {approach, nil}
        end
      end

    Driver.kill([late])
    delays
  end

  defp await(vm, match?) do
    case VM.await_event(vm, match?, 10_000) do
      nil -> nil
      event -> {:ok, event}
    end
  end

  defp report(samples, count) do
    rows =
      for approach <- [:tinycluster, :parallel] do
        values = for s <- samples, v = s[approach], v != nil, do: v
        missing = count - length(values)

        "| #{Bench.Scenario.Hung.label(approach)} | #{length(values)}#{if missing > 0, do: " (#{missing} never connected in 10 s)", else: ""} | " <>
          "#{Stats.ms(Stats.percentile(values, 50))} | #{Stats.ms(Stats.percentile(values, 99))} | " <>
          "#{Stats.ms(Stats.percentile(values, 100))} | #{Stats.ms(Stats.percentile(values, 0))} |"
      end

    tc = for s <- samples, v = s[:tinycluster], v != nil, do: v
    p99 = Stats.percentile(tc, 99)
    verdict = if p99 && p99 <= (@interval + 100) * 1000, do: "met", else: "**missed**"

    """
    ## 2. Late starters: from a new node's EPMD registration to its connection

    #{count} late nodes, each registering at a random phase of the polls; both pollers at
    `interval: #{@interval}`. Measured on the late node's clock. A poller that connects on its
    next poll has a delay uniform in 0..#{@interval} ms plus its own latency, so p50 near
    #{div(@interval, 2)} ms and p99 near #{@interval} ms is the floor for any polling approach.

    | poller | samples | p50 | p99 | max | min |
    |---|---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    - Goal tinycluster p99 <= interval + 100 ms (#{@interval + 100} ms): #{Stats.ms(p99)}, #{verdict}
    """
  end
end
