defmodule Tinycluster.Poller.Candidates.Refusals do
  # The refused connections of each candidate, apart from its `attempts` (which failed
  # probes in between also move): how many at its port, and, for one left alone after
  # them (`retry_at: :never`, see `Tinycluster.Poller.Backoff`), a digest of the cookie it refused,
  # so that a change of this node's cookie for it starts it over. Pure: plain data in and
  # out; `Tinycluster.Poller.Candidates` applies what it says to the entries.
  @moduledoc false

  defstruct counts: %{}, left_alone: %{}

  @typedoc """
  Per candidate key: the refusals so far at a port, and the cookie digest a candidate left
  alone refused.
  """
  @type t :: %__MODULE__{
          counts: %{term() => {:inet.port_number(), pos_integer()}},
          left_alone: %{term() => non_neg_integer() | nil}
        }

  @doc "No refusal yet."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "The digest of a cookie that `connect_ended/6` and `changed/3` compare."
  @spec cookie_digest(atom()) :: non_neg_integer()
  def cookie_digest(cookie), do: :erlang.phash2(cookie)

  @doc """
  The refused connections of `key` at `port` so far, this attempt's included, for a
  connection attempt that ended with `result`: `false` is a refusal (another cookie, or an
  allow list); a stall (`:stalled`, see `Tinycluster.Poller.Candidates.Stalls`) tells nothing of
  the cookie, and neither counts nor clears, nor does a crash; anything else clears the
  count.
  """
  @spec count(t(), term(), :inet.port_number(), term()) :: non_neg_integer()
  def count(%__MODULE__{counts: counts}, key, port, false) do
    case Map.get(counts, key) do
      {^port, n} -> n + 1
      _ -> 1
    end
  end

  def count(%__MODULE__{counts: counts}, key, port, result)
      when result == :stalled or (is_tuple(result) and elem(result, 0) == :crashed) do
    case Map.get(counts, key) do
      {^port, n} -> n
      _ -> 0
    end
  end

  def count(_refusals, _key, _port, _result), do: 0

  @doc """
  Records that `key` refused `n` connections at `port` (`count/4`), and whether it is now
  left alone, after refusing the cookie whose digest is `cookie`.
  """
  @spec record(t(), term(), :inet.port_number(), non_neg_integer(), boolean(), term()) :: t()
  def record(%__MODULE__{} = refusals, key, port, n, left_alone?, cookie) do
    counts =
      if n > 0,
        do: Map.put(refusals.counts, key, {port, n}),
        else: Map.delete(refusals.counts, key)

    left_alone =
      if left_alone?,
        do: Map.put(refusals.left_alone, key, cookie),
        else: Map.delete(refusals.left_alone, key)

    %{refusals | counts: counts, left_alone: left_alone}
  end

  @doc """
  The candidates left alone whose cookie, as `cookie_of` gives it for `node_of.(key)`,
  changed since they refused it: they start over, and are forgotten here. A key whose
  `node_of` is nil (gone, or restarted at another port) is forgotten too.
  """
  @spec changed(t(), (term() -> node() | nil), (node() -> atom())) :: {t(), [term()]}
  def changed(%__MODULE__{left_alone: left_alone} = refusals, _node_of, _cookie_of)
      when left_alone == %{},
      do: {refusals, []}

  def changed(%__MODULE__{} = refusals, node_of, cookie_of) do
    Enum.reduce(refusals.left_alone, {refusals, []}, fn {key, digest}, {acc, again} ->
      case node_of.(key) do
        nil ->
          {%{acc | left_alone: Map.delete(acc.left_alone, key)}, again}

        node ->
          if cookie_digest(cookie_of.(node)) == digest,
            do: {acc, again},
            else: {forget(acc, key), [key | again]}
      end
    end)
  end

  @doc "Forgets everything about `key`'s refusals: its node restarted."
  @spec forget(t(), term()) :: t()
  def forget(%__MODULE__{} = refusals, key) do
    %{
      refusals
      | counts: Map.delete(refusals.counts, key),
        left_alone: Map.delete(refusals.left_alone, key)
    }
  end
end
