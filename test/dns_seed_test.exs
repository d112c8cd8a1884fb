defmodule Tinycluster.DnsSeedTest do
  # DNS seeds against a real DNS server: dnsmasq on loopback, answering from a hosts file
  # the test writes (see Tinycluster.Dnsmasq). Nodes are real and register with a private
  # EPMD, which an SRV record names with its port. A fake server only where the point is an
  # answer no real server gives (garbage bytes).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{DnsSeed, Dnsmasq, FakeDns, Options, SuiteEpmd, TestEpmd, TestNodes}
  alias Tinycluster.DnsSeed.Lookup

  @moduletag timeout: 180_000

  case Dnsmasq.available() do
    :ok -> :ok
    {:error, why} -> @moduletag skip: why
  end

  defp ns(dns), do: [nameservers: [Dnsmasq.nameserver(dns)]]

  defp seed(name, opts), do: DnsSeed.validate!({:dns, name, opts})

  describe "validation" do
    test "the forms of a seed" do
      assert Options.new!(hosts: [{:dns, "app.internal"}]).hosts ==
               [{:dns, "app.internal", %{type: nil, nameservers: []}}]

      opts =
        Options.new!(
          hosts: [
            :local,
            {:dns, "_epmd._tcp.app.internal.", type: :srv},
            {:dns, "app.test", type: :aaaa, nameservers: [{"::1", 53}, {{127, 0, 0, 1}, 5353}]}
          ],
          dns_timeout: 500
        )

      assert opts.hosts == [
               :local,
               {:dns, "_epmd._tcp.app.internal", %{type: :srv, nameservers: []}},
               {:dns, "app.test",
                %{
                  type: :aaaa,
                  nameservers: [{{0, 0, 0, 0, 0, 0, 0, 1}, 53}, {{127, 0, 0, 1}, 5353}]
                }}
             ]

      assert opts.dns_timeout == 500
      # Its documented default is :epmd_timeout, in whichever order they come.
      assert Options.new!(epmd_timeout: 700).dns_timeout == 700
      assert Options.new!(dns_timeout: 200, epmd_timeout: 700).dns_timeout == 200
      # The same seed twice is one.
      assert length(Options.new!(hosts: [{:dns, "a.test"}, {:dns, "a.test", []}]).hosts) == 1
    end

    test "a bad seed is an ArgumentError that says what is wrong" do
      for {hosts, message} <- [
            {[{:dns, "app.test", type: :mx}], ":type must be :a, :aaaa or :srv"},
            {[{:dns, "app.test", nameservers: []}], ":nameservers must be a non-empty list"},
            {[{:dns, "app.test", nameservers: [{"dns.example", 53}]}], "is not {address, port}"},
            {[{:dns, "app.test", nameservers: [{"10.0.0.1", 0}]}], "is not {address, port}"},
            {[{:dns, "app.test", timeout: 5}], "unknown option :timeout"},
            {[{:dns, "app.test", [:srv]}], "must be a keyword list"},
            {[{:dns, "10.0.0.1"}], "must be a DNS name"},
            {[{:dns, "bad name!"}], "must be a DNS name"},
            {[{:dns, :app}], "must be a string"},
            {[{:dns, "a.test"}, {:dns, "a.test", type: :srv}], "lists the DNS seed a.test twice"}
          ] do
        error = assert_raise ArgumentError, fn -> Options.new!(hosts: hosts) end
        assert error.message =~ message, "#{inspect(hosts)}: #{error.message}"
      end

      assert_raise ArgumentError, ~r/:dns_timeout/, fn -> Options.new!(dns_timeout: 0) end
    end

    test "warnings for forms the node's naming mode or family cannot use" do
      [srv, aaaa] =
        Options.new!(hosts: [{:dns, "a.test", type: :srv}, {:dns, "b.test", type: :aaaa}]).hosts

      assert [short] = Tinycluster.Hosts.Warnings.warnings([srv], :shortnames, :inet)
      assert short =~ "DNS seed a.test gives addresses, but this node runs with short names"
      assert [v6] = Tinycluster.Hosts.Warnings.warnings([aaaa], :longnames, :inet)
      assert v6 =~ "asks for AAAA (IPv6) records, but this node's distribution is IPv4"
      assert Tinycluster.Hosts.Warnings.warnings([srv, aaaa], :longnames, :inet6) == []
    end
  end

  describe "lookups against dnsmasq" do
    test "A, AAAA and the node's family decide which addresses a name gives", _ctx do
      dns =
        Dnsmasq.start(
          hosts: [
            {"198.18.7.1", "app.test"},
            {"198.18.7.2", "app.test"},
            {"2001:2::7:1", "app.test"},
            {"198.18.7.3", "v4only.test"},
            {"2001:2::7:4", "v6only.test"}
          ]
        )

      labels = fn name, opts, family ->
        {:ok, addresses} = Lookup.lookup(seed(name, ns(dns) ++ opts), family, 2_000)
        addresses |> Enum.map(& &1.label) |> Enum.sort()
      end

      assert labels.("app.test", [], :inet) == ["198.18.7.1", "198.18.7.2"]
      assert labels.("app.test", [], :inet6) == ["2001:2::7:1"]
      assert labels.("v4only.test", [], :inet6) == ["198.18.7.3"]
      assert labels.("app.test", [type: :aaaa], :inet) == ["2001:2::7:1"]
      assert labels.("app.test", [type: :a], :inet6) == ["198.18.7.1", "198.18.7.2"]

      assert {:ok, [%{address: "198.18.7.1", epmd_port: 4369}, _]} =
               Lookup.lookup(seed("app.test", ns(dns)), :inet, 2_000)

      assert Lookup.lookup(seed("nope.test", ns(dns)), :inet, 2_000) == {:error, :nxdomain}
      assert Lookup.lookup(seed("v6only.test", ns(dns)), :inet, 2_000) == {:error, :no_records}
    end

    test "SRV: each target's address with the record's port as its EPMD port", _ctx do
      dns =
        Dnsmasq.start(
          hosts: [{"198.18.7.1", "b.app.test"}, {"198.18.7.2", "c.app.test"}],
          srv: [
            {"_epmd._tcp.app.test", "b.app.test", 4370},
            {"_epmd._tcp.app.test", "c.app.test", 4369},
            {"_epmd._tcp.gone.test", "nowhere.test", 4369}
          ]
        )

      assert {:ok, addresses} =
               Lookup.lookup(seed("_epmd._tcp.app.test", [type: :srv] ++ ns(dns)), :inet, 2_000)

      assert Enum.sort_by(addresses, & &1.label) == [
               %{label: "198.18.7.1:4370", address: "198.18.7.1", epmd_port: 4370},
               %{label: "198.18.7.2", address: "198.18.7.2", epmd_port: 4369}
             ]

      # A target that does not resolve is named in the reason.
      assert Lookup.lookup(seed("_epmd._tcp.gone.test", [type: :srv] ++ ns(dns)), :inet, 2_000) ==
               {:error, {:target, "nowhere.test", :nxdomain}}
    end

    test "a CNAME chain's records are the name's own", _ctx do
      dns =
        Dnsmasq.start(
          hosts: [{"198.18.7.1", "app.test"}, {"198.18.7.2", "b.app.test"}],
          cname: [{"alias.test", "app.test"}, {"www.test", "alias.test"}],
          srv: [{"_epmd._tcp.alias.test", "b.app.test", 4369}]
        )

      for name <- ["alias.test", "www.test", "ALIAS.test"] do
        assert {:ok, [%{label: "198.18.7.1"}]} = Lookup.lookup(seed(name, ns(dns)), :inet, 2_000)
      end
    end

    test "SRV: a port below 1024 other than EPMD's refuses the answer", _ctx do
      dns =
        Dnsmasq.start(
          hosts: [{"198.18.7.1", "b.app.test"}, {"198.18.7.2", "c.app.test"}],
          srv: [
            {"_epmd._tcp.ssh.test", "b.app.test", 22},
            {"_epmd._tcp.ssh.test", "c.app.test", 4369},
            {"_epmd._tcp.high.test", "b.app.test", 1024}
          ]
        )

      srv = fn name -> seed(name, [type: :srv] ++ ns(dns)) end

      assert {:error, {:malformed, text}} =
               Lookup.lookup(srv.("_epmd._tcp.ssh.test"), :inet, 2_000)

      assert text ==
               "SRV target b.app.test has port 22, a system port (below 1024), where no EPMD listens"

      assert {:ok, [%{label: "198.18.7.1:1024"}]} =
               Lookup.lookup(srv.("_epmd._tcp.high.test"), :inet, 2_000)
    end

    test "too many records, or addresses no host has, refuse the answer", _ctx do
      many = for i <- 1..1100, do: {"10.9.#{div(i, 250)}.#{rem(i, 250) + 1}", "many.test"}
      exactly = for i <- 1..1024, do: {"10.8.#{div(i, 250)}.#{rem(i, 250) + 1}", "full.test"}

      dns =
        Dnsmasq.start(
          hosts: many ++ exactly ++ [{"0.0.0.0", "zero.test"}, {"224.0.0.1", "mcast.test"}]
        )

      # Over UDP the answer is truncated; the resolver asks again over TCP and gets all 1100.
      assert Lookup.lookup(seed("many.test", ns(dns)), :inet, 5_000) ==
               {:error, {:too_many_addresses, 1024}}

      assert {:ok, full} = Lookup.lookup(seed("full.test", ns(dns)), :inet, 5_000)
      assert length(full) == 1024

      assert {:error, {:malformed, "0.0.0.0 is not a host's address"}} =
               Lookup.lookup(seed("zero.test", ns(dns)), :inet, 2_000)

      assert {:error, {:malformed, "224.0.0.1 is not a host's address"}} =
               Lookup.lookup(seed("mcast.test", ns(dns)), :inet, 2_000)

      assert DnsSeed.describe({:too_many_addresses, 1024}) =~ "more than 1024 addresses"
    end

    test "SRV: more than 1024 records refuse the answer; 1024 do not", _ctx do
      # One target at as many ports: each record is another EPMD, and the target is asked
      # once per record.
      records = fn name, count ->
        for port <- 2001..(2000 + count), do: {"_epmd._tcp.#{name}", "t.srv.test", port}
      end

      dns =
        Dnsmasq.start(
          hosts: [{"198.18.7.1", "t.srv.test"}],
          srv: records.("many.test", 1025) ++ records.("full.test", 1024)
        )

      srv = fn name -> seed("_epmd._tcp.#{name}", [type: :srv] ++ ns(dns)) end

      # Over UDP the answer is truncated; the resolver asks again over TCP and gets them all.
      assert Lookup.lookup(srv.("many.test"), :inet, 10_000) ==
               {:error, {:too_many_records, 1024}}

      assert {:ok, full} = Lookup.lookup(srv.("full.test"), :inet, 10_000)
      assert length(full) == 1024
      assert DnsSeed.describe({:too_many_records, 1024}) =~ "more than 1024 SRV records"
    end

    # No real server answers a question with another name's records: a fake one does.
    test "records for another name than the one asked, or its CNAMEs', refuse the answer" do
      server =
        FakeDns.start(fn
          "app.test", :a ->
            [{"othername.test", :a, {198, 18, 7, 9}}]

          "mixed.test", :a ->
            [{"mixed.test", :a, {198, 18, 7, 1}}, {"x.test", :a, {10, 0, 0, 1}}]

          "chain.test", :a ->
            [{"chain.test", :cname, ~c"t.test"}, {"T.test", :a, {198, 18, 7, 2}}]

          "astray.test", :a ->
            [{"astray.test", :cname, ~c"t.test"}, {"u.test", :a, {10, 0, 0, 2}}]

          "loop.test", :a ->
            [{"loop.test", :cname, ~c"l.test"}, {"l.test", :cname, ~c"loop.test"}]

          "_epmd._tcp.s.test", :srv ->
            [{"other.test", :srv, {0, 0, 4369, ~c"chain.test"}}]

          _, _ ->
            []
        end)

      lookup = fn name, opts ->
        Lookup.lookup(seed(name, [nameservers: [server]] ++ opts), :inet, 2_000)
      end

      assert lookup.("app.test", []) ==
               {:error, {:malformed, "a record for othername.test answers app.test"}}

      assert lookup.("mixed.test", []) ==
               {:error, {:malformed, "a record for x.test answers mixed.test"}}

      assert {:ok, [%{label: "198.18.7.2"}]} = lookup.("chain.test", [])

      assert lookup.("astray.test", []) ==
               {:error, {:malformed, "a record for u.test answers astray.test"}}

      assert lookup.("loop.test", []) == {:error, :no_records}

      assert lookup.("_epmd._tcp.s.test", type: :srv) ==
               {:error, {:malformed, "a record for other.test answers _epmd._tcp.s.test"}}
    end

    test "a server that is gone or answers garbage is an error, quickly" do
      # Nothing listens: the port is closed, so the answer is at once.
      port = Dnsmasq.free_port()
      gone = seed("app.test", nameservers: [{"127.0.0.1", port}])
      assert {:error, reason} = Lookup.lookup(gone, :inet, 1_000)
      assert reason in [:econnrefused, :timeout]

      # Bytes that are no DNS message, with the query's id so the resolver reads them.
      {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: false])
      {:ok, port} = :inet.port(socket)

      server =
        spawn_link(fn ->
          for _ <- 1..10 do
            {:ok, {address, from, <<id::16, _::binary>>}} = :gen_udp.recv(socket, 0)
            garbage = <<id::16, 0x81, 0x80, 0, 1, 0, 200, 0, 0, 0, 0, "not a dns message">>
            :gen_udp.send(socket, address, from, garbage)
          end
        end)

      garbage = seed("app.test", nameservers: [{"127.0.0.1", port}])
      {us, result} = :timer.tc(fn -> Lookup.lookup(garbage, :inet, 3_000) end)
      assert result == {:error, :formerr}
      assert us < 2_000_000
      assert DnsSeed.describe(:formerr) =~ "could not be decoded"
      Process.unlink(server)
      Process.exit(server, :kill)
    end
  end

  describe "a poller with a DNS seed" do
    setup do
      epmd = TestEpmd.start()
      %{epmd: epmd, dns: Dnsmasq.start(records(epmd))}
    end

    # `_epmd._tcp.app.test` names a private EPMD of the test's, `_epmd._tcp.suite.app.test`
    # the suite's (Tinycluster.SuiteEpmd), whose nodes this VM can connect.
    defp records(epmd) do
      [
        hosts: [{"127.0.0.1", "lo.app.test"}],
        srv: [
          {"_epmd._tcp.app.test", "lo.app.test", epmd.port},
          {"_epmd._tcp.suite.app.test", "lo.app.test", SuiteEpmd.port()}
        ]
      ]
    end

    defp start_poller(dns, opts) do
      name = TestNodes.poller_name()

      opts =
        Keyword.merge(
          [
            name: name,
            interval: 300,
            hosts: [{:dns, "_epmd._tcp.app.test", [type: :srv] ++ ns(dns)}]
          ],
          opts
        )

      start_supervised!({Tinycluster, opts})
      name
    end

    defp attach(events) do
      test = self()
      id = {__MODULE__, make_ref()}

      :telemetry.attach_many(
        id,
        events,
        fn event, measurements, meta, _ -> send(test, {:event, event, measurements, meta}) end,
        nil
      )

      on_exit(fn -> :telemetry.detach(id) end)
    end

    # Node.connect/1 asks the system EPMD for a node's port, which cannot see the nodes of
    # a private EPMD: this one finds and proves them, and connects nothing.
    test "finds the nodes an SRV record's EPMD lists, on its own port", ctx do
      [a, b] = TestNodes.start_many(2, epmd_port: ctx.epmd.port)
      attach([[:tinycluster, :scan, :start], [:tinycluster, :scan, :stop]])
      poller = start_poller(ctx.dns, connect: false)
      label = "127.0.0.1:#{ctx.epmd.port}"

      TestNodes.wait_until(
        fn ->
          candidates = Tinycluster.status(poller).candidates
          Enum.all?([a, b], &match?(%{state: :live}, candidates["#{&1.name}"]))
        end,
        "a and b to be live"
      )

      status = Tinycluster.status(poller)

      assert %{status: :ok, addresses: [^label], type: :srv, last_ok_at: %DateTime{}} =
               status.dns["_epmd._tcp.app.test"]

      assert status.hosts[label].status == :ok
      assert status.hosts[label].nodes == Enum.sort(["#{a.name}", "#{b.name}"])

      assert_receive {:event, [:tinycluster, :scan, :stop], _, meta}, 10_000
      assert meta.seeds == %{"_epmd._tcp.app.test" => 1}
      assert label in meta.hosts
      assert_receive {:event, [:tinycluster, :scan, :start], _, %{seeds: seeds}}, 10_000
      assert seeds == %{"_epmd._tcp.app.test" => 1}
    end

    test "the DNS server gone: nothing disconnected, one warning, one line when back", ctx do
      a = TestNodes.start()
      # The suite's EPMD, which this VM's Node.connect/1 asks too, through an SRV record.
      name = "_epmd._tcp.suite.app.test"
      seed = {:dns, name, [type: :srv] ++ ns(ctx.dns)}
      host = "127.0.0.1:#{SuiteEpmd.port()}"
      poller = start_poller(ctx.dns, dns_timeout: 300, hosts: [seed])
      TestNodes.wait_until(fn -> a.name in Node.list() end, "a to connect")
      scans = Tinycluster.status(poller).scans

      log =
        capture_log(fn ->
          Dnsmasq.stop(ctx.dns)

          TestNodes.wait_until(
            fn -> Tinycluster.status(poller).scans >= scans + 8 end,
            "eight scans without DNS"
          )

          status = Tinycluster.status(poller)
          seed = status.dns[name]
          assert {:error, reason} = seed.status
          assert reason in [:econnrefused, :timeout]
          # The last good answer is kept, still scanned, and nothing is disconnected.
          assert seed.addresses == [host]
          assert status.hosts[host].status == :ok
          assert DateTime.compare(seed.last_ok_at, seed.checked_at) == :lt
          assert a.name in Node.list()
          assert status.candidates["#{a.name}"].state == :connected

          # Back on the same port: one info line, and the seed is fine again.
          _dns = Dnsmasq.start(Keyword.put(records(ctx.epmd), :port, ctx.dns.port))

          TestNodes.wait_until(
            fn -> Tinycluster.status(poller).dns[name].status == :ok end,
            "the seed to answer again"
          )

          scans = Tinycluster.status(poller).scans
          TestNodes.wait_until(fn -> Tinycluster.status(poller).scans >= scans + 3 end, "3 scans")
        end)

      assert [warning] = Regex.scan(~r/cannot look up DNS seed #{name}[^\n]*/, log)
      assert hd(warning) =~ "keeping its last 1 addresses, and nothing is disconnected"
      assert length(Regex.scan(~r/DNS seed #{name} answers again/, log)) == 1
      refute log =~ "lost the connection to #{a.name}"
      assert a.name in Node.list()
    end

    # The answers dnsmasq does not give on cue: a fake server's, switched between polls. The
    # seed names the suite's EPMD, whose node this VM connects.
    test "NXDOMAIN, SERVFAIL, an empty answer: the last good answer is kept, still scanned",
         ctx do
      a = TestNodes.start()
      {:ok, mode} = Agent.start_link(fn -> :good end)
      name = "_epmd._tcp.keep.test"

      server =
        FakeDns.start(fn
          ^name, :srv ->
            case Agent.get(mode, & &1) do
              :good -> [{name, :srv, {0, 0, SuiteEpmd.port(), ~c"lo.keep.test"}}]
              :empty -> []
              rcode -> {:rcode, rcode}
            end

          "lo.keep.test", :a ->
            [{"lo.keep.test", :a, {127, 0, 0, 1}}]

          _, _ ->
            []
        end)

      host = "127.0.0.1:#{SuiteEpmd.port()}"
      seed = {:dns, name, type: :srv, nameservers: [server]}

      log =
        capture_log(fn ->
          poller = start_poller(ctx.dns, hosts: [seed], dns_timeout: 1_000)
          TestNodes.wait_state(poller, a, :connected)

          for {mode_now, reason} <- [nxdomain: :nxdomain, servfail: :servfail, empty: :no_records] do
            Agent.update(mode, fn _ -> mode_now end)

            TestNodes.wait_until(
              fn -> TestNodes.dns_seed(poller, name).status == {:error, reason} end,
              "the seed to fail with #{reason}"
            )

            # Scans go on with the seed's last good answer, and nothing is disconnected.
            scans = TestNodes.scans(poller)
            TestNodes.wait_scans(poller, scans + 2)
            status = Tinycluster.status(poller)
            assert status.dns[name].addresses == [host], inspect(reason)
            assert status.hosts[host].status == :ok
            assert status.candidates["#{a.name}"].state == :connected
            assert a.name in Node.list()

            Agent.update(mode, fn _ -> :good end)

            TestNodes.wait_until(
              fn -> TestNodes.dns_seed(poller, name).status == :ok end,
              "the seed to answer again"
            )
          end
        end)

      for words <- ["(nxdomain)", "(servfail)", "(no_records)"] do
        assert [line] =
                 Regex.scan(
                   ~r/cannot look up DNS seed #{name}: [^\n]*#{Regex.escape(words)}[^\n]*/,
                   log
                 )

        assert hd(line) =~ "keeping its last 1 addresses, and nothing is disconnected"
      end

      refute log =~ "lost the connection to #{a.name}"
    end

    # A server that never answers: the lookup ends at :dns_timeout, far sooner than the
    # :epmd_timeout it defaults to, and the scan of the other hosts starts then.
    test "a hung DNS server: the scan starts within :dns_timeout", ctx do
      a = TestNodes.start()
      {:ok, hung} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: false])
      on_exit(fn -> :gen_udp.close(hung) end)
      {:ok, port} = :inet.port(hung)
      attach([[:tinycluster, :scan, :start]])
      hosts = [{:dns, "hung.test", nameservers: [{"127.0.0.1", port}]}, :local]
      dns_timeout = 300

      capture_log(fn ->
        started = System.monotonic_time(:millisecond)

        poller =
          start_poller(ctx.dns, hosts: hosts, dns_timeout: dns_timeout, epmd_timeout: 10_000)

        assert_receive {:event, [:tinycluster, :scan, :start], _, %{poller: ^poller}}, 15_000
        took = System.monotonic_time(:millisecond) - started
        # A loaded machine's margin, and far from the 10 s the EPMD timeout would give.
        assert took < dns_timeout + 3_000, "the first scan started after #{took} ms"

        TestNodes.wait_state(poller, a, :connected)
        assert TestNodes.dns_seed(poller, "hung.test").status == {:error, :timeout}
      end)
    end

    test "scan/1 looks seeds up first; a failed seed with nothing else to ask is the error",
         ctx do
      a = TestNodes.start(epmd_port: ctx.epmd.port)
      seed = {:dns, "_epmd._tcp.app.test", [type: :srv] ++ ns(ctx.dns)}
      assert {:ok, candidates} = Tinycluster.scan(hosts: [seed])
      assert [%{name: name, state: :live, host: host}] = candidates
      assert name == Atom.to_string(a.name)
      assert host == "127.0.0.1:#{ctx.epmd.port}"

      assert Tinycluster.scan(hosts: [{:dns, "nope.test", ns(ctx.dns)}]) ==
               {:error, {:dns, "nope.test", :nxdomain}}
    end

    test "a seed that answers garbage is reported with its reason, the poller runs on", ctx do
      {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: false])
      {:ok, port} = :inet.port(socket)

      server =
        spawn(fn ->
          Stream.repeatedly(fn ->
            case :gen_udp.recv(socket, 0) do
              {:ok, {address, from, <<id::16, _::binary>>}} ->
                :gen_udp.send(socket, address, from, <<id::16, 0x81, 0x80, 0, 1, 0, 9, 0, 0>>)

              _ ->
                :ok
            end
          end)
          |> Stream.run()
        end)

      on_exit(fn -> Process.exit(server, :kill) end)
      garbage = {:dns, "app.test", nameservers: [{"127.0.0.1", port}]}

      log =
        capture_log(fn ->
          poller = start_poller(ctx.dns, hosts: [garbage])

          TestNodes.wait_until(
            fn -> Tinycluster.status(poller).scans >= 3 end,
            "three scans"
          )

          seed = Tinycluster.status(poller).dns["app.test"]
          assert seed.status == {:error, garbage_reason()}
          assert seed.addresses == [] and seed.last_ok_at == nil
        end)

      said =
        if garbage_reason() == :formerr,
          do: "the answer could not be decoded",
          else: "no answer in time"

      assert [_] = Regex.scan(~r/cannot look up DNS seed app.test: #{said}/, log)
    end
  end

  # OTP 27's resolver drops an answer it cannot decode and waits for a better one until its
  # timeout; OTP 25's gives up on it at once.
  defp garbage_reason,
    do: if(String.to_integer(System.otp_release()) >= 27, do: :timeout, else: :formerr)
end
