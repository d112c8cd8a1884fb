defmodule Tinycluster.Poller.Candidates do
  # The poller's table of candidates and every rule about them, as pure functions: plain
  # data in, plain data out, the time passed in. What a probe's answer makes of a candidate
  # (`probed/4`), which ones to connect now, what a connection attempt's end, a nodeup or a
  # nodedown makes of one, when one is gone and when forgotten, and which are held back.
  # Each function returns the table and the changes of state it made (`{old, new}`, `old`
  # nil for a new candidate), which `Tinycluster.Poller.Report` words; the poller only applies them.
  #
  # The states and their transitions are `Tinycluster.Candidate.States`'s table: each rule here
  # looks up the row of its event and does its action. The backoff numbers are
  # `Tinycluster.Poller.Backoff`'s; what a TLS listener's probe is, `Tinycluster.Poller.Tls`'s;
  # who left the cluster and when that stops holding, `Tinycluster.Poller.Candidates.Left`'s.
  @moduledoc false

  alias Tinycluster.{Candidate, Options}
  alias Tinycluster.Candidate.States
  alias Tinycluster.Poller.{AtomBudget, Backoff, Tls}
  alias Tinycluster.Poller.Candidates.{Connect, Deferred, Left, Refusals, Stalls}

  # A candidate no longer listed anywhere is forgotten after this long, so that the status
  # of a node that sees many short-lived nodes (remote shells, scripts) stays bounded...
  @forget_gone_after_ms 3_600_000
  # ... and at most this many are kept meanwhile, the oldest forgotten first: a host that
  # keeps listing fresh names would otherwise grow the table for an hour.
  @max_gone 4_096

  defstruct entries: %{},
            tls: %{},
            refusals: Refusals.new(),
            stalls: Stalls.new(),
            budget: AtomBudget.new(),
            deferred: Deferred.new(),
            left: Left.new()

  @typedoc "A candidate's key: its host's label and its alive part, as EPMD listed it."
  @type key :: {String.t(), String.t()}

  @typedoc """
  The table: candidates by key, the TLS listeners seen (`Tinycluster.Poller.Tls`), the
  refused connections (`Tinycluster.Poller.Candidates.Refusals`), the stalled ones
  (`Tinycluster.Poller.Candidates.Stalls`), the atom budget, the candidates the last scan
  deferred (`Tinycluster.Poller.Candidates.Deferred`), and who left the cluster, this node
  included (`Tinycluster.Poller.Candidates.Left`).
  """
  @type t :: %__MODULE__{
          entries: %{key() => Candidate.t()},
          tls: Tls.known(),
          refusals: Refusals.t(),
          stalls: Stalls.t(),
          budget: AtomBudget.t(),
          deferred: Deferred.t(),
          left: Left.t()
        }

  @typedoc """
  The time now, as the caller read it: monotonic milliseconds (for retries) and the wall
  clock (shown).
  """
  @type now :: %{ms: integer(), at: DateTime.t()}

  @typedoc """
  A change of state: the entry before (nil if new) and after; or `{:atom_budget, bound,
  host}`: a bound of `Tinycluster.Poller.AtomBudget` first held back a new name, one of `host`'s.
  """
  @type change ::
          {Candidate.t() | nil, Candidate.t()}
          | {:atom_budget, AtomBudget.bound(), String.t()}

  @typedoc """
  What the scan's end tells of the hosts: who was listed, whose EPMD answered, which hosts
  the poller has now (asked or not yet due: see `Tinycluster.Poller.Pacing`), and which
  candidates the scan deferred, past its budget.
  """
  @type listing :: %{
          listed: MapSet.t(key()),
          deferred: [key()],
          asked: MapSet.t(String.t()),
          answered: MapSet.t(String.t()),
          known: MapSet.t(String.t())
        }

  @doc "An empty table."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "The forget-after and the cap of `:gone` candidates, for tests and docs."
  @spec limits() :: %{forget_gone_after_ms: pos_integer(), max_gone: pos_integer()}
  def limits, do: %{forget_gone_after_ms: @forget_gone_after_ms, max_gone: @max_gone}

  @doc """
  Merges the NIF's candidate maps of one batch. Held-back and deferred candidates teach
  nothing and are passed over. Returns the table, the connections to start now as
  `{key, name}` (those candidates are `:connecting` in the table already; the caller makes
  the atom of each name and gives it back with `named/2`), and the changes. Makes no atom.

  A probe that shows another incarnation of a node (`Tinycluster.Poller.Backoff.restarted?/2`)
  clears what was held against the one before: its backoff, its refusals, its leave. An
  incarnation that left is `:left`, whatever its probe says, and is not connected; nor is
  anything while this node itself has left.
  """
  @spec probed(t(), [map()], Options.t(), now()) :: {t(), [{key(), String.t()}], [change()]}
  def probed(%__MODULE__{} = table, maps, %Options{} = opts, now) do
    opts = if Left.self_left?(table.left), do: %{opts | connect: false}, else: opts

    {table, connects, changes} =
      for %{state: state} = map <- maps,
          States.teaches?(state),
          reduce: {table, [], []} do
        {table, connects, changes} ->
          probed = Candidate.from_native(map)
          key = {probed.host, probed.alive}
          old = Map.get(table.entries, key)
          table = restarted(table, key, old, probed)

          entry =
            case old do
              nil -> %Candidate{probed | first_seen: now.at, last_seen: now.at}
              old -> merge(Backoff.restarted(old, probed), probed, now.at)
            end
            |> left(table.left, old)
            |> Backoff.after_probe(opts, now.ms)

          {budget, entry, connect, notice} = Connect.now(table.budget, key, entry, opts, now.ms)
          table = %{table | budget: budget}
          table = %{table | entries: Map.put(table.entries, key, entry)}
          table = %{table | tls: Tls.learn(table.tls, probed)}
          {table, connect ++ connects, notice ++ change(old, entry) ++ changes}
      end

    {table, Enum.reverse(connects), Enum.reverse(changes)}
  end

  # Another incarnation: its refusals were the old one's. A leave held for another creation
  # is forgotten whatever the entry knew (a leave may name a node no probe has seen yet).
  defp restarted(table, key, old, probed) do
    refusals =
      if old != nil and Backoff.restarted?(old, probed),
        do: Refusals.forget(table.refusals, key),
        else: table.refusals

    %{table | refusals: refusals, left: Left.seen(table.left, probed.name, probed.creation)}
  end

  # An incarnation that left is `:left` whatever a probe or a connection attempt says, and
  # nothing is retried meanwhile. A connection is a fact that only node events change: a
  # probe that says `skipped` (connected as its scan started) leaves a candidate connected,
  # since it may well be a new incarnation that connected itself before any probe showed
  # its creation; unless the candidate is `:left` already, when that report is older than
  # the leave.
  defp left(%Candidate{state: :connected} = entry, _left, old)
       when old == nil or old.state != :left,
       do: entry

  defp left(entry, left, _old), do: left(entry, left)

  defp left(%Candidate{name: name, creation: creation} = entry, left) do
    if Left.holds?(left, name, creation), do: held(entry), else: entry
  end

  # The incarnation `creation` left: the table's `:left` row, whose failures are forgotten.
  defp held(entry, creation \\ nil) do
    case States.next(entry.state, :left) do
      {:left, :none} ->
        %{entry | state: :left, reason: nil, attempts: 0, retry_at: nil}
        |> Map.update!(:creation, &(creation || &1))

      {_same, :none} ->
        entry
    end
  end

  # What a fresh probe says is the state the table's `{:probed, outcome}` row gives
  # (`Tinycluster.Candidate.States`): the probe's, or the poller's own view kept. A node left
  # alone after its refusals stays so whatever a probe says (new scans hold it back, but
  # one started before the last refusal may still answer, a timeout under load say).
  defp merge(old, probed, at) do
    {state, reason} =
      case States.next(old.state, {:probed, probed.state}) do
        _left_alone when old.retry_at == :never -> {old.state, old.reason}
        {state, :take} -> {state, probed.reason}
        {state, :keep} when probed.state == :not_allowed -> {state, :not_allowed}
        {state, :keep} -> {state, old.reason}
      end

    %Candidate{
      probed
      | state: state,
        reason: reason,
        node: probed.node || old.node,
        latency_us: probed.latency_us || old.latency_us,
        creation: probed.creation || old.creation,
        first_seen: old.first_seen,
        last_seen: at,
        attempts: old.attempts,
        retry_at: old.retry_at
    }
  end

  @doc """
  The atoms the caller made of the names `probed/4` chose to connect (its connects name
  them by their full names), as `{key, node}`: each entry keeps its own.
  """
  @spec named(t(), [{key(), node()}]) :: t()
  def named(%__MODULE__{} = table, connects) do
    entries =
      Enum.reduce(connects, table.entries, fn {key, node}, acc ->
        Map.update!(acc, key, &%{&1 | node: node})
      end)

    %{table | entries: entries}
  end

  @doc """
  What a scan's end tells: a candidate whose host answered (or is no longer a host: an
  address that left a DNS seed's answer) without listing it is `:gone`; one gone for an
  hour is forgotten, and so are the oldest past #{@max_gone}. TLS listeners are remembered
  only for candidates still listed. The deferred ones are named first in the next request
  (`first/1`).
  """
  @spec scan_ended(t(), listing(), now()) :: {t(), [change()]}
  def scan_ended(%__MODULE__{} = table, listing, now) do
    {entries, changes} =
      Enum.reduce(table.entries, {table.entries, []}, fn {{host, _} = key, entry}, acc ->
        gone? = MapSet.member?(listing.answered, host) or not MapSet.member?(listing.known, host)

        if gone? and not MapSet.member?(listing.listed, key),
          do: gone(acc, key, entry, now),
          else: acc
      end)

    entries = cap_gone(entries)
    tls = Map.filter(table.tls, fn {key, _port} -> listed?(entries, key) end)
    budget = AtomBudget.keep(table.budget, listing.known)
    deferred = Deferred.scan_ended(table.deferred, listing.deferred, listing.asked, now.ms)
    table = %{table | entries: entries, tls: tls, budget: budget, deferred: deferred}
    {table, Enum.reverse(changes)}
  end

  defp gone({entries, changes}, key, entry, now) do
    case States.next(entry.state, :unlisted) do
      {:gone, :forget_later} ->
        if DateTime.diff(now.at, entry.last_seen, :millisecond) > @forget_gone_after_ms,
          do: {Map.delete(entries, key), changes},
          else: {entries, changes}

      {state, :none} ->
        new = %{entry | state: state, reason: nil}
        {Map.put(entries, key, new), change(entry, new) ++ changes}
    end
  end

  defp cap_gone(entries) do
    gone = for {key, %Candidate{state: :gone} = entry} <- entries, do: {key, entry.last_seen}

    if length(gone) > @max_gone do
      oldest =
        gone
        |> Enum.sort_by(fn {_key, last} -> last end, DateTime)
        |> Enum.take(length(gone) - @max_gone)
        |> Enum.map(fn {key, _} -> key end)

      Map.drop(entries, oldest)
    else
      entries
    end
  end

  defp listed?(entries, key),
    do: not match?(%Candidate{state: :gone}, Map.get(entries, key, %Candidate{state: :gone}))

  @doc """
  A connection attempt to the candidate at `key` ended with `result` (what `Node.connect/1`
  returned, `:stalled` for a `false` that `Tinycluster.Poller.Candidates.Stalls` tells a stall, or
  `{:crashed, reason}`), made with the cookie whose digest is `cookie` (`cookie_digest/1`):
  a candidate left alone after it is tried again when its cookie changes (`cookies/2`). A
  stall is no refusal: the candidate is `:unreachable` (`:connect_timeout`) and backs off
  as such.
  """
  @spec connect_ended(
          t(),
          key(),
          boolean() | :ignored | :stalled | term(),
          Options.t(),
          now(),
          non_neg_integer() | nil
        ) :: {t(), [change()]}
  def connect_ended(%__MODULE__{} = table, key, result, %Options{} = opts, now, cookie \\ nil) do
    case Map.get(table.entries, key) do
      nil ->
        {table, []}

      entry ->
        n = Refusals.count(table.refusals, key, entry.port, result)
        {stalls, in_a_row} = Stalls.note(table.stalls, key, entry.port, result)

        new =
          case States.next(entry.state, connect_event(result)) do
            {state, :clear} -> %{entry | state: state, reason: nil, attempts: 0, retry_at: nil}
            {state, :none} -> %{entry | state: state}
            {:unreachable, :stalled} -> Backoff.after_stall(entry, in_a_row, opts, now.ms)
            {:rejected, :refused} -> after_connect(entry, result, opts, now.ms, n)
          end

        refusals =
          Refusals.record(table.refusals, key, entry.port, n, new.retry_at == :never, cookie)

        budget =
          case result do
            true -> AtomBudget.connected(table.budget, entry.name)
            :ignored -> table.budget
            _failed -> AtomBudget.failed(table.budget, entry.name)
          end

        table = %{table | refusals: refusals, stalls: stalls, budget: budget}
        put(table, key, entry, left(new, table.left))
    end
  end

  @doc """
  The node to disconnect again after a connection attempt to the candidate at `key` ended
  with `result`: one that came up for an incarnation that left while the attempt was in
  flight. Nil for any other.
  """
  @spec undo(t(), key(), term()) :: node() | nil
  def undo(%__MODULE__{} = table, key, true) do
    case Map.get(table.entries, key) do
      %Candidate{node: node, name: name, creation: creation} when node != nil ->
        if Left.holds?(table.left, name, creation), do: node

      _ ->
        nil
    end
  end

  def undo(_table, _key, _result), do: nil

  @doc "The digest of a cookie that `connect_ended/6` and `cookies/2` compare."
  @spec cookie_digest(atom()) :: non_neg_integer()
  defdelegate cookie_digest(cookie), to: Refusals

  # The local node stopped being distributed meanwhile (`:ignored`): the next scan will tell.
  defp connect_event(true), do: :connect_ok
  defp connect_event(:ignored), do: :connect_ignored
  defp connect_event(:stalled), do: :connect_stalled
  defp connect_event(_failure), do: :connect_failed

  defp after_connect(entry, failure, opts, now_ms, refusals) do
    reason =
      cond do
        failure == false and entry.reason == :not_allowed -> :not_allowed
        failure == false -> :connect_failed
        true -> failure
      end

    Backoff.after_connect(entry, reason, opts, now_ms, refusals)
  end

  @doc """
  Starts over with the candidates left alone after their refusals (`retry_at: :never`)
  whose cookie, as `cookie_of` gives it for their node (`:erlang.get_cookie/1`), changed
  since (`Node.set_cookie/1,2`): they are tried again at once. Called as each poll starts.
  """
  @spec cookies(t(), (node() -> atom())) :: t()
  def cookies(%__MODULE__{} = table, cookie_of) do
    # Only a candidate still left alone, with its atom, has a cookie to compare.
    node_of = fn key ->
      case Map.get(table.entries, key) do
        %Candidate{retry_at: :never, node: node} -> node
        _gone_or_restarted -> nil
      end
    end

    case Refusals.changed(table.refusals, node_of, cookie_of) do
      {refusals, []} ->
        %{table | refusals: refusals}

      {refusals, again} ->
        entries =
          Enum.reduce(again, table.entries, fn key, acc ->
            Map.update!(acc, key, &retry_now/1)
          end)

        %{table | refusals: refusals, entries: entries}
    end
  end

  defp retry_now(entry) do
    case States.next(entry.state, :cookie_changed) do
      {state, :retry_now} -> %{entry | state: state, attempts: 0, retry_at: nil}
      nil -> entry
    end
  end

  @doc """
  A `nodeup` of `node`: every candidate of that name is `:connected` (more than one host
  may list it: one may only claim it), and its atom is repaid
  (`Tinycluster.Poller.AtomBudget`). A candidate this poller was not connecting forgets its
  creation: the connection may be to an incarnation no probe has seen yet (the node
  restarted at its port and connected itself), and a stale creation would make its leave
  look like an older incarnation's.
  """
  @spec node_up(t(), node()) :: {t(), [change()]}
  def node_up(%__MODULE__{} = table, node) do
    table = %{table | budget: AtomBudget.connected(table.budget, Atom.to_string(node))}

    update_named(table, node, fn entry ->
      {state, action} = States.next(entry.state, :nodeup)
      creation = if action == :keep_creation, do: entry.creation

      %{entry | state: state, node: node, reason: nil, creation: creation}
    end)
  end

  @doc """
  A `nodedown` of `node` for `reason`: every candidate of that name that was connected is
  `:down`, so that each of their hosts is asked again, or `:left` if it is known to be the
  incarnation that left (one of unknown creation, which connected itself, is `:down`: its
  probe tells). A refused connection attempt may end in a `nodedown` too; it tells nothing
  the attempt's result does not, and taken as a loss it once cleared the refusals' count.
  """
  @spec node_down(t(), node(), term()) :: {t(), [change()]}
  def node_down(%__MODULE__{} = table, node, reason) do
    update_named(table, node, fn entry ->
      case States.next(entry.state, :nodedown) do
        {state, :unless_left} when entry.creation == nil ->
          %{entry | state: state, reason: reason}

        {state, :unless_left} ->
          left(%{entry | state: state, reason: reason}, table.left)

        {_same, :none} ->
          entry
      end
    end)
  end

  @doc """
  The leave of another node, as its poller told this one (`Tinycluster.Poller.Candidates.Left.leave/4`
  says when it is ignored). Every entry of that incarnation becomes `:left`; one whose
  creation was unknown takes the leave's. Returns `:ok` or `{:ignored, reason}`, the table
  and the changes.
  """
  @spec leave(t(), Left.message(), now()) ::
          {:ok | {:ignored, :forged | :stale}, t(), [change()]}
  def leave(%__MODULE__{} = table, %{name: name, creation: creation} = message, now) do
    known = for {_key, %Candidate{name: ^name, creation: c}} <- table.entries, c != nil, do: c

    case Left.leave(table.left, message, Enum.uniq(known), now.ms) do
      {:ok, left} ->
        table = %{table | left: left}

        {table, changes} =
          update_matching(table, name, fn entry ->
            if entry.creation in [nil, creation],
              do: held(entry, creation),
              else: entry
          end)

        {:ok, table, changes}

      ignored ->
        {ignored, table, []}
    end
  end

  @doc """
  The join of a node that left (`Tinycluster.Poller.Candidates.Left.join/2` says when it is
  ignored): its entries that were `:left` are `:live` again, connected as soon as a probe
  says so (the node itself connects meanwhile). Returns `:ok` or `{:ignored, reason}`, the
  table and the changes.
  """
  @spec join(t(), Left.message()) :: {:ok | {:ignored, :forged | :stale}, t(), [change()]}
  def join(%__MODULE__{} = table, %{name: name} = message) do
    case Left.join(table.left, message) do
      {:ok, left} ->
        {table, changes} =
          update_matching(%{table | left: left}, name, fn entry ->
            {state, :none} = States.next(entry.state, :join)
            %{entry | state: state}
          end)

        {:ok, table, changes}

      ignored ->
        {ignored, table, []}
    end
  end

  @doc """
  This node leaves the cluster as incarnation `creation` at `at`, its peers' pollers told
  under `tell`: nothing is connected from now on (`probed/4`).
  """
  @spec leave_self(t(), non_neg_integer(), [atom()], DateTime.t()) :: t()
  def leave_self(%__MODULE__{} = table, creation, tell, at),
    do: %{table | left: Left.leave_self(table.left, creation, tell, at)}

  @doc "The nodes whose pollers acknowledged this node's leave."
  @spec told(t(), [node()]) :: t()
  def told(%__MODULE__{} = table, nodes), do: %{table | left: Left.told(table.left, nodes)}

  @doc "This node joins the cluster again: candidates are connected again."
  @spec join_self(t()) :: t()
  def join_self(%__MODULE__{} = table), do: %{table | left: Left.join_self(table.left)}

  @doc """
  What a nodeup of `node` (of `type`) calls for, as this node's creation is `creation`:
  see `Tinycluster.Poller.Candidates.Left.node_up/4`.
  """
  @spec tell_on_node_up(t(), node(), :visible | :hidden, non_neg_integer()) ::
          {t(), Left.action() | nil}
  def tell_on_node_up(%__MODULE__{} = table, node, type, creation) do
    {left, action} = Left.node_up(table.left, node, type, creation)
    {%{table | left: left}, action}
  end

  # Every entry of the name: a hostile host that claims a real node's name must not be the
  # only one to hear of that node's nodedown, or the real entry stays `:connected` and held.
  defp update_named(table, node, fun), do: update_matching(table, Atom.to_string(node), fun)

  defp update_matching(table, name, fun) do
    for {key, %Candidate{name: ^name} = entry} <- table.entries, reduce: {table, []} do
      {table, changes} ->
        {table, change} = put(table, key, entry, fun.(entry))
        {table, changes ++ change}
    end
  end

  defp put(table, key, old, new),
    do: {%{table | entries: Map.put(table.entries, key, new)}, change(old, new)}

  defp change(nil, new), do: [{nil, new}]
  defp change(%Candidate{state: state}, %Candidate{state: state}), do: []
  defp change(old, new), do: [{old, new}]

  @doc """
  Whether the candidate at `key`, listed at `port`, is held back at `now_ms`: backing off
  (`Tinycluster.Poller.Backoff.held?/3`), or connected at that port while its node is one of
  `connected` (full names). A connected node of another host is named otherwise before its
  probe (`a@10.0.0.2` for `a@hostb`), so the skip by name does not know it: held, it is not
  probed, and its host can settle (`Tinycluster.Poller.Pacing`). One whose node is not connected
  (its nodedown lost, or taken by another entry of the same name) is probed again.
  """
  @spec held?(t(), key(), :inet.port_number(), integer(), MapSet.t(String.t())) :: boolean()
  def held?(%__MODULE__{entries: entries}, key, port, now_ms, connected) do
    case Map.get(entries, key) do
      %Candidate{port: ^port} = entry -> held?(entry, States.hold(entry.state), now_ms, connected)
      _ -> false
    end
  end

  defp held?(entry, :while_connected, _now_ms, connected),
    do: MapSet.member?(connected, entry.name)

  defp held?(entry, :backoff, now_ms, _connected), do: Backoff.held?(entry, now_ms)
  defp held?(_entry, false, _now_ms, _connected), do: false

  @doc "How many candidates are in `state`."
  @spec count(t(), Candidate.state()) :: non_neg_integer()
  def count(%__MODULE__{entries: entries}, state),
    do: Enum.count(entries, fn {_key, entry} -> entry.state == state end)
end
