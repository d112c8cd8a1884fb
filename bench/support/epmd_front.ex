# A host's EPMD as the pollers of the `hosts` and `cluster` scenarios see it: a listener at
# the host's address and the pollers' EPMD port that counts each request by kind, then
# answers it. It forwards the request to a real epmd of that host (`{:forward, port}`: the
# front is then a counting TCP forwarder in front of a real EPMD) or, where that many real
# epmds are impractical, answers as an epmd with no node registered would (`:empty`: NAMES
# lists nothing, PORT_PLEASE2 says not found). On loopback every connection comes from
# 127.0.0.1, and only the port tells pollers apart: `hosts` gives each poller its own EPMD
# port and so its own fronts, counted apart; `cluster`'s pollers share one EPMD port, so a
# host's one front counts them all.
defmodule Bench.EpmdFront do
  @names 110
  @port_please2 122

  @doc "A counter array for `slots` pollers: NAMES, PORT_PLEASE2 and other requests each."
  def counters(slots), do: :counters.new(slots * 3, [:write_concurrency])

  @doc "Requests counted so far for `slot`: `%{names: n, port_please: n, other: n}`."
  def count(counters, slot) do
    base = slot * 3

    %{
      names: :counters.get(counters, base + 1),
      port_please: :counters.get(counters, base + 2),
      other: :counters.get(counters, base + 3)
    }
  end

  @doc "Requests counted so far for `slots`, summed kind by kind."
  def count_all(counters, slots) do
    counts = Enum.map(slots, &count(counters, &1))
    Map.new([:names, :port_please, :other], fn k -> {k, Enum.sum(Enum.map(counts, & &1[k]))} end)
  end

  @doc "Requests of every kind counted so far for `slots`, summed."
  def total(counters, slots) do
    Enum.sum(for slot <- slots, {_kind, n} <- count(counters, slot), do: n)
  end

  @doc """
  Waits out `window` ms, second by second, and returns for each group (`%{key => slots}`)
  the most requests its slots got in one second. Hosts that settled together are asked
  together, in bursts, so the mean a second hides what one poll may ask.
  """
  def peaks(counters, groups, window) do
    totals = fn -> Map.new(groups, fn {key, slots} -> {key, total(counters, slots)} end) end
    zero = Map.new(groups, fn {key, _} -> {key, 0} end)

    {_, peaks} =
      Enum.reduce(1..div(window, 1000), {totals.(), zero}, fn _, {last, peaks} ->
        Process.sleep(1000)
        now = totals.()
        {now, Map.new(peaks, fn {key, peak} -> {key, max(peak, now[key] - last[key])} end)}
      end)

    peaks
  end

  @doc """
  Listens at `{ip, port}` and serves each connection in a process of its own; returns the
  acceptor's pid, which owns the listener (`stop/1` closes it).
  """
  def start(ip, port, counters, slot, target) do
    caller = self()

    pid =
      spawn(fn ->
        opts = [:binary, ip: ip, active: false, packet: :raw, reuseaddr: true, backlog: 1024]

        case :gen_tcp.listen(port, opts) do
          {:ok, listener} ->
            send(caller, {self(), :listening})
            accept(listener, port, counters, slot, target)

          error ->
            send(caller, {self(), error})
        end
      end)

    receive do
      {^pid, :listening} -> pid
      {^pid, error} -> raise "front at #{:inet.ntoa(ip)}:#{port}: #{inspect(error)}"
    after
      5_000 -> raise "front at #{:inet.ntoa(ip)}:#{port} did not start"
    end
  end

  @doc "Closes the listener (connections being served finish on their own)."
  def stop(pid), do: Process.exit(pid, :kill)

  defp accept(listener, port, counters, slot, target) do
    {:ok, socket} = :gen_tcp.accept(listener)
    handler = spawn(fn -> receive(do: ({:go, s} -> serve(s, port, counters, slot, target))) end)
    :ok = :gen_tcp.controlling_process(socket, handler)
    send(handler, {:go, socket})
    accept(listener, port, counters, slot, target)
  end

  defp serve(socket, port, counters, slot, target) do
    with {:ok, <<len::16>>} <- :gen_tcp.recv(socket, 2, 5_000),
         {:ok, <<kind, _::binary>> = request} <- :gen_tcp.recv(socket, len, 5_000) do
      index = if(kind == @names, do: 1, else: if(kind == @port_please2, do: 2, else: 3))
      :counters.add(counters, slot * 3 + index, 1)
      :gen_tcp.send(socket, reply(target, kind, <<len::16, request::binary>>, port))
    end

    :gen_tcp.close(socket)
  end

  defp reply({:forward, real_port}, _kind, request, _port) do
    case :gen_tcp.connect({127, 0, 0, 1}, real_port, [:binary, active: false], 2_000) do
      {:ok, s} ->
        :ok = :gen_tcp.send(s, request)
        reply = read_all(s, [])
        :gen_tcp.close(s)
        reply

      {:error, _} ->
        ""
    end
  end

  # What an epmd with nothing registered answers: its port and no line; "not found".
  defp reply(:empty, @names, _request, port), do: <<port::32>>
  defp reply(:empty, @port_please2, _request, _port), do: <<119, 1>>
  defp reply(:empty, _kind, _request, _port), do: ""

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 2_000) do
      {:ok, data} -> read_all(socket, [acc | data])
      _closed_or_timeout -> acc
    end
  end
end
