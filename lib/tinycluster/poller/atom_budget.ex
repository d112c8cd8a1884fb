defmodule Tinycluster.Poller.AtomBudget do
  # How many atoms a poller may make of node names, for all its hosts together. Atoms are
  # never freed, and hosts' EPMDs and listeners decide which names a poller sees: one that
  # keeps inventing live names (a fake, a broken orchestrator, or many of them behind one
  # DNS seed) would otherwise add an atom per name until the atom table is full and the VM
  # dies.
  #
  # A name cannot be proven before its atom exists, since `Node.connect/1` takes an atom.
  # So the budget is a loan that only a connection repays:
  #
  #   * a rate: at most `@per_window` atoms a window are out on loan (made, and their
  #     connection not yet ended) or lost (their connection failed), poller-wide;
  #   * a lifetime cap: at most `@max_wasted` atoms lost for good (made for a name whose
  #     connection failed and that never connected since). Past it, only a host that has
  #     proven itself (a name made an atom for it connected, with fewer than `@per_window`
  #     failures since) makes new atoms; the others' names stay strings.
  #
  # An atom whose connection succeeds is repaid in full: it frees its slot in the window
  # and never counts as lost. So the names that real nodes bring over years of deploys cost
  # one atom each, and never use up the caps. Pure: the time is passed in.
  @moduledoc false

  @per_window 64
  @window_ms 60_000
  @max_wasted 4_096

  defstruct window: {nil, 0},
            lent: %{},
            wasted: MapSet.new(),
            proven: %{},
            warned: MapSet.new(),
            max_wasted: @max_wasted

  @typedoc """
  The window (its start, the atoms taken in it and not repaid), the atoms lent (name ->
  host and the window it was taken in), the names whose atoms were lost, the hosts proven
  (host -> failures since its last connection), the warnings said, and the lifetime cap.
  """
  @type t :: %__MODULE__{
          window: {integer() | nil, non_neg_integer()},
          lent: %{String.t() => {String.t(), integer()}},
          wasted: MapSet.t(String.t()),
          proven: %{String.t() => non_neg_integer()},
          warned: MapSet.t(:window | :lifetime),
          max_wasted: pos_integer()
        }

  @typedoc "Which bound a name met: the rate (`:window`) or the lifetime cap (`:lifetime`)."
  @type bound :: :window | :lifetime

  @doc """
  An unused budget. `max_wasted` sets the lifetime cap (#{@max_wasted} by default).
  """
  @spec new(pos_integer()) :: t()
  def new(max_wasted \\ @max_wasted), do: %__MODULE__{max_wasted: max_wasted}

  @doc "The rate: at most this many atoms out or lost per window, for the whole poller."
  @spec per_window() :: pos_integer()
  def per_window, do: @per_window

  @doc "The lifetime cap of atoms lost, by default."
  @spec max_wasted() :: pos_integer()
  def max_wasted, do: @max_wasted

  @doc """
  Takes an atom for `name`, a name of `host`, at `now_ms`: `{:ok, budget}`, or `{:over,
  budget, bound, first?}` when `bound` holds it back (`first?`: the first time this
  window, or ever for the lifetime cap, when it is worth saying).
  """
  @spec take(t(), String.t(), String.t(), integer()) ::
          {:ok, t()} | {:over, t(), bound(), boolean()}
  def take(%__MODULE__{} = budget, host, name, now_ms) do
    budget = roll(budget, now_ms)
    {started, taken} = budget.window

    cond do
      # Lent already, in this batch say: its atom is made once, and counted once.
      Map.has_key?(budget.lent, name) ->
        {:ok, budget}

      taken >= @per_window ->
        over(budget, :window)

      lifetime_spent?(budget) and not proven?(budget, host) ->
        over(budget, :lifetime)

      true ->
        {:ok,
         %{
           budget
           | window: {started, taken + 1},
             lent: Map.put(budget.lent, name, {host, started})
         }}
    end
  end

  defp roll(%__MODULE__{window: {started, _}} = budget, now_ms)
       when is_integer(started) and now_ms - started < @window_ms,
       do: budget

  defp roll(budget, now_ms),
    do: %{budget | window: {now_ms, 0}, warned: MapSet.delete(budget.warned, :window)}

  defp over(budget, bound) do
    first? = not MapSet.member?(budget.warned, bound)
    {:over, %{budget | warned: MapSet.put(budget.warned, bound)}, bound, first?}
  end

  defp lifetime_spent?(budget), do: MapSet.size(budget.wasted) >= budget.max_wasted

  defp proven?(budget, host),
    do: match?(failures when failures < @per_window, Map.get(budget.proven, host))

  @doc """
  `name` connected: its atom is repaid (its window slot freed, if still that window, and
  no longer counted as lost), and, if this budget made that atom, its host is proven.
  A name whose atom existed already proves nothing: another host may only claim it.
  """
  @spec connected(t(), String.t()) :: t()
  def connected(%__MODULE__{} = budget, name) do
    case Map.pop(budget.lent, name) do
      {{host, started}, lent} ->
        window =
          case budget.window do
            {^started, taken} -> {started, max(taken - 1, 0)}
            other -> other
          end

        %{budget | lent: lent, window: window, proven: Map.put(budget.proven, host, 0)}

      {nil, _} ->
        if MapSet.member?(budget.wasted, name) do
          wasted = MapSet.delete(budget.wasted, name)
          %{budget | wasted: wasted, warned: unwarn(budget, wasted)}
        else
          budget
        end
    end
  end

  defp unwarn(budget, wasted) do
    if MapSet.size(wasted) < budget.max_wasted,
      do: MapSet.delete(budget.warned, :lifetime),
      else: budget.warned
  end

  @doc """
  The connection of `name` failed: an atom this budget lent for it is lost (until the
  name connects, if ever), and counts against its host's proof.
  """
  @spec failed(t(), String.t()) :: t()
  def failed(%__MODULE__{} = budget, name) do
    case Map.pop(budget.lent, name) do
      {{host, _started}, lent} ->
        proven =
          case budget.proven do
            %{^host => failures} = proven -> Map.put(proven, host, failures + 1)
            proven -> proven
          end

        %{budget | lent: lent, wasted: MapSet.put(budget.wasted, name), proven: proven}

      {nil, _} ->
        budget
    end
  end

  @doc """
  Forgets the proofs of the hosts not in `labels` (a set), so that they stay as few as the
  hosts. Walks the proofs, not the labels: every scan keeps them, and a poller of hundreds
  of hosts has proofs for the few that carry a node.
  """
  @spec keep(t(), MapSet.t(String.t())) :: t()
  def keep(%__MODULE__{proven: proven} = budget, %MapSet{} = labels),
    do: %{budget | proven: Map.filter(proven, fn {label, _} -> MapSet.member?(labels, label) end)}

  @doc """
  The budget as `Tinycluster.status/1` shows it, at `now_ms`: the atoms taken in this
  window (not yet repaid) against the rate, those lost against the lifetime cap, and the
  hosts proven.
  """
  @spec view(t(), integer()) :: %{
          window: non_neg_integer(),
          per_window: pos_integer(),
          wasted: non_neg_integer(),
          max_wasted: pos_integer(),
          proven_hosts: non_neg_integer()
        }
  def view(%__MODULE__{} = budget, now_ms) do
    {_, taken} = roll(budget, now_ms).window

    %{
      window: taken,
      per_window: @per_window,
      wasted: MapSet.size(budget.wasted),
      max_wasted: budget.max_wasted,
      proven_hosts: Enum.count(budget.proven, fn {_, failures} -> failures < @per_window end)
    }
  end
end
