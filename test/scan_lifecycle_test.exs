defmodule Tinycluster.ScanLifecycleTest do
  # A scan's life: it starts when asked for and tells so at once, in telemetry; it can be
  # cancelled, and is when its owner is gone (its handle is collected), so no scan runs on
  # for nobody; an idle poll wakes the poller for its timer, the host's listing and the
  # scan's end, and nothing else; a node whose connection went down is probed at the next
  # poll.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{Native, TestEpmd, TestNodes}

  describe "the NIF" do
    setup do
      # Stands for a host's EPMD that accepts and never answers: a scan of it waits for its
      # EPMD timeout, and whether its socket is closed early tells whether it was cancelled.
      {:ok, listen} = :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true])
      {:ok, port} = :inet.port(listen)
      on_exit(fn -> :gen_tcp.close(listen) end)
      %{listen: listen, request: request(port)}
    end

    test "a cancelled scan closes its sockets and never reports", %{listen: l, request: r} do
      assert {:ok, id, handle} = Native.start_scan(r)
      assert {:ok, socket} = :gen_tcp.accept(l, 10_000)
      assert {:ok, <<0, 1, ?n>>} = :gen_tcp.recv(socket, 3, 3_000)
      assert Native.cancel(handle) == :ok
      # Closed at once, well before the 5 s EPMD timeout would have ended the scan.
      assert {:error, :closed} = :gen_tcp.recv(socket, 0, 3_000)
      refute_receive {:tinycluster_scan, ^id, {:done, _}}, 6_000
      assert Native.cancel(handle) == :ok
    end

    test "a scan whose owner is gone is cancelled", %{listen: l, request: r} do
      test = self()

      owner =
        spawn(fn ->
          {:ok, _id, _handle} = Native.start_scan(r)
          send(test, :started)
          receive do: (:exit -> :ok)
        end)

      assert_receive :started, 5_000
      assert {:ok, socket} = :gen_tcp.accept(l, 10_000)
      assert {:ok, <<0, 1, ?n>>} = :gen_tcp.recv(socket, 3, 3_000)
      ref = Process.monitor(owner)
      send(owner, :exit)
      assert_receive {:DOWN, ^ref, :process, ^owner, :normal}, 5_000
      # The handle is collected with its owner's heap; that cancels the scan.
      :erlang.garbage_collect()
      assert {:error, :closed} = :gen_tcp.recv(socket, 0, 3_000)
    end

    test "a scan whose handle is kept runs to its report", %{listen: l, request: r} do
      assert {:ok, id, _handle} = Native.start_scan(%{r | epmd_timeout_ms: 300})
      assert {:ok, _socket} = :gen_tcp.accept(l, 10_000)
      assert_receive {:tinycluster_scan, ^id, {:listed, [host]}}, 5_000
      assert host.status == {:error, :timeout}
      assert_receive {:tinycluster_scan, ^id, {:done, %{candidates: []}}}, 5_000
    end
  end

  describe "a poller" do
    setup do
      test = self()
      id = {__MODULE__, make_ref()}

      :telemetry.attach_many(
        id,
        [[:tinycluster, :scan, :start], [:tinycluster, :scan, :stop]],
        fn event, measurements, metadata, _ ->
          send(test, {:event, event, System.monotonic_time(), measurements, metadata})
        end,
        nil
      )

      on_exit(fn -> :telemetry.detach(id) end)
    end

    test "says a scan started when it starts, and stopped after, as :telemetry.span/3 does; " <>
           "scans start an interval apart" do
      # A real EPMD, frozen: every scan waits for its EPMD timeout, so that a start said
      # with its scan's end (as it once was, for scans asked for ahead of time) shows.
      epmd = TestEpmd.start()
      on_exit(fn -> TestEpmd.stop(epmd) end)
      {_, 0} = System.cmd("kill", ["-STOP", "#{epmd.os_pid}"])
      name = TestNodes.poller_name()
      hosts = [{"127.0.0.1", epmd.port}]
      interval = 1_000

      capture_log(fn ->
        start_supervised!(
          {Tinycluster, name: name, interval: interval, epmd_timeout: 600, hosts: hosts}
        )

        # The first scan starts with the poller; the next ones when their time comes.
        starts =
          for _ <- 1..4 do
            assert_receive {:event, [:tinycluster, :scan, :start], seen_start, start,
                            %{poller: ^name}},
                           10_000

            assert_receive {:event, [:tinycluster, :scan, :stop], seen_stop, stop,
                            %{poller: ^name, failed_hosts: [_]}},
                           10_000

            # The start's time is when it was said, not one computed ahead or behind...
            assert start.monotonic_time <= seen_start
            assert ms(seen_start - start.monotonic_time) < 100
            # ... it was said when the work began, not with its end ...
            took = ms(seen_stop - seen_start)
            assert took >= 500, "start said #{took} ms before stop"
            # ... and the duration is stop - start.
            assert_in_delta ms(stop.duration), ms(seen_stop - start.monotonic_time), 100
            start.monotonic_time
          end

        # The interval runs from start to start: each scan's 600 ms and more are not added to
        # it, as they would be if the next poll were timed from the end of the last.
        gaps = for [a, b] <- Enum.chunk_every(starts, 2, 1, :discard), do: ms(b - a)
        assert Enum.all?(gaps, &(&1 >= interval - 50 and &1 < interval + 400)), inspect(gaps)
      end)
    end

    test "is woken only by its timer and the scan's report while idle" do
      capture_log(fn ->
        # Only its own node: another's node on the host's EPMD would not be idle.
        prefix = "idle#{System.unique_integer([:positive])}_"
        node = TestNodes.start(name: TestNodes.unique_alive(prefix))
        name = TestNodes.poller_name()
        start_supervised!({Tinycluster, name: name, interval: 200, only: [prefix]})
        TestNodes.wait_state(name, node, :connected)
        # Settled: every candidate connected, and one quiet scan behind us.
        scans = Tinycluster.status(name).scans
        TestNodes.wait_until(fn -> Tinycluster.status(name).scans >= scans + 2 end, "2 scans")

        pid = Process.whereis(name)
        :erlang.trace(pid, true, [:receive])
        scans = Tinycluster.status(name).scans
        TestNodes.wait_until(fn -> Tinycluster.status(name).scans >= scans + 4 end, "4 scans")
        :erlang.trace(pid, false, [:receive])

        received = traced([])
        assert Enum.count(received, &match?({:tinycluster_scan, _, {:done, _}}, &1)) >= 4
        assert Enum.count(received, &(&1 == :poll)) >= 4

        # The host's listing (`:listed`), which the poller plans, and no candidate event
        # of a host that changed nothing.
        assert Enum.all?(received, &idle_message?/1), inspect(received, limit: 8)
      end)
    end

    test "probes a node whose connection went down at the next poll, not one later" do
      capture_log(fn ->
        node = TestNodes.start()
        name = TestNodes.poller_name()
        interval = 6_000
        start_supervised!({Tinycluster, name: name, interval: interval})
        TestNodes.wait_state(name, node, :connected, 30_000)

        # Just after a scan ended: the next one must not count the node as connected.
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

  defp idle_message?(:poll), do: true
  defp idle_message?({:tinycluster_scan, _, {:done, _}}), do: true
  defp idle_message?({:tinycluster_scan, _, {:listed, _}}), do: true
  defp idle_message?(_), do: false

  defp ms(native), do: System.convert_time_unit(native, :native, :millisecond)

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
      hosts: [
        %{
          label: "stand-in",
          address: "127.0.0.1",
          epmd_port: epmd_port,
          node_host: "h",
          dist_port: nil,
          dist_port_last: nil
        }
      ],
      probe_name: "tinycluster_probe_lifecycle@h",
      creation: 1,
      local_name: "lifecycle_test@h",
      probe_timeout_ms: 500,
      epmd_timeout_ms: 5_000,
      tls: false
    }
  end
end
