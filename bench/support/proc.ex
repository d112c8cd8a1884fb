# Readers of Linux's /proc: CPU time per process and per thread, RSS, threads, and a TCP
# listener's queue. Used by the driver on other nodes' pids and by nodes on themselves.
defmodule Bench.Proc do
  @doc """
  CPU time each thread of `pid` ("self" or an OS pid) spent running, in nanoseconds, from
  `/proc/<pid>/task/*/schedstat` (nanosecond resolution; `stat`'s utime and stime count
  10 ms ticks, too coarse for a poll of a few hundred microseconds), keyed by thread id,
  with the thread's name.
  """
  def threads_cpu(pid \\ "self") do
    dir = "/proc/#{pid}/task"

    case File.ls(dir) do
      {:ok, tids} ->
        for tid <- tids,
            {:ok, sched} <- [File.read("#{dir}/#{tid}/schedstat")],
            {:ok, comm} <- [File.read("#{dir}/#{tid}/comm")],
            into: %{} do
          [ns | _] = String.split(sched)
          {tid, {String.trim(comm), String.to_integer(ns)}}
        end

      {:error, _} ->
        %{}
    end
  end

  @doc "The same from `stat` (utime + stime), converted from clock ticks to nanoseconds."
  def threads_cpu_ticks(pid \\ "self") do
    dir = "/proc/#{pid}/task"
    {:ok, tids} = File.ls(dir)

    for tid <- tids, {:ok, stat} <- [File.read("#{dir}/#{tid}/stat")], into: %{} do
      # The name is in parentheses and may hold spaces; the fields after it are fixed.
      [_, rest] = String.split(stat, ") ", parts: 2)
      fields = String.split(rest)
      ticks = String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
      {tid, ticks * 10_000_000}
    end
  end

  @doc """
  Total CPU time of `pid` in nanoseconds: the sum over its threads (`/proc/<pid>/schedstat`
  alone counts the main thread only). A thread that exited takes its time with it; the
  BEAM's threads live as long as the VM.
  """
  def cpu_ns(pid) do
    case threads_cpu(pid) do
      empty when empty == %{} -> nil
      threads -> threads |> Map.values() |> Enum.map(&elem(&1, 1)) |> Enum.sum()
    end
  end

  @doc "A thread's category: the BEAM's schedulers, its dirty schedulers, the NIF's runtime."
  def category(name) do
    cond do
      name =~ ~r/^\d+_scheduler$/ -> :scheduler
      name =~ ~r/^\d+_dirty_(cpu|io)_s/ -> :dirty
      name == "tinycluster" -> :tinycluster
      true -> :other
    end
  end

  @doc "CPU nanoseconds per thread category between two `threads_cpu/1` snapshots."
  def by_category(before, later) do
    Enum.reduce(later, %{scheduler: 0, dirty: 0, tinycluster: 0, other: 0}, fn
      {tid, {name, ns}}, acc ->
        {_, ns0} = Map.get(before, tid, {name, 0})
        Map.update!(acc, category(name), &(&1 + ns - ns0))
    end)
  end

  @doc "`VmRSS` in kB and `Threads` of `pid`."
  def memory(pid \\ "self") do
    text = File.read!("/proc/#{pid}/status")
    %{rss_kb: status_field(text, "VmRSS"), threads: status_field(text, "Threads")}
  end

  defp status_field(text, field) do
    [_, value] = Regex.run(~r/^#{field}:\s+(\d+)/m, text)
    String.to_integer(value)
  end

  @doc """
  The TCP sockets of this host whose local port is `port`: the listener's accept queue
  (connections the kernel accepted that the owner has not taken yet) and the connections
  by state.
  """
  def tcp_port(port) do
    hex = port |> Integer.to_string(16) |> String.pad_leading(4, "0")

    rows =
      for file <- ["/proc/net/tcp", "/proc/net/tcp6"],
          {:ok, text} <- [File.read(file)],
          line <- tl(String.split(text, "\n", trim: true)),
          [_sl, local, _remote, st, queues | _] <- [String.split(line)],
          String.ends_with?(local, ":" <> hex) do
        [_tx, rx] = String.split(queues, ":")
        {st, String.to_integer(rx, 16)}
      end

    %{
      accept_queue:
        rows |> Enum.filter(&(elem(&1, 0) == "0A")) |> Enum.map(&elem(&1, 1)) |> Enum.sum(),
      connections:
        rows
        |> Enum.reject(&(elem(&1, 0) == "0A"))
        |> Enum.frequencies_by(&tcp_state(elem(&1, 0)))
    }
  end

  defp tcp_state("01"), do: :established
  defp tcp_state("02"), do: :syn_sent
  defp tcp_state("03"), do: :syn_recv
  defp tcp_state("04"), do: :fin_wait1
  defp tcp_state("05"), do: :fin_wait2
  defp tcp_state("06"), do: :time_wait
  defp tcp_state("07"), do: :close
  defp tcp_state("08"), do: :close_wait
  defp tcp_state("09"), do: :last_ack
  defp tcp_state("0B"), do: :closing
  defp tcp_state(other), do: other

  @doc "The 1-minute load average: a hint of what else ran on the machine."
  def loadavg do
    "/proc/loadavg" |> File.read!() |> String.split() |> hd() |> String.to_float()
  end

  @doc "Idle and total jiffies of all CPUs, for the machine's busy share between two reads."
  def cpu_jiffies do
    ["cpu" | fields] =
      "/proc/stat" |> File.read!() |> String.split("\n") |> hd() |> String.split()

    values = Enum.map(fields, &String.to_integer/1)
    idle = Enum.at(values, 3) + Enum.at(values, 4)
    {idle, Enum.sum(values)}
  end

  @doc "The share of all CPUs that was busy between two `cpu_jiffies/0` reads."
  def busy_share({idle0, total0}, {idle1, total1}) do
    if total1 == total0, do: 0.0, else: 1 - (idle1 - idle0) / (total1 - total0)
  end
end
