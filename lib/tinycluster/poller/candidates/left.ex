defmodule Tinycluster.Poller.Candidates.Left do
  # Leaving the cluster and coming back, as pure rules: plain data in and out, the time
  # passed in. `Tinycluster.Poller.Candidates` applies them to its entries; `Tinycluster.Leave` does
  # the telling and the disconnecting they call for.
  #
  # What leaves is an incarnation: a node name and its creation, which is new at every start
  # of a node of that name. So a leave holds back only the incarnation that said it: the
  # same name restarted (a new creation, which its probe shows) is a new candidate, and a
  # leave that arrives from an incarnation older than the one this poller has seen since is
  # ignored. A leave is taken only from the node that leaves: its sender's node must be the
  # name it names, so that one node cannot take another out of the cluster by mistake (a
  # node that holds the cookie can do anything anyway; this is no defence against it).
  #
  # Two sides, kept apart:
  #   * `peers`: the incarnations of other nodes that told this poller they left. Each is
  #     held in the state `:left` (never connected, still probed to see a restart) until it
  #     joins again or restarts.
  #   * `self`: whether this node left (`Tinycluster.leave/1`): its poller connects nothing,
  #     and a visible node that connects to it all the same is told and disconnected. After
  #     `Tinycluster.join/1`, the nodes told of the leave are told of the join as they
  #     connect (`to_tell`), since they hold this node until then and only it can undo that.
  @moduledoc false

  # At most this many peers' leaves are remembered, the oldest forgotten first. Each needed
  # a real connection from the node that left, but a cluster that lives long sees many
  # incarnations come and go, and a forgotten leave costs at worst one reconnection.
  @max_peers 1_024

  defstruct peers: %{}, self: nil, to_tell: %{}

  @typedoc "An incarnation that told this poller it left, and when (monotonic ms)."
  @type peer :: %{creation: non_neg_integer(), since_ms: integer()}

  @typedoc """
  This node's own leave: its creation, when (`since`), the registered names its peers'
  pollers are told under (`tell`) and the nodes whose pollers acknowledged it (`told`).
  """
  @type self_left :: %{
          creation: non_neg_integer(),
          since: DateTime.t(),
          tell: [atom()],
          told: [node()]
        }

  @typedoc """
  The peers' leaves by full node name, this node's own leave (nil while it is a member),
  and the nodes to tell of its join as they connect, with the names to tell.
  """
  @type t :: %__MODULE__{
          peers: %{String.t() => peer()},
          self: nil | self_left(),
          to_tell: %{node() => [atom()]}
        }

  @typedoc """
  A leave or a join as a peer's poller receives it: the node it names, that node's
  creation, and the node of the process that sent it.
  """
  @type message :: %{name: String.t(), creation: non_neg_integer(), sender: node()}

  @typedoc """
  What the poller does on a nodeup: tell that node's pollers (under `names`) that this
  incarnation leaves and disconnect it, or tell them that it joined again.
  """
  @type action ::
          {:leave, node(), [atom()], non_neg_integer()}
          | {:join, node(), [atom()], non_neg_integer()}

  @doc "Nobody left."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  ## Peers that leave

  @doc """
  A leave told by `message.sender`, at `now_ms`. `known` are the creations this poller's
  entries of that name have (from their probes, or from an earlier leave). Ignored when the
  sender is not the node named (`:forged`), or when the entries show other incarnations of
  that name and none of them is the one leaving (`:stale`: it restarted since, and the new
  one must not be held back).
  """
  @spec leave(t(), message(), [non_neg_integer()], integer()) ::
          {:ok, t()} | {:ignored, :forged | :stale}
  def leave(%__MODULE__{} = left, message, known, now_ms) do
    cond do
      not from_itself?(message) ->
        {:ignored, :forged}

      known != [] and message.creation not in known ->
        {:ignored, :stale}

      true ->
        peer = %{creation: message.creation, since_ms: now_ms}
        {:ok, %{left | peers: left.peers |> Map.put(message.name, peer) |> cap()}}
    end
  end

  @doc """
  A join told by `message.sender`: the leave of that incarnation is forgotten. Ignored when
  the sender is not the node named (`:forged`), or when the leave held is another
  incarnation's (`:stale`). A join with no leave held changes nothing.
  """
  @spec join(t(), message()) :: {:ok, t()} | {:ignored, :forged | :stale}
  def join(%__MODULE__{} = left, message) do
    held = Map.get(left.peers, message.name)

    cond do
      not from_itself?(message) -> {:ignored, :forged}
      held == nil -> {:ok, left}
      held.creation != message.creation -> {:ignored, :stale}
      true -> {:ok, %{left | peers: Map.delete(left.peers, message.name)}}
    end
  end

  defp from_itself?(%{name: name, sender: sender}), do: Atom.to_string(sender) == name

  defp cap(peers) when map_size(peers) <= @max_peers, do: peers

  defp cap(peers) do
    {oldest, _} = Enum.min_by(peers, fn {_name, peer} -> peer.since_ms end)
    Map.delete(peers, oldest)
  end

  @doc """
  Whether the incarnation `name` with `creation` left: a leave of that name is held, and
  `creation` is its creation, or unknown (nil: a node connected before any probe, say).
  """
  @spec holds?(t(), String.t(), non_neg_integer() | nil) :: boolean()
  def holds?(%__MODULE__{peers: peers}, name, creation) do
    case Map.get(peers, name) do
      nil -> false
      %{creation: held} -> creation == nil or creation == held
    end
  end

  @doc """
  A probe of `name` showed `creation`: a leave held for another creation is forgotten, since
  the node that left has restarted.
  """
  @spec seen(t(), String.t(), non_neg_integer() | nil) :: t()
  def seen(%__MODULE__{} = left, _name, nil), do: left

  def seen(%__MODULE__{peers: peers} = left, name, creation) do
    case Map.get(peers, name) do
      %{creation: held} when held != creation -> %{left | peers: Map.delete(peers, name)}
      _ -> left
    end
  end

  @doc "The creation of the leave held for `name`, if any."
  @spec creation(t(), String.t()) :: non_neg_integer() | nil
  def creation(%__MODULE__{peers: peers}, name) do
    case Map.get(peers, name) do
      nil -> nil
      %{creation: creation} -> creation
    end
  end

  @doc "The most leaves remembered at once."
  @spec max_peers() :: pos_integer()
  def max_peers, do: @max_peers

  ## This node

  @doc """
  This node leaves, as incarnation `creation`, at `at`; its peers' pollers are told under
  `tell`. Whom to tell of a join after an earlier leave is forgotten: they are told again.
  """
  @spec leave_self(t(), non_neg_integer(), [atom()], DateTime.t()) :: t()
  def leave_self(%__MODULE__{} = left, creation, tell, at) do
    self = %{creation: creation, since: at, tell: tell, told: []}
    %{left | self: self, to_tell: %{}}
  end

  @doc "The nodes whose pollers acknowledged this node's leave."
  @spec told(t(), [node()]) :: t()
  def told(%__MODULE__{self: nil} = left, _nodes), do: left

  def told(%__MODULE__{self: self} = left, nodes),
    do: %{left | self: %{self | told: Enum.uniq(self.told ++ nodes)}}

  @doc """
  This node joins again: the nodes told of its leave are to be told of its join, as they
  connect.
  """
  @spec join_self(t()) :: t()
  def join_self(%__MODULE__{self: nil} = left), do: left

  def join_self(%__MODULE__{self: self} = left),
    do: %{left | self: nil, to_tell: Map.new(self.told, &{&1, self.tell})}

  @doc "Whether this node left."
  @spec self_left?(t()) :: boolean()
  def self_left?(%__MODULE__{self: self}), do: self != nil

  @doc """
  A nodeup of `node`, of `type` (`:visible` or `:hidden`), as this node's own creation is
  `creation`. While this node has left, a visible node that connects (a connection attempt
  that was in flight, or a node that was not told) is told and disconnected; a hidden one (a
  remote shell, `bin/app rpc`) is let be. After a join, a node told of the leave is told of
  the join. Returns the action for the poller, or nil.
  """
  @spec node_up(t(), node(), :visible | :hidden, non_neg_integer()) :: {t(), action() | nil}
  def node_up(%__MODULE__{self: %{} = self} = left, node, :visible, _creation),
    do: {left, {:leave, node, self.tell, self.creation}}

  def node_up(%__MODULE__{self: nil, to_tell: to_tell} = left, node, :visible, creation)
      when is_map_key(to_tell, node) do
    {names, to_tell} = Map.pop(to_tell, node)
    {%{left | to_tell: to_tell}, {:join, node, names, creation}}
  end

  def node_up(left, _node, _type, _creation), do: {left, nil}
end
