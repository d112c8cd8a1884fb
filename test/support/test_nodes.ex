defmodule Tinycluster.TestNodes do
  @moduledoc """
  Real BEAM nodes for the tests: plain `erl` processes started as OS processes, on this
  host's real `epmd`. Each node halts when its stdin closes, so a node never outlives the
  test VM; `stop/1` also kills it by pid, which works on a frozen node too.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  @doc """
  The cookie the test VM and the default test nodes share: one per test run, so that two
  runs on one machine (or a benchmark) never join each other's nodes.
  """
  def cookie, do: "tinycluster_test_" <> System.pid()

  @doc """
  Starts a plain `erl -sname` node and waits until EPMD lists it. Options: `:cookie`,
  `:hidden`, `:args` (extra `erl` arguments), `:name` (alive part). Stopped on test exit.
  """
  def start(opts \\ []) do
    alive = Keyword.get_lazy(opts, :name, fn -> "tc#{System.unique_integer([:positive])}" end)
    cookie = Keyword.get(opts, :cookie, cookie())

    args =
      ["-sname", alive, "-setcookie", cookie, "-noshell"] ++
        if(opts[:hidden], do: ["-hidden"], else: []) ++
        Keyword.get(opts, :args, []) ++
        ["-eval", ~s|spawn(fun() -> io:get_line(""), erlang:halt() end).|]

    port =
      Port.open({:spawn_executable, System.find_executable("erl")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: args
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    [_, host] = node() |> Atom.to_string() |> String.split("@")
    node = %{name: :"#{alive}@#{host}", alive: alive, os_pid: os_pid, port: port}
    on_exit(fn -> kill(node) end)
    wait_until(fn -> registered?(alive) end, "#{alive} to register with EPMD")
    node
  end

  @doc "Starts `count` plain nodes."
  def start_many(count, opts \\ []), do: for(_ <- 1..count, do: start(opts))

  @doc "Stops a node by its OS pid (SIGKILL works on a frozen node too) and waits for it."
  def kill(%{os_pid: os_pid, alive: alive}) do
    System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
    wait_until(fn -> not registered?(alive) end, "#{alive} to leave EPMD", 10_000)
  end

  @doc "Freezes a node with SIGSTOP: it still accepts TCP connections, and answers nothing."
  def freeze(%{os_pid: os_pid}), do: signal(os_pid, "-STOP")

  @doc "Resumes a frozen node with SIGCONT."
  def thaw(%{os_pid: os_pid}), do: signal(os_pid, "-CONT")

  defp signal(os_pid, sig) do
    {_, 0} = System.cmd("kill", [sig, Integer.to_string(os_pid)])
    :ok
  end

  @doc "Whether EPMD lists `alive` on this host."
  def registered?(alive) do
    case :erl_epmd.names() do
      {:ok, names} -> Enum.any?(names, fn {name, _port} -> List.to_string(name) == alive end)
      _ -> false
    end
  end

  @doc "The nodes `node` is connected to, asked over distribution."
  def nodes_of(node), do: :erpc.call(node, :erlang, :nodes, [], 5_000)

  @doc "Polls `fun` until it returns truthy, or flunks after `timeout` ms."
  def wait_until(fun, what, timeout \\ 15_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, what, deadline)
  end

  defp do_wait(fun, what, deadline) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        ExUnit.Assertions.flunk("timed out waiting for #{what}")

      true ->
        Process.sleep(50)
        do_wait(fun, what, deadline)
    end
  end

  @doc "A poller name unique to this call, so tests never share probe names or state."
  def poller_name, do: :"tinycluster_test_#{System.unique_integer([:positive])}"
end
