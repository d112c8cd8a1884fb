defmodule Tinycluster.Poller.Candidates.Connect do
  # Whom `Tinycluster.Poller.Candidates` connects now, and whether its name may become an
  # atom: the one place that decides so, within the poller's atom budget. The atom itself is
  # made by the poller, as it starts the connection (`Tinycluster.NodeName.to_atom/1`), only
  # for the names this returns. Pure: the budget and the time are passed in; it reads the
  # atom table (whether a name's atom exists already costs nothing) but never adds to it.
  @moduledoc false

  alias Tinycluster.{Candidate, Filter, NodeName, Options}
  alias Tinycluster.Candidate.States
  alias Tinycluster.Poller.AtomBudget

  @doc """
  Whether to connect the candidate `entry` (at `key`) at `now_ms`: `{budget, entry,
  connects, notices}`, where `connects` is `[{key, name}]` (its full name, a string) and
  the entry is then `:connecting`. The atom it is connected under is taken here from the
  poller's `budget` (`Tinycluster.Poller.AtomBudget`) when it is new, and made by the poller
  for the names in `connects` alone; past the budget the entry keeps its state with
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
          {AtomBudget.t(), Candidate.t(), [{Tinycluster.Poller.Candidates.key(), String.t()}],
           [{:atom_budget, AtomBudget.bound(), String.t()}]}
  def now(budget, _key, entry, %Options{connect: false}, _now_ms), do: {budget, entry, [], []}

  def now(budget, key, entry, opts, now_ms) do
    case States.next(entry.state, :connect) do
      {next, action} ->
        if connect?(action, entry, opts, now_ms),
          do: start(budget, key, entry, next, now_ms),
          else: {budget, entry, [], []}

      nil ->
        {budget, entry, [], []}
    end
  end

  # A node that answered `not_allowed` named no one: its name is the one its host's EPMD
  # listed, which the answer proved to be a live distribution listener.
  defp start(budget, key, entry, next, now_ms) do
    case atom_for(budget, entry, now_ms) do
      {:ok, node, budget} ->
        reason = if entry.state == :not_allowed, do: :not_allowed, else: entry.reason
        entry = %{entry | state: next, node: node, reason: reason}
        {budget, entry, [{key, entry.name}], []}

      {:over, budget, bound, first?} ->
        notice = if first?, do: [{:atom_budget, bound, entry.host}], else: []
        reason = if bound == :window, do: :atom_budget, else: :atom_cap
        {budget, %{entry | reason: reason}, [], notice}

      {:error, reason} ->
        {budget, %{entry | state: :bad_reply, reason: reason}, [], []}
    end
  end

  # The probe confirmed the name, and for another host that name may differ from the one
  # EPMD implied: the filters see the confirmed one too. A node with an allow list answers
  # every probe `not_allowed`, since no list names the probe; only a real attempt can tell
  # whether it lets this node in.
  defp connect?(action, entry, opts, now_ms) do
    Filter.allowed?(opts, entry.name) and
      case action do
        :connect -> true
        :if_included -> opts.include_hidden
        :when_due -> due?(entry.retry_at, now_ms)
      end
  end

  defp due?(retry_at, now_ms),
    do: retry_at == nil or (is_integer(retry_at) and now_ms >= retry_at)

  # The atom to connect under: its atom if it has one (nil if it is still to be made), and
  # from the poller's budget when it is new to the atom table.
  defp atom_for(budget, %Candidate{node: nil, name: name, host: host}, now_ms) do
    with :ok <- NodeName.check(name) do
      case NodeName.existing(name) do
        nil -> new_atom(budget, name, host, now_ms)
        node -> {:ok, node, budget}
      end
    end
  end

  defp atom_for(budget, %Candidate{node: node}, _now_ms), do: {:ok, node, budget}

  defp new_atom(budget, name, host, now_ms) do
    case AtomBudget.take(budget, host, name, now_ms) do
      {:ok, budget} -> {:ok, nil, budget}
      over -> over
    end
  end
end
