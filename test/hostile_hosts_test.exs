defmodule Tinycluster.HostileHostsTest do
  # Hosts that lie, against a poller and real nodes on the suite's EPMD: a host whose
  # listener claims a real node's name, and many hosts that keep inventing names. The
  # hostile side is fake (`Tinycluster.FakeServer`); the nodes it would hide are real.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{FakeServer, SuiteEpmd, TestEpmd, TestNodes}
  alias Tinycluster.FakeServer.{Epmd, Peer}

  @interval 500

  defp start_poller(opts) do
    name = TestNodes.poller_name()
    start_supervised!({Tinycluster, Keyword.merge([name: name, interval: @interval], opts)})
    name
  end

  defp fixed_port_node(alive, port),
    do:
      TestNodes.start(
        name: alive,
        args: ~w(-kernel inet_dist_listen_min #{port} inet_dist_listen_max #{port})
      )

  defp claimed(poller, name) do
    for c <- Map.get(Tinycluster.status(poller).claimed, name, []), do: {c.host, c.state}
  end

  defp elapsed_ms(since), do: System.monotonic_time(:millisecond) - since

  describe "a host whose listener claims a real node's name" do
    test "does not keep the real node from being reconnected when it restarts" do
      alive = TestNodes.unique_alive("claimed")
      port = TestEpmd.free_port()
      real = fixed_port_node(alive, port)
      full = Atom.to_string(real.name)
      # Its EPMD lists the same alive part, at a listener that answers every probe as the
      # real node; its label ("127.0.0.1") sorts before the real host's (its name). The real
      # host is listed by name, not as `:local`, which is asked every poll.
      impostor = FakeServer.start(Peer.respond(Peer.answer(full)))
      epmd = FakeServer.start(Epmd.reply(Epmd.names_reply([{alive, impostor.port}])))
      {:ok, host} = :inet.gethostname()
      host = List.to_string(host)
      hosts = [{"127.0.0.1", epmd.port}, {host, SuiteEpmd.port()}]
      poller = start_poller(hosts: hosts, only: [alive])

      TestNodes.wait_until(
        fn -> claimed(poller, full) == [{"127.0.0.1", :connected}, {host, :connected}] end,
        "both entries of #{full} to be connected and shown"
      )

      # The real host settles (its listing is unchanged, its node connected and held), until
      # it is asked only every few seconds: the node's nodedown must reopen it.
      TestNodes.wait_until(
        fn ->
          match?(
            %{settled: true, next_ask_in_ms: ms} when ms >= 6_000,
            Tinycluster.status(poller).hosts[host]
          )
        end,
        "the real host to settle",
        30_000
      )

      TestNodes.kill(real)

      # While the node is down, the impostor's entry is tried and refused until it is left
      # alone: from then on only the real entry can bring the node back.
      TestNodes.wait_until(
        fn ->
          Enum.any?(
            Map.get(Tinycluster.status(poller).claimed, full, []),
            &(&1.host == "127.0.0.1" and &1.retry_at == :never)
          )
        end,
        "the impostor's entry to be left alone",
        30_000
      )

      restarted = fixed_port_node(alive, port)
      registered = System.monotonic_time(:millisecond)
      assert restarted.name == real.name

      TestNodes.wait_until(
        fn -> real.name in Node.list() end,
        "#{full} to be reconnected after its restart",
        2 * @interval + 10_000
      )

      # Within 2 intervals of registering, with slack for a loaded machine.
      assert elapsed_ms(registered) <= 2 * @interval + 2_000
      assert Tinycluster.status(poller).candidates[full].host == host
    end
  end

  describe "a slow host that lists a thousand fresh names at one silent port" do
    # Its EPMD answers after 0.9 s (its probes then wait 3 round trips), every time with
    # 1,024 names never seen before: once, each scan waited for all of its probes, its
    # per-listener turns doubled them, and the next poll waited for the scan (22.6 s).
    test "does not set the pace: a node of a healthy host is connected within 2 intervals" do
      interval = 1_000
      silent = FakeServer.start(Peer.silent())
      generation = :atomics.new(1, [])
      hostile = "slow#{System.pid()}x#{System.unique_integer([:positive])}g"

      slow =
        FakeServer.start(fn socket ->
          FakeServer.recv(socket, 3)
          Process.sleep(900)
          g = :atomics.add_get(generation, 1, 1)
          names = for i <- 1..1_024, do: {"#{hostile}#{g}_#{i}", silent.port}
          :gen_tcp.send(socket, Epmd.names_reply(names))
        end)

      {:ok, host} = :inet.gethostname()
      healthy = TestNodes.unique_alive("healthy")
      test = self()
      ref = make_ref()

      :telemetry.attach(
        {__MODULE__, ref},
        [:tinycluster, :scan, :start],
        fn _, _, meta, _ -> send(test, {ref, meta.hosts}) end,
        nil
      )

      on_exit(fn -> :telemetry.detach({__MODULE__, ref}) end)

      capture_log(fn ->
        poller =
          start_poller(
            hosts: [{"127.0.0.1", slow.port}, {List.to_string(host), SuiteEpmd.port()}],
            interval: interval,
            only: [hostile, healthy]
          )

        # A scan of the slow host is under way, and has been for 2 s.
        assert_receive {^ref, ["127.0.0.1" | _]}, 10_000
        Process.sleep(2_000)
        node = TestNodes.start(name: healthy)
        registered = System.monotonic_time(:millisecond)

        TestNodes.wait_until(
          fn -> node.name in Node.list() end,
          "the healthy host's node to be connected",
          30_000
        )

        took = elapsed_ms(registered)
        assert took <= 2 * interval + 1_000, "connected #{took} ms after registering"
        # The slow host was asked meanwhile, and keeps being asked.
        assert :atomics.get(generation, 1) >= 1
        assert Process.alive?(Process.whereis(poller))
      end)
    end
  end

  describe "many hosts that keep inventing live names" do
    # 16 hosts (as one DNS seed may give), each listing 8 names never seen before at every
    # query, each at a listener whose challenge confirms it. The atom budget is the
    # poller's: per host, 16 hosts made 16 times the rate.
    test "make no more atoms than the poller-wide rate, said once" do
      hosts = 16
      per_host = 8
      generation = :atomics.new(hosts, [])
      prefix = "inv#{System.pid()}x#{System.unique_integer([:positive])}"
      name = fn h, g, i -> "#{prefix}h#{h}g#{g}_#{i}" end

      epmds =
        for h <- 1..hosts do
          listeners =
            for i <- 1..per_host do
              FakeServer.start(fn socket ->
                g = :atomics.get(generation, h)
                Peer.respond(Peer.answer(name.(h, g, i) <> "@vm")).(socket)
              end)
            end

          FakeServer.start(fn socket ->
            g = :atomics.add_get(generation, h, 1)
            entries = for {l, i} <- Enum.with_index(listeners, 1), do: {name.(h, g, i), l.port}
            Epmd.reply(Epmd.names_reply(entries)).(socket)
          end)
        end

      log =
        capture_log(fn ->
          poller =
            start_poller(
              hosts: for(e <- epmds, do: {"127.0.0.1", e.port}),
              interval: 200,
              only: [prefix]
            )

          pid = Process.whereis(poller)
          # Each host alone would reach its old per-host budget within these scans.
          TestNodes.wait_scans(poller, 12, 60_000)
          assert Process.whereis(poller) == pid
          atoms = Tinycluster.status(poller).atoms
          assert atoms.per_window == 64
          assert atoms.window == 64
        end)

      invented =
        for h <- 1..hosts,
            g <- 1..:atomics.get(generation, h),
            i <- 1..per_host,
            do: name.(h, g, i) <> "@vm"

      assert length(invented) >= 12 * hosts * per_host
      atoms = Enum.count(invented, &Tinycluster.NodeName.existing/1)
      assert atoms <= 64, "#{atoms} atoms made"
      assert TestNodes.count(log, "new nodes within a minute") == 1, log
    end
  end
end
