defmodule Tinycluster.OTPMatrixTest do
  # Peers of every OTP release found (the system's, and those `.ci/otp/install` unpacked):
  # each must answer the probe, be connected or reported as its kind, and notice nothing of
  # the probe. The poller runs on this VM's release; CI runs this file on OTP 25 and on
  # OTP 27, so each release is probed from both.
  use ExUnit.Case, async: false

  alias Tinycluster.{OTPReleases, TestEpmd, TestNodes, WatchedNode}

  @moduletag timeout: 180_000

  IO.puts(
    "OTP matrix: this VM runs OTP #{System.otp_release()}; peers of OTP " <>
      Enum.map_join(OTPReleases.all(), ", ", & &1.release) <>
      if(length(OTPReleases.all()) == 1,
        do: " only (run .ci/otp/install for the others)",
        else: ""
      )
  )

  defp start_poller(nodes, opts \\ []) do
    name = TestNodes.poller_name()
    only = Enum.map(nodes, &Atom.to_string(&1.name))
    start_supervised!({Tinycluster, Keyword.merge([name: name, interval: 200, only: only], opts)})
    name
  end

  defp allow_args(nodes) do
    list = Enum.map_join(nodes, ",", &"'#{&1}'")
    ["-eval", "net_kernel:allow([#{list}]), io:format(\"allow_set~n\")."]
  end

  test "a mixed cluster: this VM's poller meshes one node of every release" do
    nodes = for %{erl: erl} <- OTPReleases.all(), do: TestNodes.start(erl: erl)
    poller = start_poller(nodes)

    for node <- nodes, do: TestNodes.wait_state(poller, node, :connected)

    # Connections are transitive across releases too: every node sees every other.
    for node <- nodes do
      others = for n <- nodes, n != node, do: n.name

      TestNodes.wait_until(
        fn -> Enum.all?(others, &(&1 in TestNodes.nodes_of(node.name))) end,
        "#{node.name} to see the nodes of the other releases"
      )
    end

    releases = for node <- nodes, do: :erpc.call(node.name, :erlang, :system_info, [:otp_release])
    assert Enum.map(releases, &List.to_string/1) == Enum.map(OTPReleases.all(), & &1.release)
  end

  for %{release: release, erl: erl} <- OTPReleases.all() do
    describe "peers of OTP #{release}" do
      @erl erl

      test "plain nodes are connected, and to each other" do
        [a, b] = TestNodes.start_many(2, erl: @erl)
        poller = start_poller([a, b])

        for node <- [a, b], do: TestNodes.wait_state(poller, node, :connected)

        TestNodes.wait_until(
          fn -> b.name in TestNodes.nodes_of(a.name) end,
          "#{a.name} to see #{b.name}"
        )
      end

      test "a hidden node is :hidden and not connected" do
        hidden = TestNodes.start(erl: @erl, hidden: true)
        poller = start_poller([hidden])
        TestNodes.wait_state(poller, hidden, :hidden)
        refute hidden.name in Node.list(:connected)
      end

      test "a node with another cookie is :rejected" do
        other = TestNodes.start(erl: @erl, cookie: "another_cookie_#{System.pid()}")
        poller = start_poller([other])
        TestNodes.wait_state(poller, other, :rejected)
        refute other.name in Node.list(:connected)
      end

      test "net_kernel:allow/1: connected when it names this node, :rejected when not" do
        friendly = TestNodes.start(erl: @erl, args: allow_args([node()]))
        strict = TestNodes.start(erl: @erl, args: allow_args([:nobody@nowhere]))
        # EPMD lists a node before its -eval runs: probed earlier, it would have no list yet.
        for node <- [friendly, strict], do: WatchedNode.await_line(node, "allow_set")
        poller = start_poller([friendly, strict])

        TestNodes.wait_state(poller, friendly, :connected)
        TestNodes.wait_state(poller, strict, :rejected)

        assert Tinycluster.status(poller).candidates[to_string(strict.name)].reason ==
                 :not_allowed
      end

      test "a hundred probes: no log line, no nodeup or nodedown, one atom per poller" do
        # A private EPMD: no other test run's poller can reach this node and spoil the watch.
        epmd = TestEpmd.start()
        hosts = [{"127.0.0.1", epmd.port}]
        node = WatchedNode.start(erl: @erl, epmd_port: epmd.port)
        before = WatchedNode.settled_atoms(node)

        # Fifty probes from scans under one name, fifty from a poller under another.
        for _ <- 1..50 do
          assert {:ok, [%{state: :live, name: name}]} =
                   Tinycluster.scan(hosts: hosts, name: :silent_probe_scan)

          assert name == Atom.to_string(node.name)
        end

        poller = TestNodes.poller_name()
        start_supervised!({Tinycluster, name: poller, hosts: hosts, interval: 20, connect: false})

        TestNodes.wait_until(
          fn -> Tinycluster.status(poller).scans >= 50 end,
          "fifty scans of the poller"
        )

        assert TestNodes.state_of(poller, node) == :live
        stop_supervised!({Tinycluster, poller})

        after_probes = WatchedNode.settled_atoms(node)
        noise = WatchedNode.noise(node)
        assert noise == [], "the probed node printed:\n#{Enum.join(noise, "\n")}"
        assert after_probes - before <= 2, "its atom table grew by #{after_probes - before}"
        refute node.name in Node.list(:connected)
      end
    end
  end
end
