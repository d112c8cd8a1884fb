defmodule Tinycluster.Poller.Pacing do
  # When each host is asked next. Every poll asked every host's EPMD, so a cluster of N
  # nodes, each polling every host, made N² EPMD connections an interval (10,000 a second at
  # 100 pods). Now a remote host settles: when its EPMD answered as the time before and every
  # node it lists is connected, held back or filtered out (the NIF's `unchanged`), its next
  # ask waits twice as long as the last, from `:interval` up to `:settled_interval`. Anything
  # that may have changed there reopens it to every interval: its EPMD failing or listing
  # something new (an answer that is not `unchanged`), a node of it going down, a refused
  # connection to one of its nodes (`reopen/3`). A node that went down may be restarting,
  # and a release takes seconds to boot: its host stays open, whatever it answers meanwhile,
  # for `:settled_interval`, so that the node is found within an interval of registering
  # again rather than at a wait that doubled while it booted. `:local` is asked every
  # interval: it is loopback, and where a developer's nodes appear. A host never seen is due
  # at once (a DNS seed's new address). Pure: the time is passed in, in monotonic ms.
  @moduledoc false

  alias Tinycluster.Options

  defstruct hosts: %{}

  @typedoc """
  Per host label: whether settled, the last wait, when it is due, and until when it may not
  settle (after a nodedown there).
  """
  @type t :: %__MODULE__{
          hosts: %{
            String.t() => %{
              settled: boolean(),
              wait_ms: pos_integer(),
              due_ms: integer() | nil,
              open_until_ms: integer() | nil
            }
          }
        }

  @typedoc "A host's pacing as `Tinycluster.status/1` shows it."
  @type view :: %{settled: boolean(), next_ask_in_ms: non_neg_integer()}

  @doc "No host seen yet: every one is due."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc """
  Whether the host `label` is to be asked by a poll at `now_ms`. A timer may fire a little
  early, so a host due within a quarter of `interval` counts as due.
  """
  @spec due?(t(), String.t(), integer(), pos_integer()) :: boolean()
  def due?(_pacing, "local", _now_ms, _interval), do: true

  def due?(%__MODULE__{hosts: hosts}, label, now_ms, interval) do
    case Map.get(hosts, label) do
      nil -> true
      # Reopened: due now. (Monotonic time may be negative: no number means "now".)
      %{due_ms: nil} -> true
      %{due_ms: due} -> now_ms + div(interval, 4) >= due
    end
  end

  @doc """
  Records a host's answer to the scan that started at `started_ms`: `settled?` when its
  EPMD answered as the time before, with nothing to probe. A settled host's wait doubles,
  from `:interval` up to `:settled_interval`, less up to a quarter of it (a spread drawn
  from the host and the time); any other answer makes it `:interval`, and so does any
  answer while the host is held open (`reopen/3`).
  """
  @spec answered(t(), String.t(), boolean(), Options.t(), integer()) :: t()
  def answered(%__MODULE__{hosts: hosts} = pacing, label, settled?, %Options{} = opts, started_ms) do
    open_until =
      case Map.get(hosts, label) do
        %{open_until_ms: until} when is_integer(until) and started_ms < until -> until
        _ -> nil
      end

    settled? = settled? and label != "local" and open_until == nil

    wait =
      case Map.get(hosts, label) do
        %{settled: true, wait_ms: last} when settled? -> min(last * 2, opts.settled_interval)
        _ when settled? -> min(opts.interval * 2, opts.settled_interval)
        _ -> opts.interval
      end

    due =
      if settled?,
        do: started_ms + wait - spread(label, started_ms, wait),
        else: started_ms + wait

    host = %{settled: settled?, wait_ms: wait, due_ms: due, open_until_ms: open_until}
    %{pacing | hosts: Map.put(hosts, label, host)}
  end

  # Hosts that settle together (all of them, in a poller's first polls) would be asked
  # together ever after, a burst of as many EPMD requests every `:settled_interval` (bench
  # hosts saw 200 in one second at 200 hosts): each settled wait is cut by up to a quarter,
  # drawn from the host and the time, so that they drift apart. Never longer than the wait.
  defp spread(label, started_ms, wait), do: :erlang.phash2({label, started_ms}, div(wait, 4) + 1)

  @doc """
  Reopens the host `label`: due at the next poll, and every interval until it settles
  again, which it may not before `open_until_ms` (nil: at once). For a node of it going
  down (held open for `:settled_interval`), or refusing a connection.
  """
  @spec reopen(t(), String.t(), integer() | nil) :: t()
  def reopen(%__MODULE__{hosts: hosts} = pacing, label, open_until_ms \\ nil) do
    case Map.get(hosts, label) do
      nil ->
        pacing

      host ->
        until = later(host.open_until_ms, open_until_ms)
        host = %{host | settled: false, due_ms: nil, open_until_ms: until}
        %{pacing | hosts: Map.put(hosts, label, host)}
    end
  end

  defp later(nil, b), do: b
  defp later(a, nil), do: a
  defp later(a, b), do: max(a, b)

  @doc "Keeps only the hosts labelled in `labels`: the others are no longer asked at all."
  @spec keep(t(), Enumerable.t()) :: t()
  def keep(%__MODULE__{hosts: hosts} = pacing, labels),
    do: %{pacing | hosts: Map.take(hosts, Enum.to_list(labels))}

  @doc "A host's pacing at `now_ms`, as status shows it."
  @spec view(t(), String.t(), integer()) :: view()
  def view(%__MODULE__{hosts: hosts}, label, now_ms) do
    case Map.get(hosts, label) do
      %{due_ms: due} = host when due != nil ->
        %{settled: host.settled, next_ask_in_ms: max(due - now_ms, 0)}

      _new_or_reopened ->
        %{settled: false, next_ask_in_ms: 0}
    end
  end
end
