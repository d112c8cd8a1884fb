defmodule Tinycluster.StallProxy do
  @moduledoc """
  A TCP proxy on 127.0.0.1 in front of a node's distribution port that lets probes through
  but can stall real connections where a node in a long GC pause, or frozen, stalls them:
  at the client's challenge reply, the one frame of the handshake a probe never sends.

  Each connection is parsed as handshake frames (a 2-byte length, then a tag) from the
  client until its challenge reply (tag `r`); what the proxy does with it depends on the
  mode at that moment:

    * `:forward` - the reply goes on, and the connection is passed through as bytes from
      then on: the node is connected.
    * `:stall` - the reply is kept, and nothing more goes to the node; the connection stays
      open until the client gives up (its `net_setuptime`) and closes it, and the proxy then
      closes the node's side. Counted in `stalled/1`.
    * `{:hold, pid}` - the reply waits, and `pid` is sent `{Tinycluster.StallProxy,
      :reply_held, conn}`; `release(conn)` lets it go on as in `:forward`, so that a test can
      freeze the node in between.

  Everything from the node to the client is passed through as it comes. Runs in the test
  VM, in processes of its own that end when the process that started it exits, or at
  `stop/1`; its sockets close with them.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  @type t :: %{
          pid: pid(),
          port: :inet.port_number(),
          counters: :atomics.atomics_ref(),
          mode: :ets.tid()
        }

  @typedoc "A connection held at its challenge reply (`{:hold, pid}`)."
  @type conn :: pid()

  # Counters: the challenge replies stalled, and those forwarded.
  @stalled 1
  @forwarded 2

  @doc """
  Starts a proxy on a free port of 127.0.0.1 to `upstream_port` of 127.0.0.1, in `mode`
  (`:forward` by default). Stopped on test exit.
  """
  @spec start(:inet.port_number(), :forward | :stall | {:hold, pid()}) :: t()
  def start(upstream_port, mode \\ :forward) do
    caller = self()
    counters = :atomics.new(2, [])

    pid =
      spawn(fn ->
        # The mode, which every connection reads at its challenge reply.
        table = :ets.new(__MODULE__, [:public, read_concurrency: true])
        true = :ets.insert(table, {:mode, mode})
        {:ok, listener} = :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}])
        {:ok, port} = :inet.port(listener)
        Process.flag(:trap_exit, true)
        shared = {counters, table}
        acceptor = spawn_link(fn -> accept(listener, upstream_port, shared) end)
        :ok = :gen_tcp.controlling_process(listener, acceptor)
        send(caller, {self(), :started, port, table})
        owner = Process.monitor(caller)

        receive do
          {:DOWN, ^owner, :process, _, _} -> :ok
          :stop -> :ok
          {:EXIT, ^acceptor, _} -> :ok
        end

        # The acceptor owns the listener and every accepted socket; its connection
        # processes are linked to it.
        Process.exit(acceptor, :kill)
      end)

    {port, table} =
      receive do
        {^pid, :started, port, table} -> {port, table}
      after
        10_000 -> raise "the stall proxy did not start"
      end

    proxy = %{pid: pid, port: port, counters: counters, mode: table}
    on_exit(fn -> stop(proxy) end)
    proxy
  end

  @doc "Sets what the proxy does with the challenge replies that arrive from now on."
  @spec set_mode(t(), :forward | :stall | {:hold, pid()}) :: :ok
  def set_mode(%{mode: table}, mode) do
    true = :ets.insert(table, {:mode, mode})
    :ok
  end

  @doc "How many challenge replies the proxy stalled so far."
  @spec stalled(t()) :: non_neg_integer()
  def stalled(%{counters: counters}), do: :atomics.get(counters, @stalled)

  @doc "How many challenge replies the proxy forwarded so far."
  @spec forwarded(t()) :: non_neg_integer()
  def forwarded(%{counters: counters}), do: :atomics.get(counters, @forwarded)

  @doc "Lets a connection held at its challenge reply (`{:hold, pid}`) go on."
  @spec release(conn()) :: :ok
  def release(conn) do
    send(conn, {__MODULE__, :release})
    :ok
  end

  @doc "Stops the proxy by its pid and waits until it is gone; its connections close. Safe twice."
  @spec stop(t()) :: :ok
  def stop(%{pid: pid}) do
    ref = Process.monitor(pid)
    send(pid, :stop)

    receive do
      {:DOWN, ^ref, :process, _, _} -> :ok
    after
      10_000 -> Process.exit(pid, :kill)
    end

    :ok
  end

  defp accept(listener, upstream_port, shared) do
    {:ok, client} = :gen_tcp.accept(listener)
    spawn_link(fn -> relay(client, upstream_port, shared) end)
    accept(listener, upstream_port, shared)
  end

  # One connection: the node's bytes go to the client as they come, in a process of their
  # own; the client's are read here, frame by frame up to the challenge reply.
  defp relay(client, upstream_port, shared) do
    opts = [:binary, active: false, nodelay: true]

    case :gen_tcp.connect({127, 0, 0, 1}, upstream_port, opts, 5_000) do
      {:ok, server} ->
        spawn_link(fn -> pipe(server, client) end)
        handshake(client, server, <<>>, shared)

      {:error, _} ->
        :gen_tcp.close(client)
    end
  end

  defp handshake(client, server, buffer, shared) do
    case buffer do
      <<len::16, ?r, _::binary>> = reply when byte_size(reply) >= len + 2 ->
        reply(client, server, reply, shared)

      <<len::16, frame::binary-size(len), rest::binary>> ->
        :ok = send_or_end(server, [<<len::16>>, frame], client)
        handshake(client, server, rest, shared)

      _incomplete ->
        case :gen_tcp.recv(client, 0) do
          {:ok, data} -> handshake(client, server, buffer <> data, shared)
          {:error, _} -> close(client, server)
        end
    end
  end

  defp reply(client, server, buffer, {counters, table}) do
    [{:mode, mode}] = :ets.lookup(table, :mode)

    case mode do
      :stall ->
        :atomics.add(counters, @stalled, 1)
        # Nothing more reaches the node; the client's giving up ends it.
        drain(client)
        close(client, server)

      {:hold, pid} ->
        send(pid, {__MODULE__, :reply_held, self()})

        receive do
          {__MODULE__, :release} -> forward(client, server, buffer, counters)
        end

      :forward ->
        forward(client, server, buffer, counters)
    end
  end

  defp forward(client, server, buffer, counters) do
    :atomics.add(counters, @forwarded, 1)
    :ok = send_or_end(server, buffer, client)
    pipe(client, server)
  end

  defp drain(socket) do
    case :gen_tcp.recv(socket, 0) do
      {:ok, _} -> drain(socket)
      {:error, _} -> :ok
    end
  end

  # Bytes from `from` to `to` until either side ends; then both are closed.
  defp pipe(from, to) do
    case :gen_tcp.recv(from, 0) do
      {:ok, data} ->
        case :gen_tcp.send(to, data) do
          :ok -> pipe(from, to)
          {:error, _} -> close(from, to)
        end

      {:error, _} ->
        close(from, to)
    end
  end

  defp send_or_end(to, data, other) do
    case :gen_tcp.send(to, data) do
      :ok ->
        :ok

      {:error, _} ->
        close(to, other)
        exit(:normal)
    end
  end

  defp close(a, b) do
    :gen_tcp.close(a)
    :gen_tcp.close(b)
    :ok
  end
end
