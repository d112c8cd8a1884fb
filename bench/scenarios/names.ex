# Scenario 11: hosts that list thousands of names. Fake EPMDs in a fresh
# measuring node (the point is bad input), each listing 1,024 names at one silent port: a
# listener that accepts every connection and never answers, as a frozen node's kernel does.
# A poller (`probe_timeout: 300`, `interval: 1000`) asks 1 or 12 of them for 20 s; we sample
# its status and the probe connections open at the silent port every 100 ms, and count the
# connections it made and its log lines.
# Before the per-scan budget, 12 such hosts gave no finished scan in 60 s, file descriptors
# swinging from 130 to 480 and about 9,000 warnings. The baseline is the same poller of
# one such host: a scan's length should not grow with the number of names past the budget.
defmodule Bench.Scenario.Names do
  alias Bench.{Driver, Stats}

  @names 1_024

  def run(ctx) do
    seconds = if ctx.smoke, do: 8, else: 20
    cases = [1, 12]

    results =
      Driver.with_epmd(ctx, fn ctx ->
        for _round <- 1..min(ctx.runs, 2), hosts <- cases do
          Driver.progress(".")
          m = Driver.start_measuring(ctx, "m")
          result = Bench.VM.call(m, __MODULE__, :child_run, [hosts, seconds], 120_000)
          Driver.kill([m])
          {hosts, result}
        end
      end)

    report(results, seconds)
  end

  @doc false
  def child_run(hosts, seconds) do
    {:ok, silent} = :gen_tcp.listen(0, [:binary, active: false, backlog: 1024])
    {:ok, silent_port} = :inet.port(silent)
    # [open now, accepted in all]
    conns = :counters.new(2, [:write_concurrency])
    spawn_link(fn -> hold(silent, conns) end)

    epmds =
      for h <- 1..hosts do
        lines = for i <- 1..@names, do: "name h#{h}n#{i} at port #{silent_port}\n"
        fake_epmd(IO.iodata_to_binary([<<4369::32>> | lines]))
      end

    :ets.new(:bench_names_log, [:named_table, :public])
    :ets.insert(:bench_names_log, {:lines, 0})
    :ok = :logger.add_handler(:bench_names, __MODULE__, %{level: :info})

    name = :bench_names_poller
    opts = [name: name, interval: 1_000, probe_timeout: 300, log: :info]
    {:ok, _} = Tinycluster.start_link([hosts: Enum.map(epmds, &{"127.0.0.1", &1})] ++ opts)
    deadline = System.monotonic_time(:millisecond) + seconds * 1_000
    samples = sample(name, conns, deadline, [])
    [{:lines, lines}] = :ets.lookup(:bench_names_log, :lines)

    durations =
      samples
      |> Enum.map(& &1.last_scan)
      |> Enum.reject(&is_nil/1)
      |> Enum.uniq_by(& &1.at)
      |> Enum.map(& &1.duration_us)

    last = List.last(samples)

    %{
      scans: last.scans,
      durations: durations,
      deferred: if(last.last_scan, do: last.last_scan.deferred, else: nil),
      probed: last.probed,
      listed: hosts * @names,
      open: Enum.map(samples, & &1.open),
      made: :counters.get(conns, 2),
      lines: lines
    }
  end

  # Logger handler: counts the lines the poller logs.
  @doc false
  def log(_event, _config), do: :ets.update_counter(:bench_names_log, :lines, 1)

  defp sample(name, conns, deadline, acc) do
    if System.monotonic_time(:millisecond) >= deadline do
      Enum.reverse(acc)
    else
      status = Tinycluster.status(name)

      point = %{
        scans: status.scans,
        last_scan: status.last_scan,
        probed: map_size(status.candidates),
        open: :counters.get(conns, 1)
      }

      Process.sleep(100)
      sample(name, conns, deadline, [point | acc])
    end
  end

  # Accepts every connection and keeps it open, answering nothing, until the prober closes.
  defp hold(listener, conns) do
    {:ok, socket} = :gen_tcp.accept(listener)
    :counters.add(conns, 1, 1)
    :counters.add(conns, 2, 1)

    pid =
      spawn(fn ->
        receive do: (:go -> :ok)
        drain(socket)
        :counters.sub(conns, 1, 1)
      end)

    :ok = :gen_tcp.controlling_process(socket, pid)
    send(pid, :go)
    hold(listener, conns)
  end

  defp drain(socket) do
    case :gen_tcp.recv(socket, 0) do
      {:ok, _} -> drain(socket)
      {:error, _} -> :gen_tcp.close(socket)
    end
  end

  defp fake_epmd(reply) do
    {:ok, listener} = :gen_tcp.listen(0, [:binary, active: false, backlog: 128])
    {:ok, port} = :inet.port(listener)
    spawn_link(fn -> serve(listener, reply) end)
    port
  end

  defp serve(listener, reply) do
    {:ok, socket} = :gen_tcp.accept(listener)

    spawn(fn ->
      with {:ok, <<0, 1, ?n>>} <- :gen_tcp.recv(socket, 3, 5_000),
           do: :gen_tcp.send(socket, reply)

      :gen_tcp.close(socket)
    end)

    serve(listener, reply)
  end

  defp report(results, seconds) do
    rows =
      for {hosts, r} <- results do
        d = Stats.summary(r.durations)

        "| #{hosts} x #{@names} | #{r.scans} | #{Stats.ms(d.median)} | #{Stats.ms(d.max)} | " <>
          "#{r.deferred} | #{r.probed} of #{r.listed} | #{Enum.max(r.open)} | #{r.made} | " <>
          "#{r.lines} |"
      end

    median = fn n ->
      Stats.median(for {^n, r} <- results, d <- r.durations, do: d)
    end

    ratio =
      case {median.(12), median.(1)} do
        {a, b} when is_number(a) and is_number(b) and b > 0 -> Float.round(a / b, 2)
        _ -> "-"
      end

    """
    ## 11. Names: hosts listing 1,024 names each at one silent port

    A poller (`interval: 1000`, `probe_timeout: 300`) for #{seconds} s; fake EPMDs in the
    measuring node; its status sampled every 100 ms. Scans: finished scans; duration: of
    a finished scan; deferred: in the last; probed: distinct candidates the poller has
    probed by the end; open: the most probe connections open at once (sampled); made: the
    probe connections made in all; log lines: all the poller logged.

    | hosts | scans | duration (median) | duration (max) | deferred | probed | open | made | log lines |
    |---|---|---|---|---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    - A scan of 12 hosts against one of 1 host (median duration): #{ratio}x
    """
  end
end
