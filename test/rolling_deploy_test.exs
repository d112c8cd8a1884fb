defmodule Tinycluster.RollingDeployTest do
  # A rolling deploy across real hosts: network namespaces (Tinycluster.Netns), four of them
  # running one node each, which finds the others through a DNS seed (a real dnsmasq in a
  # fifth). Host by host, the old node leaves, stops 3 s later, and a new one starts in its
  # place. Each node records its own nodeups and nodedowns (`NetnsAgent.watch_nodes/0`),
  # stamped with the OS's clock, which the test reads afterwards: what the nodes saw, not
  # what a test polling them happened to catch. Root only; skipped with a reason otherwise.
  #
  # The new node takes the old one's name: a release restarted on the same host does, and
  # it is the harder case, since only its creation tells it from the incarnation its peers
  # hold as left. It listens on whatever port it gets, as such a release does.
  use ExUnit.Case, async: false

  alias Tinycluster.{Dnsmasq, Netns, NetnsAgent, TestNodes}

  @moduletag :multihost
  @moduletag timeout: 300_000

  case {Netns.available(), Dnsmasq.available()} do
    {:ok, :ok} -> :ok
    {{:error, why}, _} -> @moduletag skip: why
    {_, {:error, why}} -> @moduletag skip: why
  end

  @interval 500
  # How long each old node stays up after its leave returned, as a release's shutdown does.
  @leaving 3_000
  # What a loaded machine (two cores shared with other test runs) adds to a wait the issue
  # states in intervals.
  @slack 3_000
  @wait 60_000

  setup do
    net = Netns.new(5, TestNodes.cookie())
    on_exit(fn -> Netns.teardown(net) end)
    Netns.setup!(net)
    %{net: net}
  end

  test "4 DNS-seeded hosts, each old node leaving 3 s before it stops", %{net: net} do
    [h1 | app_hosts] = net.hosts
    app = for host <- app_hosts, do: {host.ipv4, "app.test"}
    # On h1's own address, which the other namespaces reach over the bridge.
    dns = Netns.start_dnsmasq(h1, address: h1.ipv4, hosts: app)
    seed = {:dns, "app.test", nameservers: [Dnsmasq.nameserver(dns)]}

    nodes = Map.new(app_hosts, &{&1.index, start_app(net, &1, seed)})
    wait_meshed(Map.values(nodes), @wait, "the four nodes to mesh")

    {_nodes, steps} =
      Enum.reduce(app_hosts, {nodes, []}, fn host, {nodes, steps} ->
        {new, step} = roll(net, host, nodes, seed)
        {Map.put(nodes, host.index, new), [step | steps]}
      end)

    for step <- Enum.reverse(steps) do
      IO.puts(
        "rolling_deploy_test: #{step.host}: the new node booted in #{step.boot_ms} ms and " <>
          "meshed #{step.mesh_ms} ms after it answered"
      )
    end
  end

  # One host's turn: its old node leaves, stays up for @leaving ms, stops; a new node of the
  # same name starts there. Returns the new node and what was measured.
  defp roll(net, host, nodes, seed) do
    old = nodes[host.index]
    staying = nodes |> Map.delete(host.index) |> Map.values()
    staying_names = Enum.map(staying, & &1.name)
    started = now()

    assert {:ok, %{told: told, disconnected: gone}} = Netns.call!(old, Tinycluster, :leave, [])
    left = now()
    assert Enum.sort(told) == Enum.sort(staying_names)
    assert Enum.sort(gone) == Enum.sort(staying_names)

    Process.sleep(@leaving)

    # 1. Throughout its leaving, the old node is connected to no one: no staying node got a
    # nodeup for it, nor it for any of them, and each holds it as left.
    old_events = events(old)
    old_nodes = Netns.call!(old, :erlang, :nodes, [])
    stopped = now()
    held = for peer <- staying, do: {peer.name, state_of(peer, old)}
    Netns.stop(old)

    for peer <- staying do
      ups = for {at, :nodeup, node} <- events(peer), node == old.name, at in left..stopped, do: at

      assert ups == [],
             "#{peer.name} got a nodeup for #{old.name} while it was leaving, " <>
               "#{inspect(Enum.map(ups, &(&1 - left)))} ms after its leave returned"
    end

    assert [] == for({at, :nodeup, _} = e <- old_events, at >= left, do: e),
           "#{old.name} got a nodeup while it was leaving"

    assert old_nodes == [], "#{old.name} was connected to #{inspect(old_nodes)}"
    assert Enum.all?(held, &match?({_, :left}, &1)), "#{old.name} is #{inspect(held)}"

    # The new node, under the same name: EPMD must have let the old one's go first.
    Netns.wait_until(fn -> not Netns.registered?(host, "app") end, "#{old.name} to leave EPMD")
    booting = now()
    new = start_app(net, host, seed)

    # 2. Meshed with every staying node as fast as any node: by their pollers, or its own.
    wait_meshed([new | staying], @wait, "#{new.name} to mesh after the restart")
    ended = now()

    meshed =
      for peer <- staying do
        [at | _] = for {at, :nodeup, node} <- events(peer), node == new.name, at > stopped, do: at
        at
      end
      |> Enum.max()

    mesh_ms = max(meshed - new.up_at, 0)

    assert mesh_ms <= 2 * @interval + @slack,
           "#{new.name} meshed #{mesh_ms} ms after it answered"

    # 3. No connection between two staying nodes was lost at any time of the step.
    seen = for peer <- staying, do: {peer, events(peer)}

    downs =
      for {peer, events} <- seen,
          {at, :nodedown, node} <- events,
          node in staying_names,
          at in started..ended,
          do: "#{peer.name} lost #{node} #{at - left} ms after the leave returned"

    assert downs == [],
           "staying nodes lost one another while #{old.name} was replaced:\n" <>
             Enum.join(downs, "\n") <>
             "\nevery event of the step:\n" <> timeline(seen, started, left)

    {new, %{host: host.ipv4, boot_ms: new.up_at - booting, mesh_ms: mesh_ms}}
  end

  # A node `app@<host's address>` that records its node events and runs a poller under the
  # default name (so that `Tinycluster.leave/0` tells its peers'), seeded by `seed`.
  defp start_app(net, host, seed) do
    agent = Netns.start_agent(net, host, name: "app")
    up_at = now()
    :ok = Netns.call!(agent, NetnsAgent, :watch_nodes, [])
    opts = [name: Tinycluster, hosts: [seed], interval: @interval]
    Tinycluster = Netns.call!(agent, NetnsAgent, :start_poller, [opts])
    Map.put(agent, :up_at, up_at)
  end

  defp events(node), do: Netns.call!(node, NetnsAgent, :node_events, [])

  defp state_of(node, of) do
    case Netns.call!(node, Tinycluster, :status, []).candidates[Atom.to_string(of.name)] do
      nil -> nil
      candidate -> candidate.state
    end
  end

  defp timeline(seen, from, zero) do
    Enum.map_join(seen, "\n", fn {peer, events} ->
      lines = for {at, kind, node} <- events, at >= from, do: "  #{at - zero} ms #{kind} #{node}"
      Enum.join(["#{peer.name}:" | lines], "\n")
    end)
  end

  defp meshed?(members) do
    Enum.all?(members, fn member ->
      nodes = Netns.call!(member, :erlang, :nodes, [])
      Enum.all?(members, &(&1 == member or &1.name in nodes))
    end)
  end

  defp wait_meshed(members, timeout, what),
    do: Netns.wait_until(fn -> meshed?(members) end, what, timeout)

  # The OS's system time, as the agents stamp their node events.
  defp now, do: System.os_time(:millisecond)
end
