defmodule Tinycluster.Poller.Report do
  # What a poller says about the changes it sees: its log lines and its node telemetry
  # events, in one place, so that each change is worded once and the poller keeps to
  # polling and bookkeeping.
  @moduledoc false

  require Logger

  alias Tinycluster.{Candidate, Options, Telemetry}

  @doc """
  Reports a candidate's change of state, once: a log line and a telemetry event where the
  change is worth one. A connection is only announced to the calling poller (a message to
  itself), so that its log line comes after the connects already waiting in its mailbox.
  """
  @spec change(Options.t(), Candidate.t() | nil, Candidate.t()) :: :ok | term()
  def change(opts, old, %Candidate{} = entry) do
    meta = [tinycluster_node: entry.name, tinycluster_state: entry.state]

    case {old && old.state, entry.state} do
      # Off the path of the connects and probes already waiting in the mailbox.
      {_, :connected} ->
        send(self(), {:tinycluster_connected, entry})

      # A refusal is retried with backoff; only the first of a run is worth a line.
      {_, :rejected} when entry.attempts > 1 ->
        :ok

      {_, :rejected} ->
        log(opts, :warning, "tinycluster: #{entry.name} #{Candidate.describe(entry)}", meta)
        node(opts, :rejected, entry)

      {_, :unreachable} ->
        log(opts, :warning, "tinycluster: #{entry.name} #{Candidate.describe(entry)}", meta)
        node(opts, :unreachable, entry)

      # With `connect: true` a connection attempt follows at once, and says more.
      {_, :not_allowed} when opts.connect ->
        :ok

      {_, bad} when bad in [:not_allowed, :name_mismatch, :bad_reply, :tls] ->
        log(opts, :warning, "tinycluster: #{entry.name} #{Candidate.describe(entry)}", meta)

      {:connected, :down} ->
        log(opts, :info, "tinycluster: lost the connection to #{entry.name}", meta)
        node(opts, :lost, entry)

      _ ->
        :ok
    end
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

  @doc "Logs a host's EPMD answer when it changed: failing, answering again, malformed."
  @spec host(Options.t(), map() | nil, map()) :: :ok | nil
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
            "(EPMD at #{host.address}:#{host.epmd_port}): #{inspect(reason)}",
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
  end

  @doc "Logs `message` if the poller's `:log` option lets `level` through."
  @spec log(Options.t(), Logger.level(), String.t(), keyword()) :: :ok
  def log(%{log: false}, _level, _message, _meta), do: :ok

  def log(%{log: threshold}, level, message, meta) do
    if Logger.compare_levels(level, threshold) != :lt, do: Logger.log(level, message, meta)
    :ok
  end
end
