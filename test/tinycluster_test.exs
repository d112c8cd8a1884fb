defmodule TinyclusterTest do
  # One distribution and one epmd per VM: these tests share both, so they run one at a time.
  use ExUnit.Case, async: false

  alias Tinycluster.{Candidate, TestNodes}

  defp start_poller(opts \\ []) do
    name = TestNodes.poller_name()
    opts = Keyword.merge([name: name, interval: 200], opts)
    start_supervised!({Tinycluster, opts})
    name
  end

  defdelegate state_of(poller, node), to: TestNodes
  defdelegate wait_state(poller, node, state), to: TestNodes

  test "the NIF is loaded: a scan starts and answers" do
    assert {:ok, id, _handle} =
             Tinycluster.Native.start_scan(%{
               hosts: [],
               probe_name: "tinycluster_probe_x@vm",
               creation: 1,
               local_name: "x@vm",
               probe_timeout_ms: 100,
               epmd_timeout_ms: 100,
               tls: false
             })

    assert is_integer(id)
    assert_receive {:tinycluster_scan, ^id, {:done, %{candidates: []}}}, 5_000
  end

  test "plain nodes are all connected, and to each other" do
    nodes = TestNodes.start_many(3)
    start_poller()

    for node <- nodes do
      TestNodes.wait_until(fn -> node.name in Node.list() end, "#{node.name} to connect")
    end

    # Connections are transitive: each plain node ends up connected to every other.
    for node <- nodes do
      others = for n <- nodes, n != node, do: n.name

      TestNodes.wait_until(
        fn -> Enum.all?(others, &(&1 in TestNodes.nodes_of(node.name))) end,
        "#{node.name} to see the others"
      )
    end
  end

  test "a node started later joins" do
    poller = start_poller()
    TestNodes.wait_until(fn -> Tinycluster.status(poller).scans >= 2 end, "two scans")
    late = TestNodes.start()
    TestNodes.wait_until(fn -> late.name in Node.list() end, "the late node to connect")
    wait_state(poller, late, :connected)
  end

  test "a hidden node is reported hidden and not connected" do
    hidden = TestNodes.start(hidden: true)
    visible = TestNodes.start()
    poller = start_poller()
    wait_state(poller, hidden, :hidden)
    TestNodes.wait_until(fn -> visible.name in Node.list() end, "the visible node")
    refute hidden.name in Node.list(:connected)
  end

  test "a node with another cookie is rejected and not connected" do
    other = TestNodes.start(cookie: "another_cookie")
    poller = start_poller()
    wait_state(poller, other, :rejected)
    refute other.name in Node.list(:connected)
    entry = Tinycluster.status(poller).candidates[Atom.to_string(other.name)]
    assert entry.attempts >= 1
    assert entry.retry_in_ms != nil
  end

  test "a node with another cookie is left alone after two refusals, until its cookie is set" do
    other = TestNodes.start(cookie: "another_cookie")
    poller = start_poller()
    key = Atom.to_string(other.name)

    TestNodes.wait_until(
      fn -> match?(%{retry_at: :never}, Tinycluster.status(poller).candidates[key]) end,
      "#{key} to be left alone"
    )

    assert %{state: :rejected, attempts: 2} = Tinycluster.status(poller).candidates[key]
    Node.set_cookie(other.name, :another_cookie)
    wait_state(poller, other, :connected)
  end

  test "a frozen node is unreachable and the live ones connect anyway" do
    frozen = TestNodes.start()
    TestNodes.freeze(frozen)
    live = TestNodes.start_many(2)
    poller = start_poller(probe_timeout: 300)

    for node <- live do
      TestNodes.wait_until(fn -> node.name in Node.list() end, "#{node.name} to connect")
    end

    wait_state(poller, frozen, :unreachable)
    refute frozen.name in Node.list(:connected)
    assert Tinycluster.status(poller).candidates[Atom.to_string(frozen.name)].reason == :timeout

    # Once resumed, a later poll connects it.
    TestNodes.thaw(frozen)
    TestNodes.wait_until(fn -> frozen.name in Node.list() end, "the thawed node to connect")
  end

  test "scan/1 reports every kind of node and connects nothing" do
    live = TestNodes.start()
    hidden = TestNodes.start(hidden: true)
    other = TestNodes.start(cookie: "another_cookie")

    assert {:ok, candidates} = Tinycluster.scan()
    by_name = Map.new(candidates, &{&1.name, &1})
    name = &Atom.to_string(&1.name)

    # Names are strings: a scan connects nothing, so it makes no atom of a name.
    assert %Candidate{state: :live, node: nil} = by_name[name.(live)]
    assert %Candidate{state: :hidden, node: nil} = by_name[name.(hidden)]
    # A node with another cookie answers the probe too: the probe needs no cookie.
    assert %Candidate{state: :live} = by_name[name.(other)]
    assert by_name[name.(live)].latency_us > 0

    refute Enum.any?([live, hidden, other], &(&1.name in Node.list(:connected)))
    refute Map.has_key?(by_name, Atom.to_string(node()))
  end

  test "connect: false discovers and reports only" do
    node = TestNodes.start()
    poller = start_poller(connect: false)
    wait_state(poller, node, :live)
    Process.sleep(500)
    refute node.name in Node.list(:connected)
  end

  test "a node that stops is reported gone" do
    node = TestNodes.start()
    poller = start_poller()
    wait_state(poller, node, :connected)
    TestNodes.kill(node)
    wait_state(poller, node, :gone)
  end

  test "an EPMD that is not there is an error for scan/1, and the poller keeps going" do
    {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(listener)
    :ok = :gen_tcp.close(listener)

    assert {:error, {:epmd, "127.0.0.1", :econnrefused}} =
             Tinycluster.scan(hosts: [{"127.0.0.1", port}])

    poller = start_poller(hosts: [{"127.0.0.1", port}])

    TestNodes.wait_until(
      fn -> Tinycluster.status(poller).scans >= 3 end,
      "three scans against a missing EPMD"
    )

    assert %{status: {:error, :econnrefused}} = Tinycluster.status(poller).hosts["127.0.0.1"]
  end

  test "filters see a candidate under the name the NIF gives it, before its probe too" do
    # The same host twice, at two EPMD ports: each is labelled "127.0.0.1:<port>", and a
    # filter once saw its nodes before their probes as "alive@127.0.0.1:<port>" (built from
    # the label), a name no node has and no pattern on node names matches. The NIF names
    # them "alive@127.0.0.1", and the filter now sees that name.
    epmds = for _ <- 1..2, do: Tinycluster.TestEpmd.start()
    on_exit(fn -> Enum.each(epmds, &Tinycluster.TestEpmd.stop/1) end)
    [first, second] = epmds
    node = TestNodes.start(epmd_port: first.port)
    [alive, _] = node.name |> Atom.to_string() |> String.split("@")
    hosts = [{"127.0.0.1", first.port}, {"127.0.0.1", second.port}]

    poller = start_poller(hosts: hosts, only: [~r/\A#{alive}@127\.0\.0\.1\z/], connect: false)

    # Probed (so let through before its probe), and then reported under its own name.
    TestNodes.wait_until(
      fn ->
        Enum.any?(Tinycluster.status(poller).candidates, fn {_, c} -> c.alive == alive end)
      end,
      "#{alive} to be probed"
    )

    assert [candidate] = for({_, c} <- Tinycluster.status(poller).candidates, do: c)
    assert candidate.host == "127.0.0.1:#{first.port}"
    assert candidate.state == :live
  end

  describe "nodes on this host, whatever they call it" do
    test "a node started as alive@localhost is connected under that name" do
      node = TestNodes.start(name: TestNodes.unique_alive("lh") <> "@localhost")
      poller = start_poller()
      wait_state(poller, node, :connected)
      assert node.name in Node.list()
      assert Tinycluster.status(poller).candidates[Atom.to_string(node.name)].host == "local"
    end

    test "a long-named node next to this short-named one is {:long_name, name}" do
      name = TestNodes.unique_alive("ln") <> "@127.0.0.1"
      _node = TestNodes.start(name: name, long: true)
      [alive, _] = String.split(name, "@")
      poller = start_poller()

      find = fn ->
        Enum.find_value(Tinycluster.status(poller).candidates, fn {_, c} ->
          if c.alive == alive and c.state == :name_mismatch, do: c
        end)
      end

      TestNodes.wait_until(find, "#{alive} to be :name_mismatch")
      candidate = find.()
      # Not {:claimed, name} ("a stale EPMD entry"): the node is live, of the other mode.
      assert candidate.reason == {:long_name, name}
      assert candidate.description =~ "runs with long names"
    end
  end

  describe "options" do
    test "are validated with a clear ArgumentError" do
      for {opts, message} <- [
            {[interval: 0], ~r/:interval/},
            {[interval: "1s"], ~r/:interval/},
            {[probe_timeout: 60_001], ~r/:probe_timeout/},
            {[connect: :yes], ~r/:connect/},
            {[hosts: []], ~r/:hosts/},
            {[hosts: ["bad host"]], ~r/:hosts/},
            {[hosts: [{"h", 70_000}]], ~r/:hosts/},
            {[nope: 1], ~r/unknown tinycluster option :nope; known options: :connect, /},
            # A typo is named, not only listed.
            {[intreval: 1], ~r/option :intreval \(did you mean :interval\?\); known options/},
            {[probe_timout: 1], ~r/\(did you mean :probe_timeout\?\)/},
            {[name: "x"], ~r/:name/},
            {[epmd_timeout: 60_001], ~r/:epmd_timeout: 60001 .*at most 60000/},
            {[epmd_timeout: 0], ~r/:epmd_timeout/},
            {[dns_timeout: 60_001], ~r/:dns_timeout/},
            {[max_backoff: 0], ~r/:max_backoff: 0/},
            {[max_backoff: :never], ~r/:max_backoff/},
            {[include_hidden: :yes], ~r/:include_hidden: :yes \(expected a boolean\)/},
            {[log: :verbose], ~r/:log: :verbose \(expected false or a Logger level/},
            {[log: true], ~r/:log/},
            {[only: 42], ~r/:only: 42 \(expected a pattern/},
            {[only: ["a_", 42]], ~r/:only/},
            {[only: fn -> true end], ~r/:only/},
            {[except: [:atom]], ~r/:except: \[:atom\]/},
            {[interval: 1_000, max_backoff: 500],
             ~r/:max_backoff: 500 \(expected at least the :interval, 1000 ms/},
            {[interval: 1_000, settled_interval: 500], ~r/:settled_interval: 500/}
          ] do
        assert_raise ArgumentError, message, fn -> Tinycluster.child_spec(opts) end
        assert_raise ArgumentError, message, fn -> Tinycluster.scan(opts) end
      end
    end

    test "have documented defaults" do
      opts = Tinycluster.Options.new!([])

      # The README's table, every option.
      assert Map.from_struct(opts) == %{
               name: Tinycluster,
               interval: 1_000,
               probe_timeout: 300,
               epmd_timeout: 1_000,
               # :dns_timeout defaults to the :epmd_timeout.
               dns_timeout: 1_000,
               connect: true,
               hosts: [:local],
               only: nil,
               except: [],
               include_hidden: false,
               max_backoff: 60_000,
               settled_interval: 30_000,
               log: :info
             }

      assert Tinycluster.Options.new!(epmd_timeout: 700).dns_timeout == 700
      # An interval over the default :max_backoff raises it: waits never shrink below one.
      assert Tinycluster.Options.new!(interval: 120_000).max_backoff == 120_000
      assert Tinycluster.Options.new!(interval: 500, max_backoff: 500).max_backoff == 500
    end
  end
end
