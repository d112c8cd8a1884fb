defmodule Tinycluster.DiscoveryTest do
  # One scan's protocol with the NIF: the request names hosts and this node's facts, never a
  # candidate; each host's listing is planned here, and the NIF probes only what the plan
  # names, and nothing for a host whose plan does not come in time.
  use ExUnit.Case, async: false

  alias Tinycluster.{Discovery, FakeServer, Options}
  alias Tinycluster.Poller.Candidates
  alias Tinycluster.FakeServer.{Epmd, Peer}

  test "the request carries hosts and this node's facts, no candidate" do
    opts = Options.new!([])
    assert {:ok, request} = Discovery.request(opts)

    assert Enum.sort(Map.keys(request)) ==
             ~w(creation dist_ports epmd_timeout_ms family hosts local_name probe_name probe_timeout_ms tls)a

    assert request.local_name == Atom.to_string(node())
    assert String.starts_with?(request.probe_name, "tinycluster_probe_")
  end

  test "the NIF's bound on timeouts is the options' own: 60 s" do
    assert_raise ArgumentError, ~r/:probe_timeout/, fn -> Options.new!(probe_timeout: 60_001) end
    opts = Options.new!(hosts: [{"127.0.0.1", 1}], probe_timeout: 60_000, epmd_timeout: 200)
    assert {:ok, request} = Discovery.request(opts)
    assert {:ok, %{id: id} = scan} = Discovery.start(request)
    assert_receive {:tinycluster_scan, ^id, {:done, _}}, 5_000
    Discovery.cancel(scan)
    over = %{request | probe_timeout_ms: 60_001}
    assert {:error, {:badarg, "timeouts must be between 1 and 60000 ms"}} = Discovery.start(over)
  end

  describe "a host's listing" do
    setup do
      peer = FakeServer.start(Peer.respond(Peer.answer("planned@vm")))
      other = FakeServer.start(Peer.respond(Peer.answer("left_out@vm")))
      names = [{"planned", peer.port}, {"left_out", other.port}]
      epmd = FakeServer.start(Epmd.reply(Epmd.names_reply(names)))
      opts = Options.new!(hosts: [{"127.0.0.1", epmd.port}], epmd_timeout: 500)
      {:ok, request} = Discovery.request(opts)
      %{peer: peer, other: other, opts: opts, request: request}
    end

    test "is planned, and only the plan's targets are probed", ctx do
      opts = %{ctx.opts | only: ["planned@"]}
      {:ok, %{id: id} = scan} = Discovery.start(ctx.request)
      assert_receive {:tinycluster_scan, ^id, {:listed, [listing]}}, 5_000
      assert [{"planned", _, "planned@" <> _}, {"left_out", _, _}] = listing.names

      context = Discovery.context(Candidates.new(), opts, 0)
      {scan, [{host, plan}]} = Discovery.listed(scan, [listing], context, fn _ -> nil end)
      assert [{"planned", _, :send_name}] = plan.targets
      assert host.names == 1 and host.listed == 2
      assert_receive {:tinycluster_scan, ^id, {:done, done}}, 5_000
      assert [%{alive: "planned", state: :live}] = Discovery.report(scan, done).candidates
      assert FakeServer.received(ctx.peer) |> Enum.count(&match?({:name, _}, &1)) == 1
      assert FakeServer.connections(ctx.other) == 0
    end

    test "whose plan never comes probes nothing, and the scan ends", ctx do
      {:ok, %{id: id}} = Discovery.start(ctx.request)
      assert_receive {:tinycluster_scan, ^id, {:listed, _listing}}, 5_000
      assert_receive {:tinycluster_scan, ^id, {:done, %{candidates: []}}}, 5_000
      assert FakeServer.connections(ctx.peer) == 0
      assert FakeServer.connections(ctx.other) == 0
      # Answered too late: the NIF no longer waits.
      assert Tinycluster.Native.plan(id, [{0, []}]) == {:error, :unknown_scan}
    end
  end
end
