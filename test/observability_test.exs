defmodule Tinycluster.ObservabilityTest do
  # What users see: telemetry events, log lines and their levels, status fields, filters,
  # hidden nodes on request, and several pollers side by side.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{Candidate, FakeServer, TestEpmd, TestNodes}
  alias Tinycluster.FakeServer.{Epmd, Peer}

  @events [
    [:tinycluster, :scan, :start],
    [:tinycluster, :scan, :stop],
    [:tinycluster, :node, :connected],
    [:tinycluster, :node, :rejected],
    [:tinycluster, :node, :unreachable],
    [:tinycluster, :node, :lost]
  ]

  defp start_poller(opts) do
    name = TestNodes.poller_name()
    start_supervised!({Tinycluster, Keyword.merge([name: name, interval: 200], opts)})
    name
  end

  defdelegate candidate(poller, node), to: TestNodes
  defdelegate wait_state(poller, node, state), to: TestNodes

  # The next telemetry event in the order the handler sent them, whatever its name.
  defp next_event(timeout \\ 10_000) do
    receive do
      {:event, _, _, _} = event -> event
    after
      timeout -> flunk("no telemetry event in #{timeout} ms")
    end
  end

  describe "telemetry" do
    setup do
      test = self()
      id = {__MODULE__, make_ref()}

      :telemetry.attach_many(
        id,
        @events,
        fn event, measurements, metadata, _ ->
          send(test, {:event, event, measurements, metadata})
        end,
        nil
      )

      on_exit(fn -> :telemetry.detach(id) end)
    end

    test "scans and node changes are events, with measurements and metadata" do
      plain = TestNodes.start()
      other = TestNodes.start(cookie: "another_cookie")
      frozen = TestNodes.start()
      TestNodes.freeze(frozen)
      poller = start_poller(probe_timeout: 300)

      assert_receive {:event, [:tinycluster, :scan, :start], %{system_time: _},
                      %{poller: ^poller}},
                     5_000

      assert_receive {:event, [:tinycluster, :scan, :stop], stop, %{poller: ^poller} = meta},
                     10_000

      assert stop.duration > 0
      # The suite's EPMD lists this test's nodes only: the first scan probed all three, and
      # found two live (the other cookie shows only when connecting).
      assert stop.candidates == 3
      assert stop.live == 2
      assert stop.connected in [0, 1]
      assert meta.failed_hosts == []

      plain_name = to_string(plain.name)
      other_name = to_string(other.name)
      frozen_name = to_string(frozen.name)

      # The events in the order they came, up to the first scan that ended after the
      # connection: it counts it.
      {seen, [stop | _]} =
        Stream.repeatedly(&next_event/0)
        |> Enum.reduce_while({[], nil}, fn
          {:event, [:tinycluster, :scan, :stop], _, _} = event, {seen, :connected} ->
            {:halt, {Enum.reverse(seen), [event]}}

          {:event, [:tinycluster, :node, :connected], _, %{node: ^plain_name}} = event,
          {seen, _} ->
            {:cont, {[event | seen], :connected}}

          event, {seen, mark} ->
            {:cont, {[event | seen], mark}}
        end)

      assert {:event, _, stop, _} = stop
      assert stop.connected == 1

      assert [{_, _, %{latency_us: _}, connected}] =
               for(
                 {:event, [:tinycluster, :node, :connected], _, %{node: ^plain_name}} = e <- seen,
                 do: e
               )

      assert %{poller: ^poller, host: "local", state: :connected, reason: nil} = connected
      for event <- seen, do: send(self(), event)

      assert_receive {:event, [:tinycluster, :node, :rejected], _,
                      %{node: ^other_name} = rejected},
                     10_000

      assert {rejected.state, rejected.reason} == {:rejected, :connect_failed}

      assert_receive {:event, [:tinycluster, :node, :unreachable], _,
                      %{node: ^frozen_name, reason: :timeout, state: :unreachable}},
                     10_000

      TestNodes.kill(plain)

      assert_receive {:event, [:tinycluster, :node, :lost], _,
                      %{node: ^plain_name, state: :down}},
                     10_000

      # A refusal is one event, not one per retry.
      Process.sleep(1_500)
      refute_received {:event, [:tinycluster, :node, :rejected], _, %{node: ^other_name}}
    end
  end

  # The poller reads `info[:nodedown_reason]` of its nodedown messages, but subscribes with
  # `:net_kernel.monitor_nodes(true, node_type: :all)` only, without `nodedown_reason: true`,
  # so the reason is always nil ("the connection went down (nil)").
  test "a lost connection's event and status say why it went down" do
    test = self()
    id = {__MODULE__, make_ref()}

    handler = fn event, measurements, meta, _ ->
      send(test, {:event, event, measurements, meta})
    end

    :telemetry.attach(id, [:tinycluster, :node, :lost], handler, nil)
    on_exit(fn -> :telemetry.detach(id) end)

    node = TestNodes.start()
    poller = start_poller([])
    wait_state(poller, node, :connected)
    Node.disconnect(node.name)
    name = to_string(node.name)
    assert_receive {:event, [:tinycluster, :node, :lost], _, %{node: ^name} = meta}, 10_000
    assert meta.reason == :disconnect
  end

  describe "a host that fails" do
    setup do
      test = self()
      id = {__MODULE__, make_ref()}

      handler = fn event, measurements, meta, _ ->
        send(test, {:event, event, measurements, meta})
      end

      :telemetry.attach(id, [:tinycluster, :scan, :stop], handler, nil)
      on_exit(fn -> :telemetry.detach(id) end)
    end

    test "is in the scan's failed_hosts, and its warning carries tinycluster_host" do
      closed = TestEpmd.free_port()

      log =
        capture_log([metadata: [:tinycluster_host]], fn ->
          poller = start_poller(hosts: [:local, {"127.0.0.1", closed}])

          assert_receive {:event, [:tinycluster, :scan, :stop], _, %{poller: ^poller} = meta},
                         10_000

          assert Enum.sort(meta.hosts) == ["127.0.0.1", "local"]
          assert meta.failed_hosts == ["127.0.0.1"]
          stop_supervised!({Tinycluster, poller})
        end)

      assert [line] = Regex.scan(~r/^.*cannot list the nodes of 127.0.0.1.*$/m, log)
      assert hd(line) =~ "tinycluster_host=127.0.0.1"
    end
  end

  describe "logs" do
    test "one line per change, with metadata, and nothing per poll" do
      other = TestNodes.start(cookie: "another_cookie")

      log =
        capture_log([metadata: [:tinycluster_node, :tinycluster_state]], fn ->
          poller = start_poller(interval: 100)
          wait_state(poller, other, :rejected)
          # Twenty more polls, several retries with backoff: still one warning.
          Process.sleep(2_000)
          stop_supervised!({Tinycluster, poller})
        end)

      # Only this node's lines: other test runs on the host may show up as other cookies.
      warnings = Regex.scan(~r/#{other.name} answered the probe but refused the connection/, log)
      assert length(warnings) == 1
      assert log =~ "tinycluster_node=#{other.name}"
      assert log =~ "tinycluster_state=rejected"
    end

    test "a host in the wrong form for the naming mode is said once" do
      log =
        capture_log(fn ->
          # The suite's EPMD by address: "127.0.0.1" alone would mean the host's, on 4369.
          address = {"127.0.0.1", Tinycluster.SuiteEpmd.port()}
          poller = start_poller(hosts: [:local, address], interval: 100)
          TestNodes.wait_until(fn -> Tinycluster.status(poller).scans >= 5 end, "five scans")
          stop_supervised!({Tinycluster, poller})
        end)

      assert length(Regex.scan(~r/lists the address 127.0.0.1/, log)) == 1
    end

    test "log: false is silent and log: :warning drops the info lines" do
      plain = TestNodes.start()
      other = TestNodes.start(cookie: "another_cookie")

      silent =
        capture_log(fn ->
          poller = start_poller(log: false)
          wait_state(poller, other, :rejected)
          wait_state(poller, plain, :connected)
          stop_supervised!({Tinycluster, poller})
        end)

      refute silent =~ "tinycluster: "
      Node.disconnect(plain.name)

      warnings_only =
        capture_log(fn ->
          poller = start_poller(log: :warning)
          wait_state(poller, other, :rejected)
          wait_state(poller, plain, :connected)
          stop_supervised!({Tinycluster, poller})
        end)

      assert warnings_only =~ "refused the connection"
      refute warnings_only =~ "connected to"
    end
  end

  describe "status" do
    test "tells each candidate's state in words, its times, attempts and backoff" do
      plain = TestNodes.start()
      other = TestNodes.start(cookie: "another_cookie")
      poller = start_poller(max_backoff: 5_000)
      wait_state(poller, plain, :connected)
      wait_state(poller, other, :rejected)
      # States come as the scan streams them, before the scan itself is done (under load,
      # or with other nodes on this epmd, well before).
      TestNodes.wait_until(fn -> Tinycluster.status(poller).scans >= 1 end, "a finished scan")

      status = Tinycluster.status(poller)
      assert status.node == node()
      assert status.scans >= 1
      assert %{at: %DateTime{}, duration_us: _, candidates: n} = status.last_scan
      assert n >= 2
      assert %{status: :ok, last_ok_at: %DateTime{}, nodes: nodes} = status.hosts["local"]
      assert to_string(plain.name) in nodes

      rejected = status.candidates[to_string(other.name)]
      assert rejected.description =~ "another cookie"
      assert rejected.attempts >= 1
      assert rejected.retry_in_ms <= 5_000
      assert %DateTime{} = rejected.first_seen
      assert DateTime.compare(rejected.last_seen, rejected.first_seen) in [:gt, :eq]

      connected = status.candidates[to_string(plain.name)]
      assert connected.node == plain.name
      assert connected.description == "connected"
    end

    test "a node whose connection is under way is :connecting" do
      poller = start_poller([])
      TestNodes.wait_scans(poller, 1)
      # This VM's net_kernel held: the poller's Node.connect/1 waits on it, as a slow
      # handshake would make it wait.
      :ok = :sys.suspend(:net_kernel)
      on_exit(fn -> :sys.resume(:net_kernel) end)
      node = TestNodes.start()
      wait_state(poller, node, :connecting)
      assert candidate(poller, node).description =~ "connect"
      :ok = :sys.resume(:net_kernel)
      wait_state(poller, node, :connected)
    end

    test "backoff grows from the interval to max_backoff" do
      # A node whose allow list names nobody refuses every probe: with connect: false that
      # is a failed probe each time, and the waits double up to :max_backoff.
      strict = TestNodes.start(args: ["-eval", "net_kernel:allow([nobody@nowhere])."])
      poller = start_poller(interval: 100, max_backoff: 400, connect: false)

      waits =
        Enum.map(1..4, fn attempt ->
          TestNodes.wait_until(
            fn -> match?(%{attempts: ^attempt}, candidate(poller, strict)) end,
            "attempt #{attempt}"
          )

          candidate(poller, strict).retry_in_ms
        end)

      # Read just after each attempt: a little under 100, 200, 400, 400.
      [w1, w2, w3, w4] = waits
      assert w1 <= 100 and w2 > 100 and w2 <= 200, inspect(waits)
      assert w3 > 200 and w3 <= 400 and w4 > 200 and w4 <= 400, inspect(waits)
    end
  end

  describe "filters" do
    test ":except keeps matching nodes from being probed or connected" do
      keep = TestNodes.start(name: "tcflt_keep#{System.unique_integer([:positive])}")
      skip = TestNodes.start(name: "tcflt_skip#{System.unique_integer([:positive])}")
      poller = start_poller(except: ["tcflt_skip"])
      wait_state(poller, keep, :connected)
      Process.sleep(600)
      assert candidate(poller, skip) == nil
      refute skip.name in Node.list(:connected)

      assert {:ok, scanned} = Tinycluster.scan(except: [~r/^tcflt_skip/])
      names = Enum.map(scanned, & &1.name)
      assert to_string(keep.name) in names
      refute to_string(skip.name) in names
    end

    test ":only takes prefixes, regexes and functions" do
      a = TestNodes.start(name: "tconly_a#{System.unique_integer([:positive])}")
      b = TestNodes.start(name: "tconly_b#{System.unique_integer([:positive])}")
      a_name = to_string(a.name)

      poller = start_poller(only: [fn name -> name == a_name end])
      wait_state(poller, a, :connected)
      Process.sleep(600)
      assert candidate(poller, b) == nil

      assert {:ok, [%Candidate{name: ^a_name}]} = Tinycluster.scan(only: a_name)
      assert {:ok, [%Candidate{}]} = Tinycluster.scan(only: ~r/^#{b.alive}@/)
    end

    # Fake peers, listed by a fake EPMD and answering the probe as live nodes do, so that
    # no name of theirs was ever an atom in this VM. Each is alike but for its name.
    test "a name the filters leave out is never probed, nor made an atom" do
      base = "tcfltatom#{System.pid()}x#{System.unique_integer([:positive])}"

      alives = %{
        kept: base <> "keep",
        excepted: base <> "skip",
        not_only: "tcfltother#{System.pid()}x#{System.unique_integer([:positive])}"
      }

      peers =
        Map.new(alives, fn {kind, alive} ->
          {kind, FakeServer.start(Peer.respond(Peer.answer(alive <> "@vm")))}
        end)

      entries = for {kind, alive} <- alives, do: {alive, peers[kind].port}
      epmd = FakeServer.start(Epmd.reply(Epmd.names_reply(entries)))
      opts = [hosts: [{"127.0.0.1", epmd.port}], only: [base], except: [~r/skip@/]]
      kept = alives.kept <> "@vm"

      capture_log(fn ->
        poller = start_poller(opts)
        # The one let through is connected (and refused: no such host), so made an atom.
        wait_state(poller, kept, :rejected)
        TestNodes.wait_scans(poller, Tinycluster.status(poller).scans + 3)
        assert Map.keys(Tinycluster.status(poller).candidates) == [kept]
        assert {:ok, [%Candidate{name: ^kept}]} = Tinycluster.scan(opts)
      end)

      assert Tinycluster.NodeName.existing(kept)
      assert FakeServer.connections(peers.kept) >= 1

      for kind <- [:excepted, :not_only], suffix <- ["@vm", "@127.0.0.1", ""] do
        refute Tinycluster.NodeName.existing(alives[kind] <> suffix), "#{kind}#{suffix}"
        assert FakeServer.connections(peers[kind]) == 0, "#{kind} was probed"
      end
    end

    test "a filter function that raises is a no-match, not a crash" do
      node = TestNodes.start()
      poller = start_poller(only: fn _ -> raise "boom" end)
      TestNodes.wait_until(fn -> Tinycluster.status(poller).scans >= 2 end, "two scans")
      assert candidate(poller, node) == nil
    end
  end

  test "include_hidden: true connects hidden nodes, hidden" do
    hidden = TestNodes.start(hidden: true)
    poller = start_poller(include_hidden: true)
    wait_state(poller, hidden, :connected)
    assert hidden.name in Node.list(:hidden)
    refute hidden.name in Node.list(:visible)
  end

  test "several named pollers with different options work side by side" do
    plain = TestNodes.start()
    hidden = TestNodes.start(hidden: true)
    reporter = start_poller(connect: false, include_hidden: true)
    connector = start_poller([])
    wait_state(connector, plain, :connected)
    wait_state(connector, hidden, :hidden)
    wait_state(reporter, hidden, :hidden)
    TestNodes.wait_until(fn -> candidate(reporter, plain) != nil end, "the reporter to see it")
    refute hidden.name in Node.list(:connected)
  end
end
