defmodule Tinycluster.Status do
  @moduledoc """
  What `Tinycluster.status/1` returns: a view of what a poller knows, in the user's terms.

    * `node` - this node.
    * `options` - the poller's options, defaults filled in (`Tinycluster.Options`).
    * `scanning` - whether a scan is under way.
    * `scans` - how many scans have finished.
    * `last_scan` - the last finished scan: when it ended (`at`), how long it took
      (`duration_us`), how many hosts it asked and which of them failed, how many
      candidates their EPMDs listed, how many of those it left to the next scans
      (`deferred`: a scan probes at most 1,024, the longest-waiting first), and how many of
      the poller's candidates are in each state after it (`by_state`). `nil` before the
      first.
    * `hosts` - every host, by label: each host of `:hosts` and each address a DNS seed
      gives. Its EPMD's last answer (`status`: `:pending` before the first, `:ok`, or
      `{:error, reason}`), the address and port asked (`epmd_port`; `dist_port`, the node's
      own port, for a host of a cluster without EPMD, and `dist_port_last`, the last of
      its ports when they are a range: see "Without EPMD" in guides/containers.md), how
      many names it listed (`names`),
      the lines it skipped (`malformed`), the round trip of its EPMD request (`latency_us`:
      the host's distance, name resolution left out), the probe timeout its candidates had
      in the last scan (`probe_timeout_ms`: `:probe_timeout`, or longer for a far host, see
      `Tinycluster`), whether the answer changed nothing (`unchanged`: the same names and
      ports, all connected or held back), when it was last asked (`checked_at`) and last
      answered (`last_ok_at`), whether it is settled (asked less and less often, up to
      `:settled_interval`) and how long until it is asked next (`next_ask_in_ms`), and the
      names of its candidates (`nodes`).
    * `dns` - each DNS seed's last lookup, by name (see `Tinycluster.DnsSeed`).
    * `candidates` - every node the poller has seen, by full name
      (`Tinycluster.Candidate`), with its state in words (`description`) and, while it is
      held back, the milliseconds until it is tried again (`retry_in_ms`). A name that more
      than one host lists is here once, its most advanced entry (connected first).
    * `claimed` - every name that more than one host lists, with each of its entries (and
      so each host): one of them may only claim the name (a stale EPMD entry, a port
      reused, or a hostile listener that answers under a real node's name). Each entry
      follows the node of that name: a nodedown marks them all `:down`.
    * `left` - `nil` while this node is a cluster member; after `Tinycluster.leave/1`, its
      leave: this node's `creation`, when it left (`since`), the registered names its peers'
      pollers were told under (`tell`) and the nodes whose pollers acknowledged it (`told`).
      Until `Tinycluster.join/1`, the poller connects nothing.
    * `atoms` - the atom budget (see "Atoms" in guides/security.md): the node names made atoms
      this minute that have not connected (`window`, against `per_window`), those whose
      connection failed for good (`wasted`, against the lifetime cap `max_wasted`), and
      the hosts that proved themselves by a new node connecting (`proven_hosts`).
  """

  alias Tinycluster.{Candidate, DnsSeed, Options}
  alias Tinycluster.Poller.{AtomBudget, Candidates, HostTable}

  @typedoc "The last finished scan, as `status/1` shows it."
  @type last_scan :: %{
          at: DateTime.t(),
          duration_us: non_neg_integer(),
          hosts: non_neg_integer(),
          failed_hosts: [String.t()],
          candidates: non_neg_integer(),
          deferred: non_neg_integer(),
          by_state: %{Candidate.state() => pos_integer()}
        }

  @typedoc "What `Tinycluster.status/1` returns."
  @type t :: %{
          node: node(),
          options: Options.t(),
          scanning: boolean(),
          scans: non_neg_integer(),
          last_scan: last_scan() | nil,
          hosts: %{String.t() => HostTable.host_view()},
          dns: %{String.t() => DnsSeed.seed_status()},
          candidates: %{String.t() => Candidate.t()},
          claimed: %{String.t() => [Candidate.t()]},
          left: nil | Tinycluster.Poller.Candidates.Left.self_left(),
          atoms: map()
        }

  @doc """
  Builds the view from the poller's parts, as of `now_ms` (monotonic milliseconds).
  """
  @spec build(
          %{
            opts: Options.t(),
            scanning: boolean(),
            scans: non_neg_integer(),
            last_scan: last_scan() | nil,
            hosts: HostTable.t(),
            dns: map(),
            candidates: Candidates.t()
          },
          integer()
        ) :: t()
  def build(parts, now_ms) do
    {candidates, claimed} = candidates(parts.candidates, now_ms)

    %{
      node: node(),
      options: parts.opts,
      scanning: parts.scanning,
      scans: parts.scans,
      last_scan: parts.last_scan,
      hosts: HostTable.view(parts.hosts, parts.opts.hosts, candidates, now_ms),
      dns: DnsSeed.Table.status(parts.dns),
      candidates: candidates,
      claimed: claimed,
      left: parts.candidates.left.self,
      atoms: AtomBudget.view(parts.candidates.budget, now_ms)
    }
  end

  @doc """
  The `last_scan` of a scan that ended at `at` with the NIF's `report`, and the
  candidates' table after it.
  """
  @spec last_scan(map(), Candidates.t(), DateTime.t()) :: last_scan()
  def last_scan(report, candidates, at) do
    %{
      at: at,
      duration_us: report.duration_us,
      hosts: length(report.hosts),
      failed_hosts: Tinycluster.Poller.Report.failed_hosts(report),
      candidates: length(report.candidates),
      deferred: Enum.count(report.candidates, &(&1.state == :deferred)),
      by_state: Enum.frequencies_by(candidates.entries, fn {_key, entry} -> entry.state end)
    }
  end

  @doc """
  The candidates as status shows them, by full name, and the names more than one host
  lists, with every entry: each with its state in words (`description`) and, while it is
  held back, the milliseconds until its retry (`retry_in_ms`), as of `now_ms`; `retry_at`
  only as `:never`.
  """
  @spec candidates(Candidates.t(), integer()) ::
          {%{String.t() => Candidate.t()}, %{String.t() => [Candidate.t()]}}
  def candidates(%Candidates{entries: entries}, now_ms) do
    by_name =
      entries
      |> Enum.map(fn {_key, entry} -> shown(entry, now_ms) end)
      |> Enum.group_by(& &1.name)

    candidates =
      Map.new(by_name, fn {name, [_ | _] = all} -> {name, Enum.max_by(all, &rank/1)} end)

    claimed =
      for {name, [_, _ | _] = all} <- by_name, into: %{}, do: {name, Enum.sort_by(all, & &1.host)}

    {candidates, claimed}
  end

  defp shown(entry, now_ms) do
    retry_in = if is_integer(entry.retry_at), do: max(entry.retry_at - now_ms, 0)

    %{
      entry
      | description: Candidate.describe(entry),
        retry_in_ms: retry_in,
        retry_at: if(entry.retry_at == :never, do: :never)
    }
  end

  # Which entry of a name shared by hosts stands for it: the most advanced.
  @rank [:connected, :connecting, :live, :down]
  defp rank(%Candidate{state: state, host: host}) do
    {length(@rank) - (Enum.find_index(@rank, &(&1 == state)) || length(@rank)), host}
  end
end
