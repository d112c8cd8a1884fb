defmodule Tinycluster.DiscoveryTest do
  # One scan's protocol with the NIF: what the request carries, and that a request the NIF
  # would refuse is cut to what it takes instead (so that a poller with that many
  # candidates still scans).
  use ExUnit.Case, async: false

  alias Tinycluster.{Discovery, Options}

  test "lists longer than the NIF takes are cut and named, and the scan starts" do
    opts = Options.new!(hosts: [{"127.0.0.1", 1}], epmd_timeout: 200)
    hold = for i <- 1..70_000, do: {"127.0.0.1", "n#{i}", 1}
    assert {:ok, request} = Discovery.request(opts, [], %{hold: hold, tls: []})
    assert request.capped == [:hold]
    assert length(request.hold) == 65_536
    assert {:ok, %{id: id} = scan} = Discovery.start(request)
    assert_receive {:tinycluster_scan, ^id, {:done, _}}, 5_000
    Discovery.cancel(scan)

    # Uncut, the NIF refuses it.
    assert_raise ArgumentError, fn -> Tinycluster.Native.start_scan(%{request | hold: hold}) end
  end

  test "a request within bounds is sent as it is, and names nothing capped" do
    opts = Options.new!([])
    assert {:ok, request} = Discovery.request(opts, [], %{hold: [{"local", "a", 1}]})
    assert request.capped == []
    assert request.hold == [{"local", "a", 1}]
    assert request.local_name == Atom.to_string(node())
    assert String.starts_with?(request.probe_name, "tinycluster_probe_")
  end

  test "the NIF's bound on timeouts is the options' own: 60 s" do
    assert_raise ArgumentError, ~r/:probe_timeout/, fn -> Options.new!(probe_timeout: 60_001) end
    opts = Options.new!(hosts: [{"127.0.0.1", 1}], probe_timeout: 60_000, epmd_timeout: 200)
    assert {:ok, request} = Discovery.request(opts, [])
    assert {:ok, %{id: id} = scan} = Discovery.start(request)
    assert_receive {:tinycluster_scan, ^id, {:done, _}}, 5_000
    Discovery.cancel(scan)
    over = %{request | probe_timeout_ms: 60_001}
    assert {:error, {:badarg, "timeouts must be between 1 and 60000 ms"}} = Discovery.start(over)
  end
end
