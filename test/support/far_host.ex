defmodule Tinycluster.FarHost do
  @moduledoc """
  A host far away, for the tests and the `far` benchmark: a network namespace
  (`Tinycluster.Netns`) whose `epmd` and nodes listen on its loopback only, with a
  `Tinycluster.DelayLine` in front of them on its own address: EPMD's port and each node's
  fixed distribution port. Whatever reaches them from another namespace waits the line's
  delay each way.

  From the test VM: `start_line/2`, `start_node/4`, `freeze/1`. The rest runs in an agent
  (`Tinycluster.Netns.start_agent/3`), so that one call times one thing where it happens.
  """

  alias Tinycluster.{DelayLine, Netns}

  @doc """
  Starts the delay line of `host` (set up with `loopback_epmd: [host.index]`) in front of
  its EPMD and of the distribution `ports` of the nodes it will run, at `delay_ms`.
  """
  @spec start_line(Netns.host(), [:inet.port_number()], non_neg_integer()) :: DelayLine.t()
  def start_line(host, ports, delay_ms \\ 0) do
    forwards = for port <- [4369 | ports], do: {host.ipv4, port, "127.0.0.1", port}
    DelayLine.start(host, delay_ms, forwards)
  end

  @doc """
  Starts `alive@<host's address>` in `host`, listening on its loopback at `port` only, so
  that it is reached through the delay line.
  """
  @spec start_node(Netns.t(), Netns.host(), String.t(), :inet.port_number()) :: map()
  def start_node(net, host, alive, port) do
    extra =
      ~w(-kernel inet_dist_use_interface {127,0,0,1}) ++
        ~w(-kernel inet_dist_listen_min #{port} inet_dist_listen_max #{port})

    Netns.start_node(net, host, alive, extra: extra)
  end

  @doc "Freezes a node of a namespace with SIGSTOP, by its OS pid."
  @spec freeze(map()) :: :ok
  def freeze(%{os_pid: os_pid}) do
    {_, 0} = System.cmd("kill", ["-STOP", Integer.to_string(os_pid)])
    :ok
  end

  ## In the agent

  @doc """
  Starts a poller with `opts` and waits until each full node name (a string) of `targets`
  is in the state `targets` gives for it in its status. Returns the milliseconds from the
  start to each (`times`, nil for one that never was within `wait_ms`), the status then,
  and the poller's log events at `:warning` or above meanwhile (`warnings`, as
  `{level, message}`). The poller is stopped afterwards.
  """
  @spec timed_poller(keyword(), %{String.t() => atom()}, pos_integer()) :: map()
  def timed_poller(opts, targets, wait_ms) do
    handler = :"far_host_#{System.unique_integer([:positive])}"
    :ok = :logger.add_handler(handler, __MODULE__, %{level: :warning, config: %{to: self()}})
    t0 = System.monotonic_time(:millisecond)
    {:ok, pid} = Tinycluster.start_link(opts)
    Process.unlink(pid)
    poller = Keyword.fetch!(opts, :name)
    times = wait_states(poller, targets, %{}, t0, t0 + wait_ms)
    status = Tinycluster.status(poller)
    GenServer.stop(pid)
    :ok = :logger.remove_handler(handler)
    %{times: times, status: status, warnings: logged([])}
  end

  defp wait_states(poller, targets, times, t0, deadline) do
    now = System.monotonic_time(:millisecond)
    candidates = Tinycluster.status(poller).candidates

    times =
      for {name, state} <- targets, not Map.has_key?(times, name), reduce: times do
        acc ->
          if match?(%{state: ^state}, candidates[name]),
            do: Map.put(acc, name, now - t0),
            else: acc
      end

    cond do
      map_size(times) == map_size(targets) ->
        times

      now > deadline ->
        Map.new(targets, fn {name, _} -> {name, times[name]} end)

      true ->
        Process.sleep(5)
        wait_states(poller, targets, times, t0, deadline)
    end
  end

  defp logged(acc) do
    receive do
      {:far_host_log, event} -> logged([event | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  @doc false
  # A `:logger` handler that sends each event to the process in its config.
  def log(%{level: level, msg: msg}, %{config: %{to: to}}) do
    message =
      case msg do
        {:string, text} -> IO.chardata_to_string(text)
        {:report, report} -> inspect(report)
        {format, args} -> format |> :io_lib.format(args) |> IO.chardata_to_string()
      end

    send(to, {:far_host_log, {level, message}})
  end
end
