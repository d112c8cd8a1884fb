defmodule Tinycluster.DnsMultihostTest do
  # DNS seeds across real hosts: network namespaces (Tinycluster.Netns), each with its own
  # epmd and nodes, and a real dnsmasq in the first one, which the poller (an agent node in
  # that namespace) asks. No basename is configured anywhere: names come from each host's
  # EPMD and each node's challenge. Root only; skipped with a reason otherwise.
  use ExUnit.Case, async: false

  alias Tinycluster.{DepProject, Dnsmasq, Netns, NetnsAgent, TestNodes}

  @moduletag :multihost
  @moduletag timeout: 300_000

  case {Netns.available(), Dnsmasq.available()} do
    {:ok, :ok} -> :ok
    {{:error, why}, _} -> @moduletag skip: why
    {_, {:error, why}} -> @moduletag skip: why
  end

  @wait 60_000

  setup_all do
    if Netns.available() == :ok and Dnsmasq.available() == :ok do
      net = Netns.new(3, TestNodes.cookie())
      on_exit(fn -> Netns.teardown(net) end)
      Netns.setup!(net)
      [h1, h2, h3] = net.hosts

      # Host-name-style names resolve through the nodes' own resolver, not through the
      # seed's DNS server: an inetrc gives every node of the test the name of host 3.
      dir = Path.join(System.tmp_dir!(), "tcdnsmh#{System.pid()}")
      File.mkdir_p!(dir)
      on_exit(fn -> File.rm_rf(dir) end)
      inetrc = Path.join(dir, "inetrc")
      File.write!(inetrc, ~s|{host, {198,18,0,3}, ["h3.app.test"]}.\n{lookup, [file, native]}.\n|)
      extra = ["-kernel", "inetrc", ~s|"#{inetrc}"|]

      nodes = %{
        h1: [Netns.start_node(net, h1, "worker", extra: extra)],
        h2: [
          Netns.start_node(net, h2, "app", extra: extra),
          Netns.start_node(net, h2, "worker", extra: extra)
        ],
        h3: [Netns.start_node(net, h3, "app", address: "h3.app.test", extra: extra)]
      }

      %{net: net, h1: h1, h2: h2, h3: h3, nodes: nodes, extra: extra}
    else
      :ok
    end
  end

  defp start_agent(ctx, host, opts) do
    opts = Keyword.update(opts, :extra, ctx.extra, &(ctx.extra ++ &1))
    agent = Netns.start_agent(ctx.net, host, opts)
    on_exit(fn -> Netns.stop(agent) end)
    agent
  end

  defdelegate start_poller(agent, opts), to: Netns
  defdelegate snapshot(agent, poller), to: Netns
  defdelegate wait_connected(agent, poller, expected, timeout \\ @wait), to: Netns

  defp names(nodes), do: Enum.map(nodes, & &1.name)

  defp seed(dns, name, opts \\ []),
    do: {:dns, name, [nameservers: [Dnsmasq.nameserver(dns)]] ++ opts}

  defp hosts(ipv4s), do: for(ip <- ipv4s, do: {ip, "app.test"})

  test "one seed, no basename: every node of every address under its own name", ctx do
    dns = Netns.start_dnsmasq(ctx.h1, hosts: hosts(~w(198.18.0.1 198.18.0.2 198.18.0.3)))
    agent = start_agent(ctx, ctx.h1, name: "r1")
    poller = start_poller(agent, hosts: [seed(dns, "app.test")], interval: 500)
    everyone = ctx.nodes |> Map.values() |> List.flatten() |> names()
    snap = wait_connected(agent, poller, everyone)

    # Two basenames on one address, the same basename on two hosts, an IP-style and a
    # host-name-style name: all found through one seed, under the names they gave.
    assert Enum.sort(Map.keys(snap.status.candidates)) == [
             "app@198.18.0.2",
             "app@h3.app.test",
             "worker@198.18.0.1",
             "worker@198.18.0.2"
           ]

    groups = snap.groups

    assert Enum.map(groups["198.18.0.2"].candidates, & &1.name) == [
             "app@198.18.0.2",
             "worker@198.18.0.2"
           ]

    assert Enum.map(groups["198.18.0.3"].candidates, & &1.name) == ["app@h3.app.test"]
    # The agent's own address is in DNS too; the agent is never its own candidate.
    assert Enum.map(groups["198.18.0.1"].candidates, & &1.name) == ["worker@198.18.0.1"]
    refute Map.has_key?(snap.status.candidates, Atom.to_string(agent.name))

    for c <- Enum.flat_map(Map.values(groups), & &1.candidates) do
      assert c.state == :connected, "#{c.name} is #{c.state}"
    end

    assert %{status: :ok, addresses: addresses, last_ok_at: %DateTime{}} =
             snap.status.dns["app.test"]

    assert Enum.sort(addresses) == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
  end

  test "an address added to DNS joins at a later poll; one removed is gone, and stays connected",
       ctx do
    dns = Netns.start_dnsmasq(ctx.h1, hosts: hosts(["198.18.0.2"]))
    agent = start_agent(ctx, ctx.h1, name: "r2")
    interval = 1_000
    poller = start_poller(agent, hosts: [seed(dns, "app.test")], interval: interval)
    wait_connected(agent, poller, names(ctx.nodes.h2))
    [app3] = names(ctx.nodes.h3)
    refute app3 in snapshot(agent, poller).nodes

    # Every poll looks the name up again. (How soon it joins is measured in bench/, not
    # here: bench/run --only dns.)
    Dnsmasq.set_hosts(dns, hosts(["198.18.0.2", "198.18.0.3"]))
    wait_connected(agent, poller, [app3])

    # Removed from DNS: its candidates are gone from status, and nothing is disconnected.
    Dnsmasq.set_hosts(dns, hosts(["198.18.0.2"]))

    Netns.wait_until(
      fn ->
        snap = snapshot(agent, poller)

        Enum.all?(snap.status.candidates, fn {_, c} ->
          c.host != "198.18.0.3" or c.state == :gone
        end)
      end,
      "the removed host's candidates to be gone",
      @wait
    )

    snap = snapshot(agent, poller)
    assert snap.status.candidates["app@h3.app.test"].state == :gone
    assert snap.status.dns["app.test"].addresses == ["198.18.0.2"]
    refute Map.has_key?(snap.status.hosts, "198.18.0.3")
    assert app3 in snap.nodes
    assert Enum.all?(names(ctx.nodes.h2), &(&1 in snap.nodes))
  end

  test "mix tinycluster.scan --dns asks a real DNS server for the hosts", ctx do
    dns = Netns.start_dnsmasq(ctx.h1, hosts: hosts(["198.18.0.2"]))

    argv =
      ["tinycluster.scan", "--dns", "app.test", "--nameserver", "127.0.0.1:#{dns.port}"] ++
        ["--name", "scan@198.18.0.1"]

    {out, status} = DepProject.mix(argv, ns: ctx.h1.ns, stderr_to_stdout: true)
    assert status == 0, out

    # The seed's one address is a host like any other, named by itself, and its nodes are
    # found under their own names; nothing is connected.
    assert out =~
             ~r/^198\.18\.0\.2\s+198\.18\.0\.2:4369\s+[\d.]+ ms\s+\d+ ms\s+answered: 2 names$/m

    assert out =~ ~r/^app@198\.18\.0\.2\s+198\.18\.0\.2\s+live\s/m
    assert out =~ ~r/^worker@198\.18\.0\.2\s+198\.18\.0\.2\s+live\s/m
    refute out =~ "198.18.0.3"
  end

  # README, "Clusters in containers and clouds": a failed lookup disconnects nothing. After a
  # good answer, each kind of failed one in turn: the seed keeps its last good addresses,
  # still scanned, its nodes stay connected, one warning when it starts failing and one
  # line when it answers again.
  test "a seed keeps its last good addresses through every kind of failed answer", ctx do
    good = [{"198.18.0.2", "keep.test"}, {"198.18.0.2", "relay.test"}]
    dns = Netns.start_dnsmasq(ctx.h1, hosts: good)
    agent = start_agent(ctx, ctx.h1, name: "r5")
    :ok = Netns.call!(agent, NetnsAgent, :capture_logs, [])
    # relay.test is asked through a relay that can answer SERVFAIL, which dnsmasq never does.
    relay = Netns.call!(agent, NetnsAgent, :start_dns_relay, [dns.port])
    seeds = [seed(dns, "keep.test"), {:dns, "relay.test", nameservers: [{"127.0.0.1", relay}]}]
    poller = start_poller(agent, hosts: seeds, interval: 300)
    h2 = names(ctx.nodes.h2)
    wait_connected(agent, poller, h2)

    # {seed, how it fails, what it fails with}; the Kubernetes scale-to-zero case is the
    # empty answer (no A record), a flood of addresses is refused whole (never asked).
    flood = for i <- 1..1_100, do: {"198.18.#{div(i, 250) + 1}.#{rem(i, 250) + 1}", "keep.test"}

    failures = [
      {"keep.test", [hosts: [{"198.18.0.2", "relay.test"}]], :nxdomain},
      {"keep.test", [hosts: [{"2001:2::2", "keep.test"} | tl(good)]], :no_records},
      {"keep.test", [hosts: [{"0.0.0.0", "keep.test"} | tl(good)]],
       {:malformed, "0.0.0.0 is not a host's address"}},
      {"keep.test", [hosts: flood ++ tl(good)], {:too_many_addresses, 1024}},
      {"relay.test", [relay: :servfail], :servfail}
    ]

    for {name, break, reason} <- failures do
      case break do
        [hosts: hosts] -> Dnsmasq.set_hosts(dns, hosts)
        [relay: mode] -> Netns.call!(agent, NetnsAgent, :dns_relay_mode, [mode])
      end

      Netns.wait_until(
        fn -> snapshot(agent, poller).status.dns[name].status == {:error, reason} end,
        "#{name} to fail with #{inspect(reason)}: #{inspect(snapshot(agent, poller).status.dns)}",
        @wait
      )

      # Scans go on with what the seed answered last, and nothing is disconnected.
      at = snapshot(agent, poller).status.scans
      Netns.wait_until(fn -> snapshot(agent, poller).status.scans >= at + 2 end, "2 scans")
      snap = snapshot(agent, poller)
      assert snap.status.dns[name].addresses == ["198.18.0.2"], inspect(reason)
      assert snap.status.hosts["198.18.0.2"].status == :ok
      assert Enum.all?(h2, &(&1 in snap.nodes)), inspect(reason)

      for c <- snap.groups["198.18.0.2"].candidates,
          do: assert(c.state == :connected, "#{c.name} is #{c.state} after #{inspect(reason)}")

      Dnsmasq.set_hosts(dns, good)
      Netns.call!(agent, NetnsAgent, :dns_relay_mode, [:relay])

      Netns.wait_until(
        fn -> snapshot(agent, poller).status.dns[name].status == :ok end,
        "#{name} to answer again",
        @wait
      )
    end

    logs = for {_level, text} <- Netns.call!(agent, NetnsAgent, :logs, []), do: text

    for {seed, episodes} <- [{"keep.test", 4}, {"relay.test", 1}] do
      warnings = Enum.filter(logs, &(&1 =~ "cannot look up DNS seed #{seed}:"))
      assert length(warnings) == episodes, Enum.join(warnings, "\n")
      assert Enum.all?(warnings, &(&1 =~ "keeping its last 1 addresses"))
      again = Enum.filter(logs, &(&1 =~ "DNS seed #{seed} answers again"))
      assert length(again) == episodes, Enum.join(logs, "\n")
    end

    for words <- [
          "(nxdomain)",
          "(no_records)",
          "(malformed)",
          "(too_many_addresses)",
          "(servfail)"
        ],
        do: assert(Enum.any?(logs, &(&1 =~ "cannot look up DNS seed" and &1 =~ words)), words)

    refute Enum.any?(logs, &(&1 =~ "lost the connection"))
  end

  test "SRV: the EPMD port each record gives, on every host", ctx do
    # A cluster whose EPMDs listen on 4370 everywhere; SRV publishes the port.
    for host <- [ctx.h1, ctx.h2, ctx.h3], do: Netns.start_epmd(host, 4370)
    epmd = ["-epmd_port", "4370"]
    p2 = Netns.start_node(ctx.net, ctx.h2, "srv", extra: ctx.extra ++ epmd, epmd_port: 4370)
    on_exit(fn -> Netns.stop(p2) end)
    p3 = Netns.start_node(ctx.net, ctx.h3, "srv", extra: ctx.extra ++ epmd, epmd_port: 4370)
    on_exit(fn -> Netns.stop(p3) end)

    dns =
      Netns.start_dnsmasq(ctx.h1,
        hosts: [{"198.18.0.2", "h2.app.test"}, {"198.18.0.3", "h3-srv.app.test"}],
        srv: [
          {"_epmd._tcp.app.test", "h2.app.test", 4370},
          {"_epmd._tcp.app.test", "h3-srv.app.test", 4370}
        ]
      )

    agent = start_agent(ctx, ctx.h1, name: "r3", extra: epmd)
    seed = seed(dns, "_epmd._tcp.app.test", type: :srv)
    poller = start_poller(agent, hosts: [seed], interval: 500)
    snap = wait_connected(agent, poller, [p2.name, p3.name])

    assert Enum.sort(snap.status.dns["_epmd._tcp.app.test"].addresses) ==
             ["198.18.0.2:4370", "198.18.0.3:4370"]

    # Only the nodes of the EPMDs on 4370: those of port 4369 are not listed there.
    assert Enum.sort(Map.keys(snap.status.candidates)) == ["srv@198.18.0.2", "srv@198.18.0.3"]
  end

  test "AAAA records under -proto_dist inet6_tcp", ctx do
    inet6 = ~w(-proto_dist inet6_tcp)
    b6 = Netns.start_node(ctx.net, ctx.h2, "b6", address: ctx.h2.ipv6, extra: inet6)
    on_exit(fn -> Netns.stop(b6) end)
    c6 = Netns.start_node(ctx.net, ctx.h3, "c6", address: ctx.h3.ipv6, extra: inet6)
    on_exit(fn -> Netns.stop(c6) end)

    # The name has A records too; an inet6_tcp node asks AAAA first and uses those.
    dns =
      Netns.start_dnsmasq(ctx.h1,
        hosts: hosts(["198.18.0.2", "198.18.0.3", ctx.h2.ipv6, ctx.h3.ipv6])
      )

    agent = start_agent(ctx, ctx.h1, name: "r6@#{ctx.h1.ipv6}", extra: inet6)
    poller = start_poller(agent, hosts: [seed(dns, "app.test")], interval: 500)
    snap = wait_connected(agent, poller, [b6.name, c6.name])
    assert Enum.sort(snap.status.dns["app.test"].addresses) == ["2001:2::2", "2001:2::3"]
    assert snap.status.candidates["b6@2001:2::2"].state == :connected
  end

  # OTP 25 runs global with prevent_overlapping_partitions: a node that loses another makes
  # the nodes it knows drop it too, so a partition ends with that host cut from everyone.
  # Healing is then the poller's job: the host's node answers the probe again and is
  # connected, and global's sync brings the rest of the mesh back.
  test "a host cut off for longer than the tick time is back in the full mesh", ctx do
    tick = ["-kernel", "net_ticktime", "4"]
    p2 = Netns.start_node(ctx.net, ctx.h2, "part", extra: ctx.extra ++ tick)
    on_exit(fn -> Netns.stop(p2) end)
    p3 = Netns.start_node(ctx.net, ctx.h3, "part", extra: ctx.extra ++ tick)
    on_exit(fn -> Netns.stop(p3) end)

    dns =
      Netns.start_dnsmasq(ctx.h1,
        hosts: [{"198.18.0.2", "part.test"}, {"198.18.0.3", "part.test"}]
      )

    agent = start_agent(ctx, ctx.h1, name: "r4", extra: tick)

    assert {:ok, true} =
             Netns.call(agent, :application, :get_env, [
               :kernel,
               :prevent_overlapping_partitions,
               true
             ])

    interval = 1_000

    poller =
      start_poller(agent, hosts: [seed(dns, "part.test")], only: ["part@"], interval: interval)

    everyone = [agent.name, p2.name, p3.name]

    full_mesh? = fn ->
      mesh = Netns.call!(agent, NetnsAgent, :mesh, [[p2.name, p3.name]])
      agent_nodes = snapshot(agent, poller).nodes

      Enum.all?([p2.name, p3.name], &(&1 in agent_nodes)) and
        Enum.all?(mesh, fn {node, nodes} -> (everyone -- [node]) -- nodes == [] end)
    end

    Netns.wait_until(full_mesh?, "the full mesh before the cut", @wait)

    Netns.link(ctx.h3, :down)
    cut = System.monotonic_time(:millisecond)

    Netns.wait_until(
      fn -> p3.name not in snapshot(agent, poller).nodes end,
      "the agent to lose #{p3.name}",
      @wait
    )

    # Longer than the tick time: both sides have long given up on each other.
    Process.sleep(max(10_000 - (System.monotonic_time(:millisecond) - cut), 0))

    assert snapshot(agent, poller).status.candidates["part@198.18.0.3"].state in [
             :down,
             :unreachable
           ]

    Netns.link(ctx.h3, :up)
    Netns.wait_until(full_mesh?, "the full mesh after the cut", @wait)
    assert snapshot(agent, poller).status.candidates["part@198.18.0.3"].state == :connected
  end
end
