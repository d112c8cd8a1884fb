defmodule Tinycluster.Poller.Candidates.Deferred do
  # The candidates a scan left for later, and when each was first left: a scan probes at
  # most `Tinycluster.Poller.Plan.budget/0` candidates, shared between its hosts, and plans the
  # rest `:deferred`. The next plans of their hosts take the longest-deferred first
  # (`Tinycluster.Poller.Plan`), so that whatever the order hosts answer in, every candidate is
  # probed within a few scans of the first that deferred it. A candidate that a scan of its
  # host reports otherwise (probed, held back, connected) or not at all (gone) is forgotten
  # here. Pure: the time is passed in.
  @moduledoc false

  @typedoc "Per `{host label, alive}`, when it was first deferred (ms, monotonic)."
  @type t :: %{{String.t(), String.t()} => integer()}

  @doc "Nothing deferred."
  @spec new() :: t()
  def new, do: %{}

  @doc """
  What a scan's end tells: `keys` are the candidates it deferred, as `{host label, alive}`,
  of the hosts `asked` (a set of labels); they keep the time of their first deferral, the
  rest of those hosts' is forgotten. Other hosts' are kept: another scan may ask them.
  """
  @spec scan_ended(t(), [{String.t(), String.t()}], MapSet.t(String.t()), integer()) :: t()
  def scan_ended(deferred, keys, asked, now_ms) do
    kept = Map.reject(deferred, fn {{host, _}, _} -> MapSet.member?(asked, host) end)
    Enum.reduce(keys, kept, fn key, acc -> Map.put(acc, key, Map.get(deferred, key, now_ms)) end)
  end
end
