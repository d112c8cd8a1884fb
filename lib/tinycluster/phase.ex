defmodule Tinycluster.Phase do
  @moduledoc """
  When a poller's polls fall: the rule that keeps pollers started together from polling in
  the same millisecond forever.

  In an application every node runs a poller, and nodes are often started together (a
  deployment, a test cluster, `docker compose up`). Pollers that start in the same instant
  and keep an exact interval stay in step: every poll of every node asks EPMD at the same
  moment, and a node that starts later is probed and connected by all of them at once, and
  connects to all of them itself, so its handshakes collide (`nok`, `ok_simultaneous`).

  So the first scan runs at once (a node that is first in its cluster, or
  `Tinycluster.await/1`, does not wait), and the wait after it is shifted, once, by a random
  offset in `-interval/2..interval/2`. From then on polls keep the exact `:interval`, each
  poller at its own phase: N pollers spread over the interval, and a late node is found by
  the first of them, within about `interval / N`, and connected to the others by `global`
  before their turn comes, which then finds it connected and leaves it alone.
  """

  @doc """
  Milliseconds from the end of a scan to the start of the next: `interval` from the start
  of the last scan (`elapsed` ms ago), shifted by a random offset after the poller's first
  scan (`scans` is the number of scans finished before this one), never below 0.

      iex> Tinycluster.Phase.next_delay(1_000, 120, 5)
      880
      iex> delay = Tinycluster.Phase.next_delay(1_000, 120, 0)
      iex> delay in 380..1_380
      true
  """
  @spec next_delay(pos_integer(), non_neg_integer(), non_neg_integer()) :: non_neg_integer()
  def next_delay(interval, elapsed, scans) do
    max(interval - elapsed + offset(interval, scans), 0)
  end

  @doc "The shift after scan number `scans` (0 for the first): random once, then none."
  @spec offset(pos_integer(), non_neg_integer()) :: integer()
  def offset(interval, 0), do: :rand.uniform(interval + 1) - 1 - div(interval, 2)
  def offset(_interval, _scans), do: 0
end
