defmodule Tinycluster.SoakTest do
  # Ten thousand scans and more against a few live nodes and a frozen one: afterwards the
  # VM's memory, its open file descriptors and the NIF runtime's threads are where they
  # were, and no scheduler was held up by the NIF meanwhile.
  use ExUnit.Case, async: false

  alias Tinycluster.{TestEpmd, TestNodes}

  @moduletag timeout: 300_000

  @scans 10_000
  @warmup 1_500
  @scanners 6
  @pollers 4
  @probe_timeout 40

  # Tolerances, end against the baseline taken after the warm-up. The BEAM's own memory
  # after a full garbage collection; the process's resident set, which also holds the NIF's
  # allocations and allocator slack; descriptors and threads exactly, give or take the few
  # the test VM itself may open meanwhile (a log file, a port).
  @beam_memory_slack 8 * 1024 * 1024
  @rss_slack 16 * 1024 * 1024
  @fd_slack 4
  # The runtime's one worker is always there, and this soak asks for no host name: its
  # blocking pool (name resolution only, up to four threads that idle out) cannot grow.
  @thread_slack 0

  defp fds, do: "/proc/self/fd" |> File.ls!() |> length()

  defp runtime_tids do
    "/proc/self/task"
    |> File.ls!()
    |> Enum.filter(fn tid ->
      case File.read("/proc/self/task/#{tid}/comm") do
        {:ok, comm} -> String.starts_with?(comm, "tinycluster")
        _ -> false
      end
    end)
  end

  defp runtime_threads, do: length(runtime_tids())

  # The scheduling policy of a thread: field 41 of its stat (3 is SCHED_BATCH).
  defp policy(tid) do
    [_, fields] = "/proc/self/task/#{tid}/stat" |> File.read!() |> String.split(") ", parts: 2)
    fields |> String.split(" ") |> Enum.at(41 - 3) |> String.to_integer()
  end

  defp rss do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/self/status"))
    String.to_integer(kb) * 1024
  end

  defp beam_memory do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    :erlang.memory(:total)
  end

  defp measure do
    # Let the last probes close and the runtime settle before counting.
    Process.sleep(500)
    %{beam: beam_memory(), rss: rss(), fds: fds(), threads: runtime_threads()}
  end

  # Scans in a loop through `Tinycluster.scan/1`, counting them, until told to stop.
  defp scan_loop(hosts, name, counter, index) do
    receive do
      :stop -> :ok
    after
      0 ->
        {:ok, _} = Tinycluster.scan(hosts: hosts, name: name, probe_timeout: @probe_timeout)
        :atomics.add(counter, index, 1)
        scan_loop(hosts, name, counter, index)
    end
  end

  # Calls the NIF in a loop, each call alone in its own time slice (`yield/0` just before
  # it, and a `receive` just after), so that a long schedule of this process is the NIF's
  # call or the host's doing. Returns how long each call took, in microseconds.
  defp nif_loop(request, counter, index, took \\ []) do
    receive do
      :stop -> took
    after
      0 ->
        :erlang.yield()
        {us, {:ok, id, handle}} = :timer.tc(Tinycluster.Native, :start_scan, [request])
        await_scan(id)

        # Held until the scan is done: a handle collected earlier would cancel it.
        :ok = Tinycluster.Native.cancel(handle)

        :atomics.add(counter, index, 1)
        nif_loop(request, counter, index, [us | took])
    end
  end

  # Waits for a scan started on the NIF directly, planning every name each host lists.
  defp await_scan(id) do
    receive do
      {:tinycluster_scan, ^id, {:done, _}} ->
        :ok

      {:tinycluster_scan, ^id, {:listed, listings}} ->
        plans =
          for l <- listings, do: {l.index, for({a, p, _} <- l.names, do: {a, p, :send_name})}

        Tinycluster.Native.plan(id, plans)
        await_scan(id)

      {:tinycluster_scan, ^id, _} ->
        await_scan(id)
    end
  end

  # Runs the pollers, the scan loops and one NIF loop until they made `n` scans between
  # them, then stops them all. Returns the NIF loop's pid and how long its calls took.
  defp run_scans(hosts, n) do
    counter = :atomics.new(@scanners + 1, [])
    opts = Tinycluster.Options.new!(hosts: hosts, probe_timeout: @probe_timeout, name: :soak_nif)
    {:ok, request} = Tinycluster.Discovery.request(opts)

    pollers =
      for i <- 1..@pollers do
        name = :"soak_poller_#{i}"
        # One filters, so that its plans leave names out.
        filter = if i == 1, do: [except: ["nobody_"]], else: []

        start_supervised!(
          {Tinycluster,
           [
             name: name,
             hosts: hosts,
             interval: 1,
             probe_timeout: @probe_timeout,
             connect: false,
             log: false
           ] ++ filter}
        )

        name
      end

    loops =
      for(i <- 1..@scanners, do: Task.async(fn -> scan_loop(hosts, :"soak_#{i}", counter, i) end)) ++
        [Task.async(fn -> nif_loop(request, counter, @scanners + 1) end)]

    total = fn ->
      Enum.sum(for i <- 1..(@scanners + 1), do: :atomics.get(counter, i)) +
        Enum.sum(for p <- pollers, do: Tinycluster.status(p).scans)
    end

    TestNodes.wait_until(fn -> total.() >= n end, "#{n} scans", 240_000)

    for task <- loops, do: send(task.pid, :stop)
    took = loops |> Enum.map(&Task.await(&1, 30_000)) |> List.last()
    for name <- pollers, do: stop_supervised!({Tinycluster, name})
    {List.last(loops).pid, took}
  end

  # Long schedules of `nif_caller`, or in the NIF itself (a location in Tinycluster.Native).
  # A location says where a process was scheduled in and out, not what ran in between: the
  # NIF loop is what isolates the NIF's calls.
  defp nif_long_schedules(nif_caller) do
    receive do
      {:monitor, pid, :long_schedule, info} ->
        in_nif? = Enum.any?([info[:in], info[:out]], &match?({Tinycluster.Native, _, _}, &1))

        if pid == nif_caller or in_nif?,
          do: [{pid, info} | nif_long_schedules(nif_caller)],
          else: nif_long_schedules(nif_caller)
    after
      0 -> []
    end
  end

  test "#{@scans} scans: memory, descriptors and threads flat; no long schedule from the NIF" do
    # A private EPMD with this test's nodes only: three live, one frozen.
    epmd = TestEpmd.start()
    hosts = [{"127.0.0.1", epmd.port}]
    live = for _ <- 1..3, do: TestNodes.start(epmd_port: epmd.port)
    frozen = TestNodes.start(epmd_port: epmd.port)
    TestNodes.freeze(frozen)

    assert {:ok, candidates} = Tinycluster.scan(hosts: hosts, probe_timeout: 2_000)
    states = Map.new(candidates, &{&1.alive, &1.state})
    assert Enum.all?(live, &(states[&1.alive] == :live))
    assert states[frozen.alive] == :unreachable

    # Warm up (the runtime's threads, the allocators, every module loaded), then measure
    # with nothing running, soak, and measure with nothing running again.
    _ = run_scans(hosts, @warmup)
    baseline = measure()
    previous_monitor = :erlang.system_monitor(self(), long_schedule: 5)

    {{nif_caller, took}, elapsed} =
      try do
        started = System.monotonic_time(:millisecond)
        result = run_scans(hosts, @scans)
        {result, System.monotonic_time(:millisecond) - started}
      after
        case previous_monitor do
          {pid, options} -> :erlang.system_monitor(pid, options)
          :undefined -> :erlang.system_monitor(:undefined)
        end
      end

    long = nif_long_schedules(nif_caller)
    final = measure()
    calls = length(took)
    sorted = Enum.sort(took)
    p90 = Enum.at(sorted, div(calls * 9, 10))

    IO.puts(
      "\nsoak: #{@scans} scans in #{elapsed} ms; " <>
        "baseline #{inspect(baseline)}, end #{inspect(final)}; " <>
        "start_scan: #{calls} calls, median #{Enum.at(sorted, div(calls, 2))} us, " <>
        "p90 #{p90} us, max #{List.last(sorted)} us, #{length(long)} long schedules"
    )

    # How long the NIF's calls take, and how often the caller's schedule runs long, are
    # figures of bench/run --only sched (printed above too, not asserted: a loaded host
    # preempts a scheduler in a NIF call as anywhere else). What is asserted: the runtime's
    # threads never preempt the scheduler that wakes them, and no other process is held up
    # in the NIF.
    assert calls >= 100
    assert Enum.map(runtime_tids(), &policy/1) |> Enum.uniq() == [3], "not SCHED_BATCH"

    assert Enum.filter(long, fn {pid, _} -> pid != nif_caller end) == [],
           "long schedules in the NIF: #{inspect(long)}"

    assert final.beam - baseline.beam <= @beam_memory_slack
    assert final.rss - baseline.rss <= @rss_slack
    assert final.fds - baseline.fds <= @fd_slack
    assert final.threads >= 1
    assert final.threads - baseline.threads <= @thread_slack
    assert final.threads <= 1 + 4
  end
end
