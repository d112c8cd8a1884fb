defmodule Tinycluster.Batch do
  # Candidates whose probes finished close together are connected as one batch.
  #
  # Connections that trickle in one by one make `global` on each peer sync the newcomer once
  # per connection rather than once, which costs more than the probes (issue 13: the same 6
  # `Node.connect/1` calls took 7.6-10 ms issued at once, 11.3-13.3 ms issued 1 ms apart).
  # So when a candidate's message arrives, the poller takes every other candidate of the
  # same scan already waiting in its mailbox, and starts all their connects before any
  # bookkeeping, log line or telemetry event. Nothing is waited for: a candidate whose probe
  # has not finished (a frozen node) holds no one back.
  @moduledoc false

  # Bounds one batch, so that a mailbox of many queued candidates is taken in slices
  # (each selective receive scans the mailbox from its start).
  @max_batch 256

  @doc false
  @spec take_queued(integer(), [tuple()]) :: [tuple()]
  def take_queued(scan_id, taken \\ []), do: take(scan_id, taken, length(taken))

  defp take(_scan_id, taken, count) when count >= @max_batch, do: Enum.reverse(taken)

  defp take(scan_id, taken, count) do
    receive do
      {:tinycluster_scan, ^scan_id, {:candidate, _} = event} ->
        take(scan_id, [event | taken], count + 1)
    after
      0 -> Enum.reverse(taken)
    end
  end
end
