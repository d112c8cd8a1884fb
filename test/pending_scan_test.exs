defmodule Tinycluster.PendingScanTest do
  # The poller asks for its next scan when the last one ends, to start an interval later
  # (native/tinycluster_nif/src/pending.rs): an idle poll wakes it once, for the report.
  # Such a scan never runs once it is called off or its owner is gone, and the poller asks
  # again when what the scan was given no longer fits (a connection went down meanwhile).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{Native, TestNodes}

  describe "the NIF" do
    setup do
      # Stands for a host's EPMD; only whether anything connects to it matters here.
      {:ok, listen} = :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true])
      {:ok, port} = :inet.port(listen)
      on_exit(fn -> :gen_tcp.close(listen) end)
      %{listen: listen, request: request(port)}
    end

    test "starts a scan asked for ahead of time after its delay", %{listen: l, request: r} do
      t0 = System.monotonic_time(:millisecond)
      assert {:ok, id, pending} = Native.start_scan(Map.put(r, :delay_ms, 300))
      assert {:ok, socket} = :gen_tcp.accept(l, 10_000)
      assert System.monotonic_time(:millisecond) - t0 >= 290
      :gen_tcp.close(socket)
      assert_receive {:tinycluster_scan, ^id, {:done, _}}, 10_000
      assert Native.call_off(pending) == {:error, :started}
    end

    test "never starts one that was called off", %{listen: l, request: r} do
      assert {:ok, id, pending} = Native.start_scan(Map.put(r, :delay_ms, 300))
      assert Native.call_off(pending) == :ok
      assert Native.call_off(pending) == :ok
      assert {:error, :timeout} = :gen_tcp.accept(l, 1_500)
      refute_received {:tinycluster_scan, ^id, _}
    end

    test "never starts one whose owner is gone", %{listen: l, request: r} do
      owner =
        spawn(fn ->
          {:ok, _id, _pending} = Native.start_scan(Map.put(r, :delay_ms, 500))
        end)

      ref = Process.monitor(owner)
      assert_receive {:DOWN, ^ref, :process, ^owner, :normal}, 5_000
      # The handle is collected with its owner's heap; that calls the scan off.
      :erlang.garbage_collect()
      assert {:error, :timeout} = :gen_tcp.accept(l, 1_500)
    end

    test "refuses a delay of more than a day", %{request: r} do
      assert_raise ArgumentError, fn ->
        Native.start_scan(Map.put(r, :delay_ms, 86_400_001))
      end
    end
  end

  describe "a poller" do
    test "is woken once per idle poll, by the scan's report" do
      capture_log(fn ->
        node = TestNodes.start()
        name = TestNodes.poller_name()
        start_supervised!({Tinycluster, name: name, interval: 200})
        TestNodes.wait_state(name, node, :connected)
        # Settled: the connect's own refresh is behind us once two more scans have ended.
        TestNodes.wait_scans(name, TestNodes.scans(name) + 2)

        pid = Process.whereis(name)
        :erlang.trace(pid, true, [:receive])
        scans = Tinycluster.status(name).scans
        Process.sleep(1_500)
        :erlang.trace(pid, false, [:receive])
        assert Tinycluster.status(name).scans >= scans + 4

        received = traced([])
        assert length(received) >= 4

        assert Enum.all?(received, &match?({:tinycluster_scan, _, {:done, _}}, &1)),
               inspect(received, limit: 5, printable_limit: 40)
      end)
    end

    test "probes a node whose connection went down at the next poll, not one later" do
      capture_log(fn ->
        node = TestNodes.start()
        name = TestNodes.poller_name()
        interval = 6_000
        start_supervised!({Tinycluster, name: name, interval: interval})
        TestNodes.wait_state(name, node, :connected, 30_000)

        # Just after a scan ended: the next one, asked for already, counts the node as
        # connected; it must be asked for again without it.
        scans = Tinycluster.status(name).scans
        TestNodes.wait_until(fn -> Tinycluster.status(name).scans > scans end, "a scan", 15_000)
        t0 = System.monotonic_time(:millisecond)
        Node.disconnect(node.name)

        TestNodes.wait_until(fn -> node.name in Node.list() end, "a reconnection", 30_000)
        took = System.monotonic_time(:millisecond) - t0
        assert took < interval + 3_000, "reconnected #{took} ms after the disconnect"
      end)
    end
  end

  # Every message the traced poller received, other than calls (status) and system ones.
  defp traced(acc) do
    receive do
      {:trace, _, :receive, {:"$gen_call", _, _}} -> traced(acc)
      {:trace, _, :receive, {:system, _, _}} -> traced(acc)
      {:trace, _, :receive, message} -> traced([message | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp request(epmd_port) do
    %{
      hosts: [%{label: "pending", address: "127.0.0.1", epmd_port: epmd_port, node_host: "h"}],
      probe_name: "tinycluster_probe_pending@h",
      creation: 1,
      local_name: "pending_test@h",
      skip: [],
      probe_timeout_ms: 500,
      epmd_timeout_ms: 500,
      gate: false
    }
  end
end
