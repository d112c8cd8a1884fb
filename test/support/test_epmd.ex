defmodule Tinycluster.TestEpmd do
  @moduledoc """
  A private `epmd -port P` for the tests that kill, restart or isolate an EPMD: it runs in
  the foreground under the same kind of guard as `Tinycluster.Demo.OSNode`'s nodes, so it dies
  when its port closes or the test VM dies, and `stop/1` kills it by pid. The system EPMD
  on port 4369, which other test runs share, is never touched.

  Nodes register with it through `TestNodes.start(epmd_port: port)`; a poller or a scan
  reaches it with `hosts: [{"127.0.0.1", port}]`. Nodes on a private EPMD are invisible to
  pollers of other test runs, which makes it the place for tests that watch a node closely.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  alias Tinycluster.Demo.OSNode

  defstruct [:port, :os_pid, :guard]

  @type t :: %__MODULE__{port: :inet.port_number(), os_pid: pos_integer(), guard: port()}

  @doc "A TCP port of 127.0.0.1 that nothing listens on right now."
  @spec free_port() :: :inet.port_number()
  def free_port do
    {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(listener)
    :ok = :gen_tcp.close(listener)
    port
  end

  @doc """
  Starts `epmd -port port` (a fresh free port by default) and waits until it answers.
  Stopped on test exit.
  """
  @spec start(:inet.port_number()) :: t()
  def start(port \\ free_port()) do
    guard = spawn_guarded(port)

    os_pid =
      case OSNode.await_pid(guard) do
        {:ok, pid} -> pid
        {:error, _} -> raise "epmd -port #{port} did not start"
      end

    epmd = %__MODULE__{port: port, os_pid: os_pid, guard: guard}
    on_exit(fn -> stop(epmd) end)

    Tinycluster.TestNodes.wait_until(
      fn -> answers?(port) end,
      "epmd -port #{port} to answer",
      10_000
    )

    epmd
  end

  @doc """
  Runs `epmd -port port` under `Tinycluster.Demo.OSNode`'s guard (it dies with the port
  that is returned); the guard prints the EPMD's OS pid first (`OSNode.await_pid/1`).
  """
  @spec spawn_guarded(:inet.port_number()) :: port()
  def spawn_guarded(port) do
    epmd = System.find_executable("epmd") || Path.join(:code.root_dir(), "bin/epmd")

    guard =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 4096},
        args: ["-c", OSNode.guard_script(), "sh", epmd, "-port", Integer.to_string(port)]
      ])

    guard
  end

  @doc "Kills the EPMD by pid and waits until its port is closed. Safe to call twice."
  @spec stop(t()) :: :ok
  def stop(%__MODULE__{port: port, os_pid: os_pid, guard: guard}) do
    System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)

    try do
      Port.close(guard)
    rescue
      ArgumentError -> :ok
    end

    Tinycluster.TestNodes.wait_until(
      fn -> not answers?(port) end,
      "epmd -port #{port} to stop",
      10_000
    )
  end

  @doc "Whether an EPMD answers `NAMES_REQ` on `port` of 127.0.0.1."
  @spec answers?(:inet.port_number()) :: boolean()
  def answers?(port) do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 1_000) do
      {:ok, socket} ->
        :gen_tcp.send(socket, <<1::16, ?n>>)
        answered = match?({:ok, _}, :gen_tcp.recv(socket, 4, 1_000))
        :gen_tcp.close(socket)
        answered

      {:error, _} ->
        false
    end
  end

  @doc """
  Registers `alive` with the EPMD on `epmd_port` of 127.0.0.1 at `port`, as a node does
  (`ALIVE2_REQ`), whatever listens there: a proxy in front of a node, say. The
  registration lasts as long as the returned socket, which the caller owns: it ends when
  the caller exits.
  """
  @spec register(:inet.port_number(), String.t(), :inet.port_number()) :: :gen_tcp.socket()
  def register(epmd_port, alive, port) do
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, epmd_port, [:binary, active: false], 5_000)
    # A normal node (77) over TCP/IPv4 (0), distribution versions 6 down to 5, no extra.
    body = <<120, port::16, 77, 0, 6::16, 5::16, byte_size(alive)::16, alive::binary, 0::16>>
    :ok = :gen_tcp.send(socket, [<<byte_size(body)::16>>, body])

    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, <<118, 0, _creation::32>>} -> socket
      {:ok, <<121, 0, _creation::16>>} -> socket
      other -> raise "epmd -port #{epmd_port} refused #{alive} at #{port}: #{inspect(other)}"
    end
  end

  @doc "The port the EPMD on `epmd_port` of 127.0.0.1 lists `alive` at, or nil."
  @spec port_of(:inet.port_number(), String.t()) :: :inet.port_number() | nil
  def port_of(epmd_port, alive) do
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, epmd_port, [:binary, active: false], 5_000)
    :ok = :gen_tcp.send(socket, <<1::16, ?n>>)
    # The answer: EPMD's own port (4 bytes), then a line per name.
    <<_epmd_port::32, lines::binary>> = read_all(socket, "")
    :gen_tcp.close(socket)

    case Regex.run(~r/^name #{Regex.escape(alive)} at port (\d+)$/m, lines) do
      [_, port] -> String.to_integer(port)
      nil -> nil
    end
  end

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, data} -> read_all(socket, acc <> data)
      {:error, _} -> acc
    end
  end

  @doc "Whether the EPMD on `port` lists `alive`."
  defdelegate registered?(alive, port), to: OSNode
end
