defmodule Tinycluster.DnsSeed.Table do
  @moduledoc """
  The DNS seeds' bookkeeping: each seed's last lookup, the addresses in use, and the log
  lines a change of state is worth. A pure table: plain data in, plain data out, the time
  passed in; the poller owns it and `Tinycluster.DnsSeed.Lookup` fills it.
  """

  alias Tinycluster.{DnsSeed, Hosts}

  @doc "The state of every seed of `entries` before its first lookup, by name."
  @spec new([Hosts.entry()]) :: %{String.t() => DnsSeed.seed_status()}
  def new(entries) do
    Map.new(DnsSeed.seeds(entries), fn {:dns, name, opts} ->
      {name,
       %{
         name: name,
         type: opts.type,
         status: :pending,
         addresses: [],
         hosts: [],
         checked_at: nil,
         last_ok_at: nil
       }}
    end)
  end

  @doc """
  Records the answers of `Tinycluster.DnsSeed.Lookup.lookup_all/3`, received at `now`, in
  `seeds` (from `new/1`), and returns the new state and the log lines to write, as
  `{level, message, metadata}`: one warning when a seed starts failing, one info line when
  it answers again. A failed seed keeps its last good addresses.
  """
  @spec update(map(), map(), DateTime.t()) :: {map(), [{Logger.level(), String.t(), keyword()}]}
  def update(seeds, answers, now) do
    Enum.reduce(answers, {seeds, []}, fn {name, answer}, {seeds, lines} ->
      case Map.fetch(seeds, name) do
        {:ok, seed} ->
          {seed, line} = record(seed, answer, now)
          {Map.put(seeds, name, seed), if(line, do: [line | lines], else: lines)}

        :error ->
          {seeds, lines}
      end
    end)
    |> then(fn {seeds, lines} -> {seeds, Enum.reverse(lines)} end)
  end

  defp record(seed, {:ok, hosts}, now) do
    line =
      if match?({:error, _}, seed.status),
        do:
          {:info, "tinycluster: DNS seed #{seed.name} answers again (#{length(hosts)} addresses)",
           [tinycluster_seed: seed.name]}

    seed = %{
      seed
      | status: :ok,
        hosts: hosts,
        addresses: Enum.map(hosts, & &1.label),
        checked_at: now,
        last_ok_at: now
    }

    {seed, line}
  end

  defp record(seed, {:error, reason}, now) do
    line =
      unless match?({:error, _}, seed.status) do
        kept =
          if seed.hosts == [],
            do: "no addresses yet",
            else: "keeping its last #{length(seed.hosts)} addresses"

        {:warning,
         "tinycluster: cannot look up DNS seed #{seed.name}: #{DnsSeed.describe(reason)}; " <>
           "#{kept}, and nothing is disconnected", [tinycluster_seed: seed.name]}
      end

    {%{seed | status: {:error, reason}, checked_at: now}, line}
  end

  @doc """
  The NIF's host specs for the addresses `seeds` currently give, for the hosts `taken` (the
  static hosts' specs, whose addresses are not asked twice).
  """
  @spec specs(map(), [map()]) :: [map()]
  def specs(seeds, taken) do
    taken = MapSet.new(taken, &{String.downcase(&1.address, :ascii), &1.epmd_port})

    seeds
    |> Map.values()
    |> Enum.sort_by(& &1.name)
    |> Enum.flat_map(& &1.hosts)
    |> Enum.uniq_by(& &1.label)
    |> Enum.reject(&MapSet.member?(taken, {&1.address, &1.epmd_port}))
    |> Enum.map(&Map.merge(&1, %{node_host: nil, dist_port: nil, dist_port_last: nil}))
  end

  @doc "How many addresses each seed gives now, by name, as the scan events carry it."
  @spec counts(map()) :: %{String.t() => non_neg_integer()}
  def counts(seeds), do: Map.new(seeds, fn {name, seed} -> {name, length(seed.hosts)} end)

  @doc "What `Tinycluster.status/1` shows of each seed, by name."
  @spec status(map()) :: %{String.t() => DnsSeed.seed_status()}
  def status(seeds), do: Map.new(seeds, fn {name, seed} -> {name, Map.delete(seed, :hosts)} end)
end
