defmodule Tinycluster.SettledHostsTest do
  # Per-host pacing against a real EPMD and node: a host whose nodes are all connected is
  # asked less and less often, and a node going down there reopens it at once. The host is
  # this host's EPMD (where the node must be for `Node.connect/1` to find it), asked as a
  # host of its own through a forwarder that counts the asks.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{FakeServer, TestNodes}

  @moduletag timeout: 120_000

  # Forwards each NAMES request to the real EPMD on `port` and its answer back, counting.
  defp counted(port) do
    FakeServer.start(fn socket ->
      request = FakeServer.recv(socket, 3)
      {:ok, up} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 2_000)
      :ok = :gen_tcp.send(up, request)
      forward(up, socket)
    end)
  end

  defp forward(up, socket) do
    case :gen_tcp.recv(up, 0, 2_000) do
      {:ok, data} ->
        :gen_tcp.send(socket, data)
        forward(up, socket)

      {:error, _} ->
        :gen_tcp.close(up)
    end
  end

  defp host(status, label), do: status.hosts[label]

  test "a settled host is asked less often, and reopens when its node goes down" do
    proxy = counted(Tinycluster.LocalNode.epmd_port())
    # Only its own node: others on this host's EPMD would change what it lists.
    prefix = "settle#{System.unique_integer([:positive])}_"
    node = TestNodes.start(name: TestNodes.unique_alive(prefix))
    name = TestNodes.poller_name()
    interval = 200
    label = "127.0.0.1"

    capture_log(fn ->
      start_supervised!(
        {Tinycluster,
         name: name,
         interval: interval,
         settled_interval: 8 * interval,
         hosts: [{label, proxy.port}],
         only: [prefix]}
      )

      TestNodes.wait_until(fn -> node.name in Node.list() end, "#{node.name} to connect")

      TestNodes.wait_until(
        fn -> host(Tinycluster.status(name), label).settled end,
        "the host to settle"
      )

      # Over a window of 20 polls, a host settled at its cap is asked about 20 / 8 times.
      asks = FakeServer.connections(proxy)
      scans = Tinycluster.status(name).scans
      TestNodes.wait_until(fn -> Tinycluster.status(name).scans >= scans + 20 end, "20 scans")
      asked = FakeServer.connections(proxy) - asks
      status = Tinycluster.status(name)
      polls = status.scans - scans
      assert asked >= 1 and asked <= div(polls, 3), "asked #{asked} times in #{polls} polls"
      assert host(status, label).settled
      assert host(status, label).next_ask_in_ms <= 8 * interval

      # The node goes down: its host is asked at the next poll, and every poll until it
      # settles again (three asks within a few polls, where settled it had one in eight).
      asks = FakeServer.connections(proxy)
      TestNodes.kill(node)

      TestNodes.wait_until(
        fn -> FakeServer.connections(proxy) >= asks + 3 end,
        "the host to be asked again, poll after poll",
        10 * interval
      )
    end)
  end
end
