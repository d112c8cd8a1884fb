defmodule Tinycluster.Poller.Report do
  # Everything a poller says: its log lines and its telemetry events, in the order things
  # happen (a scan's `:start` when it starts, its `:stop` after it). Each change is worded
  # once, here; nothing is said per poll. Its functions log or emit and return; they never
  # send anything to the poller.
  @moduledoc false

  require Logger

  alias Tinycluster.{Candidate, Options, Telemetry}
  alias Tinycluster.Candidate.States

  ## Candidates

  # More candidates of one host unreachable in one scan than this are said in one line: a
  # host that lists a thousand names at a silent port would otherwise log a thousand lines.
  @unreachable_lines 3

  @doc """
  Reports each change of `Tinycluster.Poller.Candidates` (`{old, new}`), in order, but for the
  log lines of candidates whose probe found them `:unreachable`, which `unreachable/2` says
  at the end of the scan (each has its node event at once).
  """
  @spec changes(Options.t(), [Tinycluster.Poller.Candidates.change()]) :: :ok
  def changes(opts, changes) do
    Enum.each(changes, fn
      {:atom_budget, bound, host} -> atom_budget(opts, bound, host)
      {old, new} -> change(opts, old, new)
    end)
  end

  @doc """
  Says which candidates became unreachable in a scan: a line each, or one line for a host
  with more than #{@unreachable_lines} of them.
  """
  @spec unreachable(Options.t(), [Candidate.t()]) :: :ok
  def unreachable(opts, entries) do
    entries
    |> Enum.group_by(& &1.host)
    |> Enum.each(fn
      {_host, few} when length(few) <= @unreachable_lines ->
        Enum.each(few, &candidate_line(opts, &1))

      {host, many} ->
        names = many |> Enum.take(5) |> Enum.map_join(", ", & &1.name)
        more = if length(many) > 5, do: ", ...", else: ""

        log(
          opts,
          :warning,
          "tinycluster: #{length(many)} candidates on #{host} listed by EPMD but silent " <>
            "within the probe timeout: #{names}#{more}",
          tinycluster_host: host
        )
    end)
  end

  @doc """
  Warns that a bound of the atom budget (`Tinycluster.Poller.AtomBudget`) held back a new name of
  `host`: the rate once a window, the lifetime cap once while it holds.
  """
  @spec atom_budget(Options.t(), Tinycluster.Poller.AtomBudget.bound(), String.t()) :: :ok
  def atom_budget(opts, :window, host) do
    log(
      opts,
      :warning,
      "tinycluster: more than #{Tinycluster.Poller.AtomBudget.per_window()} new nodes within a " <>
        "minute not yet connected (the last from #{host}); the others wait for the next " <>
        "minute, since every node connected is an atom and atoms are never freed (a host " <>
        "that invents names?)",
      tinycluster_host: host
    )
  end

  def atom_budget(opts, :lifetime, host) do
    log(
      opts,
      :warning,
      "tinycluster: #{Tinycluster.Poller.AtomBudget.max_wasted()} names made atoms never connected " <>
        "(the atom budget's lifetime cap); new names of hosts none of whose new nodes " <>
        "connected, such as #{host}, now stay strings and are not connected",
      tinycluster_host: host
    )
  end

  defp candidate_line(opts, entry) do
    meta = [tinycluster_node: entry.name, tinycluster_state: entry.state]
    log(opts, :warning, "tinycluster: #{entry.name} #{Candidate.describe(entry)}", meta)
  end

  @doc """
  Reports a candidate's change of state, once: a log line and a telemetry event where the
  change is worth one, as the states table says (`Tinycluster.Candidate.States.said/1`).
  """
  @spec change(Options.t(), Candidate.t() | nil, Candidate.t()) :: :ok
  def change(opts, old, %Candidate{} = entry) do
    said = said(entry)

    cond do
      said == nil -> :ok
      said.from != nil and (old && old.state) != said.from -> :ok
      # A failure retried with backoff: only the first of a run is worth a line.
      said.runs and entry.attempts > 1 -> :ok
      true -> say(opts, said, entry)
    end
  end

  @doc """
  Whether a change into `entry`'s state is said at the end of its scan, with the others
  of its host (`unreachable/2`), rather than at once.
  """
  @spec at_scan_end?(Candidate.t()) :: boolean()
  def at_scan_end?(entry), do: match?(%{line: :at_scan_end}, said(entry))

  # A stalled connection attempt, not a probe: said at once, and only the first of a run of
  # them (`attempts` counts the stalls in a row).
  defp said(%Candidate{state: :unreachable, reason: :connect_timeout}),
    do: %{States.said(:unreachable) | line: :warning, runs: true}

  defp said(%Candidate{state: state}), do: States.said(state)

  defp say(opts, said, entry) do
    meta = [tinycluster_node: entry.name, tinycluster_state: entry.state]

    case said.line do
      :connected -> log(opts, :info, "tinycluster: connected to #{entry.name}", meta)
      :lost -> log(opts, :info, "tinycluster: lost the connection to #{entry.name}", meta)
      :info -> log(opts, :info, "tinycluster: #{entry.name} #{Candidate.describe(entry)}", meta)
      :warning -> candidate_line(opts, entry)
      # With `connect: true` a connection attempt follows at once, and says more.
      :unless_connect -> unless opts.connect, do: candidate_line(opts, entry)
      # Said at the end of the scan, with the others of its host: see `unreachable/2`.
      :at_scan_end -> :ok
      nil -> :ok
    end

    if said.event, do: node(opts, said.event, entry)
    :ok
  end

  @doc "Emits `[:tinycluster, :node, event]` for `entry`."
  @spec node(Options.t(), atom(), Candidate.t()) :: :ok
  def node(opts, event, entry) do
    measurements =
      if entry.latency_us,
        do: %{system_time: System.system_time(), latency_us: entry.latency_us},
        else: %{system_time: System.system_time()}

    Telemetry.execute([:tinycluster, :node, event], measurements, %{
      poller: opts.name,
      node: entry.name,
      host: entry.host,
      state: entry.state,
      reason: entry.reason
    })
  end

  ## Leaving and joining

  @doc """
  Says when another node's leave or join was ignored (`:forged`: sent from another node
  than the one it names; `:stale`: about an incarnation of that node older than the one
  seen since). A leave that counts is said by its candidates' change to `:left`.
  """
  @spec told(Options.t(), :leave | :join, :ok | {:ignored, atom()}, map()) :: :ok
  def told(_opts, _what, :ok, _message), do: :ok

  def told(opts, what, {:ignored, :forged}, message) do
    log(
      opts,
      :warning,
      "tinycluster: ignored a #{what} naming #{message.name}, sent from #{message.sender}: " <>
        "only a node itself says that it leaves or joins",
      tinycluster_node: message.name
    )
  end

  def told(opts, what, {:ignored, :stale}, message) do
    log(
      opts,
      :info,
      "tinycluster: ignored a #{what} of #{message.name} from an incarnation (creation " <>
        "#{message.creation}) other than the one seen: it restarted since",
      tinycluster_node: message.name
    )
  end

  @doc "Says that this node left the cluster (`Tinycluster.leave/1`)."
  @spec self_left(Options.t()) :: :ok
  def self_left(opts) do
    log(
      opts,
      :info,
      "tinycluster: this node leaves the cluster; its poller connects nothing until " <>
        "Tinycluster.join/1",
      []
    )
  end

  @doc "Says that this node joined the cluster again (`Tinycluster.join/1`)."
  @spec self_joined(Options.t()) :: :ok
  def self_joined(opts),
    do: log(opts, :info, "tinycluster: this node joins the cluster again", [])

  ## Hosts and seeds

  @doc "Logs a host's EPMD answer when it changed: failing, answering again, malformed."
  @spec host(Options.t(), map() | nil, map()) :: :ok
  def host(opts, previous, host) do
    meta = [tinycluster_host: host.label]

    case {previous && previous.status, host.status} do
      {{:error, _}, :ok} ->
        log(opts, :info, "tinycluster: EPMD on #{host.label} answers again", meta)

      {prev, {:error, reason}} when prev == nil or prev == :ok ->
        log(
          opts,
          :warning,
          "tinycluster: cannot list the nodes of #{host.label} " <>
            "(#{asked(host)}): #{inspect(reason)}",
          meta
        )

      _ ->
        :ok
    end

    if host.malformed != [] and (previous == nil or previous.malformed == []) do
      log(
        opts,
        :warning,
        "tinycluster: EPMD on #{host.label} listed #{length(host.malformed)} malformed " <>
          "entries, skipped: #{inspect(Enum.take(host.malformed, 3))}",
        meta
      )
    end

    :ok
  end

  defp asked(%{dist_port: port, dist_port_last: last} = host) when is_integer(last),
    do: "its distribution ports, #{host.address}:#{port} to #{last}, without EPMD"

  defp asked(%{dist_port: port} = host) when is_integer(port),
    do: "its distribution port, #{host.address}:#{port}, without EPMD"

  defp asked(host), do: "EPMD at #{host.address}:#{host.epmd_port}"

  @doc "Logs the lines a DNS seeds' update gave (`{level, line, metadata}`)."
  @spec lines(Options.t(), [{Logger.level(), String.t(), keyword()}]) :: :ok
  def lines(opts, lines) do
    Enum.each(lines, fn {level, line, meta} -> log(opts, level, line, meta) end)
  end

  ## The poller itself

  @doc """
  Says `what` once: unless `said` has it already. Returns `said` with it. `what` is
  `:not_distributed`, `:hosts` (the hosts given in a form this node cannot use, known once
  it is distributed, and setups without EPMD it cannot follow: `Tinycluster.FixedPort`),
  `:no_epmd` (no host's EPMD answers) or `{:scan_not_started, reason}`.
  """
  @spec once(Options.t(), MapSet.t(), term()) :: MapSet.t()
  def once(opts, said, what) do
    if MapSet.member?(said, what) do
      said
    else
      warn(opts, what)
      MapSet.put(said, what)
    end
  end

  defp warn(opts, :not_distributed), do: not_distributed(opts)
  defp warn(opts, {:scan_not_started, reason}), do: scan_not_started(opts, reason)

  defp warn(opts, :hosts) do
    lines = Tinycluster.Hosts.Warnings.warnings(opts.hosts) ++ Tinycluster.FixedPort.warnings()
    Enum.each(lines, &log(opts, :warning, &1, []))
  end

  defp warn(opts, :no_epmd) do
    log(
      opts,
      :warning,
      "tinycluster: no host's EPMD answers (connection refused): if the nodes run " <>
        "without EPMD (-start_epmd false), start every node, this one included, with " <>
        "-erl_epmd_port P, the same P everywhere, and tinycluster probes P on every host",
      []
    )
  end

  @doc """
  `said` once a scan has started: what kept scans from starting (`:not_distributed`,
  `{:scan_not_started, reason}`) is said again if it comes back.
  """
  @spec scan_started(MapSet.t()) :: MapSet.t()
  def scan_started(said) do
    for what <- said,
        what != :not_distributed and not match?({:scan_not_started, _}, what),
        into: MapSet.new(),
        do: what
  end

  @doc "Warns that this node is not distributed, so nothing can be clustered yet."
  @spec not_distributed(Options.t()) :: :ok
  def not_distributed(opts) do
    log(
      opts,
      :warning,
      "tinycluster: this node is not distributed (#{node()}), so it cannot connect to " <>
        "other nodes; start it with --sname or --name, or call Node.start/2. " <>
        "tinycluster starts clustering as soon as it is.",
      []
    )
  end

  @doc """
  Warns, once a run of scans that leave candidates to the next ones, that `count` were
  past the scan's budget; `said` forgets it at the first scan that defers none.
  """
  @spec deferred(Options.t(), MapSet.t(), non_neg_integer()) :: MapSet.t()
  def deferred(_opts, said, 0), do: MapSet.delete(said, :deferred)

  def deferred(opts, said, count) do
    if MapSet.member?(said, :deferred) do
      said
    else
      log(
        opts,
        :warning,
        "tinycluster: #{count} candidates past the #{Tinycluster.Poller.Plan.budget()} a scan probes; " <>
          "the next scans take them, the longest-waiting first: is a host listing " <>
          "thousands of names?",
        []
      )

      MapSet.put(said, :deferred)
    end
  end

  @doc "Logs that a scan could not start, and why (the poller says it once per reason)."
  @spec scan_not_started(Options.t(), term()) :: :ok
  def scan_not_started(opts, reason),
    do: log(opts, :error, "tinycluster: could not start a scan: #{inspect(reason)}", [])

  @doc "Warns that a scan did not finish within its deadline, and was cancelled."
  @spec scan_timed_out(Options.t()) :: :ok
  def scan_timed_out(opts),
    do: log(opts, :warning, "tinycluster: a scan did not finish in time; starting over", [])

  ## Scans

  @doc """
  Emits `[:tinycluster, :scan, :start]` for a scan that started at `started` (monotonic,
  native units, taken just before the NIF was asked), and returns `started`, which
  `scan_stop/5` measures the duration from.
  """
  @spec scan_start(Options.t(), [String.t()], map(), integer()) :: integer()
  def scan_start(opts, host_labels, seeds, started) do
    Telemetry.execute(
      [:tinycluster, :scan, :start],
      %{system_time: System.system_time(), monotonic_time: started},
      %{poller: opts.name, hosts: host_labels, seeds: seeds}
    )

    started
  end

  @doc """
  Emits `[:tinycluster, :scan, :stop]` for a scan that started at `started` (from
  `scan_start/3`), with the NIF's `report`, the candidates connected after it and the seeds'
  counts.
  """
  @spec scan_stop(Options.t(), integer(), map(), non_neg_integer(), map()) :: :ok
  def scan_stop(opts, started, report, connected, seeds) do
    counts = Enum.frequencies_by(report.candidates, & &1.state)

    Telemetry.execute(
      [:tinycluster, :scan, :stop],
      %{
        duration: System.monotonic_time() - started,
        candidates: length(report.candidates),
        live: Map.get(counts, :live, 0) + Map.get(counts, :hidden, 0),
        connected: connected
      },
      %{
        poller: opts.name,
        hosts: Enum.map(report.hosts, & &1.label),
        failed_hosts: failed_hosts(report),
        seeds: seeds
      }
    )
  end

  @doc "The labels of the hosts whose EPMD did not answer in `report`."
  @spec failed_hosts(map()) :: [String.t()]
  def failed_hosts(report),
    do: for(%{status: {:error, _}, label: label} <- report.hosts, do: label)

  @doc "Logs `message` if the poller's `:log` option lets `level` through."
  @spec log(Options.t(), Logger.level(), String.t(), keyword()) :: :ok
  def log(%{log: false}, _level, _message, _meta), do: :ok

  def log(%{log: threshold}, level, message, meta) do
    if Logger.compare_levels(level, threshold) != :lt, do: Logger.log(level, message, meta)
    :ok
  end
end
