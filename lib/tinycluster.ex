defmodule Tinycluster do
  @moduledoc """
  Zero-configuration clustering for the nodes of a host (or of a few hosts).

  A `Tinycluster` poller asks EPMD, the Erlang Port Mapper Daemon, which nodes are
  registered, proves that each one is a live distribution listener with a silent probe (the
  first half of the distribution handshake, closed before the cookie matters), and connects
  the live ones with `Node.connect/1`. It polls, so nodes that start later are found too,
  including plain `erl` nodes that do not run tinycluster. Connections are transitive: one
  poller on one node is enough.

  ## Usage

      children = [
        {Tinycluster, interval: 1_000}
      ]

      Supervisor.start_link(children, strategy: :one_for_one)

  Or, with no code at all, in `config/config.exs`:

      config :tinycluster, autostart: true              # or a keyword list of options

  Not both under one name: the autostarted poller holds it, so the child fails to start
  (`{:already_started, pid}`), and a log line says that the two are exclusive. A bad
  `autostart` value fails tinycluster's start with `{:invalid_autostart, message}`.

  ## Options

  #{Tinycluster.Options.docs()}

  Options are validated when the poller starts; a bad one raises an `ArgumentError` that
  names it.

  ## Limits and errors

  Nothing an EPMD or a node answers is trusted. An EPMD has `:epmd_timeout` to answer, and
  at most 256 KiB and 1024 names are taken from it: a host over either cap is refused
  whole (none of its names is probed) and reported, not truncated. A host that fails is
  in `status/1`'s `hosts` with `status: {:error, reason}`, logged once when it starts
  failing and once when it answers again; `scan/1` returns `{:error, {:epmd, host,
  reason}}` when no host answered. `reason` is one of `:timeout`, `:econnrefused`,
  `:closed`, `{:io, text}`, `{:resolve, text}`, `{:malformed, text}` (not an EPMD reply),
  `{:reply_too_large, 262_144}`, `{:too_many_names, 1024}` or `:plan_timeout`. Lines
  with a bad name or port are skipped and listed in the host's `malformed` (the first 64,
  then one entry that counts the rest), with a warning the first time.

  A DNS seed has `:dns_timeout` and at most 1024 addresses; one whose lookup fails keeps
  its last good addresses and is in `status/1`'s `dns` with `status: {:error, reason}`
  (`:timeout`, `:nxdomain`, `:servfail`, `:refused`, `:formerr`, `:econnrefused`,
  `:no_records`, `{:too_many_addresses, 1024}`, `{:malformed, text}`, ...), logged once when
  it starts failing and once when it answers again; `scan/1` returns `{:error, {:dns, name,
  reason}}` when it was the only thing to ask. See `Tinycluster.DnsSeed`.

  A probe has `:probe_timeout` (more on a far host: see the option) and ends in a
  `Tinycluster.Candidate` state: `:unreachable`
  (reason `:timeout`, `:econnrefused` or `:closed`), `:bad_reply` (`{:frame_too_large, n}`,
  `{:malformed, text}`, `{:unknown_status, text}`, `{:tls_alert, name}`, `:not_tls`, `:closed` or
  `:timeout`), `:tls` (`:alert` or `:server_hello`: a TLS distribution node, for a node
  that runs plain TCP) or `:name_mismatch` (`{:claimed, name}`), none of them ever
  connected. No atom is made of a name until a probe proved it live.

  ## Waiting for the cluster

  `await/1` returns once the cluster has formed, so that the processes that need it start
  only then: in a child placed after `{Tinycluster, ...}` (a start phase), or with
  `timeout: 0` in a readiness check. `Tinycluster.Await` says what it waits for, its options
  and results, with both recipes.

  ## Example

      {:ok, _pid} = Tinycluster.start_link(interval: 500)
      Tinycluster.status().candidates |> Map.keys()
      #=> ["a@myhost", "b@myhost"]
  """

  alias Tinycluster.{Candidate, Discovery, Options}

  @typedoc "What `status/1` returns: see `Tinycluster.Status`."
  @type status :: Tinycluster.Status.t()

  @doc """
  A child specification for a poller; `opts` are the options above.

      children = [{Tinycluster, interval: 2_000}]
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    opts = Options.new!(opts)
    %{id: {__MODULE__, opts.name}, start: {Tinycluster.Application, :start_poller, [opts]}}
  end

  @doc """
  Starts a poller linked to the calling process.

      {:ok, pid} = Tinycluster.start_link(interval: 1_000)
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    # The NIF first: some options are checked against its limits.
    case Tinycluster.Native.load_error() do
      nil -> opts |> Options.new!() |> Tinycluster.Application.start_poller()
      {path, reason} -> {:error, {:nif_not_loaded, path, reason}}
    end
  end

  @doc """
  What the poller `server` knows: the last scan's time, duration and counts, each host's
  last EPMD answer with its candidates' names (`hosts`), each DNS seed's last lookup by name
  (`dns`), and every candidate it has seen by full node name (`candidates`). See
  `Tinycluster.Status` for every field.

      Tinycluster.status().candidates["b@myhost"].state
      #=> :connected
  """
  @spec status(GenServer.server()) :: status()
  def status(server \\ __MODULE__), do: GenServer.call(server, :status)

  @doc """
  Waits until the cluster has formed, as the poller `:server` (default `Tinycluster`) sees
  it. `Tinycluster.Await` gives the options, the results, and two recipes: a start phase and
  a readiness check.

      :ok = Tinycluster.await(timeout: 10_000)
      {:ok, nodes} = Tinycluster.await(min_nodes: 2, timeout: 30_000)
  """
  @spec await(keyword()) ::
          :ok
          | {:ok, [node()]}
          | {:error,
             {:timeout, status()}
             | {:not_running, GenServer.server()}
             | {:poller_down, term()}
             | {:poller_unresponsive, pid()}}
  defdelegate await(opts \\ []), to: Tinycluster.Await

  @doc """
  This node leaves the cluster, for good or until `join/1`: its poller stops connecting,
  the pollers of the nodes it is connected to are told that this incarnation of it (its
  name and its creation, which a restart changes) leaves, and then it disconnects from every
  visible node. Those pollers hold it as `:left` and never connect it again; if it restarts
  under the same name, the new incarnation is a new node to them, connected as any other.
  Nodes that run no poller under the names told are simply disconnected. Hidden connections
  (a remote shell, `bin/app rpc`, which may be the caller) are kept.

  While this node has left, a visible node that connects to it all the same (a connection
  attempt already in flight, a node that was not told) is told in turn and disconnected.
  A node disconnected by hand (`Node.disconnect/1`) without `leave` is reconnected as
  always: only `leave` holds a node back.

  Call it when the node stops serving, after any handoff that needs the connections: see
  guides/waiting-and-leaving.md for a shutdown and a Kubernetes preStop recipe.

  Options:

    * `:server` - the local poller that stops connecting: its name or pid. Default
      `Tinycluster`.
    * `:tell` - the registered names under which the peers' pollers are told. Default: the
      local poller's `:name`, since the pollers of a cluster usually share one. A peer whose
      poller runs under another name is not told, and reconnects this node within an
      interval; name every poller name the cluster uses here.
    * `:timeout` - milliseconds the peers' pollers have to acknowledge. Default `5000`.

  Returns `{:ok, %{told: nodes, disconnected: nodes}}`: the nodes whose pollers
  acknowledged, and the nodes disconnected. `{:error, :not_distributed}` on a node that is
  not distributed, `{:error, {:not_running, server}}` when no poller runs under that name.

      {:ok, %{told: [:"a@host", :"b@host"], disconnected: _}} = Tinycluster.leave()
  """
  @spec leave(keyword()) ::
          {:ok, %{told: [node()], disconnected: [node()]}}
          | {:error, :not_distributed | {:not_running, GenServer.server()}}
  def leave(opts \\ []), do: Tinycluster.Leave.leave(opts)

  @doc """
  Undoes `leave/1` without a restart: the poller `:server` (default `Tinycluster`) connects
  again, within an interval, and tells the pollers that held this node as `:left` that it
  joined again, as it connects to them. Returns `:ok` (also on a node that never left), or
  `{:error, {:not_running, server}}`.

      :ok = Tinycluster.join()
  """
  @spec join(keyword()) :: :ok | {:error, {:not_running, GenServer.server()}}
  def join(opts \\ []), do: Tinycluster.Leave.join(opts)

  @doc """
  Runs one discovery pass in the calling process and connects nothing.

  Takes `:hosts`, `:probe_timeout` and `:epmd_timeout`, and `:name`, which picks the probe
  name (default `Tinycluster.Scan`, so that a scan's probes are apart from a running
  poller's). Concurrent scans may share a name: probes under one name to one node take
  turns, since a node takes two at once for a simultaneous connection attempt.
  Returns the candidates sorted by name; nodes already connected are not probed and come back
  `:connected`. Returns `{:error, :not_distributed}` on a node that is not distributed, and
  `{:error, {:epmd, host, reason}}` when no host's EPMD answered.

      {:ok, candidates} = Tinycluster.scan()
      Enum.map(candidates, &{&1.name, &1.state})
      #=> [{"a@myhost", :live}]
  """
  @spec scan(keyword()) :: {:ok, [Candidate.t()]} | {:error, term()}
  def scan(opts \\ []) do
    opts =
      if Keyword.keyword?(opts), do: Keyword.put_new(opts, :name, Tinycluster.Scan), else: opts

    opts |> Options.new!() |> Discovery.scan()
  end
end
