defmodule Tinycluster.Demo.OSNode do
  # Starts plain `erl` nodes as OS processes for the demo, the tests and the benchmarks, so
  # that each is a real node on the host's real epmd and nothing else.
  #
  # Each node runs under a small `sh` guard whose stdin is the port: when the port closes
  # (the owner stopped it, or the VM that started it died, even by Ctrl-C), the guard kills
  # the node by pid. That holds for a node frozen with SIGSTOP too, which could not notice
  # anything itself. The node ignores SIGINT (+Bi), so Ctrl-C in the terminal reaches only
  # the VM that started it.
  @moduledoc false

  @guard """
  trap '' INT
  "$@" </dev/null &
  child=$!
  echo "tinycluster_os_node_pid $child"
  read _eof
  kill -KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  """

  defstruct [:name, :alive, :os_pid, :port, :cookie, :epmd_port]

  @type t :: %__MODULE__{
          name: node(),
          alive: String.t(),
          os_pid: pos_integer(),
          port: port(),
          cookie: String.t(),
          epmd_port: nil | :inet.port_number()
        }

  @doc """
  Starts `erl -sname alive` with `cookie` and waits until EPMD lists it. `alive` may be a
  full name (`a@localhost`); `:long` starts it with `-name` instead.

  Options: `:hidden` (boolean), `:args` (more `erl` arguments), `:timeout` (ms to wait for
  the registration, default 15000), `:owner` (the process that owns the node, default the
  caller): the node stops when its owner dies. `:epmd_port` registers the node with the EPMD
  on that port of this host (through `ERL_EPMD_PORT`) instead of the default one. `:erl` is
  the `erl` to run (another OTP release's), default the one on the PATH.
  """
  @spec start(String.t(), String.t(), keyword()) :: {:ok, t()} | {:error, term()}
  def start(alive, cookie, opts \\ []) do
    erl = opts[:erl] || System.find_executable("erl") || raise "erl is not on the PATH"

    flag = if opts[:long], do: "-name", else: "-sname"
    {alive, name} = full_name(alive)

    erl_args =
      [flag, name, "-setcookie", cookie, "-noshell", "+Bi"] ++
        if(opts[:hidden], do: ["-hidden"], else: []) ++ Keyword.get(opts, :args, [])

    epmd_port = opts[:epmd_port]
    env = if epmd_port, do: [{~c"ERL_EPMD_PORT", ~c"#{epmd_port}"}], else: []

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 4096},
        env: env,
        args: ["-c", @guard, "sh", erl | erl_args]
      ])

    with {:ok, os_pid} <- await_pid(port),
         node = %__MODULE__{
           name: String.to_atom(name),
           alive: alive,
           os_pid: os_pid,
           port: port,
           cookie: cookie,
           epmd_port: epmd_port
         },
         :ok <- await_registered(alive, epmd_port, Keyword.get(opts, :timeout, 15_000)) do
      hand_over(port, Keyword.get(opts, :owner, self()))
      {:ok, node}
    else
      error ->
        close(port)
        error
    end
  end

  @doc "Stops a node: kills it by pid and closes its guard. Safe to call twice."
  @spec stop(t()) :: :ok
  def stop(%__MODULE__{os_pid: os_pid, port: port}) do
    System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
    close(port)
    :ok
  end

  @doc "Freezes a node with SIGSTOP: it still accepts TCP connections, and answers nothing."
  @spec freeze(t()) :: :ok
  def freeze(%__MODULE__{os_pid: os_pid}), do: signal(os_pid, "-STOP")

  @doc "Resumes a frozen node with SIGCONT."
  @spec thaw(t()) :: :ok
  def thaw(%__MODULE__{os_pid: os_pid}), do: signal(os_pid, "-CONT")

  @doc "Whether the local EPMD (or the one on `epmd_port` of this host) lists `alive`."
  @spec registered?(String.t(), nil | :inet.port_number()) :: boolean()
  def registered?(alive, epmd_port \\ nil) do
    case names(epmd_port) do
      {:ok, names} -> Enum.any?(names, fn {name, _port} -> List.to_string(name) == alive end)
      _ -> false
    end
  end

  defp names(nil), do: :erl_epmd.names()

  # NAMES_REQ to an EPMD on another port of this host, which :erl_epmd cannot ask.
  defp names(epmd_port) do
    case :gen_tcp.connect({127, 0, 0, 1}, epmd_port, [:binary, active: false], 2_000) do
      {:ok, socket} ->
        _ = :gen_tcp.send(socket, <<1::16, ?n>>)
        reply = recv_all(socket, "")
        :gen_tcp.close(socket)

        case reply do
          {:ok, <<_port::32, lines::binary>>} ->
            names = Regex.scan(~r/^name (\S+) at port \d+$/m, lines, capture: :all_but_first)
            {:ok, for([name] <- names, do: {String.to_charlist(name), 0})}

          # Closed before the 4-byte port: an EPMD going away.
          _ ->
            {:error, :no_reply}
        end

      error ->
        error
    end
  end

  defp recv_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 2_000) do
      {:ok, data} -> recv_all(socket, acc <> data)
      {:error, :closed} -> {:ok, acc}
      error -> error
    end
  end

  @doc "Starts `epmd -daemon` (a no-op when one runs) and waits until it answers."
  @spec ensure_epmd() :: :ok | {:error, term()}
  def ensure_epmd do
    epmd = System.find_executable("epmd") || Path.join(:code.root_dir(), "bin/epmd")
    System.cmd(epmd, ["-daemon"], stderr_to_stdout: true)
    wait(fn -> match?({:ok, _}, :erl_epmd.names()) end, 5_000, {:error, :epmd_not_running})
  end

  defp full_name(name) do
    case String.split(name, "@", parts: 2) do
      [alive, _host] -> {alive, name}
      [alive] -> {alive, "#{alive}@#{host()}"}
    end
  end

  @doc "The host part of node names on this host in -sname mode."
  @spec host() :: String.t()
  def host do
    if Node.alive?() do
      node() |> Atom.to_string() |> String.split("@") |> List.last()
    else
      {:ok, name} = :inet.gethostname()
      name |> List.to_string() |> String.split(".") |> hd()
    end
  end

  defp signal(os_pid, sig) do
    System.cmd("kill", [sig, Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  defp hand_over(port, owner) when owner == self(), do: port

  defp hand_over(port, owner) do
    Port.connect(port, owner)
    Process.unlink(port)
    port
  end

  @doc """
  The guard, as an `sh -c` script: `sh -c script sh command args...` runs `command` with
  stdin from /dev/null, prints `tinycluster_os_node_pid <pid>`, and kills it by pid when the
  guard's own stdin (a port) closes. The tests run their private daemons under it too.
  """
  @spec guard_script() :: String.t()
  def guard_script, do: @guard

  @doc "Waits for the pid line of a guard started on `port`."
  @spec await_pid(port()) :: {:ok, pos_integer()} | {:error, term()}
  def await_pid(port) do
    receive do
      {^port, {:data, {:eol, "tinycluster_os_node_pid " <> pid}}} -> {:ok, String.to_integer(pid)}
      {^port, {:exit_status, status}} -> {:error, {:exited, status}}
    after
      10_000 -> {:error, :no_pid}
    end
  end

  defp await_registered(alive, epmd_port, timeout) do
    wait(fn -> registered?(alive, epmd_port) end, timeout, {:error, {:not_registered, alive}})
  end

  defp wait(fun, timeout, error) do
    deadline = System.monotonic_time(:millisecond) + timeout

    Stream.repeatedly(fn ->
      cond do
        fun.() -> :ok
        System.monotonic_time(:millisecond) > deadline -> error
        true -> Process.sleep(25) && nil
      end
    end)
    |> Enum.find(& &1)
  end

  defp close(port) do
    Port.close(port)
  rescue
    ArgumentError -> :ok
  end
end
