defmodule Tinycluster.RobustnessTest do
  # Hostile and broken EPMDs and peers, played by fake servers on 127.0.0.1:0: every one
  # gets a clear, documented answer within its timeout, nothing grows without bound, no atom
  # is made of a name the probe did not prove live, and the poller keeps running and says
  # each thing once. (The byte-level cases are in native/tinycluster_nif/tests; these go
  # through the NIF, the Elixir side, the poller and its logs.)
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{FakeServer, TestNodes}
  alias Tinycluster.FakeServer.{Epmd, Peer}

  @moduletag timeout: 120_000

  defp start_poller(opts) do
    name = TestNodes.poller_name()
    start_supervised!({Tinycluster, Keyword.merge([name: name, interval: 100], opts)})
    name
  end

  defp fake_epmd(handler), do: FakeServer.start(handler)

  defp scan(epmd, opts \\ []) do
    Tinycluster.scan([hosts: [{"127.0.0.1", epmd.port}]] ++ opts)
  end

  defp timed(fun) do
    started = System.monotonic_time(:millisecond)
    result = fun.()
    {result, System.monotonic_time(:millisecond) - started}
  end

  defdelegate wait_scans(poller, n), to: TestNodes
  defdelegate count(log, text), to: TestNodes

  # A name no other test, run or atom has: atoms of it must never appear.
  defp fresh(prefix), do: "#{prefix}#{System.pid()}x#{System.unique_integer([:positive])}"

  describe "a hostile or broken EPMD" do
    test "that answers bytes that are not an EPMD reply is {:malformed, what}, at once" do
      for garbage <- [
            "HTTP/1.1 400 Bad Request\r\n\r\n",
            "SSH-2.0-OpenSSH_9.6\r\n",
            <<0, 0>>,
            <<0, 0, 0, 0>>,
            "",
            :crypto.strong_rand_bytes(100) |> then(&(<<0xFF>> <> &1))
          ] do
        epmd = fake_epmd(Epmd.reply(garbage))
        {result, ms} = timed(fn -> scan(epmd, epmd_timeout: 10_000) end)

        assert {:error, {:epmd, "127.0.0.1", {:malformed, what}}} = result,
               "for #{inspect(garbage)}: #{inspect(result)}"

        assert is_binary(what)
        # It closed: the answer does not wait for the timeout.
        assert ms < 5_000, "#{inspect(garbage)} took #{ms} ms"
      end
    end

    test "whose reply never ends is cut at the byte cap, within the EPMD timeout" do
      epmd = fake_epmd(Epmd.endless())
      {result, ms} = timed(fn -> scan(epmd) end)
      assert {:error, {:epmd, "127.0.0.1", {:reply_too_large, 262_144}}} = result
      assert ms < 1_000 + 2_000
    end

    test "that accepts and never answers times out at :epmd_timeout (default 1 s)" do
      epmd = fake_epmd(Epmd.silent())

      {result, ms} = timed(fn -> scan(epmd) end)
      assert {:error, {:epmd, "127.0.0.1", :timeout}} = result
      assert ms >= 900 and ms < 1_000 + 3_000, "default timeout took #{ms} ms"

      {result, ms} = timed(fn -> scan(epmd, epmd_timeout: 300) end)
      assert {:error, {:epmd, "127.0.0.1", :timeout}} = result
      assert ms >= 250 and ms < 300 + 3_000, "300 ms timeout took #{ms} ms"
    end

    test "listing tens of thousands of names is refused whole: no probe, no atom" do
      peer = FakeServer.start(Peer.respond(Peer.status("ok")))
      # Short names fit the byte cap and hit the name cap; long ones hit the byte cap.
      short = for i <- 1..10_000, do: {"n" <> Integer.to_string(i, 36), peer.port}
      long = for i <- 1..100_000, do: {fresh("hostile_name_#{i}_"), peer.port}

      for {entries, reason} <- [
            {short, {:too_many_names, 1024}},
            {long, {:reply_too_large, 262_144}}
          ] do
        epmd = fake_epmd(Epmd.reply(Epmd.names_reply(entries)))
        {result, ms} = timed(fn -> scan(epmd) end)
        assert {:error, {:epmd, "127.0.0.1", ^reason}} = result
        assert ms < 1_000 + 2_000
      end

      assert FakeServer.connections(peer) == 0
    end

    # 12 such hosts at one silent port once gave no finished scan in a minute.
    test "hosts listing more names than a scan probes: the rest wait, and each is probed in turn" do
      # Every name's port answers under one other name: a :name_mismatch, which is not held
      # back, so each scan would probe the same ones again without the deferred going first.
      peer = FakeServer.start(Peer.respond(Peer.answer("impostor@127.0.0.1")))
      budget = Tinycluster.Poller.Plan.budget()
      listing = fn prefix -> for i <- 1..budget, do: {"#{prefix}#{i}", peer.port} end
      epmds = for prefix <- ["d#{System.unique_integer([:positive])}_", "e"], do: listing.(prefix)
      epmds = Enum.map(epmds, &fake_epmd(Epmd.reply(Epmd.names_reply(&1))))
      hosts = for epmd <- epmds, do: {"127.0.0.1", epmd.port}

      # A single scan returns, with the names past its budget unprobed.
      assert {:ok, candidates} = Tinycluster.scan(hosts: hosts)
      counts = Enum.frequencies_by(candidates, & &1.state)
      assert counts == %{name_mismatch: budget, deferred: budget}, inspect(counts)

      log =
        capture_log(fn ->
          poller = start_poller(hosts: hosts, interval: 200)
          wait_scans(poller, 1)
          assert Tinycluster.status(poller).last_scan.deferred == budget

          # The next scan takes the deferred ones first: every name has been probed.
          wait_scans(poller, 3)
          status = Tinycluster.status(poller)
          assert map_size(status.candidates) == 2 * budget
          assert Map.keys(status.last_scan.by_state) == [:name_mismatch]
          assert status.last_scan.deferred <= budget
          assert Process.alive?(GenServer.whereis(poller))
        end)

      assert count(log, "candidates past the #{budget} a scan probes") == 1, log
    end

    test "bad entries are skipped and reported, the good ones probed" do
      peer = FakeServer.start(Peer.respond(Peer.status("sok_no_such_status"), :close))
      good = fresh("good")

      reply =
        Epmd.names_reply([
          {good, peer.port},
          "name bad.dot at port #{peer.port}\n",
          "name sp ace at port #{peer.port}\n",
          "name caf\xC3\xA9 at port #{peer.port}\n",
          "name nul\0 at port #{peer.port}\n",
          "name #{String.duplicate("a", 256)} at port #{peer.port}\n",
          "name neg at port -4\n",
          "name big at port 65536\n",
          "name huge at port 99999999999999999999\n",
          "name zero at port 0\n",
          "name nan at port x1\n",
          "name hex at port 0x10\n",
          "hello world\n",
          "name unterminated at port 1"
        ])

      epmd = fake_epmd(Epmd.reply(reply))
      assert {:ok, [candidate]} = scan(epmd)
      assert candidate.alive == good
      assert candidate.state == :bad_reply

      poller = start_poller(hosts: [{"127.0.0.1", epmd.port}], log: :info)

      log =
        capture_log(fn ->
          wait_scans(poller, 5)
        end)

      host = Tinycluster.status(poller).hosts["127.0.0.1"]
      assert host.status == :ok
      assert host.names == 1
      port = peer.port

      # Each bad line, cut at 64 bytes, with why it was skipped, in the order listed.
      assert host.malformed == [
               {"name bad.dot at port #{port}", "invalid node name"},
               {"name sp ace at port #{port}", "invalid node name"},
               {"name caf\xC3\xA9 at port #{port}", "invalid node name"},
               {"name nul\0 at port #{port}", "invalid node name"},
               {"name " <> String.duplicate("a", 59), "invalid node name"},
               {"name neg at port -4", "invalid port"},
               {"name big at port 65536", "invalid port"},
               {"name huge at port 99999999999999999999", "invalid port"},
               {"name zero at port 0", "invalid port"},
               {"name nan at port x1", "invalid port"},
               {"name hex at port 0x10", "invalid port"},
               {"hello world", ~s(line does not start with "name ")},
               {"name unterminated at port 1", "line not terminated"}
             ]

      # Said once, not once per poll.
      assert count(log, "listed 13 malformed entries") == 1
    end

    test "a reply of nothing but junk lines is listed up to a cap, and the poller stays small" do
      # Just under the byte cap: some 260,000 empty lines, each one malformed.
      epmd = fake_epmd(Epmd.reply(<<4369::32>> <> String.duplicate("\n", 262_144 - 4)))
      assert {:ok, []} = scan(epmd)

      log =
        capture_log(fn ->
          poller = start_poller(hosts: [{"127.0.0.1", epmd.port}])
          wait_scans(poller, 5)
          host = Tinycluster.status(poller).hosts["127.0.0.1"]
          assert host.status == :ok and host.names == 0
          assert length(host.malformed) == 65

          assert {"262076 more", "more malformed lines than are listed"} =
                   List.last(host.malformed)

          {:memory, bytes} = Process.info(Process.whereis(poller), :memory)
          # It was some 280 MB when every line was listed.
          assert bytes < 10 * 1024 * 1024, "the poller holds #{bytes} bytes"
        end)

      assert count(log, "listed 65 malformed entries") == 1, log
    end

    test "a poller against each of them keeps running and warns once per host" do
      epmds = [
        fake_epmd(Epmd.reply("garbage that is not EPMD")),
        fake_epmd(Epmd.endless()),
        fake_epmd(Epmd.silent()),
        fake_epmd(Epmd.reply(Epmd.names_reply(for i <- 1..2_000, do: {"n#{i}", 1})))
      ]

      log =
        capture_log(fn ->
          pollers =
            for epmd <- epmds do
              poller = start_poller(hosts: [{"127.0.0.1", epmd.port}], epmd_timeout: 300)
              {poller, Process.whereis(poller), epmd}
            end

          for {poller, pid, epmd} <- pollers do
            wait_scans(poller, 4)
            assert Process.whereis(poller) == pid
            status = Tinycluster.status(poller)
            assert {:error, reason} = status.hosts["127.0.0.1"].status
            assert status.candidates == %{}
            assert status.hosts["127.0.0.1"].epmd_port == epmd.port

            case reason do
              {:malformed, _} -> :ok
              {:reply_too_large, 262_144} -> :ok
              :timeout -> :ok
              {:too_many_names, 1024} -> :ok
            end
          end
        end)

      for epmd <- epmds do
        assert count(log, "(EPMD at 127.0.0.1:#{epmd.port})") == 1, log
      end
    end
  end

  describe "a name no atom can hold" do
    # 250 letters and `@127.0.0.1` make 260 bytes, past the 255 an atom holds: EPMD accepts
    # such an alive part, and `String.to_atom/1` of the name raises `SystemLimitError`.
    # Before the fix this crashed `scan/1`, the scan task and the poller, over and over,
    # until the application (and, in a release, the VM) stopped.
    setup do
      long_alive = "l#{System.unique_integer([:positive])}" |> String.pad_trailing(250, "x")
      long_name = long_alive <> "@127.0.0.1"
      claimer = "c#{System.unique_integer([:positive])}"

      peers = %{
        # Listed under the over-long alive part, answering as a node of that name.
        long_alive => FakeServer.start(Peer.respond(Peer.answer(long_name))),
        # Listed under a short alive part, claiming the over-long name in its challenge.
        claimer => FakeServer.start(Peer.respond(Peer.answer("#{claimer}x" <> long_name))),
        # Listed under the over-long alive part and refusing the probe (`not_allowed`),
        # which names nobody: the poller would connect it under the name EPMD implies.
        ("n" <> long_alive) => FakeServer.start(Peer.respond(Peer.status("not_allowed"), :close))
      }

      entries = for {alive, server} <- peers, do: {alive, server.port}
      epmd = fake_epmd(Epmd.reply(Epmd.names_reply(entries)))
      %{epmd: epmd, peers: peers, long_alive: long_alive, claimer: claimer}
    end

    test "is a :bad_reply {:name_too_long, bytes} in scan/1, and no atom", ctx do
      assert {:ok, candidates} = scan(ctx.epmd)
      assert length(candidates) == 3

      for candidate <- candidates do
        assert candidate.state == :bad_reply, inspect(candidate)
        assert {:name_too_long, bytes} = candidate.reason
        assert bytes > 255
        assert candidate.node == nil
        assert Tinycluster.Candidate.describe(candidate) =~ "more than the 255"
        refute Tinycluster.NodeName.existing(candidate.name)
      end

      # Listed under a name no node can have: never probed at all.
      assert FakeServer.connections(ctx.peers[ctx.long_alive]) == 0
      assert FakeServer.connections(ctx.peers["n" <> ctx.long_alive]) == 0
      # Probed, and its challenge's name refused.
      assert FakeServer.connections(ctx.peers[ctx.claimer]) >= 1
    end

    test "leaves the poller running, the same process, and connects nothing", ctx do
      # Every connection attempt of the poller's processes (all new since), under any name.
      :erlang.trace_pattern({:net_kernel, :connect_node, 1}, true, [])
      :erlang.trace(:new_processes, true, [:call, {:tracer, self()}])

      on_exit(fn ->
        :erlang.trace(:all, false, [:call])
        :erlang.trace_pattern({:net_kernel, :connect_node, 1}, false, [])
      end)

      poller = start_poller(hosts: [{"127.0.0.1", ctx.epmd.port}])
      pid = Process.whereis(poller)
      wait_scans(poller, 5)
      assert Process.whereis(poller) == pid
      status = Tinycluster.status(poller)
      assert map_size(status.candidates) == 3

      # The bytes of the name each would have: the one EPMD implies, or the one claimed.
      bytes = %{
        ctx.long_alive => byte_size("#{ctx.long_alive}@127.0.0.1"),
        ("n" <> ctx.long_alive) => byte_size("n#{ctx.long_alive}@127.0.0.1"),
        ctx.claimer => byte_size("#{ctx.claimer}x#{ctx.long_alive}@127.0.0.1")
      }

      for {_, candidate} <- status.candidates do
        assert candidate.state == :bad_reply, inspect(candidate)
        assert candidate.reason == {:name_too_long, bytes[candidate.alive]}
        refute Tinycluster.NodeName.existing(candidate.name)
      end

      # Not even under a shorter name: the name EPMD implies, or a part of the one claimed.
      :erlang.trace(:all, false, [:call])
      ref = :erlang.trace_delivered(:all)
      assert_receive {:trace_delivered, :all, ^ref}, 5_000
      refute_received {:trace, _, :call, {:net_kernel, :connect_node, _}}
    end

    test "makes mix tinycluster.scan print it and return normally", ctx do
      Mix.Task.reenable("tinycluster.scan")

      output =
        ExUnit.CaptureIO.capture_io(fn ->
          Mix.Tasks.Tinycluster.Scan.run(["--host", "127.0.0.1:#{ctx.epmd.port}"])
        end)

      assert output =~ "answered: 3 names"
      assert output |> String.split("more than the 255") |> length() == 4, output
    end
  end

  describe "many candidates silent at once" do
    test "are said in one line for their host, not one each" do
      silent = FakeServer.start(Peer.silent())
      prefix = fresh("many")
      entries = for i <- 1..10, do: {"#{prefix}_#{i}", silent.port}
      epmd = fake_epmd(Epmd.reply(Epmd.names_reply(entries)))

      log =
        capture_log(fn ->
          poller = start_poller(hosts: [{"127.0.0.1", epmd.port}], probe_timeout: 200)
          wait_scans(poller, 2)
        end)

      assert count(log, "10 candidates on 127.0.0.1 listed by EPMD but silent") == 1, log
      assert count(log, "frozen, overloaded or firewalled") == 0, log
    end
  end

  describe "a host that keeps inventing live names" do
    # Each EPMD query lists 20 names never seen before, each at a listener whose challenge
    # confirms it: every one is "validated and proven live". Without a budget, each became
    # an atom, for as long as the host kept inventing, until the atom table was full.
    test "makes at most the atom budget's atoms; the rest wait, said once" do
      generation = :atomics.new(1, [])
      prefix = fresh("inv") <> "g"
      name = fn g, i -> "#{prefix}#{g}_#{i}" end

      listeners =
        for i <- 1..20 do
          FakeServer.start(fn socket ->
            g = :atomics.get(generation, 1)
            Peer.respond(Peer.answer(name.(g, i) <> "@vm")).(socket)
          end)
        end

      epmd =
        fake_epmd(fn socket ->
          g = :atomics.add_get(generation, 1, 1)
          entries = for {l, i} <- Enum.with_index(listeners, 1), do: {name.(g, i), l.port}
          Epmd.reply(Epmd.names_reply(entries)).(socket)
        end)

      log =
        capture_log(fn ->
          poller = start_poller(hosts: [{"127.0.0.1", epmd.port}], interval: 200)
          pid = Process.whereis(poller)
          # Well past the budget: 20 new names a scan.
          wait_scans(poller, 10)
          assert Process.whereis(poller) == pid
          held = for {_, %{reason: :atom_budget}} <- Tinycluster.status(poller).candidates, do: 1
          assert held != []
        end)

      invented = for g <- 1..:atomics.get(generation, 1), i <- 1..20, do: name.(g, i) <> "@vm"
      assert length(invented) >= 200
      atoms = Enum.count(invented, &Tinycluster.NodeName.existing/1)
      assert atoms <= Tinycluster.Poller.AtomBudget.per_window(), "#{atoms} atoms made"
      assert count(log, "new nodes within a minute") == 1, log
    end
  end

  describe "a hostile or broken peer" do
    # Each peer is listed by a fake EPMD under its own fresh name, so that the probe's
    # results can be told apart, and atoms of them looked for.
    setup do
      peers = %{
        silent: {FakeServer.start(Peer.silent()), :unreachable, :timeout},
        huge_frame:
          {FakeServer.start(Peer.respond(<<0xFF, 0xFF>>, :hang)), :bad_reply,
           {:frame_too_large, 65_535}},
        huge_challenge:
          {FakeServer.start(Peer.respond(Peer.status("ok") <> <<0xFF, 0xFF>>, :hang)), :bad_reply,
           {:frame_too_large, 65_535}},
        stalls_in_status:
          {FakeServer.start(Peer.respond(<<0, 3, ?s>>, :hang)), :bad_reply, :timeout},
        unknown_status:
          {FakeServer.start(Peer.respond(Peer.status("maybe"))), :bad_reply,
           {:unknown_status, "maybe"}},
        not_a_status:
          {FakeServer.start(Peer.respond(<<0, 2, "ok">>)), :bad_reply, {:malformed, :_}},
        closes_at_once: {FakeServer.start(Peer.respond("", :close)), :unreachable, :closed}
      }

      impostor = fresh("impostor") <> "@vm"

      peers =
        Map.put(
          peers,
          :name_mismatch,
          {FakeServer.start(Peer.respond(Peer.answer(impostor))), :name_mismatch,
           {:claimed, impostor}}
        )

      named = Map.new(peers, fn {kind, value} -> {fresh("#{kind}_"), {kind, value}} end)
      entries = for {alive, {_kind, {server, _, _}}} <- named, do: {alive, server.port}
      epmd = fake_epmd(Epmd.reply(Epmd.names_reply(entries)))
      %{epmd: epmd, named: named, impostor: impostor}
    end

    test "each gets its documented state and reason, within the probe timeout", ctx do
      {result, ms} = timed(fn -> scan(ctx.epmd, probe_timeout: 300) end)
      assert {:ok, candidates} = result
      assert ms < 300 + 3_000
      by_alive = Map.new(candidates, &{&1.alive, &1})

      for {alive, {kind, {_server, state, reason}}} <- ctx.named do
        candidate = by_alive[alive]
        assert candidate, "#{kind} is missing"
        assert candidate.state == state, "#{kind}: #{inspect(candidate)}"
        assert candidate.node == nil

        case reason do
          {:malformed, :_} -> assert {:malformed, <<_, _::binary>>} = candidate.reason
          reason -> assert candidate.reason == reason, "#{kind}: #{inspect(candidate)}"
        end

        assert Tinycluster.Candidate.describe(candidate) =~ ~r/\w/
      end
    end

    test "the poller warns once for each, connects none of them, makes no atom", ctx do
      log =
        capture_log(fn ->
          poller = start_poller(hosts: [{"127.0.0.1", ctx.epmd.port}], probe_timeout: 200)
          wait_scans(poller, 6)
          status = Tinycluster.status(poller)

          for {alive, {kind, {server, state, _reason}}} <- ctx.named do
            assert [candidate] = for({_, c} <- status.candidates, c.alive == alive, do: c)
            assert candidate.state == state, "#{kind}: #{inspect(candidate)}"
            assert candidate.node == nil

            # Every connection was a probe: it claimed the probe's name and said no more.
            for received <- FakeServer.received(server) do
              assert {:name, "tinycluster_probe_" <> _} = received
            end
          end
        end)

      for {alive, {kind, {_server, _state, _reason}}} <- ctx.named do
        assert count(log, "tinycluster: #{alive}@") == 1, "#{kind}: #{log}"
        refute Tinycluster.NodeName.existing(alive), "#{kind}: an atom was made of its name"
      end

      refute Tinycluster.NodeName.existing(ctx.impostor)
      refute Enum.any?(Node.list(:connected), &(Atom.to_string(&1) =~ ctx.impostor))
    end
  end

  test "a peer that closes at every possible byte gets a documented state each time" do
    alive = fresh("cut")
    full = Peer.answer(alive <> "@vm")

    servers =
      for cut <- 0..(byte_size(full) - 1) do
        {cut, FakeServer.start(Peer.respond(binary_part(full, 0, cut), :close))}
      end

    entries = for {cut, server} <- servers, do: {"#{alive}_#{cut}", server.port}
    epmd = fake_epmd(Epmd.reply(Epmd.names_reply(entries)))
    assert {:ok, candidates} = scan(epmd, probe_timeout: 2_000)
    assert length(candidates) == length(servers)

    for candidate <- candidates do
      ["", cut] = String.split(candidate.alive, alive <> "_")
      expected = if cut == "0", do: {:unreachable, :closed}, else: {:bad_reply, :closed}

      assert {candidate.state, candidate.reason} == expected,
             "cut at #{cut}: #{inspect({candidate.state, candidate.reason})}"

      assert candidate.node == nil
    end

    refute Tinycluster.NodeName.existing(alive <> "@vm")
  end

  test "no atom is made of the names a hostile EPMD lists" do
    peer = FakeServer.start(Peer.respond(Peer.status("no"), :close))
    # Warm up: load every module a scan and a poller use, so that only names could count.
    warm = fake_epmd(Epmd.reply(Epmd.names_reply([{fresh("warm"), peer.port}])))
    {:ok, _} = scan(warm)
    warm_poller = start_poller(hosts: [{"127.0.0.1", warm.port}], log: false)
    wait_scans(warm_poller, 2)

    huge = for _ <- 1..100_000, do: {fresh("a"), peer.port}
    under_cap = for _ <- 1..1_000, do: {fresh("b"), peer.port}
    huge_epmd = fake_epmd(Epmd.reply(Epmd.names_reply(huge)))
    under_cap_epmd = fake_epmd(Epmd.reply(Epmd.names_reply(under_cap)))

    before = :erlang.system_info(:atom_count)
    assert {:error, {:epmd, _, {:reply_too_large, _}}} = scan(huge_epmd)
    # A generous timeout: 1000 probes on a loaded machine, and the point is the atoms.
    assert {:ok, probed} = scan(under_cap_epmd, probe_timeout: 5_000)
    assert length(probed) == 1_000
    assert Enum.all?(probed, &(&1.state == :bad_reply and &1.node == nil))

    poller =
      start_poller(
        hosts: [{"127.0.0.1", huge_epmd.port}, {"127.0.0.1", under_cap_epmd.port}],
        log: false
      )

    wait_scans(poller, 3)
    grown = :erlang.system_info(:atom_count) - before
    # A handful: the poller's own name and whatever the VM itself makes meanwhile.
    assert grown <= 5, "the atom table grew by #{grown}"

    refute Enum.any?(
             Enum.take(huge, 100) ++ Enum.take(under_cap, 100),
             &Tinycluster.NodeName.existing(elem(&1, 0))
           )
  end
end
