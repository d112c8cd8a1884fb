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

  alias Tinycluster.{Filter, Hosts, Limits}

  # The one list of options: the struct, the validator and the docs (`docs/0`, which
  # `Tinycluster`'s moduledoc shows) come from it; test/doc_test.exs holds the README's table
  # to it. `:type` picks the check in `check/2`; `:shown_default` is the default in words when
  # the value itself would mislead (nil, or a list that means "none").
  @schema [
    name: [
      type: :name,
      default: Tinycluster,
      doc: "the poller's registered name; pollers with different names run side by side."
    ],
    interval: [
      type: :ms,
      default: 1_000,
      doc: "milliseconds from the start of one scan to the start of the next."
    ],
    probe_timeout: [
      type: :timeout,
      default: 300,
      doc:
        "milliseconds a candidate of a near host has to answer the probe (at most 60000). " <>
          "A far host's candidates have longer: three round trips of its EPMD's answer in " <>
          "the same scan, at most 10 s (and never less than `:probe_timeout`), so that a " <>
          "host 100 ms away or more is not taken for a frozen one; `status/1` shows each " <>
          "host's round trip and the timeout in force."
    ],
    epmd_timeout: [
      type: :timeout,
      default: 1_000,
      doc:
        "milliseconds an EPMD has to answer, host name resolution included (at most " <>
          "60000); a host whose EPMD does not answer in time is failed, however far it is."
    ],
    dns_timeout: [
      type: :timeout,
      default: nil,
      shown_default: "the `:epmd_timeout`",
      doc: "milliseconds DNS seeds have to answer (at most 60000)."
    ],
    connect: [type: :boolean, default: true, doc: "`false` discovers and reports only."],
    hosts: [
      type: :hosts,
      default: [:local],
      doc:
        "whose EPMDs to ask: `:local` (this host), `\"host\"` (a host name or an IPv4 or " <>
          "IPv6 address; EPMD port 4369), `{\"host\", epmd_port}`, or `:erlang_hosts` " <>
          "(every host of `.hosts.erlang`, found as `:net_adm.world/0` finds it), or a DNS " <>
          "seed, `{:dns, name}` or `{:dns, name, type: :a | :aaaa | :srv, nameservers: " <>
          "[{address, port}]}`, looked up at every poll (see `Tinycluster.DnsSeed`). The " <>
          "local EPMD port follows `-epmd_port` and `ERL_EPMD_PORT`, as OTP does. See " <>
          "`Tinycluster.Hosts` for naming modes and the forms each mode takes."
    ],
    only: [
      type: :patterns,
      default: nil,
      shown_default: "all",
      doc:
        "the nodes to probe and connect, those whose full name some pattern matches: name " <>
          "prefixes, regexes or 1-arity functions of the full node name; see " <>
          "`Tinycluster.Filter`."
    ],
    except: [
      type: :patterns,
      default: [],
      shown_default: "none",
      doc:
        "the nodes never to probe or connect, in the patterns `:only` takes; see " <>
          "`Tinycluster.Filter`."
    ],
    include_hidden: [
      type: :boolean,
      default: false,
      doc: "also connect hidden nodes (the connection is then hidden, as OTP makes it)."
    ],
    max_backoff: [
      type: :ms,
      default: 60_000,
      doc:
        "the longest wait, in milliseconds, before a node that failed is probed or " <>
          "connected again: one that refused a connection (another cookie, or an allow " <>
          "list), answered `:not_allowed`, `:bad_reply` or `:tls`; the node is not probed in " <>
          "between. Waits grow exponentially from `:interval`, per node name and port; an " <>
          "`:unreachable` node waits two intervals at most. At least `:interval` (a smaller " <>
          "one is an `ArgumentError`; left out, it rises to the `:interval` when that is " <>
          "longer)."
    ],
    settled_interval: [
      type: :ms,
      default: 30_000,
      doc:
        "the longest wait, in milliseconds, between two asks of a settled host: one other " <>
          "than `:local` whose EPMD answered as before, every node it lists connected, held " <>
          "back or filtered out. Its waits double from `:interval` up to this; a node going " <>
          "down there, a failed connection to one of its nodes, its EPMD failing or listing " <>
          "something new, reopen it to every interval (after a node went down, for this " <>
          "long at least: it may be restarting). At least `:interval` (left out, it rises " <>
          "to the `:interval` when that is longer). See guides/scale.md."
    ],
    log: [
      type: :log,
      default: :info,
      doc: "`false`, or the lowest level of the poller's log lines."
    ]
  ]

  @types Map.new(@schema, fn {key, spec} -> {key, Keyword.fetch!(spec, :type)} end)

  defstruct Enum.map(@schema, fn {key, spec} -> {key, Keyword.fetch!(spec, :default)} end)

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
          only: nil | [Tinycluster.Filter.pattern()],
          except: [Tinycluster.Filter.pattern()],
          include_hidden: boolean(),
          max_backoff: pos_integer(),
          settled_interval: pos_integer(),
          log: false | Logger.level()
        }

  @log_levels [:emergency, :alert, :critical, :error, :warning, :notice, :info, :debug]

  @doc """
  Every option, in the order the docs list them, with its `:type`, its `:default` and its
  `:doc`; `:shown_default` is the default in words, where the value would mislead.
  """
  @spec schema() :: keyword(keyword())
  def schema, do: @schema

  @doc """
  The default of option `key` as the docs show it: `shown_default`, or the value in code
  quotes.

      iex> Tinycluster.Options.shown_default(:interval)
      "`1000`"
      iex> Tinycluster.Options.shown_default(:dns_timeout)
      "the `:epmd_timeout`"
  """
  @spec shown_default(atom()) :: String.t()
  def shown_default(key) do
    spec = Keyword.fetch!(@schema, key)
    Keyword.get_lazy(spec, :shown_default, fn -> "`#{inspect(spec[:default])}`" end)
  end

  @doc """
  The options as a Markdown list: each one's name, type, doc and default. `Tinycluster`'s
  moduledoc shows it, so that the docs list exactly the options `new!/1` takes.
  """
  @spec docs() :: String.t()
  def docs do
    Enum.map_join(@schema, "\n", fn {key, spec} ->
      "  * `#{inspect(key)}` (#{type_doc(spec[:type])}) - #{spec[:doc]} " <>
        "Default: #{shown_default(key)}."
    end)
  end

  # What a type takes, for the docs; `expected/1` says it in errors, with the NIF's bound.
  defp type_doc(:name), do: "an atom"
  defp type_doc(type) when type in [:ms, :timeout], do: "a positive integer"
  defp type_doc(:boolean), do: "a boolean"
  defp type_doc(:hosts), do: "a list of hosts"
  defp type_doc(:patterns), do: "a pattern or a list of patterns"
  defp type_doc(:log), do: "`false` or a `Logger` level"

  @doc "Validates a keyword list of options and fills in the defaults."
  @spec new!(keyword()) :: t()
  def new!(opts) when is_list(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "tinycluster options must be a keyword list, got: #{inspect(opts)}"
    end

    opts
    |> Enum.reduce(%__MODULE__{}, fn {key, value}, acc ->
      case Map.fetch(@types, key) do
        {:ok, type} -> Map.put(acc, key, validate!(key, type, value))
        :error -> unknown!(key)
      end
    end)
    |> default_dns_timeout()
    |> at_least_interval!(:max_backoff, Keyword.has_key?(opts, :max_backoff))
    |> at_least_interval!(:settled_interval, Keyword.has_key?(opts, :settled_interval))
  end

  def new!(other) do
    raise ArgumentError, "tinycluster options must be a keyword list, got: #{inspect(other)}"
  end

  @doc """
  The known name nearest to the unknown `key`, in words for an error message (`" (did you
  mean :interval?)"`), or `""` when none is near: a typo is named, not only listed.

      iex> Tinycluster.Options.did_you_mean(:intreval, [:interval, :hosts])
      " (did you mean :interval?)"
      iex> Tinycluster.Options.did_you_mean(:colour, [:interval, :hosts])
      ""
  """
  @spec did_you_mean(atom(), [atom()]) :: String.t()
  def did_you_mean(key, known) do
    typed = Atom.to_string(key)

    known
    |> Enum.map(&{String.jaro_distance(typed, Atom.to_string(&1)), &1})
    |> Enum.max(fn -> {0.0, nil} end)
    |> case do
      {distance, nearest} when distance >= 0.8 -> " (did you mean #{inspect(nearest)}?)"
      _ -> ""
    end
  end

  defp unknown!(key) do
    known = Keyword.keys(@schema)

    raise ArgumentError,
          "unknown tinycluster option #{inspect(key)}#{did_you_mean(key, known)}; known " <>
            "options: #{known |> Enum.sort() |> Enum.map_join(", ", &inspect/1)}"
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

  defp validate!(key, type, value) do
    case check(type, value) do
      {:ok, valid} ->
        valid

      :error ->
        raise ArgumentError,
              "invalid value for tinycluster option #{inspect(key)}: #{inspect(value)} " <>
                "(expected #{expected(type)})"
    end
  end

  defp check(:name, name) when is_atom(name) and name not in [nil, true, false], do: {:ok, name}
  defp check(:ms, ms) when is_integer(ms) and ms > 0, do: {:ok, ms}

  # The NIF's bound, so that a scan always ends: refused here with words rather than there.
  defp check(:timeout, ms) when is_integer(ms) and ms > 0,
    do: if(ms <= Limits.get(:max_timeout_ms), do: {:ok, ms}, else: :error)

  defp check(:boolean, flag) when is_boolean(flag), do: {:ok, flag}
  defp check(:log, level) when level == false or level in @log_levels, do: {:ok, level}
  defp check(:patterns, patterns), do: Filter.patterns(patterns)
  # Its own errors, which name the entry at fault.
  defp check(:hosts, hosts), do: {:ok, Hosts.validate!(hosts)}
  defp check(_type, _value), do: :error

  defp expected(:name), do: "an atom"
  defp expected(:ms), do: "a positive integer of milliseconds"

  defp expected(:timeout),
    do: "a positive integer of milliseconds, at most #{Limits.get(:max_timeout_ms)}"

  defp expected(:boolean), do: "a boolean"

  defp expected(:log),
    do: "false or a Logger level (#{Enum.map_join(@log_levels, ", ", &inspect/1)})"

  defp expected(:patterns),
    do: "a pattern or a list of patterns: name prefixes, regexes or 1-arity functions"
end
