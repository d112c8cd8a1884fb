defmodule Tinycluster.Leave do
  # `Tinycluster.leave/1` and `join/1`, and the telling they and the poller do: the side
  # effects only. The rules (who is held, which leave counts, whom to tell when) are
  # `Tinycluster.Poller.Candidates.Left`'s; the poller keeps their state.
  #
  # Peers are told by a call to their pollers' registered names (`GenServer.multi_call/4`, so
  # all at once, and a node whose poller runs under no such name, a plain `erl` node say,
  # answers at once as a bad node). A call, not a message, because the node disconnects
  # right after: a message still in the connection's buffer may be lost with it, and the
  # caller's pid is what the peer checks the leave against (its node must be the one that
  # leaves). A join is a cast: nothing follows it that could lose it.
  @moduledoc false

  alias Tinycluster.Options

  # How long the poller's own telling waits for a peer's poller (a node that connected
  # while this node had left).
  @tell_timeout 5_000

  @doc false
  @spec leave(keyword()) ::
          {:ok, %{told: [node()], disconnected: [node()]}}
          | {:error, :not_distributed | {:not_running, GenServer.server()}}
  def leave(opts) do
    {server, opts} = options!(opts, [:server, :tell, :timeout])
    tell = Keyword.get(opts, :tell)
    timeout = Keyword.get(opts, :timeout, @tell_timeout)

    unless tell == nil or (is_list(tell) and Enum.all?(tell, &is_atom/1)) do
      raise ArgumentError,
            "Tinycluster.leave/1's :tell takes a list of registered names, got: #{inspect(tell)}"
    end

    unless is_integer(timeout) and timeout >= 0 do
      raise ArgumentError,
            "Tinycluster.leave/1's :timeout takes milliseconds, got: #{inspect(timeout)}"
    end

    with :ok <- distributed(),
         {:ok, %{creation: creation, tell: names}} <-
           call(server, {:tinycluster_leave_self, tell}) do
      # Visible nodes only: a hidden connection is no cluster member, and may well be the
      # caller's (`bin/app rpc`, a remote shell), which disconnecting would cut short.
      nodes = Node.list(:visible)
      told = tell_leave(nodes, names, creation, timeout)
      disconnect(nodes)
      # The poller may have stopped meanwhile: the peers were told all the same.
      _ = call(server, {:tinycluster_told, told})
      {:ok, %{told: told, disconnected: nodes}}
    end
  end

  @doc false
  @spec join(keyword()) :: :ok | {:error, {:not_running, GenServer.server()}}
  def join(opts) do
    {server, _opts} = options!(opts, [:server])
    call(server, :tinycluster_join_self)
  end

  @doc """
  Tells the pollers registered as `names` on `nodes` that this node, as incarnation
  `creation`, leaves; returns the nodes where one acknowledged it, within `timeout` ms.
  """
  @spec tell_leave([node()], [atom()], non_neg_integer(), timeout()) :: [node()]
  def tell_leave([], _names, _creation, _timeout), do: []

  def tell_leave(nodes, names, creation, timeout) do
    message = {:tinycluster_leave, Atom.to_string(node()), creation}

    names
    |> Enum.flat_map(fn name ->
      {replies, _bad_nodes} = GenServer.multi_call(nodes, name, message, timeout)
      for {node, :ok} <- replies, do: node
    end)
    |> Enum.uniq()
  end

  @doc """
  Tells `node`'s pollers (`names`) that this node leaves, then disconnects it: for a node
  that connected while this node had left. Run in a task of the poller's.
  """
  @spec tell_and_disconnect(node(), [atom()], non_neg_integer()) :: :ok
  def tell_and_disconnect(node, names, creation) do
    tell_leave([node], names, creation, @tell_timeout)
    Node.disconnect(node)
    :ok
  end

  @doc "Tells `node`'s pollers (`names`) that this node, incarnation `creation`, joined again."
  @spec tell_join(node(), [atom()], non_neg_integer()) :: :ok
  def tell_join(node, names, creation) do
    message = {:tinycluster_join, Atom.to_string(node()), creation, self()}
    Enum.each(names, &GenServer.cast({&1, node}, message))
  end

  defp options!(opts, allowed) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}"
    end

    case Keyword.keys(opts) -- allowed do
      [] -> :ok
      unknown -> raise ArgumentError, "unknown options #{inspect(unknown)}"
    end

    Keyword.pop(opts, :server, %Options{}.name)
  end

  # Not one `Node.disconnect/1` after another: under `prevent_overlapping_partitions` (OTP
  # 25's default), `global` on this node takes each one for a lost connection while it is
  # still connected to the rest, and has them drop that node too, so that the nodes that stay
  # lose one another. `:global.disconnect/0` (OTP 25.1) removes only this node from their
  # cluster; what it does not know (nodes of another global group) is disconnected after.
  defp disconnect(nodes) do
    if function_exported?(:global, :disconnect, 0), do: apply(:global, :disconnect, [])
    Enum.each(nodes, &Node.disconnect/1)
  end

  defp distributed, do: if(Node.alive?(), do: :ok, else: {:error, :not_distributed})

  defp call(server, request) do
    GenServer.call(server, request)
  catch
    :exit, {:noproc, _} -> {:error, {:not_running, server}}
  end
end
