defmodule Tinycluster.Poller.Candidates.Stalls do
  # A connection attempt that `Node.connect/1` ends with `false` is either a refusal or a
  # stall, and only a refusal counts toward the bound after which a node is left alone
  # (`Tinycluster.Poller.Backoff`). A refusal: the peer read this node's challenge reply and closed
  # (another cookie), or its allow list answered `not_allowed`. A stall: the handshake did
  # not finish within `net_setuptime` (a GC pause, an overloaded or frozen peer, a network
  # stall). Counted as refusals, two stalls would leave a healthy node alone for good.
  #
  # OTP tells the caller nothing but `false` in either case: the handshake process's exit
  # reason stays inside net_kernel, and a connection that never came up sends no nodedown.
  # What this node can observe is how long the attempt took. dist_util's setup timer is
  # reset after the EPMD lookup and after the challenge reply is sent, both after the
  # attempt started here, and never fires early: every attempt the timer ends took at least
  # `net_setuptime`. A refusal comes one round trip after the reply, or after the name for
  # `not_allowed`: the whole attempt is a few round trips. So a `false` that took at least
  # half of `net_setuptime` is a stall. The half leaves room for a peer whose own
  # `net_setuptime` is shorter (down to half this one) and closes first, for a setting
  # changed since net_kernel read it (when distribution started; it is read here at each
  # attempt), and for a refusal slowed by a pause: taken for a stall, that costs one more
  # attempt, later, and the next, prompt one counts.
  #
  # Also kept here: each candidate's stalls in a row at its port, apart from its
  # `attempts`, which the probe that answers between two attempts clears. They set its
  # backoff and tell when a run of stalls starts (`Tinycluster.Poller.Report` says only the first).
  # Pure: the duration, the setup time and the table are passed in.
  @moduledoc false

  defstruct in_a_row: %{}

  @typedoc "Per candidate key: its port and the stalls in a row there."
  @type t :: %__MODULE__{in_a_row: %{term() => {:inet.port_number(), pos_integer()}}}

  # What net_kernel uses when `net_setuptime` is unset (seconds, as OTP documents it).
  @default_setup_ms 7_000
  # ... and its ceiling.
  @max_setup_ms 120_000

  @doc "No stall yet."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc """
  The handshake's time limit in ms, from the kernel's `net_setuptime` as
  `:application.get_env(:kernel, :net_setuptime)` returns it, read as net_kernel reads it:
  seconds, at most 120, 7 when unset or not a positive number.
  """
  @spec setup_ms({:ok, term()} | :undefined) :: pos_integer()
  def setup_ms({:ok, seconds}) when is_number(seconds) and seconds >= 120, do: @max_setup_ms
  def setup_ms({:ok, seconds}) when is_number(seconds) and seconds > 0, do: round(seconds * 1000)
  def setup_ms(_unset), do: @default_setup_ms

  @doc "Whether an attempt that failed after `took_ms` stalled, under a limit of `setup_ms`."
  @spec stalled?(non_neg_integer(), pos_integer()) :: boolean()
  def stalled?(took_ms, setup_ms), do: 2 * took_ms >= setup_ms

  @doc """
  What `Node.connect/1` returned (`result`), after `took_ms`, under a limit of `setup_ms`:
  `:stalled` for a `false` that `stalled?/2`, `result` otherwise.
  """
  @spec classify(term(), non_neg_integer(), pos_integer()) :: term()
  def classify(false, took_ms, setup_ms) do
    if stalled?(took_ms, setup_ms), do: :stalled, else: false
  end

  def classify(result, _took_ms, _setup_ms), do: result

  @doc """
  The stalls in a row of `key` at `port`, after an attempt that ended with `result`
  (`classify/3`'s), and the table that remembers them: a stall is one more (the first at a
  new port); a crash neither counts nor clears; anything else clears them.
  """
  @spec note(t(), term(), :inet.port_number(), term()) :: {t(), non_neg_integer()}
  def note(%__MODULE__{in_a_row: in_a_row} = stalls, key, port, :stalled) do
    n =
      case Map.get(in_a_row, key) do
        {^port, n} -> n + 1
        _ -> 1
      end

    {%{stalls | in_a_row: Map.put(in_a_row, key, {port, n})}, n}
  end

  def note(%__MODULE__{in_a_row: in_a_row} = stalls, key, port, {:crashed, _}) do
    case Map.get(in_a_row, key) do
      {^port, n} -> {stalls, n}
      _ -> {stalls, 0}
    end
  end

  def note(%__MODULE__{in_a_row: in_a_row} = stalls, key, _port, _result),
    do: {%{stalls | in_a_row: Map.delete(in_a_row, key)}, 0}
end
