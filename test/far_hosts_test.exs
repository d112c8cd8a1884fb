defmodule Tinycluster.FarHostsTest do
  # Hosts far away for real: network namespaces (Tinycluster.Netns). Host 2 is far: its
  # epmd and nodes listen on its loopback only, behind a userspace delay line on its own
  # address (Tinycluster.DelayLine, Tinycluster.FarHost; the kernel has no netem) that holds
  # every chunk 100 or 250 ms each way. Host 3 is near: no delay. The poller runs in an agent
  # node in host 1 and is timed there, from its start. Root only; skipped otherwise.
  use ExUnit.Case, async: false

  alias Tinycluster.{DelayLine, FarHost, Netns, TestNodes}

  @moduletag :multihost
  @moduletag timeout: 240_000

  case Netns.available() do
    :ok -> :ok
    {:error, why} -> @moduletag skip: why
  end

  @far "198.18.0.2"
  @near "198.18.0.3"
  @probe_timeout 300
  # One distribution port per node of host 2, each behind the delay line.
  @ports %{c100: 9101, c250: 9103, frozen: 9104}

  setup_all do
    if Netns.available() == :ok do
      net = Netns.new(3, TestNodes.cookie())
      on_exit(fn -> Netns.teardown(net) end)
      Netns.setup!(net, loopback_epmd: [2])
      [h1, h2, h3] = net.hosts
      line = FarHost.start_line(h2, Map.values(@ports))
      %{net: net, h1: h1, h2: h2, h3: h3, delay_line: line}
    else
      :ok
    end
  end

  defp start_agent(ctx, name) do
    agent = Netns.start_agent(ctx.net, ctx.h1, name: name)
    on_exit(fn -> Netns.stop(agent) end)
    agent
  end

  defp start_far_node(ctx, key) do
    node = FarHost.start_node(ctx.net, ctx.h2, Atom.to_string(key), Map.fetch!(@ports, key))
    on_exit(fn -> Netns.stop(node) end)
    node
  end

  defp poller_opts(name, hosts, only) do
    [name: name, hosts: hosts, only: only, interval: 1_000, probe_timeout: @probe_timeout]
  end

  for delay <- [100, 250] do
    @tag delay: delay
    # How fast, against dns_cluster's probe-less connect, is the `far` benchmark's question.
    test "#{delay} ms away each way, a live node is connected, never unreachable, never " <>
           "warned about",
         %{delay: delay} = ctx do
      DelayLine.set_delay(ctx.delay_line, delay)
      probed = start_far_node(ctx, :"c#{delay}")
      agent = start_agent(ctx, "r#{delay}")
      name = Atom.to_string(probed.name)

      opts = poller_opts(:"far_#{delay}", [@far], ["c#{delay}@"])
      run = Netns.call!(agent, FarHost, :timed_poller, [opts, %{name => :connected}, 30_000])

      host = run.status.hosts[@far]
      candidate = run.status.candidates[name]
      # Never unreachable: that change is always a warning, and a failed probe an attempt.
      assert run.warnings == []
      assert %{state: :connected, attempts: 0} = candidate
      assert run.times[name], "#{name} was not connected: #{inspect(candidate)}"

      # Its distance was measured, and its probes were given as long as it is far.
      assert host.latency_us >= 2 * delay * 1000
      assert is_integer(host.probe_timeout_ms) and host.probe_timeout_ms >= 3 * 2 * delay
      assert abs(host.probe_timeout_ms - div(3 * host.latency_us, 1000)) <= 1
    end
  end

  test "a frozen node is unreachable within its host's timeout plus the probe timeout, " <>
         "far or near",
       ctx do
    frozen = start_far_node(ctx, :frozen)
    near = Netns.start_node(ctx.net, ctx.h3, "near")
    on_exit(fn -> Netns.stop(near) end)
    FarHost.freeze(frozen)
    FarHost.freeze(near)
    agent = start_agent(ctx, "rf")
    {far_name, near_name} = {Atom.to_string(frozen.name), Atom.to_string(near.name)}

    for delay <- [100, 250] do
      DelayLine.set_delay(ctx.delay_line, delay)
      opts = poller_opts(:"frozen_#{delay}", [@far, @near], ["frozen@", "near@"])
      targets = %{far_name => :unreachable, near_name => :unreachable}
      run = Netns.call!(agent, FarHost, :timed_poller, [opts, targets, 30_000])
      %{hosts: %{@far => far_host, @near => near_host}} = run.status

      # Far: the probe waited the host's timeout, and the verdict came no later than that
      # and the probe timeout after the host's EPMD answered.
      far_timeout = far_host.probe_timeout_ms
      assert is_integer(far_timeout) and far_timeout >= 3 * 2 * delay
      far_ms = run.times[far_name]
      assert far_ms, "#{far_name} never unreachable at #{delay} ms"
      assert run.status.candidates[far_name].latency_us >= far_timeout * 1000
      assert far_ms >= far_timeout
      rtt_ms = div(far_host.latency_us, 1000)

      assert far_ms <= rtt_ms + far_timeout + @probe_timeout,
             "unreachable after #{far_ms} ms (round trip #{rtt_ms} ms, timeout #{far_timeout} ms)"

      # Near: the probe timeout, as ever, whatever a far host's.
      assert near_host.probe_timeout_ms == @probe_timeout
      near_ms = run.times[near_name]
      assert near_ms, "#{near_name} never unreachable"
      assert near_ms >= @probe_timeout
      assert near_ms <= @probe_timeout + 500, "near node unreachable after #{near_ms} ms"

      # One warning each, as for any node that becomes unreachable.
      assert Enum.count(run.warnings, fn {_, text} -> text =~ far_name end) == 1
      assert Enum.count(run.warnings, fn {_, text} -> text =~ near_name end) == 1
    end
  end
end
