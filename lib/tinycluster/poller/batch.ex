defmodule Tinycluster.Poller.Batch do
  # Candidates whose probes finished close together are connected as one batch.
  #
  # Connections that trickle in one by one make `global` on each peer sync the newcomer once
  # per connection rather than once, which costs more than the probes (`bench/run --only
  # hung` compares 6 `Node.connect/1` calls issued at once with the same calls spread out).
  # The NIF hands over the candidates whose probes finished together in one message
  # (native/tinycluster_nif/src/batch.rs); when one arrives, the poller also takes every
  # other candidates message of the same scan already waiting in its mailbox, and starts all
  # their connects before any bookkeeping, log line or telemetry event. Nothing is waited
  # for: a candidate whose probe has not finished (a frozen node) holds no one back.
  @moduledoc false

  # Bounds the messages one batch takes, so that a mailbox of many is taken in slices (each
  # selective receive scans the mailbox from its start).
  @max_messages 64

  @doc false
  # `candidates` (the maps of the message being handled) and those of every queued
  # `{:tinycluster_scan, scan_id, {:candidates, list}}`, in order.
  @spec take_queued(integer(), [map()]) :: [map()]
  def take_queued(scan_id, candidates), do: take(scan_id, [candidates], 1)

  defp take(_scan_id, taken, count) when count >= @max_messages, do: done(taken)

  defp take(scan_id, taken, count) do
    receive do
      {:tinycluster_scan, ^scan_id, {:candidates, more}} ->
        take(scan_id, [more | taken], count + 1)
    after
      0 -> done(taken)
    end
  end

  defp done(taken), do: taken |> Enum.reverse() |> Enum.concat()
end
