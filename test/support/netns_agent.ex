defmodule Tinycluster.NetnsAgent do
  @moduledoc """
  Runs inside a node of a test namespace (see `Tinycluster.Netns.start_agent/3`): reads
  calls from stdin, one per line (`{ref, {module, fun, args}}` as Base64 of
  `term_to_binary`), applies each and writes `tinycluster_agent <Base64 of {ref, result}>`
  to stdout, where `result` is `{:ok, value}` or `{:error, {kind, reason, stacktrace}}`.
  Halts when stdin closes, so it never outlives the test that started it.

  The helpers below run in the agent too, so that one call observes one moment.
  """

  @doc "The agent's loop; never returns."
  def main do
    {:ok, _} = Application.ensure_all_started(:logger)
    loop()
  end

  defp loop do
    case IO.read(:stdio, :line) do
      line when is_binary(line) ->
        line |> String.trim() |> handle()
        loop()

      _eof_or_error ->
        System.halt(0)
    end
  end

  defp handle(""), do: :ok

  defp handle(line) do
    {ref, {module, fun, args}} = line |> Base.decode64!() |> :erlang.binary_to_term()

    result =
      try do
        {:ok, apply(module, fun, args)}
      catch
        kind, reason -> {:error, {kind, reason, __STACKTRACE__}}
      end

    IO.puts("tinycluster_agent " <> Base.encode64(:erlang.term_to_binary({ref, result})))
  end

  @doc "Starts a poller with `opts`, not linked to the agent's loop; returns its name."
  def start_poller(opts) do
    {:ok, pid} = Tinycluster.start_link(opts)
    Process.unlink(pid)
    Keyword.fetch!(opts, :name)
  end

  @doc """
  One moment of a poller: the nodes connected, its status, and its candidates grouped by
  host: each host's EPMD status (`epmd`) and its candidates, sorted by name, from
  `status.hosts`.
  """
  def snapshot(poller) do
    status = Tinycluster.status(poller)

    groups =
      Map.new(status.hosts, fn {label, host} ->
        {label,
         %{
           epmd: host.status,
           address: host.address,
           candidates: Enum.map(host.nodes, &status.candidates[&1])
         }}
      end)

    %{nodes: Node.list(), status: status, groups: groups}
  end

  @doc "The TCP ports the agent's VM listens on (its distribution's among them), sorted."
  def listen_ports do
    for port <- :erlang.ports(),
        :erlang.port_info(port, :name) == {:name, ~c"tcp_inet"},
        {:ok, %{states: states}} <- [{:ok, :inet.info(port)}],
        :listen in states,
        {:ok, {_ip, number}} <- [:inet.sockname(port)],
        do: number
  end

  @doc "The nodes each of `nodes` is connected to, asked over distribution."
  def mesh(nodes) do
    Map.new(nodes, fn node -> {node, :erpc.call(node, :erlang, :nodes, [], 10_000)} end)
  end

  @doc """
  Records every `nodeup` and `nodedown` (visible nodes, as a cluster member sees them) the
  agent gets from now on, for `node_events/0`. Each is stamped with the OS's system time in
  milliseconds, which every namespace's VMs and the test VM share, unlike their monotonic
  times.
  """
  def watch_nodes do
    owner = self()

    spawn(fn ->
      :ets.new(__MODULE__.NodeEvents, [:named_table, :public, :ordered_set])
      :ok = :net_kernel.monitor_nodes(true)
      send(owner, :watching)
      watch_loop()
    end)

    receive do: (:watching -> :ok)
  end

  defp watch_loop do
    receive do
      {kind, node} when kind in [:nodeup, :nodedown] ->
        at = System.os_time(:millisecond)
        :ets.insert(__MODULE__.NodeEvents, {System.unique_integer([:monotonic]), at, kind, node})
        watch_loop()
    end
  end

  @doc "The node events kept since `watch_nodes/0`, in order, as `{os_time_ms, kind, node}`."
  def node_events,
    do: for({_, at, kind, node} <- :ets.tab2list(__MODULE__.NodeEvents), do: {at, kind, node})

  @doc """
  Keeps every log event of the agent from now on, as text, for `logs/0`: the poller in the
  agent logs to the agent's own output, which the test does not read.
  """
  def capture_logs do
    owner = self()

    spawn(fn ->
      :ets.new(__MODULE__.Logs, [:named_table, :public, :ordered_set])
      send(owner, :logs_ready)
      Process.sleep(:infinity)
    end)

    receive do: (:logs_ready -> :ok)
    :ok = :logger.add_handler(:tinycluster_agent_logs, __MODULE__, %{})
  end

  @doc "The log events kept since `capture_logs/0`, in order, as `{level, text}`."
  def logs, do: for({_, level, text} <- :ets.tab2list(__MODULE__.Logs), do: {level, text})

  @doc false
  # The :logger handler of `capture_logs/0`.
  def log(%{level: level, msg: msg}, _config) do
    text =
      case msg do
        {:string, chardata} -> IO.chardata_to_string(chardata)
        {:report, report} -> inspect(report)
        {format, args} -> format |> :io_lib.format(args) |> IO.chardata_to_string()
      end

    :ets.insert(__MODULE__.Logs, {System.unique_integer([:monotonic]), level, text})
  end

  @doc """
  Starts a DNS relay on a free UDP port of the agent's loopback and returns the port: it
  passes each query to the DNS server on `upstream_port` and its answer back, or, once
  `dns_relay_mode(:servfail)` says so, answers SERVFAIL itself, as a real server does when
  it cannot answer (which dnsmasq, answering from its own records, never does).
  """
  def start_dns_relay(upstream_port) do
    owner = self()

    pid =
      spawn(fn ->
        {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: true])
        {:ok, port} = :inet.port(socket)
        send(owner, {:relay_port, port})
        relay(socket, upstream_port, :relay)
      end)

    Process.register(pid, :tinycluster_dns_relay)
    receive do: ({:relay_port, port} -> port)
  end

  @doc "`:relay` (pass the real server's answers) or `:servfail`."
  def dns_relay_mode(mode) when mode in [:relay, :servfail] do
    send(:tinycluster_dns_relay, {:mode, mode})
    :ok
  end

  defp relay(socket, upstream, mode) do
    receive do
      {:mode, mode} ->
        relay(socket, upstream, mode)

      {:udp, ^socket, address, port,
       <<id::16, _flags::16, questions::16, _::48, rest::binary>> = query} ->
        answer =
          case mode do
            # QR, RD and RA set; RCODE 2; the question echoed, nothing else.
            :servfail -> <<id::16, 0x81, 0x82, questions::16, 0::48, rest::binary>>
            :relay -> ask(upstream, query)
          end

        if answer, do: :gen_udp.send(socket, address, port, answer)
        relay(socket, upstream, mode)
    end
  end

  defp ask(upstream, query) do
    {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: false])
    :ok = :gen_udp.send(socket, {127, 0, 0, 1}, upstream, query)

    answer =
      case :gen_udp.recv(socket, 0, 5_000) do
        {:ok, {_, _, answer}} -> answer
        {:error, _} -> nil
      end

    :gen_udp.close(socket)
    answer
  end

  @doc "Runs `Tinycluster.scan/1` and returns `{milliseconds, result}`."
  def timed_scan(opts) do
    {us, result} = :timer.tc(fn -> Tinycluster.scan(opts) end)
    {div(us, 1000), result}
  end
end
