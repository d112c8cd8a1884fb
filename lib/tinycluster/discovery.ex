defmodule Tinycluster.Discovery do
  # One scan's protocol with the NIF, written once for the poller, `Tinycluster.scan/1` and
  # `mix tinycluster.scan`: build the request from options and the local node, start it,
  # answer each host's listing with its plan (`Tinycluster.Poller.Plan`), put the report together,
  # cancel it, and run one synchronously. The one place that knows how probe names are
  # made; candidates are named by the NIF before their probes (the filters see those
  # names), and by their challenge after (native/tinycluster_nif/src/scan.rs).
  @moduledoc false

  alias Tinycluster.{Candidate, DnsSeed, EPMD, FixedPort, Hosts, Limits, LocalNode, Native}
  alias Tinycluster.Options
  alias Tinycluster.Poller.Plan

  # The probe claims a fixed name per poller: distinct between pollers (so they never answer
  # for each other) and never a fresh one per probe, since the peer makes an atom of it.
  @probe_prefix "tinycluster_probe_"

  @typedoc """
  A scan under way: its id (in its messages), the handle that cancels it, and what its
  hosts' listings made of it so far: the budget of probes left and the hosts not yet
  listed (`Tinycluster.Poller.Plan.share/2`), whether this node runs TLS distribution (read once
  per scan), each host's report by index, and the candidates
  that are not probed (`planned`), every admitted name (`listed`).
  """
  @type scan :: %{
          id: non_neg_integer(),
          handle: reference(),
          budget: non_neg_integer(),
          waiting: non_neg_integer(),
          tls_local: boolean(),
          hosts: %{non_neg_integer() => map()},
          planned: [map()],
          listed: [Tinycluster.Poller.Candidates.key()]
        }

  @doc """
  The NIF request for one scan of the hosts `hosts` (the specs of `opts.hosts`, made here
  when nil), or `{:error, :not_distributed}`. It carries no candidate: which names to
  probe is decided per host listing (`listed/3`).
  """
  @spec request(Options.t(), [map()] | nil) :: {:ok, map()} | {:error, :not_distributed}
  def request(%Options{} = opts, hosts \\ nil) do
    if Node.alive?() do
      [alive, host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
      probe_name = probe_name(alive, host, opts.name)
      family = LocalNode.family()
      ports = FixedPort.ports()

      {:ok,
       %{
         hosts: FixedPort.specs(hosts || Hosts.Specs.specs(opts.hosts, node(), family), ports),
         family: family,
         probe_name: probe_name,
         creation: :erlang.phash2(probe_name, 0xFFFF_FFFE) + 1,
         local_name: Atom.to_string(node()),
         probe_timeout_ms: opts.probe_timeout,
         epmd_timeout_ms: opts.epmd_timeout,
         tls: LocalNode.tls?(),
         dist_ports: ports
       }}
    else
      {:error, :not_distributed}
    end
  end

  @doc """
  `request` with the hosts the DNS seeds `seeds` (`Tinycluster.DnsSeed.Table.new/1`, updated)
  give now, after the hosts of `:hosts` (an address listed both ways is asked once).
  """
  @spec with_seeds(map(), map()) :: map()
  def with_seeds(request, seeds) when map_size(seeds) == 0, do: request

  def with_seeds(request, seeds) do
    seeded = FixedPort.specs(DnsSeed.Table.specs(seeds, request.hosts), request.dist_ports)
    %{request | hosts: request.hosts ++ seeded}
  end

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
  plan's answer, then at most a budget of probes (`Tinycluster.Poller.Plan.budget/0`) in rounds of
  those in flight, a far host's longer timeout included.
  """
  @spec deadline(Options.t()) :: pos_integer()
  def deadline(%Options{} = opts) do
    limits = Limits.all()
    # A far host's probes have a few of its EPMD round trips, up to a cap
    # (native/tinycluster_nif/src/scan.rs, `host_probe_timeout`); a round trip is shorter than
    # `:epmd_timeout`, or the host failed and probes nothing.
    far = min(limits.rtt_factor * opts.epmd_timeout, limits.max_host_probe_timeout_ms)
    in_flight = limits.max_probes_in_flight
    rounds = div(Plan.budget() + in_flight - 1, in_flight)
    # A probe may wait its turn (inflight.rs) for as long as it may itself take.
    2 * opts.epmd_timeout + rounds * 2 * max(opts.probe_timeout, far) + 5_000
  end

  @doc """
  Starts the scan `request` asks for: `{:ok, scan}`, or `{:error, reason}` when the NIF
  refuses the request. Its events then come to the calling process: each host's listing
  (`{:listed, listings}`, answered with `listed/4`), the probes' candidates, and its end.
  """
  @spec start(map()) :: {:ok, scan()} | {:error, term()}
  def start(request) do
    case Native.start_scan(request) do
      {:ok, id, handle} ->
        {:ok,
         %{
           id: id,
           handle: handle,
           budget: Plan.budget(),
           waiting: length(request.hosts),
           tls_local: LocalNode.tls?(),
           hosts: %{},
           planned: [],
           listed: []
         }}

      {:error, reason} ->
        {:error, reason}
    end
  end

  @doc "Cancels a scan: its probes' sockets close, and no `:done` of it comes."
  @spec cancel(scan()) :: :ok
  def cancel(%{handle: handle}), do: Native.cancel(handle)

  @doc """
  Answers a scan's `{:listed, listings}` event (the hosts that answered together): plans
  each host's names (`Tinycluster.Poller.Plan.host/2`, in `context` with the host's last
  listing digest, `last_of.(label)`, and the share and `tls_local` this scan gives), hands
  every plan to the NIF in one call, and returns the scan and, for each host, its report
  (as `Tinycluster.Poller.HostTable` keeps it) and its plan (nil for a host whose EPMD
  failed).
  """
  @spec listed(scan(), [map()], map(), (String.t() -> non_neg_integer() | nil)) ::
          {scan(), [{map(), Plan.t() | nil}]}
  def listed(scan, listings, context, last_of) do
    {results, scan} =
      Enum.map_reduce(listings, scan, fn listing, scan ->
        {scan, host, plan} = plan(scan, listing, context, last_of)
        {{listing.index, host, plan}, scan}
      end)

    # A scan that no longer waits (cancelled, or past its deadline) probes nothing: its
    # report says so in time.
    case for({index, _, %{targets: targets}} <- results, do: {index, targets}) do
      [] -> :ok
      answers -> _ = Native.plan(scan.id, answers)
    end

    {scan, for({_index, host, plan} <- results, do: {host, plan})}
  end

  defp plan(scan, %{status: :ok} = listing, context, last_of) do
    # A host without EPMD lists what its ports answer now: what it no longer lists is gone.
    if listing.dist_port,
      do: EPMD.listed(listing.address, for({_, _, name} <- listing.names, do: name))

    share = Plan.share(scan.budget, max(scan.waiting, 1))
    more = %{share: share, tls_local: scan.tls_local, last_listing: last_of.(listing.label)}
    plan = Plan.host(listing, Map.merge(context, more))
    host = host_report(listing, length(plan.listed), plan.digest, plan.unchanged)

    scan = %{
      scan
      | budget: scan.budget - length(plan.targets),
        waiting: scan.waiting - 1,
        hosts: Map.put(scan.hosts, listing.index, host),
        planned: plan.planned ++ scan.planned,
        listed: plan.listed ++ scan.listed
    }

    {scan, host, plan}
  end

  defp plan(scan, listing, _context, _last_of) do
    host = host_report(listing, 0, nil, false)
    scan = %{scan | waiting: scan.waiting - 1, hosts: Map.put(scan.hosts, listing.index, host)}
    {scan, host, nil}
  end

  defp host_report(listing, admitted, digest, unchanged) do
    listing
    |> Map.drop([:index, :names])
    |> Map.merge(%{
      names: admitted,
      listed: length(Map.get(listing, :names, [])),
      listing: digest,
      unchanged: unchanged
    })
  end

  @doc """
  Tells `Tinycluster.EPMD` where the live nodes among the probed candidates `maps` of
  `scan`'s hosts without EPMD listen: that is where a connection to them goes.
  """
  @spec learn(scan(), [map()]) :: :ok
  def learn(scan, maps) do
    direct = for {_, %{dist_port: port, label: label}} <- scan.hosts, port != nil, do: label

    case direct do
      [] -> :ok
      labels -> EPMD.learn(Enum.filter(maps, &(&1.host in labels)))
    end
  end

  @doc """
  Candidates as the NIF sends them, after their probes, read for this node: one whose probe
  confirmed a name connected now (`connected`, full names) is reported skipped, as one
  listed under that name would have been (the host's entry could not tell it before the
  probe: `a@10.0.0.2` for `a@hostb`); a TLS listener that answered the ClientHello is a
  node this node can connect when it runs TLS distribution itself (`tls_local`): `:live`,
  reason `:tls`, under the name its EPMD lists (TLS confirms no name).
  """
  @spec confirmed([map()], MapSet.t(String.t()), boolean()) :: [map()]
  def confirmed(maps, connected, tls_local) do
    Enum.map(maps, fn
      %{state: :live, name: name} = map ->
        if MapSet.member?(connected, name), do: %{map | state: :skipped, reason: nil}, else: map

      %{state: :tls, reason: :server_hello} = map when tls_local ->
        %{map | state: :live, reason: :tls}

      map ->
        map
    end)
  end

  @doc """
  The whole report of a scan that ended with the NIF's `done` (`%{duration_us,
  candidates, plan_timeouts}`: the probed candidates, and the hosts whose plan came too
  late, which probed nothing): every host, in the order asked, and every candidate, probed
  or not.
  """
  @spec report(scan(), map()) :: map()
  def report(scan, done) do
    late = Map.get(done, :plan_timeouts, [])

    hosts =
      for {index, host} <- Enum.sort(scan.hosts) do
        if index in late, do: %{host | status: {:error, :plan_timeout}}, else: host
      end

    %{duration_us: done.duration_us, hosts: hosts, candidates: scan.planned ++ done.candidates}
  end

  @doc """
  The context `Tinycluster.Poller.Plan.host/2` plans listings in, for a poller or one scan
  (`listed/4` adds what is each host's).
  """
  @spec context(Tinycluster.Poller.Candidates.t(), Options.t(), integer()) :: map()
  def context(table, %Options{} = opts, now_ms) do
    %{
      table: table,
      connected: connected(),
      local_name: Atom.to_string(node()),
      opts: opts,
      now_ms: now_ms
    }
  end

  @doc "The full names of the nodes connected now."
  @spec connected() :: MapSet.t(String.t())
  def connected, do: MapSet.new(Node.list(:connected), &Atom.to_string/1)

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
    with {:ok, request} <- request(opts),
         {:ok, request} <- look_up_seeds(opts, request),
         {:ok, scan} <- start(request) do
      await(opts, scan, deadline(opts))
    end
  end

  # A scan has no last good answer to fall back on: with no host to ask and a seed that
  # failed, the seed's error is the answer.
  defp look_up_seeds(opts, request) do
    seeds = DnsSeed.Table.new(opts.hosts)

    if map_size(seeds) == 0 do
      {:ok, request}
    else
      answers = DnsSeed.Lookup.lookup_all(opts.hosts, request.family, opts.dns_timeout)
      {seeds, _lines} = DnsSeed.Table.update(seeds, answers, DateTime.utc_now())
      request = with_seeds(request, seeds)

      case Enum.sort(for {name, {:error, reason}} <- answers, do: {name, reason}) do
        [{name, reason} | _] when request.hosts == [] -> {:error, {:dns, name, reason}}
        _ -> {:ok, request}
      end
    end
  end

  defp await(opts, %{id: id} = scan, timeout) do
    receive do
      {:tinycluster_scan, ^id, {:done, done}} ->
        learn(scan, done.candidates)
        probed = confirmed(done.candidates, connected(), scan.tls_local)
        {:ok, report(scan, %{done | candidates: probed})}

      {:tinycluster_scan, ^id, {:listed, listings}} ->
        context = context(Tinycluster.Poller.Candidates.new(), opts, 0)
        {scan, _planned} = listed(scan, listings, context, fn _label -> nil end)
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
  What a scan's report tells the candidates' table at its end (`Tinycluster.Poller.Candidates`):
  the candidates listed and those deferred, the hosts it asked and those whose EPMD
  answered, and `known`, every host of the poll (asked, or not yet due, or asked by
  another scan under way); a host no longer known is an address that left a DNS answer.
  """
  @spec listing(scan(), map(), MapSet.t(String.t())) :: Tinycluster.Poller.Candidates.listing()
  def listing(scan, report, known) do
    %{
      listed: MapSet.new(scan.listed),
      deferred: for(%{state: :deferred} = c <- report.candidates, do: {c.host, c.alive}),
      answered: for(%{status: :ok, label: label} <- report.hosts, into: MapSet.new(), do: label),
      asked: MapSet.new(report.hosts, & &1.label),
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
