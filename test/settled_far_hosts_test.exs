defmodule Tinycluster.SettledFarHostsTest do
  # Per-host pacing across real hosts: network namespaces (Tinycluster.Netns), each
  # with its own epmd and nodes, and a real dnsmasq; the poller runs in an agent node of host
  # 1. A settled host is asked seldom, its wait doubling up to `:settled_interval`; what may
  # have changed there must be asked at once all the same. `:settled_interval` is 40
  # intervals here, so that a host left settled would be asked seconds after the bounds
  # below; each test first checks that its host was settled. Times are taken in the test VM,
  # from the event to the first snapshot of the agent that shows the node connected.
  # Root and dnsmasq only; skipped with a reason otherwise.
  use ExUnit.Case, async: false

  alias Tinycluster.{Dnsmasq, Netns}

  @moduletag :multihost
  @moduletag timeout: 180_000

  case {Netns.available(), Dnsmasq.available()} do
    {:ok, :ok} -> :ok
    {{:error, why}, _} -> @moduletag skip: why
    {_, {:error, why}} -> @moduletag skip: why
  end

  @interval 500
  @settled_interval 20_000
  # What a loaded 2-core machine may add to an ask, a probe and a connect, and to the
  # snapshots that see them.
  @slack 2_000
  @wait 60_000

  setup_all do
    if Netns.available() == :ok and Dnsmasq.available() == :ok do
      # Host 1 runs the pollers and dnsmasq; 2 the restarted node; 3 and 4 the seed's hosts.
      net = Netns.new(4, Tinycluster.TestNodes.cookie())
      on_exit(fn -> Netns.teardown(net) end)
      Netns.setup!(net)
      [h1, h2, h3, h4] = net.hosts
      %{net: net, h1: h1, h2: h2, h3: h3, h4: h4}
    else
      :ok
    end
  end

  defp start_agent(ctx, host, opts) do
    agent = Netns.start_agent(ctx.net, host, opts)
    on_exit(fn -> Netns.stop(agent) end)
    agent
  end

  defp start_node(ctx, host, alive) do
    node = Netns.start_node(ctx.net, host, alive)
    on_exit(fn -> Netns.stop(node) end)
    node
  end

  defp start_poller(agent, hosts) do
    Netns.start_poller(agent,
      hosts: hosts,
      interval: @interval,
      settled_interval: @settled_interval
    )
  end

  defp host(agent, poller, label), do: Netns.snapshot(agent, poller).status.hosts[label]

  # Waits until the host `label` is settled and not asked for more than `ms`; returns its
  # view then and the test VM's time of it.
  defp settled(agent, poller, label, ms) do
    Netns.wait_until(
      fn ->
        view = host(agent, poller, label)
        view.settled and view.next_ask_in_ms > ms
      end,
      "#{label} to settle with its next ask more than #{ms} ms away: " <>
        inspect(host(agent, poller, label)),
      @wait
    )

    {host(agent, poller, label), now()}
  end

  # Milliseconds from `t0` until the agent is connected to `node`.
  defp connected_after(agent, poller, node, t0) do
    Netns.wait_until(
      fn -> node in Netns.snapshot(agent, poller).nodes end,
      "#{node} to connect",
      # Long enough to tell a node connected late, at the settled cap, from one never.
      2 * @settled_interval
    )

    now() - t0
  end

  defp now, do: System.monotonic_time(:millisecond)

  test "a node restarted slowly on a settled host is reconnected within 2 intervals of " <>
         "registering again",
       ctx do
    label = ctx.h2.ipv4
    old = start_node(ctx, ctx.h2, "app")
    # The restarted node: a VM booted now, that becomes app@ when the test says, so that
    # the restart takes as long as the test decides rather than a VM's boot.
    new = start_agent(ctx, ctx.h2, [])
    agent = start_agent(ctx, ctx.h1, name: "r1")
    poller = start_poller(agent, [label])
    Netns.wait_connected(agent, poller, [old.name], @wait)
    settled(agent, poller, label, 4 * @interval)

    Netns.stop(old)

    Netns.wait_until(
      fn ->
        Netns.snapshot(agent, poller).status.candidates["app@#{label}"].state == :down and
          not Netns.registered?(ctx.h2, "app")
      end,
      "the poller to see app@#{label} go down",
      @wait
    )

    # A slow restart, as a release's boot: 12 intervals, long after the host, reopened,
    # would have settled again on its empty listing (within 2) and seen its wait double.
    # Held open for :settled_interval after the nodedown, it is asked every interval.
    views = sample_host(agent, poller, label, now() + 12 * @interval, [])
    assert Enum.all?(views, &(not &1.settled)), "the host settled meanwhile: #{inspect(views)}"

    new = Netns.distribute(new, "app")
    registered = now()
    ms = connected_after(agent, poller, new.name, registered)
    bound = 2 * @interval + @slack

    assert ms <= bound,
           "reconnected #{ms} ms after registering (interval #{@interval} ms); " <>
             "the host: #{inspect(host(agent, poller, label))}"
  end

  # The host's view every interval until `until` (test VM's monotonic ms).
  defp sample_host(agent, poller, label, until, acc) do
    if now() >= until do
      Enum.reverse(acc)
    else
      view = host(agent, poller, label)
      Process.sleep(@interval)
      sample_host(agent, poller, label, until, [view | acc])
    end
  end

  test "a host a DNS seed's answer gains joins within about an interval, while the " <>
         "seed's other host is settled",
       ctx do
    [first, added] = [ctx.h3.ipv4, ctx.h4.ipv4]
    node = start_node(ctx, ctx.h3, "app")
    new = start_node(ctx, ctx.h4, "app")
    dns = Netns.start_dnsmasq(ctx.h1, hosts: [{first, "app.test"}])
    agent = start_agent(ctx, ctx.h1, name: "r2")
    poller = start_poller(agent, [{:dns, "app.test", nameservers: [Dnsmasq.nameserver(dns)]}])
    Netns.wait_connected(agent, poller, [node.name], @wait)

    # The next poll looks the seed up and asks its new address at once.
    bound = @interval + @slack
    settled(agent, poller, first, 0)
    refute new.name in Netns.snapshot(agent, poller).nodes

    Dnsmasq.set_hosts(dns, [{first, "app.test"}, {added, "app.test"}])
    answered = now()
    ms = connected_after(agent, poller, new.name, answered)

    assert ms <= bound,
           "#{new.name} connected #{ms} ms after the seed's answer gained #{added} " <>
             "(interval #{@interval} ms); the host: #{inspect(host(agent, poller, added))}"

    # Only the new host was asked: the seed's other host is still settled.
    assert host(agent, poller, first).settled
  end
end
