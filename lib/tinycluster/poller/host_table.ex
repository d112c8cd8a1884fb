defmodule Tinycluster.Poller.HostTable do
  # The poller's table of hosts: each host's last EPMD answer, as pure functions with the
  # time passed in. It keeps what the NIF reported of each host (`status`, `names`,
  # `malformed`, `latency_us`, `probe_timeout_ms`, and `listing`, the digest the next plan
  # compares with to tell an unchanged host, `Tinycluster.Poller.Plan`), with
  # when it was last asked and last answered, and when each is asked next
  # (`Tinycluster.Poller.Pacing`). `view/4` is what `Tinycluster.status/1` shows of it.
  @moduledoc false

  alias Tinycluster.{Hosts, Options}
  alias Tinycluster.Poller.Pacing

  defstruct hosts: %{}, pacing: Pacing.new(), specs: nil, kept: nil

  @typedoc """
  The table: each asked host's last report, by label, and their pacing; the host specs last
  made (`specs/4`) and the labels last kept (`keep/2`), so that a poll with nothing new does
  not make them again.
  """
  @type t :: %__MODULE__{
          hosts: %{String.t() => map()},
          pacing: Pacing.t(),
          specs: {term(), [map()]} | nil,
          kept: MapSet.t(String.t()) | nil
        }

  @typedoc "A host as `Tinycluster.status/1` shows it."
  @type host_view :: %{
          status: :pending | :ok | {:error, term()},
          address: String.t() | nil,
          epmd_port: :inet.port_number() | nil,
          dist_port: :inet.port_number() | nil,
          dist_port_last: :inet.port_number() | nil,
          names: non_neg_integer() | nil,
          malformed: [{String.t(), String.t()}],
          latency_us: non_neg_integer() | nil,
          probe_timeout_ms: pos_integer() | nil,
          unchanged: boolean(),
          checked_at: DateTime.t() | nil,
          last_ok_at: DateTime.t() | nil,
          settled: boolean(),
          next_ask_in_ms: non_neg_integer(),
          nodes: [String.t()]
        }

  @doc "An empty table."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc """
  Records a host's report (a map the NIF sent) as of `at`; returns the table and the host's
  previous report (nil for the first), for `Tinycluster.Poller.Report.host/3`.
  """
  @spec answered(t(), map(), DateTime.t()) :: {t(), map() | nil}
  def answered(%__MODULE__{hosts: hosts} = table, report, at) do
    previous = Map.get(hosts, report.label)
    last_ok = if report.status == :ok, do: at, else: previous[:last_ok_at]
    host = Map.merge(report, %{checked_at: at, last_ok_at: last_ok})
    {%{table | hosts: Map.put(hosts, report.label, host)}, previous}
  end

  @doc """
  The host specs of `entries` (the `:hosts` option: `Tinycluster.Hosts.Specs.specs/3`) for the
  local node `node` of `family`: made once, and again only when one of them changes. Every
  poll asks for them, and a poller of hundreds of hosts spent most of an idle poll making
  them.
  """
  @spec specs(t(), [Hosts.entry()], node(), Tinycluster.LocalNode.family()) :: {t(), [map()]}
  def specs(%__MODULE__{specs: {{entries, node, family}, specs}} = table, entries, node, family),
    do: {table, specs}

  def specs(%__MODULE__{} = table, entries, node, family) do
    specs = Hosts.Specs.specs(entries, node, family)
    {%{table | specs: {{entries, node, family}, specs}}, specs}
  end

  @doc "Keeps only the hosts labelled in `labels` (a set): the others are no longer asked."
  @spec keep(t(), MapSet.t(String.t())) :: t()
  def keep(%__MODULE__{kept: labels} = table, labels), do: table

  def keep(%__MODULE__{hosts: hosts} = table, labels) do
    list = MapSet.to_list(labels)
    pacing = Pacing.keep(table.pacing, list)
    %{table | hosts: Map.take(hosts, list), pacing: pacing, kept: labels}
  end

  @doc """
  The host specs (maps with a `label`) a poll at `now_ms` asks: those due
  (`Tinycluster.Poller.Pacing`).
  """
  @spec due(t(), [map()], integer(), Options.t()) :: [map()]
  def due(%__MODULE__{pacing: pacing}, specs, now_ms, %Options{interval: interval}),
    do: Enum.filter(specs, &Pacing.due?(pacing, &1.label, now_ms, interval))

  @doc """
  Paces the hosts a scan that started at `started_ms` asked, by their reports (the NIF's
  host maps): one that answered `:ok` and `unchanged` settles further.
  """
  @spec paced(t(), [map()], Options.t(), integer()) :: t()
  def paced(%__MODULE__{pacing: pacing} = table, reports, opts, started_ms) do
    pacing =
      Enum.reduce(reports, pacing, fn report, acc ->
        settled? = report.status == :ok and report.unchanged
        Pacing.answered(acc, report.label, settled?, opts, started_ms)
      end)

    %{table | pacing: pacing}
  end

  @doc """
  Reopens the hosts of the candidates that `changes` (`Tinycluster.Poller.Candidates.change/0`)
  took down or saw refuse or stall a connection: something there changed, so they are
  asked every interval again (`Tinycluster.Poller.Pacing.reopen/3`); a host whose node went down,
  at `now_ms`, for at least `:settled_interval`, since the node may be restarting.
  """
  @spec reopen_for(t(), [Tinycluster.Poller.Candidates.change()], integer(), Options.t()) :: t()
  def reopen_for(%__MODULE__{pacing: pacing} = table, changes, now_ms, %Options{} = opts) do
    pacing =
      Enum.reduce(changes, pacing, fn
        {_old, %{state: :down, host: host}}, acc ->
          Pacing.reopen(acc, host, now_ms + opts.settled_interval)

        {_old, %{state: :rejected, host: host}}, acc ->
          Pacing.reopen(acc, host)

        {_old, %{state: :unreachable, reason: :connect_timeout, host: host}}, acc ->
          Pacing.reopen(acc, host)

        _other, acc ->
          acc
      end)

    %{table | pacing: pacing}
  end

  @doc """
  The digest of the last listing of the host `label`, or nil: a host whose EPMD lists the
  same again, with nothing to probe, is unchanged (`Tinycluster.Poller.Plan`).
  """
  @spec listing(t(), String.t()) :: non_neg_integer() | nil
  def listing(%__MODULE__{hosts: hosts}, label) do
    case Map.get(hosts, label) do
      %{listing: digest} -> digest
      _ -> nil
    end
  end

  @doc """
  Forgets every host's listing, so that the next scan reports every candidate again: after
  a scan that did not finish, whose candidates' events may be lost.
  """
  @spec forget_listings(t()) :: t()
  def forget_listings(%__MODULE__{hosts: hosts} = table),
    do: %{table | hosts: Map.new(hosts, fn {label, host} -> {label, %{host | listing: nil}} end)}

  @doc """
  The hosts as `Tinycluster.status/1` shows them, by label: every host of `entries` (the
  `:hosts` option; `:pending` before its first answer) and every host asked (the addresses
  DNS seeds give, by address; one that left its seed's answer is no longer shown, while its
  candidates are, `:gone`), each with its candidates' names (`nodes`, sorted), from
  `candidates` (status's candidates by name), and its pacing as of `now_ms`.
  """
  @spec view(t(), [Hosts.entry()], %{String.t() => Tinycluster.Candidate.t()}, integer()) ::
          %{String.t() => host_view()}
  def view(%__MODULE__{hosts: hosts, pacing: pacing}, entries, candidates, now_ms) do
    nodes = Enum.group_by(Map.values(candidates), & &1.host, & &1.name)
    # A DNS seed is no host: the addresses it gives are, and the reports name them.
    labels = Hosts.Specs.labels(entries)

    Map.new(Enum.uniq(labels ++ Map.keys(hosts)), fn label ->
      host = Map.get(hosts, label, %{})

      {label,
       %{
         status: Map.get(host, :status, :pending),
         address: host[:address],
         epmd_port: host[:epmd_port],
         dist_port: host[:dist_port],
         dist_port_last: host[:dist_port_last],
         names: host[:names],
         malformed: Map.get(host, :malformed, []),
         latency_us: host[:latency_us],
         probe_timeout_ms: host[:probe_timeout_ms],
         unchanged: Map.get(host, :unchanged, false),
         checked_at: host[:checked_at],
         last_ok_at: host[:last_ok_at],
         nodes: nodes |> Map.get(label, []) |> Enum.sort()
       }
       |> Map.merge(Pacing.view(pacing, label, now_ms))}
    end)
  end
end
