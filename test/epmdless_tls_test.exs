defmodule Tinycluster.EpmdlessTlsTest do
  # Clusters without EPMD that run TLS distribution, across real hosts: network namespaces
  # (Tinycluster.Netns) where no epmd runs, whose nodes run with -proto_dist inet_tls
  # (client certificates required, TLS 1.3) and -start_epmd false -erl_epmd_port 6789, as a
  # release does. The poller runs in an agent node of the same alive part and flags in the
  # first namespace, and asks a real dnsmasq there for the hosts. Its probe of port 6789 is
  # a TLS ClientHello, which names no node: a host that answers with a ServerHello is taken
  # to run a node of the agent's own alive part under that host's address. Root, openssl
  # and dnsmasq only; skipped with a reason otherwise.
  use ExUnit.Case, async: false

  alias Tinycluster.{Dnsmasq, Netns, NetnsAgent, TestNodes, TlsNodes}

  @moduletag :multihost
  @moduletag timeout: 300_000

  tls =
    if TlsNodes.available?(),
      do: :ok,
      else: {:error, "no openssl to make a certificate for TLS nodes (apt-get install openssl)"}

  case {Netns.available(), tls, Dnsmasq.available()} do
    {:ok, :ok, :ok} -> :ok
    {{:error, why}, _, _} -> @moduletag skip: why
    {_, {:error, why}, _} -> @moduletag skip: why
    {_, _, {:error, why}} -> @moduletag skip: why
  end

  @wait 60_000
  @dist_port 6789

  # Host 1 runs the agent and dnsmasq; 2 and 3 run `app` nodes, 4 a node named `other`.
  setup do
    net = Netns.new(4, TestNodes.cookie())
    on_exit(fn -> Netns.teardown(net) end)
    Netns.setup!(net, epmd: false)

    dir = Path.join(System.tmp_dir!(), "tcepmdlesstls#{System.pid()}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf(dir) end)
    tls = TlsNodes.args(TlsNodes.configs(dir).tls13)

    {:ok, net: net, tls: tls}
  end

  defp host(ctx, index), do: Enum.at(ctx.net.hosts, index - 1)

  defp start_node(ctx, index, alive) do
    opts = [dist_port: @dist_port, extra: ctx.tls]
    node = Netns.start_node(ctx.net, host(ctx, index), alive, opts)
    on_exit(fn -> Netns.stop(node) end)
    node
  end

  defp start_agent(ctx, name) do
    opts = [name: name, dist_port: @dist_port, extra: ctx.tls]
    agent = Netns.start_agent(ctx.net, host(ctx, 1), opts)
    on_exit(fn -> Netns.stop(agent) end)
    agent
  end

  test "TLS nodes of one name, no EPMD anywhere: found, connected, meshed; another name is not",
       ctx do
    apps = for i <- [2, 3], do: start_node(ctx, i, "app")
    other = start_node(ctx, 4, "other")

    dns =
      Netns.start_dnsmasq(host(ctx, 1), hosts: for(i <- 2..4, do: {"198.18.0.#{i}", "app.test"}))

    agent = start_agent(ctx, "app")
    assert agent.name == :"app@198.18.0.1"
    assert Netns.call!(agent, :init, :get_argument, [:proto_dist]) == {:ok, [[~c"inet_tls"]]}

    seed = {:dns, "app.test", nameservers: [Dnsmasq.nameserver(dns)]}
    poller = Netns.start_poller(agent, hosts: [seed], interval: 500)
    names = Enum.map(apps, & &1.name)
    snap = Netns.wait_connected(agent, poller, names, @wait)

    # Every host is probed on the fixed port, and answered there.
    assert Enum.sort(snap.status.dns["app.test"].addresses) == Enum.map(2..4, &"198.18.0.#{&1}")
    assert map_size(snap.status.hosts) == 3

    for {label, host} <- snap.status.hosts do
      assert host.status == :ok, "#{label}: #{inspect(host)}"
      assert host.dist_port == @dist_port, "#{label}: #{inspect(host)}"
    end

    for name <- names,
        do: assert(snap.status.candidates[Atom.to_string(name)].state == :connected)

    # Connected by the agent, the TLS nodes mesh through global, without EPMD as well.
    everyone = [agent.name | names]

    Netns.wait_until(
      fn ->
        mesh = Netns.call!(agent, NetnsAgent, :mesh, [names])
        Enum.all?(mesh, fn {node, nodes} -> (everyone -- [node]) -- nodes == [] end)
      end,
      "the full mesh of #{inspect(everyone)}",
      @wait
    )

    # The documented limitation: a TLS listener's ServerHello names no node, so host 4's
    # node is taken to be `app@198.18.0.4`, this node's alive part there. Its handshake then
    # names it `other@198.18.0.4`, which OTP refuses for the name it dialled: that node is
    # never connected, by the agent or, through global, by anyone. The refusals back off
    # like any other: a few connection attempts in ten polls, not one per poll.
    snap = after_scans(agent, poller, 10)
    refute other.name in snap.nodes

    guessed_only = Map.keys(snap.status.candidates) -- Enum.map(names, &Atom.to_string/1)
    assert guessed_only == ["app@198.18.0.4"]

    guessed = snap.status.candidates["app@198.18.0.4"]
    assert guessed.state != :connected, inspect(guessed)
    assert guessed.attempts in 1..3, inspect(guessed)

    for {node, nodes} <- Netns.call!(agent, NetnsAgent, :mesh, [names]),
        do: refute(other.name in nodes, "#{node} is connected to #{other.name}")

    # No epmd was ever needed: none runs in any namespace, and port 4369 refuses everywhere.
    Netns.assert_no_epmd(ctx.net, agent)
  end

  # Waits until `poller` has finished `count` more scans, and returns its snapshot then.
  defp after_scans(agent, poller, count) do
    at = Netns.snapshot(agent, poller).status.scans

    Netns.wait_until(
      fn -> Netns.snapshot(agent, poller).status.scans >= at + count end,
      "#{count} more scans",
      @wait
    )

    Netns.snapshot(agent, poller)
  end
end
