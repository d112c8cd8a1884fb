# What else ran on the machine while a scenario did: a sampler that reads every process's
# CPU time (`/proc/<pid>/stat`, utime + stime) twice a second and splits it into this run's
# processes (the driver, its EPMDs and every node whose command line carries the run's
# name prefix) and everyone else's (other engineers' `mix test`, builds). Figures taken
# while others kept the cores busy are noisier; the report says how busy they were.
defmodule Bench.Noise do
  use GenServer

  def start(ctx, own_pids), do: GenServer.start(__MODULE__, {ctx.prefix, own_pids})

  @doc "CPU seconds since the last call: `%{ours: s, others: s, wall: s}`."
  def take(pid), do: GenServer.call(pid, :take)

  @doc "Adds OS pids to count as ours (an EPMD started later)."
  def own(pid, os_pids), do: GenServer.cast(pid, {:own, os_pids})

  @impl true
  def init({prefix, own}) do
    state = %{prefix: prefix, own: MapSet.new(own), last: %{}, kinds: %{}, ours: 0, others: 0}
    state = sample(state)
    Process.send_after(self(), :sample, 500)
    {:ok, %{state | ours: 0, others: 0} |> Map.put(:since, now())}
  end

  @impl true
  def handle_info(:sample, state) do
    Process.send_after(self(), :sample, 500)
    {:noreply, sample(state)}
  end

  @impl true
  def handle_call(:take, _from, state) do
    state = sample(state)
    tick = 100

    reply = %{
      ours: state.ours / tick,
      others: state.others / tick,
      wall: (now() - state.since) / 1000
    }

    {:reply, reply, %{state | ours: 0, others: 0, since: now()}}
  end

  @impl true
  def handle_cast({:own, pids}, state),
    do: {:noreply, %{state | own: MapSet.union(state.own, MapSet.new(pids))}}

  defp now, do: System.monotonic_time(:millisecond)

  defp sample(state) do
    {:ok, entries} = File.ls("/proc")

    ticks =
      for pid <- entries,
          pid =~ ~r/^\d+$/,
          {:ok, stat} <- [File.read("/proc/#{pid}/stat")],
          into: %{} do
        [_, rest] = String.split(stat, ") ", parts: 2)
        fields = String.split(rest)
        {pid, String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))}
      end

    Enum.reduce(ticks, %{state | last: ticks}, fn {pid, t}, acc ->
      {kind, acc} = kind(acc, pid)
      # A process first seen now started since the last sample: all its time is new.
      delta = t - Map.get(state.last, pid, 0)

      case kind do
        :ours -> %{acc | ours: acc.ours + delta}
        :others -> %{acc | others: acc.others + delta}
      end
    end)
  end

  # A process is ours if its pid was given or its command line carries the run's prefix.
  defp kind(state, pid) do
    case Map.fetch(state.kinds, pid) do
      {:ok, kind} ->
        {kind, state}

      :error ->
        cmdline = File.read("/proc/#{pid}/cmdline") |> elem(1) |> to_string()

        kind =
          if MapSet.member?(state.own, String.to_integer(pid)) or cmdline =~ state.prefix,
            do: :ours,
            else: :others

        {kind, %{state | kinds: Map.put(state.kinds, pid, kind)}}
    end
  end
end
