defmodule Tinycluster.MultihostTest do
  # Several hosts for real: network namespaces made by the test, each with its own network
  # stack, loopback, epmd and nodes (see Tinycluster.Netns). A node in one of them runs
  # tinycluster and is driven over its stdio, since the test VM (an -sname node outside
  # every namespace) can reach none of them. Root only; skipped with a reason otherwise.
  use ExUnit.Case, async: false

  alias Tinycluster.{Candidate, Netns, NetnsAgent, TestNodes}

  @moduletag :multihost
  @moduletag timeout: 240_000

  case Netns.available() do
    :ok -> :ok
    {:error, why} -> @moduletag skip: why
  end

  # Generous: the machine is small and shared, and each node boots a whole VM.
  @wait 60_000

  setup_all do
    if Netns.available() == :ok do
      net = Netns.new(3, TestNodes.cookie())
      on_exit(fn -> Netns.teardown(net) end)
      Netns.setup!(net)
      [h1, h2, h3] = net.hosts

      nodes = %{
        h1: [Netns.start_node(net, h1, "a1")],
        h2: [Netns.start_node(net, h2, "b1"), Netns.start_node(net, h2, "b2")],
        h3: [Netns.start_node(net, h3, "c1")]
      }

      %{net: net, h1: h1, h2: h2, h3: h3, nodes: nodes}
    else
      :ok
    end
  end

  defp start_agent(ctx, host, opts) do
    agent = Netns.start_agent(ctx.net, host, opts)
    on_exit(fn -> Netns.stop(agent) end)
    agent
  end

  defdelegate start_poller(agent, opts), to: Netns
  defdelegate snapshot(agent, poller), to: Netns
  defp wait_connected(agent, poller, expected), do: Netns.wait_connected(agent, poller, expected)

  defp names(nodes), do: Enum.map(nodes, & &1.name)

  defp candidate_names(group), do: Enum.map(group.candidates, & &1.name)

  @tag :tmp_dir
  test "a node in one namespace connects every node of every namespace, and they all mesh",
       %{tmp_dir: dir} = ctx do
    # The hosts come from .hosts.erlang, as net_adm:world/0 reads it; it names the runner's
    # own host too, as such a file usually does.
    File.write!(Path.join(dir, ".hosts.erlang"), """
    '198.18.0.1'.
    '198.18.0.2'.
    "198.18.0.3".
    """)

    agent = start_agent(ctx, ctx.h1, name: "r1", cd: dir)
    poller = start_poller(agent, hosts: [:erlang_hosts], interval: 500)
    everyone = ctx.nodes |> Map.values() |> List.flatten() |> names()
    snap = wait_connected(agent, poller, everyone)

    # status, grouped by host: every EPMD answered, and each host holds its own nodes.
    groups = snap.groups
    assert Map.keys(groups) == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    assert Enum.all?(Map.values(groups), &(&1.epmd == :ok))
    assert candidate_names(groups["198.18.0.1"]) == ["a1@198.18.0.1"]
    assert candidate_names(groups["198.18.0.2"]) == ["b1@198.18.0.2", "b2@198.18.0.2"]
    assert candidate_names(groups["198.18.0.3"]) == ["c1@198.18.0.3"]

    for %Candidate{} = c <- Enum.flat_map(Map.values(groups), & &1.candidates) do
      assert c.state == :connected, "#{c.name} is #{c.state}"
    end

    # The nodes of different namespaces end up connected to each other.
    Netns.wait_until(
      fn ->
        mesh = Netns.call!(agent, NetnsAgent, :mesh, [everyone])
        Enum.all?(everyone, fn node -> (everyone -- [node]) -- mesh[node] == [] end)
      end,
      "every node to be connected to every other",
      @wait
    )

    # The runner's own host under another name: the runner itself is no candidate, and a
    # node already connected is reported connected under the name it confirmed.
    assert {:ok, [%Candidate{name: "a1@198.18.0.1", state: :connected}]} =
             Netns.call!(agent, Tinycluster, :scan, [[hosts: ["127.0.0.1"]]])
  end

  test "a host that never answers delays neither the others nor their connections", ctx do
    Netns.blackhole(ctx.h1, "198.18.0.98")
    Netns.blackhole(ctx.h1, "198.18.0.99")
    agent = start_agent(ctx, ctx.h1, name: "r2")

    poller =
      start_poller(agent,
        hosts: ["198.18.0.99", "198.18.0.2", "198.18.0.3"],
        epmd_timeout: 60_000,
        interval: 500
      )

    live = names(ctx.nodes.h2 ++ ctx.nodes.h3)
    snap = wait_connected(agent, poller, live)

    # Connected while the silent host's EPMD query is still pending, in the first scan.
    assert snap.groups["198.18.0.99"].epmd == :pending
    assert snap.groups["198.18.0.99"].candidates == []
    assert snap.status.scans == 0 and snap.status.scanning
    assert snap.groups["198.18.0.2"].epmd == :ok

    # Two silent hosts cost one timeout, not one each, and the live host is still listed.
    opts = [hosts: ["198.18.0.98", "198.18.0.99", "198.18.0.2"], epmd_timeout: 3_000]
    {ms, {:ok, candidates}} = Netns.call!(agent, NetnsAgent, :timed_scan, [opts], 30_000)
    assert ms >= 3_000 and ms < 2 * 3_000, "the scan took #{ms} ms"
    assert Enum.map(candidates, & &1.name) == ["b1@198.18.0.2", "b2@198.18.0.2"]
  end

  test "with -sname, nodes that run -name are reported, never connected", ctx do
    agent = start_agent(ctx, ctx.h1, sname: "r3")

    assert [warning] = Netns.call!(agent, Tinycluster.Hosts.Warnings, :warnings, [["198.18.0.2"]])
    assert warning =~ "short names (-sname)"

    assert {:ok, candidates} = Netns.call!(agent, Tinycluster, :scan, [[hosts: ["198.18.0.2"]]])

    assert Enum.map(candidates, &{&1.name, &1.state, &1.reason}) == [
             {"b1@198.18.0.2", :name_mismatch, {:long_name, "b1@198.18.0.2"}},
             {"b2@198.18.0.2", :name_mismatch, {:long_name, "b2@198.18.0.2"}}
           ]

    poller = start_poller(agent, hosts: ["198.18.0.2"], interval: 300)
    Netns.wait_until(fn -> snapshot(agent, poller).status.scans >= 3 end, "three scans", @wait)
    snap = snapshot(agent, poller)
    assert snap.nodes == []
    assert Enum.all?(snap.groups["198.18.0.2"].candidates, &(&1.state == :name_mismatch))
  end

  test "over IPv6 with -proto_dist inet6_tcp", ctx do
    inet6 = ~w(-proto_dist inet6_tcp)
    b6 = Netns.start_node(ctx.net, ctx.h2, "b6", address: ctx.h2.ipv6, extra: inet6)
    on_exit(fn -> Netns.stop(b6) end)
    c6 = Netns.start_node(ctx.net, ctx.h3, "c6", address: ctx.h3.ipv6, extra: inet6)
    on_exit(fn -> Netns.stop(c6) end)

    agent = start_agent(ctx, ctx.h1, name: "r6@#{ctx.h1.ipv6}", extra: inet6)
    # An IPv6 address as a string, and in brackets.
    poller = start_poller(agent, hosts: [ctx.h2.ipv6, "[#{ctx.h3.ipv6}]"], interval: 500)
    snap = wait_connected(agent, poller, [b6.name, c6.name])

    b6_entry = Enum.find(snap.groups[ctx.h2.ipv6].candidates, &(&1.name == "b6@2001:2::2"))
    assert %Candidate{state: :connected, address: "2001:2::2"} = b6_entry

    Netns.wait_until(
      fn -> c6.name in Netns.call!(agent, NetnsAgent, :mesh, [[b6.name]])[b6.name] end,
      "b6 and c6 to connect to each other",
      @wait
    )
  end
end
