defmodule Tinycluster.Candidates.Deferred do
  # The candidates a scan left for later, and the order the next scans take them in.
  #
  # A scan probes at most a budget of candidates (the NIF's: native/tinycluster_nif/src/
  # budget.rs) and reports the others `:deferred`. Each deferred candidate is remembered with
  # the time it was first deferred, and the next request names them first, the
  # longest-waiting first: whatever the order hosts answer in, every candidate is probed
  # within a few scans of the first that deferred it. A candidate that a scan reports otherwise (probed, held back, connected) or
  # not at all (gone) is forgotten here. Pure: the time is passed in.
  @moduledoc false

  @typedoc "Per `{host label, alive}`, when it was first deferred (ms, monotonic)."
  @type t :: %{{String.t(), String.t()} => integer()}

  @doc "Nothing deferred."
  @spec new() :: t()
  def new, do: %{}

  @doc "How many candidates one scan probes at most (the NIF's budget)."
  @spec budget() :: pos_integer()
  def budget, do: Tinycluster.Limits.get(:max_probes_per_scan)

  @doc """
  What a scan's end tells: `keys` are the candidates it deferred, as `{host label, alive}`;
  they keep the time of their first deferral, the rest is forgotten.
  """
  @spec scan_ended(t(), [{String.t(), String.t()}], integer()) :: t()
  def scan_ended(deferred, keys, now_ms),
    do: Map.new(keys, fn key -> {key, Map.get(deferred, key, now_ms)} end)

  @doc """
  The candidates the next request names first: the longest-deferred, at most a budget (naming
  more first would only defer them again).
  """
  @spec first(t()) :: [{String.t(), String.t()}]
  def first(deferred) when deferred == %{}, do: []

  def first(deferred) do
    deferred
    |> Enum.sort_by(fn {key, since} -> {since, key} end)
    |> Enum.take(budget())
    |> Enum.map(fn {key, _since} -> key end)
  end
end
