defmodule Tinycluster.Discovery do
  # One scan's protocol with the NIF, written once for the poller, `Tinycluster.scan/1` and
  # `mix tinycluster.scan`: build the request from options and the local node, start it,
  # answer its gate with the filters, cancel it, and run one synchronously. The one place
  # that knows how probe names are made; candidates are named by the NIF, before their
  # probes too, and the filters see those names (native/tinycluster_nif/src/scan.rs).
  @moduledoc false

  alias Tinycluster.{Candidate, DnsSeed, Filter, Hosts, Limits, Native, Options, Tls}
  alias Tinycluster.Candidates.Deferred

  # The probe claims a fixed name per poller: distinct between pollers (so they never answer
  # for each other) and never a fresh one per probe, since the peer makes an atom of it.
  @probe_prefix "tinycluster_probe_"

  @typedoc "A scan under way: its id (in its messages) and the handle that cancels it."
  @type scan :: %{id: non_neg_integer(), handle: reference()}

  @doc """
  The NIF request for one scan, or `{:error, :not_distributed}`. `skip` are the nodes
  connected now (not probed); `extra` may set the request's `hold`, `tls`, `last_listings`
  and `first` (see native/tinycluster_nif/src/request.rs), and give its `hosts` (the specs
  of `opts.hosts`, which it makes otherwise). A list longer than the NIF takes
  (`Tinycluster.Limits`' `max_listed`) is cut to that many entries, and named in the
  request's `capped`.
  """
  @spec request(Options.t(), [node()], map()) :: {:ok, map()} | {:error, :not_distributed}
  def request(%Options{} = opts, skip, extra \\ %{}) do
    if Node.alive?() do
      [alive, host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
      probe_name = probe_name(alive, host, opts.name)
      family = Hosts.family()

      request = %{
        hosts: Map.get_lazy(extra, :hosts, fn -> Hosts.specs(opts.hosts, node(), family) end),
        family: family,
        probe_name: probe_name,
        creation: :erlang.phash2(probe_name, 0xFFFF_FFFE) + 1,
        local_name: Atom.to_string(node()),
        skip: Enum.map(skip, &Atom.to_string/1),
        probe_timeout_ms: opts.probe_timeout,
        epmd_timeout_ms: opts.epmd_timeout,
        gate: Filter.active?(opts),
        tls: Tls.probes(%{})
      }

      # A list past the NIF's bound is cut here rather than refused there, so that a poller
      # with that many candidates still scans (the ones cut are probed, or asked in plain,
      # as if never seen). Only the lists past it are copied: most polls cut nothing.
      max = Limits.get(:max_listed)
      capped = for {key, list} <- extra, is_list(list), length(list) > max, do: key
      extra = Enum.reduce(capped, extra, &Map.update!(&2, &1, fn l -> Enum.take(l, max) end))

      {:ok, request |> Map.merge(extra) |> Map.put(:capped, Enum.sort(capped))}
    else
      {:error, :not_distributed}
    end
  end

  @doc """
  `request` with the hosts the DNS seeds `seeds` (`Tinycluster.DnsSeed.new/1`, updated)
  give now, after the hosts of `:hosts` (an address listed both ways is asked once).
  """
  @spec with_seeds(map(), map()) :: map()
  def with_seeds(request, seeds) when map_size(seeds) == 0, do: request

  def with_seeds(request, seeds),
    do: %{request | hosts: request.hosts ++ DnsSeed.specs(seeds, request.hosts)}

  @doc """
  The name the probes of poller `name` on this node claim: `tinycluster_probe_<alive>@host`,
  with a suffix for a poller not named `Tinycluster`.

  The peer makes an atom of it, and an atom holds a bounded number of characters (the NIF's
  `max_name_bytes`, `Tinycluster.Limits`): a longer name makes every probed node fail
  `list_to_atom/1` and log an error report for every probe. So the alive part is cut (and,
  where the host part leaves no room for the prefix, replaced by a short hash of it) until
  the whole name fits that bound. It keeps to the characters every node accepts, one `@`,
  and is the same for every call with the same arguments.
  """
  @spec probe_name(String.t(), String.t(), atom()) :: String.t()
  def probe_name(alive, host, name) do
    suffix = if name == Tinycluster, do: "", else: "_#{:erlang.phash2(name, 1_000_000)}"
    # Only what an alive part may hold everywhere: a node with UTF-8 in its name still
    # probes under a name every peer and EPMD accepts.
    clean = String.replace(alive, ~r/[^A-Za-z0-9_-]/, "_")
    room = Limits.get(:max_name_bytes) - byte_size("@" <> host)
    probe_alive = fit(@probe_prefix <> clean <> suffix, @probe_prefix, clean, suffix, room)
    probe_alive <> "@" <> host
  end

  defp fit(whole, _prefix, _clean, _suffix, room) when byte_size(whole) <= room, do: whole

  defp fit(_whole, prefix, clean, suffix, room) do
    cut = room - byte_size(prefix) - byte_size(suffix)

    if cut >= 1 do
      prefix <> binary_part(clean, 0, cut) <> suffix
    else
      # A host part so long that not even the prefix fits: a short stable stand-in,
      # starting with a letter no alive part of this node can collide with ("tcp").
      stand_in = "tcp" <> Integer.to_string(:erlang.phash2({clean, suffix}, 0xFFFF_FFFF), 36)
      binary_part(stand_in, 0, min(max(room, 1), byte_size(stand_in)))
    end
  end

  @doc """
  The longest a scan with these options can take, with a margin: its EPMD requests and the
  gate's answer, then at most a budget of probes (`Tinycluster.Candidates.Deferred`) in
  rounds of those in flight, a far host's longer timeout included.
  """
  @spec deadline(Options.t()) :: pos_integer()
  def deadline(%Options{} = opts) do
    limits = Limits.all()
    # A far host's probes have a few of its EPMD round trips, up to a cap
    # (native/tinycluster_nif/src/scan.rs, `host_probe_timeout`); a round trip is shorter than
    # `:epmd_timeout`, or the host failed and probes nothing.
    far = min(limits.rtt_factor * opts.epmd_timeout, limits.max_host_probe_timeout_ms)
    in_flight = limits.max_probes_in_flight
    rounds = div(Deferred.budget() + in_flight - 1, in_flight)
    # A probe may wait its turn (inflight.rs) for as long as it may itself take.
    2 * opts.epmd_timeout + rounds * 2 * max(opts.probe_timeout, far) + 5_000
  end

  @doc """
  Starts the scan `request` asks for: `{:ok, scan}`, or `{:error, reason}` when the NIF
  refuses the request. Its events then come to the calling process.
  """
  @spec start(map()) :: {:ok, scan()} | {:error, term()}
  def start(request) do
    case Native.start_scan(request) do
      {:ok, id, handle} -> {:ok, %{id: id, handle: handle}}
      {:error, reason} -> {:error, reason}
    end
  end

  @doc "Cancels a scan: its probes' sockets close, and no `:done` of it comes."
  @spec cancel(scan()) :: :ok
  def cancel(%{handle: handle}), do: Native.cancel(handle)

  @doc """
  Answers a scan's `{:listed, {index, label, names}}` event: lets through the names (full
  node names, as the NIF names the candidates) that the options' `:only`/`:except` admit,
  so that the others are never probed.
  """
  @spec admit(Options.t(), scan(), {non_neg_integer(), String.t(), [String.t()]}) ::
          :ok | {:error, :unknown_scan}
  def admit(%Options{} = opts, %{id: id}, {index, _label, names}) do
    Native.admit(id, index, Enum.filter(names, &Filter.allowed?(opts, &1)))
  end

  @doc "Runs one scan in the calling process and waits for its end."
  @spec scan(Options.t()) :: {:ok, [Candidate.t()]} | {:error, term()}
  def scan(%Options{} = opts) do
    with {:ok, report} <- run(opts), do: result(report)
  end

  @doc """
  Runs one scan in the calling process and returns the NIF's whole report, as it sent it:
  every host's EPMD answer (`hosts`) and every candidate (`candidates`).
  """
  @spec run(Options.t()) :: {:ok, map()} | {:error, term()}
  def run(%Options{} = opts) do
    with {:ok, request} <- request(opts, Node.list(:connected)),
         {:ok, request} <- look_up_seeds(opts, request),
         {:ok, scan} <- start(request) do
      await(opts, scan, deadline(opts))
    end
  end

  # A scan has no last good answer to fall back on: with no host to ask and a seed that
  # failed, the seed's error is the answer.
  defp look_up_seeds(opts, request) do
    seeds = DnsSeed.new(opts.hosts)

    if map_size(seeds) == 0 do
      {:ok, request}
    else
      answers = DnsSeed.lookup_all(opts.hosts, request.family, opts.dns_timeout)
      {seeds, _lines} = DnsSeed.update(seeds, answers)
      request = with_seeds(request, seeds)

      case Enum.sort(for {name, {:error, reason}} <- answers, do: {name, reason}) do
        [{name, reason} | _] when request.hosts == [] -> {:error, {:dns, name, reason}}
        _ -> {:ok, request}
      end
    end
  end

  defp await(opts, %{id: id} = scan, timeout) do
    receive do
      {:tinycluster_scan, ^id, {:done, report}} ->
        {:ok, report}

      {:tinycluster_scan, ^id, {:listed, listed}} ->
        admit(opts, scan, listed)
        await(opts, scan, timeout)

      {:tinycluster_scan, ^id, _event} ->
        await(opts, scan, timeout)
    after
      timeout ->
        cancel(scan)
        {:error, :timeout}
    end
  end

  @doc """
  What a scan's report tells the candidates' table at its end (`Tinycluster.Candidates`):
  the candidates listed and those deferred, the hosts whose EPMD answered, and `known`,
  every host of the poll (asked, or not yet due); a host no longer known is an address that
  left a DNS answer.
  """
  @spec listing(map(), MapSet.t(String.t())) :: Tinycluster.Candidates.listing()
  def listing(report, known) do
    %{
      listed: MapSet.new(report.candidates, &{&1.host, &1.alive}),
      deferred: for(%{state: :deferred} = c <- report.candidates, do: {c.host, c.alive}),
      answered: for(%{status: :ok, label: label} <- report.hosts, into: MapSet.new(), do: label),
      known: known
    }
  end

  @doc "The candidates of a scan's report, as `Tinycluster.Candidate`s sorted by name."
  @spec candidates(map()) :: [Candidate.t()]
  def candidates(%{candidates: candidates}),
    do: candidates |> Enum.map(&Candidate.from_native/1) |> Enum.sort_by(& &1.name)

  defp result(%{hosts: hosts, candidates: candidates}) do
    case Enum.reject(hosts, &(&1.status == :ok)) do
      failed when failed == hosts and hosts != [] ->
        [%{label: label, status: {:error, reason}} | _] = failed
        {:error, {:epmd, label, reason}}

      _ ->
        {:ok, candidates(%{candidates: candidates})}
    end
  end
end
