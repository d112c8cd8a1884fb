defmodule Tinycluster.Poller.Backoff do
  # When a candidate that failed is probed (or connected) again: the numbers and the reasons
  # in one place.
  #
  # Every probe that fails costs the peer something, and some peers log it each time: a node
  # with an allow list logs "disallowed node" (`:not_allowed`), a TLS node answers a hello
  # (`:tls`), a broken listener is woken (`:bad_reply`), a refused connection is an error
  # line (`:rejected`). So a candidate in one of these states is held back: not probed until
  # its `retry_at`, exponentially later from `interval` up to `:max_backoff`, counted in
  # `attempts` per (name, port) as EPMD lists it. A new port, or a new creation in the
  # probe's challenge (a node restarted at a fixed port), is a restarted node, so the count
  # starts over and the node is probed at once.
  #
  # Which states back off, and how far, is `Tinycluster.Candidate.States`'s (`count`, `hold`,
  # `cap`); the numbers and what they do are here.
  #
  # `:unreachable` (silent within the probe timeout: frozen, or gone) is capped far lower,
  # at 2 intervals (its `cap` in the table): the probe of a silent node is parked in the NIF (its
  # socket kept open, see park.rs), so asking again opens no new connection on a frozen
  # node, and a node that thaws answers the parked probe, which the next scan that asks
  # reads. The cap is what a thawed node waits at most, beyond the scan itself. (Closing
  # silent probes instead, with a cap of 8 intervals, was measured against it: see
  # bench/RESULTS.md, "frozen-node trade-off".)
  #
  # A connection attempt that stalled (`Tinycluster.Poller.Candidates.Stalls`: the handshake ran
  # into `net_setuptime`) is the same kind of silence, met later: the candidate is
  # `:unreachable` with reason `:connect_timeout` and waits as one does, never counted
  # among the refusals.
  @moduledoc false

  alias Tinycluster.{Candidate, Options}
  alias Tinycluster.Candidate.States

  # Refusals of a real connection (another cookie, or an allow list without this node)
  # after which a candidate is left alone for good, at its port: each one makes the peer log
  # an error, and another application's node (every `mix release` has a cookie of its own)
  # would otherwise see an attempt every `:max_backoff` for as long as both run.
  @max_refusals 2
  @refusals [:connect_failed, :not_allowed]

  @doc "The wait after the `attempts`-th failure in a row of a candidate in `state`, in ms."
  @spec delay(pos_integer(), Candidate.state(), Options.t()) :: pos_integer()
  def delay(attempts, state, %Options{interval: interval, max_backoff: max}) do
    exponential = interval * Integer.pow(2, min(attempts - 1, 20))

    # In intervals: measured in bench/run --only cost (see the README).
    cap =
      case States.cap(state) do
        {:intervals, n} -> min(n * interval, max)
        _max_backoff -> max
      end

    min(exponential, cap)
  end

  @doc """
  Whether `probed` is another incarnation of the node of `old`: listed at another port, or
  its probe shows another creation than the one before (both known), as a node restarted
  at a fixed port does.
  """
  @spec restarted?(Candidate.t(), Candidate.t()) :: boolean()
  def restarted?(%Candidate{port: port, creation: old}, %Candidate{port: port, creation: new}),
    do: old != nil and new != nil and old != new

  def restarted?(%Candidate{}, %Candidate{}), do: true

  @doc """
  The entry `old` with the count started over if `probed` is another incarnation of its
  node (`restarted?/2`), and with the probe's own state and creation then, so that nothing
  of the old node's (a refusal, say) is held against the new one.
  """
  @spec restarted(Candidate.t(), Candidate.t()) :: Candidate.t()
  def restarted(old, probed) do
    if restarted?(old, probed) do
      %{
        old
        | attempts: 0,
          retry_at: nil,
          state: probed.state,
          reason: probed.reason,
          creation: probed.creation
      }
    else
      old
    end
  end

  @doc """
  Counts a probe's outcome on the merged entry: a failure is one more attempt and a later
  `retry_at`; a success clears both. A refusal or a connection under way keeps the count of
  its connection attempts, which `after_connect/3` keeps. A node that answers
  `:not_allowed` to a poller that connects is counted by its connection attempt instead.
  """
  @spec after_probe(Candidate.t(), Options.t(), integer()) :: Candidate.t()
  def after_probe(%Candidate{state: state} = entry, %Options{} = opts, now_ms) do
    case States.count(state) do
      :keep -> entry
      :back_off_unless_connect when opts.connect -> entry
      :back_off_unless_connect -> failed(entry, opts, now_ms)
      :back_off -> failed(entry, opts, now_ms)
      :clear -> %{entry | attempts: 0, retry_at: nil}
    end
  end

  @doc """
  Counts a failed connection attempt: the entry becomes `:rejected` with `reason`.
  `refusals` is how many connections this node refused at this port so far, this one
  included (`Tinycluster.Poller.Candidates` keeps the count, apart from `attempts`, which failed
  probes in between also move): at #{@max_refusals}, its `retry_at` is `:never`: it is left
  alone, probe included, until it restarts at a new port or this node's cookie for it
  changes (`Tinycluster.Poller.Candidates.cookies/2`).
  """
  @spec after_connect(Candidate.t(), term(), Options.t(), integer(), non_neg_integer()) ::
          Candidate.t()
  def after_connect(entry, reason, opts, now_ms, refusals \\ 0) do
    entry = failed(%{entry | state: :rejected, reason: reason}, opts, now_ms)

    if reason in @refusals and refusals >= @max_refusals,
      do: %{entry | retry_at: :never},
      else: entry
  end

  @doc """
  Counts a stalled connection attempt (`Tinycluster.Poller.Candidates.Stalls`): the entry becomes
  `:unreachable` with reason `:connect_timeout`, its `attempts` are `stalls` (the stalls
  in a row at its port: the probe that answers between two attempts clears `attempts`),
  and it is tried again as an `:unreachable` candidate is (within its `cap`,
  `Tinycluster.Candidate.States.cap/1`). It is never left alone for it.
  """
  @spec after_stall(Candidate.t(), pos_integer(), Options.t(), integer()) :: Candidate.t()
  def after_stall(entry, stalls, opts, now_ms) do
    retry_at = now_ms + delay(stalls, :unreachable, opts)
    %{entry | state: :unreachable, reason: :connect_timeout, attempts: stalls, retry_at: retry_at}
  end

  @doc "How many refused connections leave a candidate alone for good."
  @spec max_refusals() :: pos_integer()
  def max_refusals, do: @max_refusals

  defp failed(entry, opts, now_ms) do
    attempts = entry.attempts + 1

    %{entry | attempts: attempts, retry_at: now_ms + delay(attempts, entry.state, opts)}
  end

  @doc """
  Whether `entry` is held back at `now_ms`: failed, and its retry not yet due. A node left
  alone after refusing another cookie is not held: its probe is silent (the cookie matters
  only after it), and only a probe's creation tells that it restarted at the same port
  (with the right cookie, say); it is not connected meanwhile
  (`Tinycluster.Poller.Candidates.Connect`).
  """
  @spec held?(Candidate.t(), integer()) :: boolean()
  def held?(%Candidate{state: state, retry_at: at} = entry, now_ms),
    do: States.hold(state) == :backoff and held?(entry, at, now_ms)

  defp held?(%Candidate{reason: :connect_failed}, :never, _now_ms), do: false
  defp held?(_entry, :never, _now_ms), do: true
  defp held?(_entry, at, now_ms), do: is_integer(at) and now_ms < at
end
