defmodule Tinycluster.FakeServer do
  @moduledoc """
  Hostile and broken servers for the tests: a TCP listener on `127.0.0.1:0` that runs a
  handler for every connection it accepts. With `Tinycluster.FakeServer.Epmd` and
  `Tinycluster.FakeServer.Peer` it plays an EPMD or a node's distribution listener that
  answers whatever bytes a test wants, including none at all.

  A server is stopped on test exit (its connections close with it). It records, per
  connection, the name that a `send_name` frame claimed, so that a test can tell a probe
  from a real `Node.connect/1`.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  defstruct [:pid, :port]

  @type t :: %__MODULE__{pid: pid(), port: :inet.port_number()}

  @doc """
  Starts a server whose every connection runs `handler.(socket)` in its own process; the
  socket is closed when the handler returns. Stopped on test exit.
  """
  @spec start((:gen_tcp.socket() -> any())) :: t()
  def start(handler) when is_function(handler, 1) do
    parent = self()

    pid =
      spawn(fn ->
        {:ok, listen} =
          :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, backlog: 1024])

        {:ok, port} = :inet.port(listen)
        Process.flag(:trap_exit, true)
        server = self()
        spawn_link(fn -> accept_loop(listen, handler, server) end)
        send(parent, {__MODULE__, self(), port})
        serve(%{received: [], connections: 0})
      end)

    port =
      receive do
        {__MODULE__, ^pid, port} -> port
      after
        5_000 -> raise "fake server did not start"
      end

    server = %__MODULE__{pid: pid, port: port}
    on_exit(fn -> stop(server) end)
    server
  end

  @doc "Stops a server and every connection it holds. Safe to call twice."
  @spec stop(t()) :: :ok
  def stop(%__MODULE__{pid: pid}) do
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    end
  end

  @doc "How many connections the server has accepted."
  @spec connections(t()) :: non_neg_integer()
  def connections(%__MODULE__{pid: pid}), do: call(pid, :connections)

  @doc """
  What the connections received so far, oldest first: `{:name, name}` for each `send_name`
  frame (the name it claimed), `{:more, bytes}` for anything a peer sent after it.
  """
  @spec received(t()) :: [{:name, String.t()} | {:more, binary()}]
  def received(%__MODULE__{pid: pid}), do: call(pid, :received)

  @doc "Records what a connection received (called by handlers)."
  @spec record(term()) :: :ok
  def record(what) do
    send(Process.get(:fake_server), {:record, what})
    :ok
  end

  defp call(pid, what) do
    ref = make_ref()
    send(pid, {what, self(), ref})

    receive do
      {^ref, answer} -> answer
    after
      5_000 -> raise "fake server did not answer"
    end
  end

  defp serve(state) do
    receive do
      :accepted ->
        serve(%{state | connections: state.connections + 1})

      {:record, what} ->
        serve(%{state | received: [what | state.received]})

      {:connections, from, ref} ->
        send(from, {ref, state.connections})
        serve(state)

      {:received, from, ref} ->
        send(from, {ref, Enum.reverse(state.received)})
        serve(state)

      {:EXIT, _pid, _reason} ->
        serve(state)
    end
  end

  defp accept_loop(listen, handler, server) do
    case :gen_tcp.accept(listen) do
      {:ok, socket} ->
        send(server, :accepted)

        conn =
          spawn_link(fn ->
            receive do
              :go -> :ok
            end

            Process.put(:fake_server, server)

            try do
              handler.(socket)
            catch
              _, _ -> :ok
            end

            :gen_tcp.close(socket)
          end)

        :ok = :gen_tcp.controlling_process(socket, conn)
        send(conn, :go)
        accept_loop(listen, handler, server)

      {:error, _} ->
        :ok
    end
  end

  ## Helpers for handlers

  @doc "Reads exactly `n` bytes, or returns `:closed` (waits at most `timeout` ms)."
  @spec recv(:gen_tcp.socket(), non_neg_integer(), timeout()) :: binary() | :closed
  def recv(socket, n, timeout \\ 5_000) do
    case :gen_tcp.recv(socket, n, timeout) do
      {:ok, data} -> data
      {:error, _} -> :closed
    end
  end

  @doc "Keeps a connection open and silent until the server stops."
  @spec hang() :: no_return()
  def hang, do: Process.sleep(:infinity)
end

defmodule Tinycluster.FakeServer.Epmd do
  @moduledoc """
  Fake EPMDs: each function returns a handler for `Tinycluster.FakeServer.start/1`.
  """

  alias Tinycluster.FakeServer

  @doc "The bytes of a `NAMES_REQ` reply listing `entries` (`{alive, port}` or raw lines)."
  @spec names_reply([{String.t(), integer() | String.t()} | binary()], integer()) :: binary()
  def names_reply(entries, epmd_port \\ 4369) do
    lines =
      Enum.map(entries, fn
        {alive, port} -> ["name ", alive, " at port ", to_string(port), "\n"]
        raw when is_binary(raw) -> raw
      end)

    IO.iodata_to_binary([<<epmd_port::32>> | lines])
  end

  @doc "Reads the 3-byte `NAMES_REQ`, answers `reply` (iodata) and closes."
  def reply(reply) do
    fn socket ->
      case FakeServer.recv(socket, 3) do
        <<0, 1, ?n>> -> :gen_tcp.send(socket, reply)
        _ -> :ok
      end
    end
  end

  @doc "Reads the request and then says nothing, ever."
  def silent do
    fn socket ->
      FakeServer.recv(socket, 3)
      FakeServer.hang()
    end
  end

  @doc "A reply that never ends: the port, then lines of names for as long as it is read."
  def endless do
    fn socket ->
      FakeServer.recv(socket, 3)
      :ok = :gen_tcp.send(socket, <<4369::32>>)
      chunk = IO.iodata_to_binary(for i <- 1..2_000, do: "name endless#{i} at port 1\n")
      Stream.repeatedly(fn -> :gen_tcp.send(socket, chunk) end) |> Enum.find(&(&1 != :ok))
    end
  end
end

defmodule Tinycluster.FakeServer.Peer do
  @moduledoc """
  Fake distribution listeners: each function returns a handler for
  `Tinycluster.FakeServer.start/1` that reads the probe's `send_name`, records the name it
  claims, answers some bytes, and then closes or hangs.
  """

  alias Tinycluster.FakeServer

  @doc "A status frame: `len:2 | 's' | text`."
  def status(text), do: <<byte_size(text) + 1::16, ?s, text::binary>>

  @doc "A version 6 challenge frame naming `name`; `published` says a visible node."
  def challenge(name, published \\ true) do
    flags = Bitwise.bor(0x0000_0004_0707_0F94, if(published, do: 1, else: 0))
    payload = <<?N, flags::64, 0x1234_5678::32, 7::32, byte_size(name)::16, name::binary>>
    <<byte_size(payload)::16, payload::binary>>
  end

  @doc "What a real node answers a probe: `sok` and a challenge naming `name`."
  def answer(name), do: status("ok") <> challenge(name)

  @doc """
  Reads `send_name` and records the name it claims, answers `bytes`, then:

    * `:close` - closes at once;
    * `:watch` - records whatever comes next within half a second as `{:more, bytes}` (a
      real connection would send a challenge reply; a probe closes), then closes;
    * `:hang` - keeps the connection open and silent.
  """
  def respond(bytes, then \\ :watch) do
    fn socket ->
      with <<len::16>> <- FakeServer.recv(socket, 2),
           <<?N, _flags::64, _creation::32, nlen::16, name::binary-size(nlen)>> <-
             FakeServer.recv(socket, len) do
        FakeServer.record({:name, name})
        if bytes != "", do: :gen_tcp.send(socket, bytes)

        case then do
          :close ->
            :ok

          :hang ->
            FakeServer.hang()

          :watch ->
            with {:ok, more} <- :gen_tcp.recv(socket, 0, 500),
                 do: FakeServer.record({:more, more})
        end
      end
    end
  end

  @doc "Accepts and never says anything, not even reading."
  def silent, do: fn _socket -> FakeServer.hang() end
end
