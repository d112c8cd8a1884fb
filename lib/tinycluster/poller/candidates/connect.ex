defmodule Tinycluster.Poller.Candidates.Connect do
  # Whom `Tinycluster.Poller.Candidates` connects now, and under which atom: the one place a
  # candidate's name becomes an atom, within the poller's atom budget. Pure: the budget and
  # the time are passed in.
  @moduledoc false

  alias Tinycluster.{Candidate, Filter, NodeName, Options}
  alias Tinycluster.Poller.AtomBudget

  @doc """
  Whether to connect the candidate `entry` (at `key`) at `now_ms`: `{budget, entry,
  connects, notices}`, where `connects` is `[{key, node}]` and the entry is then
  `:connecting`. The atom it is connected under is made here, from the poller's `budget`
  (`Tinycluster.Poller.AtomBudget`) when it is new; past the budget the entry keeps its state with
  reason `:atom_budget` (the rate: it waits for the next window) or `:atom_cap` (the
  lifetime cap: its name stays a string), and `notices` has `{:atom_budget, bound, host}`
  the first time the bound holds a name back.
  """
  @spec now(
          AtomBudget.t(),
          Tinycluster.Poller.Candidates.key(),
          Candidate.t(),
          Options.t(),
          integer()
        ) ::
          {AtomBudget.t(), Candidate.t(), [{Tinycluster.Poller.Candidates.key(), node()}],
           [{:atom_budget, AtomBudget.bound(), String.t()}]}
  def now(budget, _key, entry, %Options{connect: false}, _now_ms), do: {budget, entry, [], []}

  def now(budget, key, entry, opts, now_ms) do
    if connectable?(entry, opts) and due?(entry, now_ms) do
      # A node that answered `not_allowed` named no one: its name is the one its host's EPMD
      # listed, which the answer proved to be a live distribution listener.
      case node_of(budget, entry, now_ms) do
        {:ok, node, budget} ->
          reason = if entry.state == :not_allowed, do: :not_allowed, else: entry.reason
          {budget, %{entry | state: :connecting, node: node, reason: reason}, [{key, node}], []}

        {:over, budget, bound, first?} ->
          notice = if first?, do: [{:atom_budget, bound, entry.host}], else: []
          reason = if bound == :window, do: :atom_budget, else: :atom_cap
          {budget, %{entry | reason: reason}, [], notice}

        {:error, reason} ->
          {budget, %{entry | state: :bad_reply, reason: reason}, [], []}
      end
    else
      {budget, entry, [], []}
    end
  end

  # The probe confirmed the name, and for another host that name may differ from the one
  # EPMD implied: the filters see the confirmed one too. A node with an allow list answers
  # every probe `not_allowed`, since no list names the probe; only a real attempt can tell
  # whether it lets this node in.
  defp connectable?(entry, opts) do
    Filter.allowed?(opts, entry.name) and
      (entry.state in [:live, :rejected, :not_allowed] or
         (entry.state == :hidden and opts.include_hidden))
  end

  defp due?(%Candidate{state: :rejected, retry_at: retry_at}, now_ms),
    do: retry_at == nil or (is_integer(retry_at) and now_ms >= retry_at)

  defp due?(_entry, _now_ms), do: true

  # The atom to connect under: made here, the only place a candidate gets one, and from the
  # poller's budget when it is new to the atom table.
  defp node_of(budget, %Candidate{node: nil, name: name, host: host}, now_ms) do
    with :ok <- NodeName.check(name) do
      case NodeName.existing(name) do
        nil -> new_atom(budget, name, host, now_ms)
        node -> {:ok, node, budget}
      end
    end
  end

  defp node_of(budget, %Candidate{node: node}, _now_ms), do: {:ok, node, budget}

  defp new_atom(budget, name, host, now_ms) do
    case AtomBudget.take(budget, host, name, now_ms) do
      {:ok, budget} ->
        {:ok, node} = NodeName.to_atom(name)
        {:ok, node, budget}

      over ->
        over
    end
  end
end
