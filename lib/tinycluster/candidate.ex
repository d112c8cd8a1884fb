defmodule Tinycluster.Candidate do
  @moduledoc """
  A node that an EPMD listed, and what tinycluster learned about it.

  `Tinycluster.scan/1` returns these straight from a probe; `Tinycluster.status/1` returns
  them with the poller's bookkeeping filled in: `first_seen` and `last_seen` (when EPMD
  last listed it), `attempts` (failed probes or connection attempts in a row, at this port),
  `retry_in_ms` (how long until it is probed or connected again, while backing off),
  `retry_at` (`:never` for a node left alone after its refusals, else `nil`; the poller
  keeps its own clock) and `description` (the state in words, from `describe/1`).
  `creation` is the node's creation as its last probe's challenge gave it: a number that is
  new at every start of a node of that name, so that a node restarted under the same name,
  even at the same port, is a new candidate. It is nil until a probe read one, and after a
  connection this poller did not make (the node may have restarted and connected itself),
  until the next probe.

  A candidate that is `:rejected`, `:unreachable`, `:not_allowed`, `:tls` or `:bad_reply`
  is left alone, probe included, until its retry: exponentially later from `:interval` up
  to `:max_backoff` (`:unreachable` up to two intervals, since its probe stays open: see
  "What a peer sees" in guides/probe.md). A node that refused two connections (another cookie,
  or an allow list without this node) is left alone for good (`retry_at: :never`), until it
  restarts or this node's cookie for it changes; one that refused another cookie is still
  probed (the probe is silent), so that its restart is seen. A node listed at a new port, or
  whose probe shows a new creation (it restarted), starts over: nothing held against the node
  before (refusals, backoff, `:left`) is held against it.

  `name` is always the full node name as a string. `node` is the same name as an atom, but
  only once tinycluster connects it (or it is connected already): tinycluster never makes
  an atom of a name it has not validated, proven live and chosen to connect, since atoms are
  never freed.

  ## States

  Every state a candidate can be in, in the order the README's table and the `t:state/0`
  type list them.

    * `:connected` - connected to this node (by tinycluster or otherwise).
    * `:live` - answered the probe as a visible node; not connected (yet, or `connect: false`).
      With reason `:atom_budget` or `:atom_cap`, the atom budget holds its name back as a
      string (see `Tinycluster.Status`'s `atoms` and "Atoms" in guides/security.md).
    * `:connecting` - answered the probe; `Node.connect/1` is under way.
    * `:hidden` - answered the probe as a hidden node; tinycluster does not connect hidden nodes.
    * `:rejected` - answered the probe but refused the connection: usually another cookie
      (`reason` `:connect_failed`), or an allow list without this node (`:not_allowed`).
      Left alone, probe included, and retried with exponential backoff up to `:max_backoff`.
    * `:unreachable` - listed by EPMD, but no answer within its host's probe timeout
      (`:probe_timeout`, or longer for a far host: see `Tinycluster`): the node is frozen,
      overloaded, or behind a firewall, or it just died. With reason `:connect_timeout`, it
      answered the probe, but the connection attempt stalled: `Node.connect/1` failed
      after half of `net_setuptime` or more (a GC pause, an overloaded or frozen node, a
      network stall), where a refusal comes within a few round trips. A stall is not a
      refusal and never counts as one: the node is tried again within two intervals, and
      `attempts` counts the stalls in a row.
    * `:not_allowed` - the node restricts connections with `net_kernel:allow/1`, so it
      refuses the probe, which no allow list names (and logs an error for it). A poller
      that connects then tries a real connection: it may well let this node in.
    * `:name_mismatch` - something answered at the node's port, but named itself otherwise
      (`{:claimed, name}`), or the node runs with the other naming mode (`{:long_name, name}`
      or `{:short_name, name}`), which Erlang cannot connect.
    * `:busy` - the node answered `nok` or `alive` (a handshake with us already in flight).
    * `:tls` - a node using TLS distribution (`-proto_dist inet_tls`), while this node runs
      plain TCP distribution, so the two cannot connect. `reason` says how it was told:
      `:alert` (it answered the plain probe with a TLS alert, which its `ssl` logs as a
      notice) or `:server_hello` (it answered a TLS ClientHello, silently). After the first,
      the node is probed only with the ClientHello, for as long as it keeps its port. A node
      that runs TLS distribution itself sees such a node as `:live` with reason `:tls`, and
      connects it: see guides/tls.md for what is verified then.
    * `:bad_reply` - the port answered bytes that are not the distribution protocol (or,
      to a TLS probe, a TLS alert: `{:tls_alert, name}`; or `:not_tls`: it closed on the TLS
      hello, as a plain TCP node does for a node that runs TLS distribution).
    * `:down` - was connected, and the connection went down.
    * `:gone` - no longer listed by its host's EPMD; a poller forgets it after an hour.
    * `:deferred` - listed, but past the 1,024 candidates one scan probes (a host that
      lists thousands of names); `Tinycluster.scan/1` returns it unprobed, and a poller
      probes it in its next scans, the longest-waiting first.
    * `:left` - the node left the cluster (`Tinycluster.leave/1` on it told this poller):
      this incarnation (its name and `creation`) is never connected again, until it calls
      `Tinycluster.join/1` or restarts. It is still probed, silently, to see a restart.

  ## Example

      {:ok, candidates} = Tinycluster.scan()
      for %Tinycluster.Candidate{name: name, state: state} <- candidates, do: {name, state}
      #=> [{"a@myhost", :live}, {"b@myhost", :hidden}]
  """

  alias Tinycluster.Candidate.States
  alias Tinycluster.NodeName

  defstruct [
    :name,
    :node,
    :alive,
    :host,
    :address,
    :port,
    :state,
    :reason,
    :latency_us,
    :first_seen,
    :last_seen,
    :retry_at,
    :retry_in_ms,
    :description,
    :creation,
    attempts: 0
  ]

  @typedoc "A candidate's state; the moduledoc's \"States\" says what each one means."
  @type state ::
          :connected
          | :live
          | :connecting
          | :hidden
          | :rejected
          | :unreachable
          | :not_allowed
          | :name_mismatch
          | :busy
          | :tls
          | :bad_reply
          | :down
          | :gone
          | :deferred
          | :left

  @type t :: %__MODULE__{
          name: String.t(),
          node: node() | nil,
          alive: String.t(),
          host: String.t(),
          address: String.t(),
          port: :inet.port_number(),
          state: state(),
          reason: term(),
          latency_us: non_neg_integer() | nil,
          first_seen: DateTime.t() | nil,
          last_seen: DateTime.t() | nil,
          attempts: non_neg_integer(),
          retry_at: integer() | :never | nil,
          retry_in_ms: non_neg_integer() | nil,
          description: String.t() | nil,
          creation: non_neg_integer() | nil
        }

  @doc """
  Builds a candidate from the map the NIF sends.

  A skipped candidate (already connected) becomes `:connected`, with its atom. No other
  gets an atom here: the poller makes one when it connects a candidate. A name no atom can
  hold makes the candidate `:bad_reply` (`{:name_too_long, bytes}`), checked by
  `Tinycluster.NodeName`.
  """
  @spec from_native(map()) :: t()
  def from_native(%{state: state} = map) do
    {state, node, reason} =
      case state do
        :skipped ->
          {:connected, NodeName.existing(map.name), map.reason}

        proven when proven in [:live, :hidden] ->
          case NodeName.check(map.name) do
            :ok -> {proven, nil, map.reason}
            {:error, reason} -> {:bad_reply, nil, reason}
          end

        other ->
          {other, nil, map.reason}
      end

    %__MODULE__{
      name: map.name,
      node: node,
      alive: map.alive,
      host: map.host,
      address: map.address,
      port: map.port,
      state: state,
      reason: reason,
      latency_us: map.latency_us,
      creation: Map.get(map, :creation)
    }
  end

  @doc """
  Says in words what a candidate's state means and what to do about it.

      iex> Tinycluster.Candidate.describe(%Tinycluster.Candidate{state: :rejected})
      "answered the probe but refused the connection: probably another cookie"
  """
  @spec describe(t()) :: String.t()
  def describe(%__MODULE__{state: :rejected, retry_at: :never} = candidate),
    do:
      describe(:rejected, candidate.reason) <>
        "; refused #{candidate.attempts} times, so left alone until it restarts or this " <>
        "node's cookie for it changes (Node.set_cookie/2)"

  def describe(%__MODULE__{state: state, reason: reason}), do: describe(state, reason)

  defp describe(:live, :tls),
    do:
      "a live TLS distribution listener under the name EPMD lists (TLS confirms no name); " <>
        "not connected"

  defp describe(:live, :atom_budget),
    do:
      "answered the probe; not connected yet: more than " <>
        "#{Tinycluster.Poller.AtomBudget.per_window()} new nodes within a minute did not connect " <>
        "(the atom budget), so it waits for the next minute"

  defp describe(:live, :atom_cap),
    do:
      "answered the probe; not connected: #{Tinycluster.Poller.AtomBudget.max_wasted()} names made " <>
        "atoms never connected, and no new node of its host did, so its name stays a string " <>
        "(the atom budget's lifetime cap)"

  defp describe(:rejected, :not_allowed),
    do: "refuses this node: its net_kernel:allow/1 list does not name #{node()}"

  defp describe(:unreachable, :timeout),
    do: "listed by EPMD but silent within the probe timeout: frozen, overloaded or firewalled"

  defp describe(:unreachable, :connect_timeout),
    do:
      "answered the probe, but the connection's handshake stalled (it failed after half " <>
        "of net_setuptime or more): paused (GC), overloaded or frozen, or a network " <>
        "stall; not a refusal, tried again within two intervals"

  defp describe(:unreachable, :econnrefused),
    do: "listed by EPMD but nothing listens on its port: it probably just stopped"

  defp describe(:name_mismatch, {:long_name, name}),
    do:
      "runs with long names (#{name}) and this node with short names (-sname): " <>
        "Erlang cannot connect them"

  defp describe(:name_mismatch, {:short_name, name}),
    do:
      "runs with short names (#{name}) and this node with long names (-name): " <>
        "Erlang cannot connect them"

  defp describe(:name_mismatch, {:claimed, name}),
    do: "the node at this port calls itself #{name}: a stale EPMD entry or a port reused"

  defp describe(:tls, :alert),
    do:
      "uses TLS distribution (it answered the plain probe with a TLS alert); this node runs " <>
        "plain TCP distribution and cannot connect it; probed with a TLS hello from now on"

  defp describe(:bad_reply, :not_tls),
    do:
      "closed on the TLS hello: a plain TCP distribution node, which this node (running " <>
        "TLS distribution) cannot connect"

  defp describe(:bad_reply, {:tls_alert, alert}),
    do: "its port speaks TLS but refused the probe's TLS hello (alert #{inspect(alert)})"

  defp describe(:bad_reply, {:name_too_long, bytes}),
    do:
      "names itself with #{bytes} bytes, more than the " <>
        "#{Tinycluster.Limits.get(:max_name_bytes)} a node name can have: " <>
        "not an Erlang node, left alone"

  # Whatever the reason: the states table's words, with the reason where it says more.
  defp describe(state, reason) when state in [:unreachable, :bad_reply],
    do: "#{States.words(state)}: #{inspect(reason)}"

  defp describe(:down, reason), do: "#{States.words(:down)} (#{inspect(reason)})"
  defp describe(state, _reason), do: States.words(state)
end
