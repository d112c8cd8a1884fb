defmodule Tinycluster.Telemetry do
  @moduledoc """
  The `:telemetry` events tinycluster emits, when the `:telemetry` application is loaded in
  the node. tinycluster does not depend on `:telemetry`: it calls it only if it is there.

  ## Events

    * `[:tinycluster, :scan, :start]` - a scan starts; emitted as it starts, as
      `:telemetry.span/3` emits its start.
      Measurements: `:system_time` (native units), `:monotonic_time`.
      Metadata: `:poller` (the poller's name), `:hosts` (host labels, the addresses DNS
      seeds gave included), `:seeds` (how many addresses each DNS seed gives, by name).
    * `[:tinycluster, :scan, :stop]` - a scan ended.
      Measurements: `:duration` (native units, as `:telemetry.span/3` uses), `:candidates`
      (listed, other than this node), `:live` (answered the probe, hidden nodes included),
      `:connected` (candidates connected after the scan).
      Metadata: `:poller`, `:hosts`, `:failed_hosts` (labels whose EPMD did not answer),
      `:seeds`.
    * `[:tinycluster, :node, :connected]` - a candidate became connected.
    * `[:tinycluster, :node, :rejected]` - a candidate answered the probe but refused the
      connection (the first refusal of a run; retries with backoff are not repeated).
    * `[:tinycluster, :node, :unreachable]` - a candidate stopped answering the probe, or
      (reason `:connect_timeout`) its connection attempt stalled (the first stall of a
      run; retries are not repeated).
    * `[:tinycluster, :node, :lost]` - a connected candidate's connection went down.
    * `[:tinycluster, :node, :left]` - a candidate's node left the cluster
      (`Tinycluster.leave/1` on it told this poller); it is not connected again until it
      joins or restarts.

  Node events have the measurement `:system_time` and, when known, `:latency_us` (the last
  probe's round trip), and the metadata `:poller`, `:node` (the full name, a string),
  `:host` (the host label), `:state` and `:reason`.

  ## Example

      :telemetry.attach(
        "log-tinycluster",
        [:tinycluster, :node, :connected],
        fn _event, _measurements, %{node: node}, _config -> IO.puts("joined: \#{node}") end,
        nil
      )
  """

  # `:telemetry` is optional, so the compiler must not ask for it (Elixir 1.18 warns about a
  # call to a module it cannot see even through a variable module).
  @compile {:no_warn_undefined, :telemetry}

  @doc "Emits `event` through `:telemetry.execute/3` if `:telemetry` is loaded; a no-op otherwise."
  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    if :erlang.function_exported(:telemetry, :execute, 3) do
      :telemetry.execute(event, measurements, metadata)
    end

    :ok
  end
end
