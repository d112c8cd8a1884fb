defmodule Tinycluster.DelayLine do
  @moduledoc """
  A userspace TCP delay line, to make a host far away where the kernel has no `netem`: a
  small proxy that forwards each chunk it reads, in either direction, a fixed delay after it
  arrived. It runs as a plain, non-distributed `erl` process inside a network namespace
  (`Tinycluster.Netns`), so that EPMD lists nothing of it, in front of services of that
  namespace bound to its loopback (an `epmd -address 127.0.0.1`, a node with
  `-kernel inet_dist_use_interface {127,0,0,1}` and a fixed distribution port).

  Each connection to a listening address is accepted at once (the kernel completes TCP's
  handshake) and a connection to its upstream opened; from then on every chunk waits
  `delay` ms before it is written on, and so does the end of a stream (a half close). By
  default only data waits, so a request and its answer take `2 * delay` more than without
  the line, and a connect nothing. On a real network a connect costs a round trip too:
  EPMD's request (connect, `NAMES_REQ`, the answer) is two round trips there and one here,
  and so is a probe (connect, `send_name`, status and challenge), so the two keep their
  ratio, which is what sets a far host's probe timeout. `Node.connect/1` is three round
  trips here (EPMD's `PORT_PLEASE2_REQ`, `send_name`, the challenge reply), five on a real
  network. `set_connect_rtt/2` makes a connect cost its round trip here too: a
  connection's first bytes to the upstream leave a round trip after the accept, as if the
  client had waited for TCP's handshake.

  The delay can be changed while it runs (`set_delay/2`); chunks already waiting keep the
  delay they were given, and nothing overtakes anything in one direction.

  From the test VM: `start/3`, `set_delay/2`, `stop/1`. It halts when its stdin closes, and
  `Tinycluster.Netns.teardown/1` kills it with everything else in its namespace.
  """

  alias Tinycluster.Netns

  @type t :: %{pid: pid(), os_pid: pos_integer(), host: Netns.host()}

  @typedoc "`{listen_address, listen_port, upstream_address, upstream_port}`, addresses as strings."
  @type forward :: {String.t(), :inet.port_number(), String.t(), :inet.port_number()}

  ## From the test VM

  @doc """
  Starts a delay line in the namespace of `host` that forwards each of `forwards` with
  `delay_ms` each way, and returns once every one of them listens. Its port is held by a
  process of its own, so that any process may drive it (a `setup_all` starts it, tests set
  its delay); that process closes it when the caller exits.
  """
  @spec start(Netns.host(), non_neg_integer(), [forward()]) :: t()
  def start(host, delay_ms, forwards) do
    caller = self()
    pid = spawn(fn -> hold(host, caller) end)

    os_pid =
      receive do
        {^pid, :os_pid, os_pid} -> os_pid
      after
        30_000 -> raise "no delay line in #{host.ns}"
      end

    line = %{pid: pid, os_pid: os_pid, host: host}
    set_delay(line, delay_ms)

    for {ip, listen_port, up_ip, up_port} <- forwards,
        do: command(line, "forward #{ip} #{listen_port} #{up_ip} #{up_port}")

    line
  end

  @doc "Sets the delay, in ms each way, of the chunks that arrive from now on."
  @spec set_delay(t(), non_neg_integer()) :: :ok
  def set_delay(line, delay_ms), do: command(line, "delay #{delay_ms}")

  @doc """
  With `true`, a connection made from now on also costs a round trip before its first byte
  reaches the upstream, as TCP's handshake does on a real network (the kernel here accepts at
  once); with `false` (the default) only data waits.
  """
  @spec set_connect_rtt(t(), boolean()) :: :ok
  def set_connect_rtt(line, on?),
    do: command(line, "connect_rtt #{if on?, do: "on", else: "off"}")

  @doc "Stops the delay line by its OS pid; its connections close with it."
  @spec stop(t()) :: :ok
  def stop(%{pid: pid, os_pid: os_pid}) do
    Netns.kill(os_pid)
    send(pid, :stop)
    :ok
  end

  defp command(%{pid: pid, host: host}, text) do
    ref = Process.monitor(pid)
    send(pid, {:command, self(), ref, text})

    receive do
      {^ref, :ok} ->
        Process.demonitor(ref, [:flush])
        :ok

      {^ref, {:error, why}} ->
        Process.demonitor(ref, [:flush])
        raise "delay line in #{host.ns}: #{text}: #{why}"

      {:DOWN, ^ref, :process, _, reason} ->
        raise "delay line in #{host.ns} is gone (#{inspect(reason)}) before #{text}"
    end
  end

  # The process that holds the port: it runs the commands one at a time, and closes the
  # port (so the line halts) when the process that started it exits.
  defp hold(host, caller) do
    # This module's own directory: tinycluster's ebin in the tests, the bench's output in
    # `bench/run`.
    own = __MODULE__ |> :code.which() |> List.to_string() |> Path.dirname()
    paths = ["-pa", Path.join(:code.lib_dir(:elixir), "ebin"), "-pa", own]

    args =
      ["netns", "exec", host.ns, System.find_executable("erl"), "-noshell"] ++
        paths ++ ["-eval", "'Elixir.Tinycluster.DelayLine':main()."]

    port =
      Port.open({:spawn_executable, System.find_executable("ip")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 65_536},
        args: args
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    send(caller, {self(), :os_pid, os_pid})
    Process.monitor(caller)
    serve(port)
  end

  defp serve(port) do
    receive do
      {:command, from, ref, text} ->
        true = Port.command(port, text <> "\n")
        send(from, {ref, answer(port, text)})
        serve(port)

      {^port, {:data, _}} ->
        serve(port)

      {^port, {:exit_status, _}} ->
        :ok

      _stop_or_down ->
        Port.close(port)
    end
  end

  defp answer(port, text) do
    receive do
      {^port, {:data, {:eol, "delay_line ok"}}} -> :ok
      {^port, {:data, {:eol, "delay_line error " <> why}}} -> {:error, why}
      {^port, {:data, _}} -> answer(port, text)
      {^port, {:exit_status, status}} -> exit({:delay_line_exited, status})
    after
      30_000 -> {:error, "no answer to #{text}"}
    end
  end

  ## In the namespace

  @doc false
  # The delay line's own loop: commands from stdin, one per line; halts at its end.
  def main do
    # Lines as binaries: no application here sets standard_io to binary mode.
    :ok = :io.setopts(:standard_io, binary: true)
    # Slot 1: the delay in ms; slot 2: 1 when a connect costs a round trip.
    :persistent_term.put({__MODULE__, :delay}, :atomics.new(2, []))
    loop()
  end

  defp loop do
    case IO.read(:stdio, :line) do
      line when is_binary(line) ->
        reply =
          try do
            run(String.split(line))
          catch
            kind, reason -> {:error, Exception.format_banner(kind, reason)}
          end

        case reply do
          :ok -> IO.puts("delay_line ok")
          {:error, why} -> IO.puts("delay_line error " <> String.replace(why, "\n", " "))
        end

        loop()

      _eof ->
        System.halt(0)
    end
  end

  defp run(["delay", ms]) do
    :atomics.put(:persistent_term.get({__MODULE__, :delay}), 1, String.to_integer(ms))
  end

  defp run(["connect_rtt", on]) do
    :atomics.put(:persistent_term.get({__MODULE__, :delay}), 2, if(on == "on", do: 1, else: 0))
  end

  defp run(["forward", ip, port, up_ip, up_port]) do
    {:ok, listen_ip} = :inet.parse_address(String.to_charlist(ip))
    {:ok, upstream_ip} = :inet.parse_address(String.to_charlist(up_ip))
    upstream = {upstream_ip, String.to_integer(up_port)}
    opts = [:binary, active: false, ip: listen_ip, reuseaddr: true, backlog: 128]

    case :gen_tcp.listen(String.to_integer(port), opts) do
      {:ok, listener} ->
        pid = spawn(fn -> accept(listener, upstream) end)
        :ok = :gen_tcp.controlling_process(listener, pid)

      {:error, reason} ->
        {:error, inspect(reason)}
    end
  end

  defp run(other), do: {:error, "unknown command #{inspect(other)}"}

  defp accept(listener, upstream) do
    {:ok, client} = :gen_tcp.accept(listener)
    pid = spawn(fn -> relay(client, upstream) end)
    :ok = :gen_tcp.controlling_process(client, pid)
    send(pid, :go)
    accept(listener, upstream)
  end

  # One connection: a pump per direction, each a reader that stamps every chunk with the
  # time it is due and a writer that holds it until then, so that order is kept. Sockets
  # keep their write side after a read sees the end (`exit_on_close: false`), so that a
  # half close travels as one, delayed like the data.
  defp relay(client, {ip, port}) do
    receive do
      :go -> :ok
    end

    opts = [:binary, active: false, nodelay: true, exit_on_close: false]

    case :gen_tcp.connect(ip, port, opts, 5_000) do
      {:ok, server} ->
        :ok = :inet.setopts(client, nodelay: true, exit_on_close: false)
        me = self()
        settings = :persistent_term.get({__MODULE__, :delay})
        # As a real network would, a connect costs the client a round trip before its first
        # byte leaves: held here, since the kernel accepted at once.
        connect_rtt = 2 * :atomics.get(settings, 1) * :atomics.get(settings, 2)
        now = System.monotonic_time(:millisecond)
        pump(me, client, server, now + connect_rtt)
        pump(me, server, client, now)
        await_pumps(2)
        :gen_tcp.close(server)
        :gen_tcp.close(client)

      {:error, _} ->
        :gen_tcp.close(client)
    end
  end

  defp await_pumps(0), do: :ok

  defp await_pumps(n) do
    receive do
      :pump_done -> await_pumps(n - 1)
      # A reset or a failed write on one side: the whole connection goes.
      :pump_failed -> :ok
    end
  end

  # A chunk read before `not_before` (monotonic ms) leaves as if read then.
  defp pump(owner, from, to, not_before) do
    writer = spawn_link(fn -> write(owner, to) end)
    spawn_link(fn -> read(from, writer, not_before) end)
  end

  defp read(from, writer, not_before) do
    case :gen_tcp.recv(from, 0) do
      {:ok, data} ->
        send(writer, {due(not_before), data})
        read(from, writer, not_before)

      {:error, :closed} ->
        send(writer, {due(not_before), :eof})

      {:error, _} ->
        send(writer, {due(not_before), :reset})
    end
  end

  defp due(not_before) do
    delay = :atomics.get(:persistent_term.get({__MODULE__, :delay}), 1)
    max(System.monotonic_time(:millisecond), not_before) + delay
  end

  defp write(owner, to) do
    receive do
      {due, what} ->
        Process.sleep(max(due - System.monotonic_time(:millisecond), 0))

        case what do
          :eof ->
            :gen_tcp.shutdown(to, :write)
            send(owner, :pump_done)

          :reset ->
            send(owner, :pump_failed)

          data ->
            case :gen_tcp.send(to, data) do
              :ok ->
                write(owner, to)

              {:error, _} ->
                send(owner, :pump_failed)
            end
        end
    end
  end
end
