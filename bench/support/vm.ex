# One benchmark node: a real `erl` OS process, seen from the driver. It runs the agent in
# bench_node.erl, so the driver can call functions in it over stdin/stdout (no distribution
# between the driver and the nodes, so the driver never joins the clusters it measures),
# receive its events, and count the lines it logs. A node halts when its stdin closes; a
# frozen node is watched by a shell guard that kills it if the driver dies first.
defmodule Bench.VM do
  use GenServer

  defstruct [:pid, :os_pid, :node, :alive]

  @type t :: %__MODULE__{pid: pid(), os_pid: pos_integer(), node: node(), alive: String.t()}

  @registry :bench_vms

  @doc "Creates the table of live OS processes that `kill_all/0` ends. Once per run."
  def init_registry, do: :ets.new(@registry, [:named_table, :public, :set])

  @doc """
  Starts a node and waits until its agent is ready.

  Options: `:alive` (the alive part; `nil` for an undistributed node), `:elixir` (put
  Elixir, Logger, tinycluster and the bench modules on the code path), `:mesh` (report when
  connected to that many nodes), `:count` (count accepted handshakes and log events),
  `:late` (`{alive, delay_ms}`: start distribution late), `:cookie`, `:args` (more `erl`
  arguments).
  """
  def start(ctx, opts) do
    {:ok, pid} = GenServer.start(__MODULE__, {ctx, opts})

    case GenServer.call(pid, :await_ready, Keyword.get(opts, :timeout, 60_000)) do
      {:ok, info} ->
        alive = opts[:alive] || elem(opts[:late] || {nil, 0}, 0)
        %__MODULE__{pid: pid, os_pid: info.os_pid, node: info.node, alive: alive}

      {:error, reason} ->
        raise "node #{inspect(opts[:alive])} did not start: #{inspect(reason)}"
    end
  end

  @doc "Starts nodes concurrently; `opts_list` holds one keyword list per node."
  def start_many(ctx, opts_list) do
    opts_list
    |> Task.async_stream(&start(ctx, &1), timeout: 120_000, max_concurrency: 16)
    |> Enum.map(fn {:ok, vm} -> vm end)
  end

  @doc "Calls `m.f(a...)` in the node's agent and returns the result (raises on an error)."
  def call(%__MODULE__{pid: pid}, m, f, a, timeout \\ 120_000) do
    case GenServer.call(pid, {:call, {m, f, a}}, timeout + 1_000) do
      {:ok, result} ->
        result

      {:error, {class, reason, stack}} ->
        raise "in node: #{Exception.format(class, reason, stack)}"

      {:error, reason} ->
        raise "in node: #{inspect(reason)}"
    end
  end

  @doc "The events the node emitted so far, oldest first, as `{driver_os_time_us, term}`."
  def events(%__MODULE__{pid: pid}), do: GenServer.call(pid, :events)

  @doc "Waits for the first event that `match?` accepts; `nil` after `timeout` ms."
  def await_event(%__MODULE__{pid: pid}, match?, timeout) do
    GenServer.call(pid, {:await_event, match?, timeout}, timeout + 1_000)
  end

  @doc "How many lines the node printed besides the agent's own, and the first few."
  def output(%__MODULE__{pid: pid}), do: GenServer.call(pid, :output)

  @doc "Freezes the node with SIGSTOP. A guard kills it should the driver die first."
  def freeze(%__MODULE__{pid: pid}), do: GenServer.call(pid, :freeze)

  @doc "Resumes a frozen node with SIGCONT."
  def thaw(%__MODULE__{os_pid: os_pid}), do: signal(os_pid, "-CONT")

  @doc "Kills the node with SIGKILL (works on a frozen node too) and waits for its exit."
  def kill(%__MODULE__{pid: pid}) do
    if Process.alive?(pid), do: GenServer.call(pid, :kill, 15_000)
    :ok
  catch
    :exit, _ -> :ok
  end

  @doc """
  Kills every node of the EPMD at `epmd_port` (or of all, with `:all`) that is still
  running: the driver's last word, also on failure.
  """
  def kill_all(epmd_port \\ :all) do
    for {os_pid, port} <- :ets.tab2list(@registry), epmd_port in [:all, port] do
      signal(os_pid, "-KILL")
    end

    :ok
  end

  @doc "Sends an OS signal to a pid we started."
  def signal(os_pid, sig) do
    System.cmd("kill", [sig, Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  ## Server

  @impl true
  def init({ctx, opts}) do
    erl = System.find_executable("erl") || raise "erl is not on the PATH"

    port =
      Port.open({:spawn_executable, erl}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 65_536},
        args: args(ctx, opts),
        env: [{~c"ERL_EPMD_PORT", ~c"#{ctx.epmd_port}"}]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    :ets.insert(@registry, {os_pid, ctx.epmd_port})

    {:ok,
     %{
       port: port,
       os_pid: os_pid,
       partial: "",
       ready: nil,
       ready_waiter: nil,
       kill_waiter: nil,
       next_id: 1,
       calls: %{},
       events: [],
       event_waiters: [],
       lines: 0,
       samples: [],
       guard: nil,
       exited: nil
     }}
  end

  defp args(ctx, opts) do
    name =
      case opts[:alive] do
        nil -> []
        alive -> ["-sname", alive]
      end

    paths = if opts[:elixir], do: ctx.elixir_paths, else: []

    duties =
      if(opts[:mesh], do: ["-bench_mesh", Integer.to_string(opts[:mesh])], else: []) ++
        if(opts[:count], do: ["-bench_count"], else: []) ++
        case opts[:late] do
          {alive, delay} -> ["-bench_late", alive, Integer.to_string(delay)]
          nil -> []
        end

    name ++
      ["-setcookie", Keyword.get(opts, :cookie, ctx.cookie), "-noshell"] ++
      ["-pa", ctx.agent_dir | paths] ++
      duties ++ Keyword.get(opts, :args, []) ++ ["-s", "bench_node", "start"]
  end

  @impl true
  def handle_call(:await_ready, from, state) do
    cond do
      state.ready -> {:reply, {:ok, state.ready}, state}
      state.exited -> {:reply, {:error, {:exited, state.exited, state.samples}}, state}
      true -> {:noreply, %{state | ready_waiter: from}}
    end
  end

  def handle_call({:call, mfa}, from, state) do
    if state.exited do
      {:reply, {:error, {:exited, state.exited}}, state}
    else
      id = state.next_id
      line = "#{id} #{Base.encode64(:erlang.term_to_binary(mfa))}\n"
      Port.command(state.port, line)
      {:noreply, %{state | next_id: id + 1, calls: Map.put(state.calls, id, from)}}
    end
  end

  def handle_call(:events, _from, state), do: {:reply, Enum.reverse(state.events), state}

  def handle_call({:await_event, match?, timeout}, from, state) do
    case Enum.find(Enum.reverse(state.events), fn {_, e} -> match?.(e) end) do
      nil ->
        ref = make_ref()
        Process.send_after(self(), {:event_timeout, ref}, timeout)
        {:noreply, %{state | event_waiters: [{ref, match?, from} | state.event_waiters]}}

      {_, event} ->
        {:reply, event, state}
    end
  end

  def handle_call(:output, _from, state) do
    {:reply, %{lines: state.lines, samples: Enum.reverse(state.samples)}, state}
  end

  def handle_call(:freeze, _from, state) do
    # If the driver dies, the guard's stdin closes and it kills the frozen node, which could
    # not notice on its own; on the normal path the driver releases the guard with a line.
    guard =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        args: [
          "-c",
          "read x; [ -z \"$x\" ] && kill -KILL #{state.os_pid} 2>/dev/null; exit 0"
        ]
      ])

    signal(state.os_pid, "-STOP")
    {:reply, :ok, %{state | guard: guard}}
  end

  def handle_call(:kill, from, state) do
    if state.exited do
      {:stop, :normal, :ok, release_guard(state)}
    else
      signal(state.os_pid, "-KILL")
      {:noreply, %{state | kill_waiter: from}}
    end
  end

  @impl true
  def handle_info({port, {:data, {:noeol, chunk}}}, %{port: port} = state) do
    {:noreply, %{state | partial: state.partial <> chunk}}
  end

  def handle_info({port, {:data, {:eol, chunk}}}, %{port: port} = state) do
    line = state.partial <> chunk
    {:noreply, line(%{state | partial: ""}, line)}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    :ets.delete(@registry, state.os_pid)
    state = release_guard(%{state | exited: status})
    for {_, from} <- state.calls, do: GenServer.reply(from, {:error, {:exited, status}})

    if state.ready_waiter,
      do: GenServer.reply(state.ready_waiter, {:error, {:exited, status, state.samples}})

    if state.kill_waiter do
      GenServer.reply(state.kill_waiter, :ok)
      {:stop, :normal, state}
    else
      {:noreply, %{state | calls: %{}, ready_waiter: nil}}
    end
  end

  def handle_info({:event_timeout, ref}, state) do
    case List.keytake(state.event_waiters, ref, 0) do
      {{^ref, _, from}, rest} ->
        GenServer.reply(from, nil)
        {:noreply, %{state | event_waiters: rest}}

      nil ->
        {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp line(state, "BENCH " <> rest) do
    [tag, b64] = String.split(rest, " ", parts: 2)
    term = b64 |> Base.decode64!() |> :erlang.binary_to_term()
    agent_message(state, tag, term)
  end

  defp line(state, text) do
    samples = if length(state.samples) < 10, do: [text | state.samples], else: state.samples
    %{state | lines: state.lines + 1, samples: samples}
  end

  defp agent_message(state, "ready", info) do
    if state.ready_waiter, do: GenServer.reply(state.ready_waiter, {:ok, info})

    %{state | ready: info, ready_waiter: nil}
  end

  defp agent_message(state, "reply", {id, reply}) do
    {from, calls} = Map.pop(state.calls, id)
    if from, do: GenServer.reply(from, reply)
    %{state | calls: calls}
  end

  defp agent_message(state, "event", event) do
    stamped = {System.os_time(:microsecond), event}

    {matched, waiting} =
      Enum.split_with(state.event_waiters, fn {_, match?, _} -> match?.(event) end)

    for {_, _, from} <- matched, do: GenServer.reply(from, event)
    %{state | events: [stamped | state.events], event_waiters: waiting}
  end

  defp release_guard(%{guard: nil} = state), do: state

  defp release_guard(%{guard: guard} = state) do
    if Port.info(guard), do: Port.command(guard, "done\n")
    %{state | guard: nil}
  end
end
