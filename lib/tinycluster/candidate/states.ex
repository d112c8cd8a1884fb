defmodule Tinycluster.Candidate.States do
  # A candidate's states and what moves it between them, in one place: the per-state
  # attributes (`@states`) and the transitions (`@transitions`). Everything else that
  # depends on a state asks here: `Tinycluster.Poller.Candidates` (which rules apply to a
  # probe's answer, a connection's end, a node event, a leave), `Tinycluster.Poller.Backoff`
  # (which states back off, and how far), `Tinycluster.Poller.Candidates.Connect` (which are
  # connected), `Tinycluster.Poller.Plan` (which are held back), `Tinycluster.Poller.Tls`
  # (which answers prove a plain listener), `Tinycluster.Await` (which are still pending),
  # `Tinycluster.Poller.Report` (what a change into a state says) and
  # `Tinycluster.Candidate.describe/1` (the words for a state whatever its reason). A new
  # state is one entry in `@states`, its rows in `@transitions`, and the handler of any new
  # action. Pure: plain data, no process, no atom made.
  #
  # The NIF names a probe's outcome with the state it leads to (encode.rs): `:live`,
  # `:hidden`, `:not_allowed`, `:busy`, `:unreachable`, `:bad_reply`, `:tls`,
  # `:name_mismatch`; a plan adds `:skipped` (already connected, `:connected` here), `:held`
  # and `:deferred` (`outcomes/0`), and nothing else reaches the table.
  @moduledoc false

  # Each state's attributes, in the order `Tinycluster.Candidate`'s "States" lists them:
  #
  #   * `count`: what a probe that leaves the candidate in this state does to its failures
  #     in a row (`attempts`, `retry_at`): `:clear`, `:back_off` (one more, and a later
  #     retry), `:keep` (its connection attempts count instead) or `:back_off_unless_connect`
  #     (`:not_allowed`: a poller that connects counts its connection attempt instead).
  #   * `hold`: when a plan holds it back, unprobed: `:backoff` (until its retry is due),
  #     `:while_connected` (while its node is connected), or `false`.
  #   * `cap`: how far its backoff goes: `:max_backoff`, or `{:intervals, n}`.
  #   * `plain`: whether an answer in this state proves a plain TCP distribution listener (a
  #     TLS listener remembered at that port is forgotten).
  #   * `pending`: whether `Tinycluster.await/1` waits for it: `true`, `:if_connected` (if the
  #     poller would connect it: `connect: true` and its filters let it through), `false`.
  #   * `said`: what a change into it says (`Tinycluster.Poller.Report`): `line` (`:connected`,
  #     `:lost`, `:warning` or `:info` with its description, `:at_scan_end` with the others
  #     of its host, `:unless_connect`: a warning unless a connection attempt follows, or
  #     nil), the telemetry `event` (`[:tinycluster, :node, event]`, or nil), `from` (said
  #     only when the candidate was in that state before) and `runs` (only the first of a
  #     run of failures is said).
  #   * `words`: what it means, whatever its reason (`Tinycluster.Candidate.describe/1`).
  @states [
    connected: %{
      count: :clear,
      hold: :while_connected,
      said: %{line: :connected, event: :connected},
      words: "connected"
    },
    live: %{
      count: :clear,
      plain: true,
      pending: :if_connected,
      words: "answered the probe; not connected"
    },
    connecting: %{count: :keep, pending: true, words: "answered the probe; connecting"},
    hidden: %{
      count: :clear,
      plain: true,
      words: "a hidden node: answered the probe, not connected"
    },
    rejected: %{
      count: :keep,
      hold: :backoff,
      cap: :max_backoff,
      said: %{line: :warning, event: :rejected, runs: true},
      words: "answered the probe but refused the connection: probably another cookie"
    },
    unreachable: %{
      count: :back_off,
      hold: :backoff,
      cap: {:intervals, 2},
      said: %{line: :at_scan_end, event: :unreachable},
      words: "listed by EPMD but unreachable"
    },
    not_allowed: %{
      count: :back_off_unless_connect,
      hold: :backoff,
      cap: :max_backoff,
      plain: true,
      said: %{line: :unless_connect},
      words: "refuses the probe: it restricts connections with net_kernel:allow/1"
    },
    name_mismatch: %{
      count: :clear,
      plain: true,
      said: %{line: :warning},
      words: "the node at this port calls itself by another name"
    },
    busy: %{
      count: :clear,
      plain: true,
      words: "busy with a handshake with this node; asked again next poll"
    },
    tls: %{
      count: :back_off,
      hold: :backoff,
      cap: :max_backoff,
      said: %{line: :warning},
      words:
        "uses TLS distribution (a live TLS listener); this node runs plain TCP distribution " <>
          "and cannot connect it"
    },
    bad_reply: %{
      count: :back_off,
      hold: :backoff,
      cap: :max_backoff,
      said: %{line: :warning},
      words: "its port does not speak the distribution protocol"
    },
    down: %{
      count: :clear,
      said: %{line: :lost, event: :lost, from: :connected},
      words: "was connected; the connection went down"
    },
    gone: %{count: :clear, words: "no longer listed by its host's EPMD"},
    deferred: %{
      count: :clear,
      words: "listed, but past the candidates one scan probes: a later scan probes it"
    },
    left: %{
      count: :clear,
      said: %{line: :info, event: :left},
      words:
        "left the cluster (Tinycluster.leave/1); not connected again until it calls " <>
          "Tinycluster.join/1 or restarts"
    }
  ]

  @defaults %{hold: false, cap: nil, plain: false, pending: false, said: nil}
  @said %{line: nil, event: nil, from: nil, runs: false}

  @names Keyword.keys(@states)
  @attributes Map.new(@states, fn {state, a} ->
                a = Map.merge(@defaults, a)
                {state, %{a | said: a.said && Map.merge(@said, a.said)}}
              end)

  # The transitions: `{from, event, to, action}`, the first row that matches wins. `from` is
  # a state, a list of them, or `:any` (a new candidate is in no state: only `:any` rows
  # apply to it, as to a node that restarted, whose old state is dropped); `to` is a state,
  # or `:same`. The action is what the event's handler does beyond the change of state:
  #
  #   * `{:probed, outcome}`, `Tinycluster.Poller.Candidates.probed/4`: `:take` (the probe's
  #     state and reason), `:keep` (the poller's own view of a connection under way, refused
  #     or up stays until the connection attempt or a node event says otherwise: a probe sent
  #     before it may answer after it; `:busy`, a handshake with this node in flight such as
  #     the refused one ending, says nothing new either). Then the new state's `count`.
  #   * `:connect`, `Tinycluster.Poller.Candidates.Connect.now/5`: `:connect`, `:when_due`
  #     (a refused one, once its retry is due), `:if_included` (a hidden one, with
  #     `include_hidden: true`); a state with no row is not connected.
  #   * `:connect_ok`, `:connect_ignored` (this node stopped being distributed),
  #     `:connect_failed` and `:connect_stalled`: `Tinycluster.Poller.Candidates.connect_ended/6`,
  #     with `:clear`, `:none`, `:refused` and `:stalled` (`Tinycluster.Poller.Backoff`).
  #   * `:nodeup`: `:keep_creation` for a connection this poller made, else `:forget_creation`
  #     (it may be a new incarnation no probe has seen).
  #   * `:nodedown`: `:unless_left` (`:left` if it is the incarnation that left).
  #   * `:unlisted` (its host answered without listing it): `:forget_later` for one gone
  #     already (forgotten an hour after it was last listed).
  #   * `:left` (a leave of its incarnation, told or seen again) and `:join`.
  #   * `:cookie_changed`: `:retry_now` for a candidate left alone after its refusals.
  @transitions [
    {[:connected, :connecting, :rejected], {:probed, :live}, :same, :keep},
    {[:connected, :connecting, :rejected], {:probed, :hidden}, :same, :keep},
    {[:connected, :connecting, :rejected], {:probed, :not_allowed}, :same, :keep},
    {[:connected, :connecting, :rejected], {:probed, :busy}, :same, :keep},
    {:any, {:probed, :connected}, :connected, :take},
    {:any, {:probed, :live}, :live, :take},
    {:any, {:probed, :hidden}, :hidden, :take},
    {:any, {:probed, :not_allowed}, :not_allowed, :take},
    {:any, {:probed, :busy}, :busy, :take},
    {:any, {:probed, :unreachable}, :unreachable, :take},
    {:any, {:probed, :bad_reply}, :bad_reply, :take},
    {:any, {:probed, :tls}, :tls, :take},
    {:any, {:probed, :name_mismatch}, :name_mismatch, :take},
    {:live, :connect, :connecting, :connect},
    {:not_allowed, :connect, :connecting, :connect},
    {:rejected, :connect, :connecting, :when_due},
    {:hidden, :connect, :connecting, :if_included},
    {:any, :connect_ok, :connected, :clear},
    {:any, :connect_ignored, :live, :none},
    {:any, :connect_failed, :rejected, :refused},
    {:any, :connect_stalled, :unreachable, :stalled},
    {[:connecting, :connected], :nodeup, :connected, :keep_creation},
    {:any, :nodeup, :connected, :forget_creation},
    {:connected, :nodedown, :down, :unless_left},
    {:any, :nodedown, :same, :none},
    {:gone, :unlisted, :gone, :forget_later},
    {:any, :unlisted, :gone, :none},
    {:gone, :left, :same, :none},
    {:any, :left, :left, :none},
    {:left, :join, :live, :none},
    {:any, :join, :same, :none},
    {:rejected, :cookie_changed, :same, :retry_now}
  ]

  # What a plan or a probe may report (`{:probed, outcome}`), `:connected` as a plan's
  # `:skipped` becomes; `:held` and `:deferred` teach nothing and reach no row.
  @probe_outcomes [
    :connected,
    :live,
    :hidden,
    :not_allowed,
    :busy,
    :unreachable,
    :bad_reply,
    :tls,
    :name_mismatch
  ]
  @passed_over [:held, :deferred]

  @typedoc "A candidate's state (`Tinycluster.Candidate.state/0`)."
  @type state :: Tinycluster.Candidate.state()

  @typedoc "What happens to a candidate: see the table."
  @type event ::
          {:probed, atom()}
          | :connect
          | :connect_ok
          | :connect_ignored
          | :connect_failed
          | :connect_stalled
          | :nodeup
          | :nodedown
          | :unlisted
          | :left
          | :join
          | :cookie_changed

  @typedoc "A row of the table: from (a state, states or `:any`), event, to, action."
  @type row :: {state() | [state()] | :any, event(), state() | :same, atom()}

  @doc "Every state, in the order `Tinycluster.Candidate` documents them."
  @spec states() :: [state()]
  def states, do: @names

  @doc "The transitions, as written: `{from, event, to, action}`, the first match winning."
  @spec transitions() :: [row()]
  def transitions, do: @transitions

  @doc "The outcomes a probe or a plan reports: those with rows, and those passed over."
  @spec outcomes() :: %{probed: [atom()], passed_over: [atom()]}
  def outcomes, do: %{probed: @probe_outcomes, passed_over: @passed_over}

  @doc "Whether a plan's or a probe's `outcome` teaches the table anything."
  @spec teaches?(atom()) :: boolean()
  def teaches?(outcome), do: outcome not in @passed_over

  @doc """
  What `event` makes of a candidate in `state` (nil for a new one): `{next, action}`, or
  nil when no row applies (the event changes nothing and calls for nothing).
  """
  @spec next(state() | nil, event()) :: {state(), atom()} | nil
  def next(state, event) do
    case row(state, event) do
      {:same, action} -> {state, action}
      other -> other
    end
  end

  # The rows as function clauses, in order: `:any` matches every state and a new candidate.
  for {from, event, to, action} <- @transitions do
    from = if from == :any, do: [nil | @names], else: List.wrap(from)

    defp row(state, unquote(Macro.escape(event))) when state in unquote(from),
      do: {unquote(to), unquote(action)}
  end

  defp row(_state, _event), do: nil

  @doc "What a probe that leaves a candidate in `state` does to its failures in a row."
  @spec count(state()) :: :clear | :back_off | :keep | :back_off_unless_connect
  def count(state), do: attribute(state, :count)

  @doc "When a plan holds a candidate in `state` back: `:backoff`, `:while_connected`, `false`."
  @spec hold(state()) :: :backoff | :while_connected | false
  def hold(state), do: attribute(state, :hold)

  @doc "How far the backoff of a candidate in `state` goes: `:max_backoff`, `{:intervals, n}`."
  @spec cap(state()) :: :max_backoff | {:intervals, pos_integer()} | nil
  def cap(state), do: attribute(state, :cap)

  @doc "Whether an answer in `state` proves a plain TCP distribution listener."
  @spec plain?(state()) :: boolean()
  def plain?(state), do: attribute(state, :plain)

  @doc "Whether `Tinycluster.await/1` waits for a candidate in `state`."
  @spec pending(state()) :: boolean() | :if_connected
  def pending(state), do: attribute(state, :pending)

  @doc "What a change into `state` says: `%{line, event, from, runs}`, or nil for nothing."
  @spec said(state()) ::
          nil
          | %{line: atom() | nil, event: atom() | nil, from: state() | nil, runs: boolean()}
  def said(state), do: attribute(state, :said)

  @doc "What `state` means, whatever its reason."
  @spec words(state()) :: String.t()
  def words(state), do: attribute(state, :words)

  defp attribute(state, key), do: Map.fetch!(Map.fetch!(@attributes, state), key)
end
