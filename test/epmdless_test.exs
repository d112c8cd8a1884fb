defmodule Tinycluster.EpmdlessTest do
  # Clusters without EPMD, across real hosts: network namespaces (Tinycluster.Netns) where no
  # epmd runs, whose nodes run with -start_epmd false -erl_epmd_port 6789, as a release does
  # in Phoenix's clustering guide. The poller runs in an agent node with the same flags, in
  # the first namespace, and asks a real dnsmasq there for the hosts; it lists each host by
  # probing port 6789 on it, whose node's challenge names it. Root only; skipped with a
  # reason otherwise.
  use ExUnit.Case, async: false

  alias Tinycluster.{Dnsmasq, Netns, NetnsAgent, TestNodes}

  @moduletag :multihost
  @moduletag timeout: 300_000

  case {Netns.available(), Dnsmasq.available()} do
    {:ok, :ok} -> :ok
    {{:error, why}, _} -> @moduletag skip: why
    {_, {:error, why}} -> @moduletag skip: why
  end

  @wait 60_000
  @dist_port 6789

  # Host 1 runs each test's agent and dnsmasq; 2 to 5 are the A records' hosts, 6 the SRV
  # record's; 7 is where a node is replaced, 8 never has a node, 9 has a node that logs
  # everything. A host has room for one node only (they all listen on 6789), so a test that
  # changes a host's node has a host of its own, and the tests run in any order.
  setup_all do
    if Netns.available() == :ok and Dnsmasq.available() == :ok do
      net = Netns.new(9, TestNodes.cookie())
      on_exit(fn -> Netns.teardown(net) end)
      Netns.setup!(net, epmd: false)

      apps =
        for host <- Enum.slice(net.hosts, 1..5),
            do: Netns.start_node(net, host, "app", dist_port: @dist_port)

      %{net: net, apps: apps}
    else
      :ok
    end
  end

  defp host(ctx, index), do: Enum.at(ctx.net.hosts, index - 1)

  defp start_agent(ctx, name) do
    agent = Netns.start_agent(ctx.net, host(ctx, 1), name: name, dist_port: @dist_port)
    on_exit(fn -> Netns.stop(agent) end)
    agent
  end

  defp start_node(ctx, index, alive, opts \\ []) do
    node = Netns.start_node(ctx.net, host(ctx, index), alive, [dist_port: @dist_port] ++ opts)
    on_exit(fn -> Netns.stop(node) end)
    node
  end

  defdelegate start_poller(agent, opts), to: Netns
  defdelegate snapshot(agent, poller), to: Netns
  defdelegate wait_connected(agent, poller, expected, timeout \\ @wait), to: Netns

  defp seed(dns, name, opts \\ []),
    do: {:dns, name, [nameservers: [Dnsmasq.nameserver(dns)]] ++ opts}

  defp a_records(indexes), do: for(i <- indexes, do: {"198.18.0.#{i}", "app.test"})

  # Waits until `poller` has finished `count` more scans, and returns its snapshot then.
  defp after_scans(agent, poller, count) do
    at = snapshot(agent, poller).status.scans

    Netns.wait_until(
      fn -> snapshot(agent, poller).status.scans >= at + count end,
      "#{count} more scans",
      @wait
    )

    snapshot(agent, poller)
  end

  test "hosts of A and SRV records, no EPMD anywhere: every node is found and they mesh", ctx do
    dns =
      Netns.start_dnsmasq(host(ctx, 1),
        hosts: a_records(2..5) ++ [{"198.18.0.6", "h6.app.test"}],
        srv: [{"_dist._tcp.app.test", "h6.app.test", @dist_port}]
      )

    agent = start_agent(ctx, "r1")
    seeds = [seed(dns, "app.test"), seed(dns, "_dist._tcp.app.test", type: :srv)]
    poller = start_poller(agent, hosts: seeds, interval: 500)
    apps = Enum.map(ctx.apps, & &1.name)
    snap = wait_connected(agent, poller, apps)

    # Each under the name its challenge gave, every one connected.
    assert Enum.sort(Map.keys(snap.status.candidates)) == Enum.map(2..6, &"app@198.18.0.#{&1}")

    for {name, c} <- snap.status.candidates,
        do: assert(c.state == :connected, "#{name} is #{c.state}")

    # The A records' hosts are probed on the local node's fixed port, the SRV record's on
    # the port it gives (the same here); none is asked through EPMD.
    assert Enum.sort(snap.status.dns["app.test"].addresses) == Enum.map(2..5, &"198.18.0.#{&1}")
    assert snap.status.dns["_dist._tcp.app.test"].addresses == ["198.18.0.6:#{@dist_port}"]
    assert map_size(snap.status.hosts) == 5

    for {label, host} <- snap.status.hosts do
      assert host.status == :ok, "#{label}: #{inspect(host)}"
      assert host.dist_port == @dist_port, "#{label}: #{inspect(host)}"
      assert host.names == 1, "#{label}: #{inspect(host)}"
    end

    # Connected by the agent, the nodes mesh through global, without EPMD as well.
    everyone = [agent.name | apps]

    Netns.wait_until(
      fn ->
        mesh = Netns.call!(agent, NetnsAgent, :mesh, [apps])
        Enum.all?(mesh, fn {node, nodes} -> (everyone -- [node]) -- nodes == [] end)
      end,
      "the full mesh of #{inspect(everyone)}",
      @wait
    )

    # No epmd was ever needed: none runs in any namespace, and port 4369 refuses everywhere.
    Netns.assert_no_epmd(ctx.net, agent)
  end

  test "a node replaced under a new name is connected within about an interval", ctx do
    dns = Netns.start_dnsmasq(host(ctx, 1), hosts: a_records([7]))
    old = start_node(ctx, 7, "app")
    agent = start_agent(ctx, "r2")
    interval = 1_000
    poller = start_poller(agent, hosts: [seed(dns, "app.test")], interval: interval)
    wait_connected(agent, poller, [old.name])

    Netns.stop(old)

    Netns.wait_until(
      fn -> not Netns.listening?(host(ctx, 7), @dist_port) end,
      "#{old.name} to stop listening"
    )

    Netns.wait_until(
      fn -> old.name not in snapshot(agent, poller).nodes end,
      "the agent to lose #{old.name}",
      @wait
    )

    # The same port on the same host, another name: start_node/4 returns once it listens.
    new = start_node(ctx, 7, "app2")
    answering = System.monotonic_time(:millisecond)
    snap = wait_connected(agent, poller, [new.name])
    took = System.monotonic_time(:millisecond) - answering

    # An interval, and generous slack for a loaded machine: the host is held open after its
    # node went down, so its next ask waited no doubled interval.
    assert took <= interval + 10_000, "connected #{took} ms after its port answered"
    assert snap.status.candidates["app2@198.18.0.7"].state == :connected
    gone = snap.status.candidates["app@198.18.0.7"]
    assert gone.state != :connected, inspect(gone)
    assert "app2@198.18.0.7" in snap.status.hosts["198.18.0.7"].nodes
  end

  test "a host whose port refuses has no node yet: no error, no line per poll", ctx do
    dns = Netns.start_dnsmasq(host(ctx, 1), hosts: a_records([2, 8]))
    agent = start_agent(ctx, "r3")
    :ok = Netns.call!(agent, NetnsAgent, :capture_logs, [])
    interval = 300

    # settled_interval as short as the interval: every poll probes every host.
    poller =
      start_poller(agent,
        hosts: [seed(dns, "app.test")],
        interval: interval,
        settled_interval: interval
      )

    [app2 | _] = ctx.apps
    wait_connected(agent, poller, [app2.name])
    snap = after_scans(agent, poller, 10)

    empty = snap.status.hosts["198.18.0.8"]
    assert empty.status == :ok, inspect(empty)
    assert empty.names == 0, inspect(empty)
    assert empty.dist_port == @dist_port, inspect(empty)
    assert empty.nodes == []
    assert snap.status.last_scan.failed_hosts == []

    # A refused port lists no node and is no error: nothing is said about that host, and
    # nothing at all is a warning.
    logs = Netns.call!(agent, NetnsAgent, :logs, [])
    printed = Enum.map_join(logs, "\n", fn {level, text} -> "#{level}: #{text}" end)
    refute Enum.any?(logs, fn {_, text} -> text =~ "198.18.0.8" end), printed
    assert for({level, _} <- logs, level in [:warning, :error], do: level) == [], printed
  end

  test "a probed node logs nothing about the probes", ctx do
    # A node that logs everything and prints every node monitor message of every node type.
    # Connected, its host is still listed by a probe of its port at every poll: the probe's
    # name is the poller's own, never this node's peer.
    watcher =
      ~s|spawn(fun() -> ok = net_kernel:monitor_nodes(true, [{node_type, all}]), | <>
        ~s|io:format("watching~n"), | <>
        ~s|(fun L() -> receive M -> io:format("message ~p~n", [M]), L() end end)() end).|

    quiet =
      start_node(ctx, 9, "quiet", extra: ["-kernel", "logger_level", "all", "-eval", watcher])

    await_line(quiet, "watching")
    drain(quiet, 2_000)
    dns = Netns.start_dnsmasq(host(ctx, 1), hosts: a_records([9]))
    agent = start_agent(ctx, "r4")
    interval = 300

    # settled_interval as short as the interval: every poll probes the host.
    poller =
      start_poller(agent,
        hosts: [seed(dns, "app.test")],
        interval: interval,
        settled_interval: interval
      )

    wait_connected(agent, poller, [quiet.name])
    # The connection itself is seen once: the agent's nodeup.
    joined = drain(quiet, 2_000)
    assert Enum.any?(joined, &(&1 =~ "nodeup")), Enum.join(joined, "\n")

    checked = snapshot(agent, poller).status.hosts["198.18.0.9"].checked_at
    snap = after_scans(agent, poller, 10)

    # Listed again by a probe, named by its challenge, since the connection.
    host = snap.status.hosts["198.18.0.9"]
    assert host.status == :ok and host.names == 1, inspect(host)
    assert DateTime.compare(host.checked_at, checked) == :gt, inspect(host)
    assert quiet.name in snap.nodes

    noise = drain(quiet, 1_000)
    assert noise == [], "the node printed, probed:\n#{Enum.join(noise, "\n")}"
  end

  defp await_line(node, text) do
    receive do
      {port, {:data, {_, line}}} when port == node.port ->
        if line =~ text, do: :ok, else: await_line(node, text)
    after
      @wait -> flunk("#{node.name} never printed #{inspect(text)}")
    end
  end

  # What `node` printed until it printed nothing for `quiet_ms`.
  defp drain(node, quiet_ms, acc \\ []) do
    receive do
      {port, {:data, {_, line}}} when port == node.port -> drain(node, quiet_ms, [line | acc])
    after
      quiet_ms -> Enum.reverse(acc)
    end
  end
end
