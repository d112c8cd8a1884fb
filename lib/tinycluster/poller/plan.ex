defmodule Tinycluster.Poller.Plan do
  # What to do with one host's listing: the one place, once per listing, where it is
  # decided which of the names a host lists are probed, with which hello, in which order
  # and how many under the scan's budget, and which are held back, skipped (connected),
  # filtered out or deferred. The NIF then probes exactly the targets it is handed
  # (native/tinycluster_nif/src/scan.rs) and knows nothing of these rules. Pure: the
  # candidates' table, the nodes connected, the time and the local node's facts are passed
  # in.
  #
  # Besides the targets, a plan gives the candidates that are not probed, in the shape the
  # NIF gives probed ones, so that everything downstream sees one kind of candidate map.
  @moduledoc false

  alias Tinycluster.{Filter, NodeName, Options}
  alias Tinycluster.Poller.{Candidates, Tls}

  # The most candidates one scan probes, for all its hosts together: four rounds of the
  # probes in flight (`Tinycluster.Limits`' `max_probes_in_flight`), so that even a scan of
  # silent listeners ends within a few probe timeouts. A healthy cluster probes far fewer:
  # its connected nodes are skipped.
  @budget 1_024

  @typedoc "A host's listing as the NIF sends it: `names` as `{alive, port, name}`."
  @type listing :: %{
          required(:label) => String.t(),
          required(:address) => String.t(),
          required(:names) => [{String.t(), :inet.port_number(), String.t()}],
          optional(atom()) => term()
        }

  @typedoc "A probe to make: the alive part and port EPMD listed, and the hello to open with."
  @type target :: {String.t(), :inet.port_number(), :send_name | :client_hello}

  @typedoc """
  What the plan needs besides the listing: the candidates' table, the names of the nodes
  connected now, this node's name, whether it runs TLS distribution, the options (for the
  filters), the time (monotonic ms), how many probes this host may have in this scan
  (`share`), and the digest of the host's last listing (nil if none).
  """
  @type context :: %{
          table: Candidates.t(),
          connected: MapSet.t(String.t()),
          local_name: String.t(),
          tls_local: boolean(),
          opts: Options.t(),
          now_ms: integer(),
          share: non_neg_integer(),
          last_listing: non_neg_integer() | nil
        }

  @typedoc """
  The plan: the `targets` to probe, in order; the candidate maps of the names not probed
  (`planned`: skipped, held, deferred, or a name no node can have); the keys of every name
  admitted (`listed`); the listing's digest, and whether it changed nothing (`unchanged`:
  the same listing as last time, and nothing to probe or defer).
  """
  @type t :: %{
          targets: [target()],
          planned: [map()],
          listed: [Candidates.key()],
          digest: non_neg_integer(),
          unchanged: boolean()
        }

  @doc "Plans one host's `listing` in `context`."
  @spec host(listing(), context()) :: t()
  def host(%{label: label} = listing, context) do
    digest = :erlang.phash2(for {alive, port, _} <- listing.names, do: {alive, port})

    {probe, planned} =
      listing.names
      |> Enum.reject(fn {_, _, name} -> name == context.local_name end)
      |> Enum.filter(fn {_, _, name} -> Filter.allowed?(context.opts, name) end)
      |> Enum.reduce({[], []}, fn {alive, port, name} = entry, {probe, planned} ->
        case decide(label, entry, context) do
          :probe -> {[entry | probe], planned}
          state -> {probe, [candidate(listing, alive, port, name, state) | planned]}
        end
      end)

    {targets, deferred} =
      probe |> Enum.reverse() |> order(label, context) |> Enum.split(context.share)

    planned =
      Enum.reverse(planned) ++
        for({alive, port, name} <- deferred, do: candidate(listing, alive, port, name, :deferred))

    listed =
      for({alive, _, _} <- targets, do: {label, alive}) ++
        for(%{alive: alive} <- planned, do: {label, alive})

    %{
      targets:
        for(
          {alive, port, _name} <- targets,
          do: {alive, port, hello(label, alive, port, context)}
        ),
      planned: planned,
      listed: listed,
      digest: digest,
      unchanged: digest == context.last_listing and targets == [] and deferred == []
    }
  end

  defp decide(label, {alive, port, name}, context) do
    cond do
      MapSet.member?(context.connected, name) ->
        :skipped

      match?({:error, _}, NodeName.check(name)) ->
        {:bad_reply, elem(NodeName.check(name), 1)}

      Candidates.held?(context.table, {label, alive}, port, context.now_ms, context.connected) ->
        :held

      true ->
        :probe
    end
  end

  # The candidates a scan deferred go first, the longest-waiting first; then the listing's
  # order.
  defp order(probe, _label, %{table: %Candidates{deferred: deferred}}) when deferred == %{},
    do: probe

  defp order(probe, label, %{table: %Candidates{deferred: deferred}}) do
    Enum.sort_by(probe, fn {alive, _, _} ->
      case Map.get(deferred, {label, alive}) do
        nil -> {1, 0}
        since -> {0, since}
      end
    end)
  end

  defp hello(_label, _alive, _port, %{tls_local: true}), do: :client_hello

  defp hello(label, alive, port, %{table: %Candidates{tls: tls}}) do
    if Tls.listener?(tls, label, alive, port), do: :client_hello, else: :send_name
  end

  defp candidate(listing, alive, port, name, state) do
    {state, reason} =
      case state do
        {state, reason} -> {state, reason}
        state -> {state, nil}
      end

    %{
      host: listing.label,
      alive: alive,
      name: name,
      address: listing.address,
      port: port,
      state: state,
      reason: reason,
      latency_us: nil
    }
  end

  @doc """
  How many probes a host may have when its listing comes: an equal part of what is left of
  the scan's `budget` among the `hosts` not planned yet, so that one host that lists
  thousands of names cannot take the whole scan from the others, and what a host leaves
  unused goes to those that answer after it.
  """
  @spec share(non_neg_integer(), pos_integer()) :: non_neg_integer()
  def share(0, _hosts), do: 0
  def share(budget, hosts) when hosts > 0, do: max(div(budget, hosts), 1)

  @doc "The deferred keys of a plan's `planned` candidates."
  @spec deferred(t()) :: [Candidates.key()]
  def deferred(%{planned: planned}),
    do: for(%{state: :deferred, host: host, alive: alive} <- planned, do: {host, alive})

  @doc "How many candidates one scan probes at most, for all its hosts together."
  @spec budget() :: pos_integer()
  def budget, do: @budget
end
