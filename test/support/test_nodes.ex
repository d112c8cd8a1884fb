defmodule Tinycluster.TestNodes do
  @moduledoc """
  Real BEAM nodes for the tests: plain `erl` processes started as OS processes, on this
  host's real `epmd`, with `Tinycluster.Demo.OSNode`. A node never outlives the test VM; `kill/1`
  stops it by pid, which works on a frozen node too.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  alias Tinycluster.Demo.OSNode

  @doc """
  The cookie the test VM and the default test nodes share: one per test run, so that two
  runs on one machine (or a benchmark) never join each other's nodes.
  """
  def cookie, do: "tinycluster_test_" <> System.pid()

  @doc """
  Starts a plain `erl -sname` node and waits until EPMD lists it. Options: `:cookie`,
  `:hidden`, `:args` (extra `erl` arguments), `:name` (alive part), `:epmd_port` (register
  with the EPMD on that port instead of the system one), `:erl` (another OTP release's
  `erl`, see `Tinycluster.OTPReleases`). Stopped on test exit,
  and by its guard if the test VM dies first (see `Tinycluster.Demo.OSNode`).
  """
  def start(opts \\ []) do
    alive = Keyword.get_lazy(opts, :name, &unique_alive/0)
    cookie = Keyword.get(opts, :cookie, cookie())

    {:ok, node} =
      OSNode.start(alive, cookie, Keyword.take(opts, [:hidden, :args, :epmd_port, :erl, :long]))

    on_exit(fn -> kill(node) end)
    node
  end

  @doc """
  A fresh alive part: the test VM's OS pid keeps it apart from the nodes of other test runs
  on the same host, which share its EPMD.
  """
  def unique_alive(prefix \\ "tc"),
    do: "#{prefix}#{System.pid()}_#{System.unique_integer([:positive])}"

  @doc "Starts `count` plain nodes."
  def start_many(count, opts \\ []), do: for(_ <- 1..count, do: start(opts))

  @doc "Stops a node by its OS pid (SIGKILL works on a frozen node too) and waits for it."
  def kill(node) do
    OSNode.stop(node)

    wait_until(
      fn -> not OSNode.registered?(node.alive, node.epmd_port) end,
      "#{node.alive} to leave EPMD",
      10_000
    )
  end

  @doc "Freezes a node with SIGSTOP: it still accepts TCP connections, and answers nothing."
  defdelegate freeze(node), to: OSNode

  @doc "Resumes a frozen node with SIGCONT."
  defdelegate thaw(node), to: OSNode

  @doc "Whether EPMD lists `alive` on this host."
  defdelegate registered?(alive), to: OSNode

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

  # What the tests read of `Tinycluster.status/1` is read here only, so that a change of its
  # shape is adapted in one place: a candidate's `state`, `reason`, `attempts` and
  # `retry_in_ms`, the number of `scans`, a host's `status`, a DNS seed's entry.

  @doc """
  What poller `poller` says of `node` (an `OSNode`, or a full name as a string):
  `%{state:, reason:, attempts:, retry_in_ms:, description:}`, or nil while it has not
  seen it.
  """
  def candidate(poller, node) do
    case Tinycluster.status(poller).candidates[full_name(node)] do
      nil ->
        nil

      c ->
        Map.take(c, [
          :state,
          :reason,
          :attempts,
          :retry_in_ms,
          :retry_at,
          :description,
          :node,
          :host
        ])
    end
  end

  defp full_name(name) when is_binary(name), do: name
  defp full_name(%{name: name}), do: Atom.to_string(name)

  @doc "The state poller `poller` gives `node`, or nil while it has not seen it."
  def state_of(poller, node) do
    case candidate(poller, node) do
      nil -> nil
      candidate -> candidate.state
    end
  end

  @doc "Waits until poller `poller` gives `node` the state `state`, or flunks."
  def wait_state(poller, node, state, timeout \\ 15_000) do
    wait_until(
      fn -> state_of(poller, node) == state end,
      "#{full_name(node)} to be #{inspect(state)} (is #{inspect(state_of(poller, node))})",
      timeout
    )
  end

  @doc "How many scans poller `poller` has finished."
  def scans(poller), do: Tinycluster.status(poller).scans

  @doc "Waits until poller `poller` has finished `n` scans, or flunks."
  def wait_scans(poller, n, timeout \\ 30_000),
    do: wait_until(fn -> scans(poller) >= n end, "#{n} scans", timeout)

  @doc "The status of the EPMD of host `label` (`:ok` or `{:error, reason}`), or nil."
  def host_status(poller, label) do
    case Tinycluster.status(poller).hosts[label] do
      nil -> nil
      host -> host.status
    end
  end

  @doc "What poller `poller` says of DNS seed `name`, or nil."
  def dns_seed(poller, name), do: Tinycluster.status(poller).dns[name]

  @doc "How many times `text` occurs in `log`."
  def count(log, text), do: log |> String.split(text) |> length() |> Kernel.-(1)

  @doc """
  The code paths of Elixir, Logger and tinycluster, for an `erl` node that runs
  tinycluster: `["-pa", path, ...]`.
  """
  def code_path_args do
    Enum.flat_map([:elixir, :logger, :tinycluster], &["-pa", Application.app_dir(&1, "ebin")])
  end

  @doc "Every line `node` printed so far (its port's messages in this process's mailbox)."
  def lines(node, acc \\ []) do
    receive do
      {port, {:data, {:eol, line}}} when port == node.port -> lines(node, [line | acc])
      {port, {:data, {:noeol, line}}} when port == node.port -> lines(node, [line | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  @doc "The next line `node` prints; flunks after `timeout` ms."
  def next_line(node, timeout \\ 30_000) do
    receive do
      {port, {:data, {:eol, line}}} when port == node.port -> line
    after
      timeout -> ExUnit.Assertions.flunk("#{node.alive} printed nothing for #{timeout} ms")
    end
  end

  @doc """
  Waits until `node` prints a line that matches `match` (a string it contains, a regex, or
  a 1-arity function) and returns that line; the lines before it are dropped. Flunks after
  `timeout` ms with the last lines it printed.
  """
  def await_line(node, match, timeout \\ 30_000) do
    fun =
      case match do
        fun when is_function(fun, 1) -> fun
        text -> &(&1 =~ text)
      end

    await_line(node, fun, System.monotonic_time(:millisecond) + timeout, [])
  end

  defp await_line(node, fun, deadline, last) do
    wait = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {port, {:data, {:eol, line}}} when port == node.port ->
        if fun.(line),
          do: line,
          else: await_line(node, fun, deadline, Enum.take([line | last], 10))
    after
      wait ->
        ExUnit.Assertions.flunk(
          "#{node.alive} printed no such line in time; last:\n" <>
            Enum.join(Enum.reverse(last), "\n")
        )
    end
  end

  @doc "A poller name unique to this call, so tests never share probe names or state."
  def poller_name, do: :"tinycluster_test_#{System.unique_integer([:positive])}"
end
