defmodule Tinycluster.Limits do
  # The bounds the NIF enforces, as the NIF states them (native/tinycluster_nif/src/limits.rs),
  # so that no number is written on both sides: a bound changed in Rust changes here too.
  # Read once, then kept in `:persistent_term`, which makes each read a lookup that copies
  # nothing. The bounds only this side enforces stay with the modules that enforce them
  # (`Tinycluster.Poller.AtomBudget`, `Tinycluster.Poller.Candidates`).
  @moduledoc false

  alias Tinycluster.Native

  @key {__MODULE__, :native}

  @typedoc "A bound's name, as limits.rs names it."
  @type name ::
          :max_timeout_ms
          | :max_probes_in_flight
          | :min_host_probes_in_flight
          | :rtt_factor
          | :max_host_probe_timeout_ms
          | :max_name_bytes
          | :max_parked
          | :max_parked_per_address
          | :park_for_ms
          | :max_reply_bytes
          | :max_names
          | :max_status_len
          | :max_challenge_len

  @doc "Every bound the NIF enforces, by name."
  @spec all() :: %{name() => pos_integer()}
  def all do
    case :persistent_term.get(@key, nil) do
      nil -> read()
      limits -> limits
    end
  end

  @doc "The bound `name` (see limits.rs for what each bounds)."
  @spec get(name()) :: pos_integer()
  def get(name), do: Map.fetch!(all(), name)

  # Two first readers at once put the same map: `:persistent_term` leaves an equal value be.
  defp read do
    limits = Native.limits()
    :persistent_term.put(@key, limits)
    limits
  rescue
    e in ErlangError ->
      reraise RuntimeError,
              "tinycluster's NIF is not loaded (#{inspect(Native.load_error() || e.original)}): " <>
                "run `mix compile` (it needs cargo)",
              __STACKTRACE__
  end
end
