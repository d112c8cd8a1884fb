# Scenario 6: memory. A fresh measuring node, with Elixir and Logger started but
# tinycluster not loaded; we read its RSS and thread count (`/proc/self/status`) and
# `:erlang.memory(:total)` before loading the NIF, after loading it, after the first scan
# (which starts the NIF's runtime and its threads), and after 10, 100, 500 and 1,000 scans
# of 10 candidates (9 plain nodes and 1 with another cookie), each awaited to its end. RSS
# minus the BEAM's own allocation is what the native side holds; the growth between 500
# and 1,000 scans is a leak check. Each round is a fresh VM.
defmodule Bench.Scenario.Memory do
  alias Bench.{Driver, Proc, Stats, VM}

  @checkpoints [10, 100, 500, 1_000]

  def run(ctx) do
    scans = if ctx.smoke, do: 50, else: 1_000
    checkpoints = Enum.filter(@checkpoints, &(&1 <= scans))

    results =
      Driver.with_epmd(ctx, fn ctx ->
        plain = for _ <- 1..9, do: [alive: Driver.name(ctx, "n")]
        nodes = VM.start_many(ctx, [[alive: Driver.name(ctx, "c"), cookie: "another"] | plain])

        for _ <- 1..ctx.runs do
          Driver.progress(".")
          m = Driver.start_measuring(ctx, "m", setup: [preload: false])
          Driver.settle(ctx, [m | nodes])
          result = VM.call(m, __MODULE__, :child_run, [checkpoints])
          Driver.kill([m])
          result
        end
      end)

    report(results, checkpoints)
  end

  @doc false
  def child_run(checkpoints) do
    before = point()
    {:module, _} = Code.ensure_loaded(Tinycluster.Native)
    nil = Tinycluster.Native.load_error()
    for m <- [Tinycluster, Tinycluster.Discovery, Tinycluster.Options], do: Code.ensure_loaded(m)
    loaded = point()
    {:ok, candidates} = Tinycluster.scan([])
    first = point()

    {points, _} =
      Enum.map_reduce(checkpoints, 1, fn n, done ->
        for _ <- done..(n - 1)//1, do: {:ok, _} = Tinycluster.scan([])
        {{n, point()}, n}
      end)

    %{
      before: before,
      loaded: loaded,
      first: first,
      points: points,
      candidates: length(candidates),
      runtime_threads:
        Enum.count(Proc.threads_cpu(), fn {_, {name, _}} -> name == "tinycluster" end)
    }
  end

  defp point do
    :erlang.garbage_collect()
    Map.put(Proc.memory(), :beam_kb, div(:erlang.memory(:total), 1024))
  end

  defp report(results, checkpoints) do
    last = List.last(checkpoints)
    added = fn r, p -> p.rss_kb - r.before.rss_kb end
    native = fn r, p -> p.rss_kb - p.beam_kb - (r.before.rss_kb - r.before.beam_kb) end
    at = fn r, n -> r.points |> List.keyfind(n, 0) |> elem(1) end

    row = fn label, get ->
      points = Enum.map(results, &{&1, get.(&1)})

      "| #{label} | #{spread(for {_r, p} <- points, do: p.rss_kb)} | " <>
        "#{spread(for {r, p} <- points, do: added.(r, p))} | " <>
        "#{spread(for {r, p} <- points, do: native.(r, p))} | " <>
        "#{spread(for {_r, p} <- points, do: p.beam_kb)} | " <>
        "#{Enum.map_join(Enum.uniq(for {_r, p} <- points, do: p.threads), ",", &to_string/1)} |"
    end

    rows =
      [
        row.("before loading the NIF", & &1.before),
        row.("NIF loaded", & &1.loaded),
        row.("after the first scan", & &1.first)
      ] ++ for(n <- checkpoints, do: row.("after #{n} scans", &at.(&1, n)))

    growth =
      if 500 in checkpoints,
        do: Stats.median(for r <- results, do: at.(r, last).rss_kb - at.(r, 500).rss_kb)

    total = Stats.median(for r <- results, do: added.(r, at.(r, last)))

    """
    ## 6. Memory: RSS before loading the NIF and after #{last} scans

    #{length(results)} fresh VMs; #{hd(results).candidates} candidates per scan. Added: RSS minus RSS before loading
    the NIF. Native: the same, less the growth of the BEAM's own allocation
    (`:erlang.memory(:total)`), so roughly what the NIF and its runtime hold. Median
    (min–max) in MB.

    | point | RSS | added | native (added less BEAM) | BEAM allocated | OS threads |
    |---|---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    The NIF's runtime threads (named "tinycluster") after #{last} scans: #{Enum.map_join(Enum.uniq(Enum.map(results, & &1.runtime_threads)), ",", &to_string/1)}.
    #{if growth, do: "RSS growth from 500 to #{last} scans (leak check): #{Stats.mb(growth)} (median).", else: ""}

    - Goal under 8 MB added after #{last} scans: #{Stats.mb(total)}, #{if total && total < 8 * 1024, do: "met", else: "**missed**"}
    """
  end

  defp spread(kbs), do: Stats.spread(kbs, &Stats.mb/1)
end
