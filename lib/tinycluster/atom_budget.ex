defmodule Tinycluster.AtomBudget do
  # How many new atoms the names of one host's nodes may make, per window of time. Atoms are
  # never freed, and a host's EPMD and listeners decide which names a poller sees: one that
  # keeps inventing live names (a fake, or a broken orchestrator) would otherwise add an atom
  # per name until the atom table is full and the VM dies (about 17 minutes at 1,024 names a
  # second with the default table). Past the budget a new name waits for the next window,
  # and the first refusal of each window is said once. Pure: the time is passed in.
  @moduledoc false

  @per_window 64
  @window_ms 60_000

  defstruct hosts: %{}

  @typedoc "Per host label: when its window started, the atoms taken, and whether warned."
  @type t :: %__MODULE__{
          hosts: %{String.t() => {integer(), non_neg_integer(), boolean()}}
        }

  @doc "An unused budget."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "The budget: at most this many new atoms per host per window of `window_ms/0`."
  @spec per_window() :: pos_integer()
  def per_window, do: @per_window

  @doc "The window, in milliseconds."
  @spec window_ms() :: pos_integer()
  def window_ms, do: @window_ms

  @doc """
  Takes one new atom from `host`'s budget at `now_ms`: `{:ok, budget}`, or `{:over, budget,
  first?}` when the window's budget is spent (`first?` is true the first time in the
  window, when the refusal is worth saying).
  """
  @spec take(t(), String.t(), integer()) :: {:ok, t()} | {:over, t(), boolean()}
  def take(%__MODULE__{hosts: hosts} = budget, host, now_ms) do
    {started, taken, warned} =
      case Map.get(hosts, host) do
        {started, taken, warned} when now_ms - started < @window_ms -> {started, taken, warned}
        _ -> {now_ms, 0, false}
      end

    if taken < @per_window do
      {:ok, %{budget | hosts: Map.put(hosts, host, {started, taken + 1, warned})}}
    else
      {:over, %{budget | hosts: Map.put(hosts, host, {started, taken, true})}, not warned}
    end
  end

  @doc "Forgets the hosts not in `labels`, so that the budget stays as small as the hosts."
  @spec keep(t(), Enumerable.t()) :: t()
  def keep(%__MODULE__{hosts: hosts} = budget, labels),
    do: %{budget | hosts: Map.take(hosts, Enum.to_list(labels))}
end
