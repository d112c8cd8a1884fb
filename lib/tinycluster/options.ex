defmodule Tinycluster.Options do
  @moduledoc """
  The options of a poller and of `Tinycluster.scan/1`, validated once, at start.

  See `Tinycluster` for what each option means. `new!/1` raises an `ArgumentError` that
  names the option and the value it got.

  ## Example

      iex> opts = Tinycluster.Options.new!(interval: 500, hosts: [:local, {"10.0.0.2", 4369}])
      iex> {opts.interval, opts.probe_timeout, opts.hosts}
      {500, 300, [:local, {"10.0.0.2", 4369}]}
      iex> Tinycluster.Options.new!(interval: 0)
      ** (ArgumentError) invalid value for tinycluster option :interval: 0 (expected a positive integer of milliseconds)
  """

  alias Tinycluster.Limits

  defstruct name: Tinycluster,
            interval: 1_000,
            probe_timeout: 300,
            epmd_timeout: 1_000,
            dns_timeout: nil,
            connect: true,
            hosts: [:local],
            max_backoff: 60_000,
            settled_interval: 30_000,
            only: nil,
            except: [],
            include_hidden: false,
            log: :info

  @typedoc "A host to ask, validated: see `Tinycluster.Hosts` for every form `:hosts` takes."
  @type host :: Tinycluster.Hosts.entry()

  @type t :: %__MODULE__{
          name: atom(),
          interval: pos_integer(),
          probe_timeout: pos_integer(),
          epmd_timeout: pos_integer(),
          dns_timeout: pos_integer(),
          connect: boolean(),
          hosts: [host()],
          max_backoff: pos_integer(),
          settled_interval: pos_integer(),
          only: nil | [Tinycluster.Filter.pattern()],
          except: [Tinycluster.Filter.pattern()],
          include_hidden: boolean(),
          log: false | Logger.level()
        }

  @log_levels [:emergency, :alert, :critical, :error, :warning, :notice, :info, :debug]

  @doc "Validates a keyword list of options and fills in the defaults."
  @spec new!(keyword()) :: t()
  def new!(opts) when is_list(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "tinycluster options must be a keyword list, got: #{inspect(opts)}"
    end

    opts
    |> Enum.reduce(%__MODULE__{}, fn {key, value}, acc ->
      unless Map.has_key?(acc, key) and key != :__struct__ do
        raise ArgumentError,
              "unknown tinycluster option #{inspect(key)}; known options: " <>
                Enum.map_join(known(), ", ", &inspect/1)
      end

      Map.put(acc, key, validate!(key, value))
    end)
    |> default_dns_timeout()
    |> at_least_interval!(:max_backoff, Keyword.has_key?(opts, :max_backoff))
    |> at_least_interval!(:settled_interval, Keyword.has_key?(opts, :settled_interval))
  end

  def new!(other) do
    raise ArgumentError, "tinycluster options must be a keyword list, got: #{inspect(other)}"
  end

  # `:dns_timeout` defaults to `:epmd_timeout`, whichever order they come in.
  defp default_dns_timeout(%__MODULE__{dns_timeout: nil, epmd_timeout: ms} = opts),
    do: %{opts | dns_timeout: ms}

  defp default_dns_timeout(opts), do: opts

  # Waits grow from the interval up to :max_backoff (between attempts at a failing node) and
  # :settled_interval (between asks of a settled host), so a smaller one would be no wait at
  # all: given, it is refused; left at its default, it rises to the interval.
  defp at_least_interval!(%__MODULE__{interval: interval} = opts, key, given?) do
    case Map.fetch!(opts, key) do
      max when max >= interval ->
        opts

      max when given? ->
        raise ArgumentError,
              "invalid value for tinycluster option #{inspect(key)}: #{max} (expected at " <>
                "least the :interval, #{interval} ms: waits grow from the interval up to " <>
                "#{inspect(key)})"

      _default ->
        Map.put(opts, key, interval)
    end
  end

  defp known, do: %__MODULE__{} |> Map.from_struct() |> Map.keys() |> Enum.sort()

  defp validate!(:name, name) when is_atom(name) and name not in [nil, true, false], do: name

  defp validate!(key, ms)
       when key in [:interval, :max_backoff, :settled_interval] and is_integer(ms) and ms > 0,
       do: ms

  # The NIF's bound, so that a scan always ends: refused here with words rather than there.
  defp validate!(key, ms)
       when key in [:probe_timeout, :epmd_timeout, :dns_timeout] and is_integer(ms) and ms > 0 do
    if ms <= Limits.get(:max_timeout_ms), do: ms, else: invalid!(key, ms)
  end

  defp validate!(key, flag) when key in [:connect, :include_hidden] and is_boolean(flag),
    do: flag

  defp validate!(:log, level) when level == false or level in @log_levels, do: level

  defp validate!(key, patterns) when key in [:only, :except] do
    case Tinycluster.Filter.patterns(patterns) do
      {:ok, list} -> list
      :error -> invalid!(key, patterns)
    end
  end

  defp validate!(:hosts, hosts), do: Tinycluster.Hosts.validate!(hosts)

  defp validate!(key, value), do: invalid!(key, value)

  defp invalid!(key, value) do
    raise ArgumentError,
          "invalid value for tinycluster option #{inspect(key)}: #{inspect(value)} " <>
            "(expected #{expected(key)})"
  end

  defp expected(:name), do: "an atom"
  defp expected(key) when key in [:connect, :include_hidden], do: "a boolean"

  defp expected(:log),
    do: "false or a Logger level (#{Enum.map_join(@log_levels, ", ", &inspect/1)})"

  defp expected(key) when key in [:only, :except],
    do: "a pattern or a list of patterns: name prefixes, regexes or 1-arity functions"

  defp expected(key) when key in [:probe_timeout, :epmd_timeout, :dns_timeout],
    do: "a positive integer of milliseconds, at most #{Limits.get(:max_timeout_ms)}"

  defp expected(_), do: "a positive integer of milliseconds"
end
