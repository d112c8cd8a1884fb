defmodule Tinycluster.Filter do
  @moduledoc """
  The `:only` and `:except` options: which candidates are probed and connected.

  A pattern is a string (a prefix of the full node name), a `Regex` (matched against the
  full node name), or a 1-arity function that gets the full node name as a string and
  returns a truthy value. A candidate is taken when it matches some `:only` pattern (or
  `:only` is not set) and no `:except` pattern.

  Names reach the filter as strings: a filter never makes atoms of names it rejects.

  ## Examples

      # Leave out RabbitMQ's nodes and remote shells.
      {Tinycluster, except: ["rabbit@", ~r/^rem-/, ~r/^remsh/]}

      # Only this application's nodes.
      {Tinycluster, only: ["myapp_"]}

      iex> opts = Tinycluster.Options.new!(except: ["rabbit@", ~r/^rem-/])
      iex> Tinycluster.Filter.allowed?(opts, "rabbit@host")
      false
      iex> Tinycluster.Filter.allowed?(opts, "web1@host")
      true
  """

  alias Tinycluster.Options

  @typedoc "A name prefix, a regex, or a predicate on the full node name."
  @type pattern :: String.t() | Regex.t() | (String.t() -> as_boolean(term()))

  @doc "Whether the options let the candidate named `name` (`\"alive@host\"`) through."
  @spec allowed?(Options.t(), String.t()) :: boolean()
  def allowed?(%Options{only: only, except: except}, name) do
    (only == nil or Enum.any?(only, &matches?(&1, name))) and
      not Enum.any?(except, &matches?(&1, name))
  end

  @doc "Whether the options filter anything at all."
  @spec active?(Options.t()) :: boolean()
  def active?(%Options{only: only, except: except}), do: only != nil or except != []

  @doc "Validates a pattern or a list of patterns; returns the list or `:error`."
  @spec patterns(term()) :: {:ok, [pattern()]} | :error
  def patterns(list) when is_list(list) do
    if Enum.all?(list, &pattern?/1), do: {:ok, list}, else: :error
  end

  def patterns(one), do: if(pattern?(one), do: {:ok, [one]}, else: :error)

  defp pattern?(prefix) when is_binary(prefix), do: true
  defp pattern?(%Regex{}), do: true
  defp pattern?(fun) when is_function(fun, 1), do: true
  defp pattern?(_), do: false

  defp matches?(prefix, name) when is_binary(prefix), do: String.starts_with?(name, prefix)
  defp matches?(%Regex{} = regex, name), do: Regex.match?(regex, name)

  # A user's function that raises must not take the poller down: it is a no-match.
  defp matches?(fun, name) when is_function(fun, 1) do
    !!fun.(name)
  rescue
    _ -> false
  end
end
