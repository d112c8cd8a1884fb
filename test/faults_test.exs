defmodule Tinycluster.FaultsTest do
  # Real faults with real nodes: an EPMD that is missing, killed and restarted; nodes frozen,
  # killed in the middle of their probe, stopped and started again; nodes that refuse the
  # connection. The poller never crashes, says each change once, and recovers by itself.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{TestEpmd, TestNodes}

  @moduletag timeout: 180_000

  # Only this run's nodes: other test runs on the host share its EPMD.
  defp mine, do: "tc#{System.pid()}_"

  defp start_poller(opts) do
    name = TestNodes.poller_name()
    opts = Keyword.merge([name: name, interval: 200, only: [mine()]], opts)
    start_supervised!({Tinycluster, opts})
    name
  end

  defdelegate candidate(poller, node), to: TestNodes
  defdelegate state_of(poller, node), to: TestNodes
  defdelegate scans(poller), to: TestNodes
  defdelegate count(log, text), to: TestNodes
  defdelegate await_line(node, text), to: TestNodes

  defp wait_state(poller, node, state, timeout \\ 20_000),
    do: TestNodes.wait_state(poller, node, state, timeout)

  defp wait_scans(poller, n), do: TestNodes.wait_scans(poller, n)

  defp node_alive, do: node() |> Atom.to_string() |> String.split("@") |> hd()

  # The lines a node printed so far (its stdout and stderr, through its OSNode port).
  defp output(node), do: TestNodes.lines(node)

  # Whether a TCP connection to local port `port` is established on this host.
  defp connected_to?(port) do
    remote = ":" <> (port |> Integer.to_string(16) |> String.pad_leading(4, "0"))

    "/proc/net/tcp"
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.any?(fn line ->
      case String.split(line) do
        [_, _local, address, "01" | _] -> String.ends_with?(address, remote)
        _ -> false
      end
    end)
  end

  # Whether the EPMD on `port` lists `node` within `timeout` ms.
  defp wait_registered(node, port, timeout \\ 15_000) do
    TestNodes.wait_until(fn -> TestEpmd.registered?(node.alive, port) end, "", timeout)
    true
  rescue
    ExUnit.AssertionError -> false
  end

  # Telemetry events `events` of this test, sent to the test process.
  defp attach(events) do
    test = self()
    id = {__MODULE__, make_ref()}

    handler = fn event, measurements, meta, _ ->
      send(test, {:event, event, measurements, meta})
    end

    :telemetry.attach_many(id, events, handler, nil)
    on_exit(fn -> :telemetry.detach(id) end)
  end

  describe "an EPMD" do
    test "missing at start, killed, and started again: one warning, one info, discovery resumes" do
      port = TestEpmd.free_port()
      interval = 200

      log =
        capture_log(fn ->
          # connect: false, since this VM's own EPMD does not know the nodes of this one.
          poller =
            start_poller(
              hosts: [{"127.0.0.1", port}],
              connect: false,
              interval: interval,
              epmd_timeout: 500
            )

          pid = Process.whereis(poller)
          wait_scans(poller, 4)
          assert TestNodes.host_status(poller, "127.0.0.1") == {:error, :econnrefused}

          epmd = TestEpmd.start(port)
          first = TestNodes.start(epmd_port: port)
          wait_state(poller, first, :live)

          TestEpmd.stop(epmd)

          TestNodes.wait_until(
            fn -> match?({:error, _}, TestNodes.host_status(poller, "127.0.0.1")) end,
            "the poller to see EPMD gone"
          )

          # Many polls of a missing EPMD; what it listed is not declared gone meanwhile.
          wait_scans(poller, scans(poller) + 6)
          assert state_of(poller, first) == :live

          _epmd = TestEpmd.start(port)
          second = TestNodes.start(epmd_port: port)
          wait_state(poller, second, :live)
          assert TestNodes.host_status(poller, "127.0.0.1") == :ok

          # The first node registers again by itself a little later (OTP 25's erl_epmd
          # does); until then the new EPMD does not list it.
          assert state_of(poller, first) in [:live, :gone]

          if wait_registered(first, port) do
            wait_state(poller, first, :live)
          else
            wait_state(poller, first, :gone)
          end

          assert Process.whereis(poller) == pid
        end)

      assert count(log, "cannot list the nodes of 127.0.0.1 (EPMD at 127.0.0.1:#{port})") == 2,
             log

      assert count(log, "EPMD on 127.0.0.1 answers again") == 2, log
    end
  end

  describe "a frozen node" do
    test "is unreachable after probe_timeout; live nodes connect meanwhile; it joins when thawed" do
      probe_timeout = 300
      frozen = TestNodes.start()
      early = TestNodes.start()
      TestNodes.freeze(frozen)
      poller = start_poller(probe_timeout: probe_timeout)
      pid = Process.whereis(poller)

      wait_state(poller, frozen, :unreachable)
      assert candidate(poller, frozen).reason == :timeout
      wait_state(poller, early, :connected)

      # A node that starts while the other is frozen is connected as fast as ever.
      late = TestNodes.start()
      wait_state(poller, late, :connected)
      assert late.name in Node.list()
      refute frozen.name in Node.list(:connected)

      # No scan waits for the frozen node longer than its probe timeout; after the first, its
      # probe is parked (or the node held back), so scans need not wait for it at all.
      for _ <- 1..3 do
        at = scans(poller)
        wait_scans(poller, at + 1)
        %{last_scan: %{duration_us: us}} = Tinycluster.status(poller)
        assert us < (probe_timeout + 3_000) * 1_000
      end

      assert candidate(poller, frozen).state == :unreachable

      TestNodes.thaw(frozen)
      wait_state(poller, frozen, :connected)
      assert frozen.name in Node.list()
      assert Process.whereis(poller) == pid
    end
  end

  describe "a node cut off" do
    test "while connected is down, then unreachable, then connected again when it answers" do
      node = TestNodes.start()
      name = Atom.to_string(node.name)
      attach(for event <- [:connected, :lost, :unreachable], do: [:tinycluster, :node, event])
      poller = start_poller(interval: 200, probe_timeout: 300)
      wait_state(poller, node, :connected)
      assert_receive {:event, [:tinycluster, :node, :connected], _, %{node: ^name}}, 10_000

      # Frozen, then the connection cut as a partition cuts it: the node is still listed,
      # and silent to the probes that follow.
      TestNodes.freeze(node)
      Node.disconnect(node.name)

      assert_receive {:event, [:tinycluster, :node, :lost], _, %{node: ^name, state: :down}},
                     10_000

      assert_receive {:event, [:tinycluster, :node, :unreachable], _,
                      %{node: ^name, state: :unreachable, reason: :timeout}},
                     10_000

      refute node.name in Node.list()
      TestNodes.thaw(node)

      assert_receive {:event, [:tinycluster, :node, :connected], _,
                      %{node: ^name, state: :connected}},
                     15_000

      wait_state(poller, node, :connected)
      assert node.name in Node.list()
    end

    test "an unreachable node is asked again, two intervals apart at most" do
      interval = 300
      frozen = TestNodes.start()
      TestNodes.freeze(frozen)
      poller = start_poller(interval: interval, probe_timeout: 200, max_backoff: 60_000)
      wait_state(poller, frozen, :unreachable)
      %{attempts: first} = candidate(poller, frozen)

      # Read while it is asked three more times: the wait never exceeds two intervals.
      longest =
        Stream.repeatedly(fn -> Process.sleep(20) && candidate(poller, frozen) end)
        |> Enum.reduce_while(0, fn
          %{attempts: n}, longest when n >= first + 3 -> {:halt, longest}
          %{state: :unreachable, retry_in_ms: ms}, longest -> {:cont, max(longest, ms)}
        end)

      assert longest > 0
      assert longest <= 2 * interval, "it waited #{longest} ms"
    end
  end

  describe "a node that dies" do
    test "while its probe is in flight ends the probe at once, is gone, and joins again" do
      doomed = TestNodes.start()
      TestNodes.freeze(doomed)
      # A probe timeout far longer than the test: only the death can end the probe.
      poller = start_poller(probe_timeout: 60_000, interval: 100)
      pid = Process.whereis(poller)

      TestNodes.wait_until(
        fn -> Tinycluster.status(poller).scanning end,
        "a scan to be under way"
      )

      # Once the probe reached the frozen node (whose kernel still accepts the connection),
      # kill the node under it.
      {:port, dist_port, _} = :erl_epmd.port_please(to_charlist(doomed.alive), ~c"127.0.0.1")
      TestNodes.wait_until(fn -> connected_to?(dist_port) end, "the probe to reach the node")
      assert Tinycluster.status(poller).scans == 0
      TestNodes.kill(doomed)

      wait_state(poller, doomed, :gone, 30_000)
      assert Process.whereis(poller) == pid

      # Back under the same name: connected again.
      again = TestNodes.start(name: doomed.alive)
      wait_state(poller, again, :connected)
      assert again.name in Node.list()
    end

    test "after it was connected is down, then gone, and is connected again when it is back" do
      node = TestNodes.start()
      name = Atom.to_string(node.name)
      attach([[:tinycluster, :node, :lost]])

      log =
        capture_log(fn ->
          poller = start_poller(interval: 100)
          wait_state(poller, node, :connected)

          TestNodes.kill(node)
          # :down lasts until the next scan no longer lists it: its event says it was.
          assert_receive {:event, [:tinycluster, :node, :lost], _, %{node: ^name, state: :down}},
                         10_000

          wait_state(poller, node, :gone)
          refute node.name in Node.list()

          again = TestNodes.start(name: node.alive)
          wait_state(poller, again, :connected)
          assert again.name in Node.list()

          # Disconnected but still there: reconnected by a later poll.
          Node.disconnect(again.name)
          TestNodes.wait_until(fn -> again.name in Node.list() end, "a reconnection")
          wait_state(poller, again, :connected)
        end)

      assert count(log, "lost the connection to #{name}\n") == 2, log
      assert count(log, "tinycluster: connected to #{name}\n") == 3, log
    end
  end

  describe "a node that refuses the connection" do
    test "with another cookie: one warning, two attempts, then left alone until the cookie is set" do
      other = TestNodes.start(cookie: "another_cookie")
      before = trace_connects()

      log =
        capture_log(fn ->
          poller = start_poller(interval: 100, max_backoff: 800)
          wait_state(poller, other, :rejected)
          # Four seconds of polls every 100 ms: 40 attempts without backoff, and one every
          # :max_backoff for ever with backoff alone.
          Process.sleep(4_000)
          entry = candidate(poller, other)

          # The poller's attempts, as the processes it started made them (none by another)...
          {others, attempts} = Enum.split_with(connects(other.name), &(elem(&1, 0) in before))

          assert {length(attempts), others} == {2, []},
                 "#{length(attempts)} attempts, by #{inspect(attempts)}, and #{inspect(others)}" <>
                   " by older processes; pollers in this VM: #{inspect(pollers())}; candidate: " <>
                   inspect(entry)

          # ... and as the other node logged them: one error report each, for the bad
          # challenge reply. On OTP 27 a report logged while the node still boots may be
          # printed twice, with the same timestamp: reports are counted, not lines.
          reports = refusals_logged(output(other))
          assert length(reports) == 2, "the other node logged: #{inspect(reports)}"

          assert %{state: :rejected, attempts: 2, retry_in_ms: nil} = entry
          assert entry.description =~ "left alone until it restarts"
          refute other.name in Node.list(:connected)

          # The operator sets the cookie this node uses for it: the next poll connects.
          :erlang.set_cookie(other.name, :another_cookie)
          wait_state(poller, other, :connected, 10_000)
          assert candidate(poller, other).attempts == 0
        end)

      name = Atom.to_string(other.name)
      assert count(log, "#{name} answered the probe but refused the connection") == 1, log
      assert log =~ "probably another cookie"
      assert count(log, "tinycluster: connected to #{name}") == 1, log
    end

    # A node with an allow list answers `not_allowed` to the probe, whose name is never on
    # the list, and logs an error report for each probe. Whether it lets this node in only
    # a real connection attempt can tell.
    test "with net_kernel:allow/1 naming this node: connected" do
      friendly =
        TestNodes.start(
          args: ["-eval", "net_kernel:allow(['#{node()}']), io:format(\"allow_set~n\")."]
        )

      # The node registers with EPMD before -eval runs: wait until its list is in place.
      await_line(friendly, "allow_set")
      assert {:ok, candidates} = Tinycluster.scan(only: [friendly.alive])
      assert [%{state: :not_allowed}] = candidates

      log =
        capture_log(fn ->
          poller = start_poller(interval: 100)
          wait_state(poller, friendly, :connected)
          assert friendly.name in Node.list()
        end)

      assert count(log, "tinycluster: connected to #{friendly.name}") == 1, log
      refute log =~ "[warning]", log
    end

    test "with net_kernel:allow/1 not naming it: one warning, two attempts, then left alone" do
      strict =
        TestNodes.start(
          args: [
            "-eval",
            "net_kernel:allow([nobody@nowhere]), io:format(\"allow_set~n\")."
          ]
        )

      await_line(strict, "allow_set")

      log =
        capture_log(fn ->
          poller = start_poller(interval: 100, max_backoff: 800)
          wait_state(poller, strict, :rejected)
          Process.sleep(3_000)
          entry = candidate(poller, strict)

          # Each probe and each attempt is an error report on that node: two of each, then
          # nothing, probe included. Only this VM's: pollers of other test runs on the host
          # probe that node too.
          mine =
            ~r/Connection attempt from disallowed node (tinycluster_probe_)?#{node_alive()}[@_]/

          reports = output(strict) |> Enum.count(&(&1 =~ mine))
          assert reports <= 4, "#{reports} error reports"
          assert %{state: :rejected, reason: :not_allowed, attempts: 2, retry_in_ms: nil} = entry
          assert entry.description =~ "net_kernel:allow"
          assert entry.description =~ "left alone until it restarts"
        end)

      name = Atom.to_string(strict.name)
      assert count(log, "tinycluster: #{name} ") == 1, log
      assert log =~ "net_kernel:allow"
    end
  end

  # Every poller of this VM, by its registered name.
  # Traces `:net_kernel.connect_node/1` (what `Node.connect/1` calls) in every process, to
  # this test process; returns the processes that exist already, whose calls are not the
  # poller's (it starts later, and so do its connect tasks).
  defp trace_connects do
    before = Process.list()
    :erlang.trace_pattern({:net_kernel, :connect_node, 1}, true, [])
    :erlang.trace(:all, true, [:call, {:tracer, self()}])

    on_exit(fn ->
      :erlang.trace(:all, false, [:call])
      :erlang.trace_pattern({:net_kernel, :connect_node, 1}, false, [])
    end)

    before
  end

  # The traced connection attempts to `node` so far: the pid and initial call of each caller.
  defp connects(node) do
    receive do
      {:trace, pid, :call, {:net_kernel, :connect_node, [^node]}} ->
        [{pid, Process.info(pid, :dictionary)[:"$initial_call"]} | connects(node)]
    after
      0 -> []
    end
  end

  # The distinct error reports (by their header, which holds the time to the microsecond)
  # of the refused connection attempts from this node among `lines`.
  defp refusals_logged(lines) do
    lines
    |> Enum.chunk_every(2, 1, :discard)
    |> Enum.filter(fn [header, line] ->
      header =~ "ERROR REPORT" and line =~ "Connection attempt from node #{node()} "
    end)
    |> Enum.uniq()
  end

  defp pollers do
    for pid <- Process.list(),
        {:dictionary, dict} <- [Process.info(pid, :dictionary)],
        dict[:"$initial_call"] == {Tinycluster.Poller, :init, 1},
        do: Process.info(pid, :registered_name)
  end
end
