defmodule Tinycluster.FixedPortTest do
  # Which ports a cluster without EPMD listens on, as this node's flags say, and the host
  # specs they make: pure rules, the flags passed in. The NIF refuses a wider range than
  # it probes.
  use ExUnit.Case, async: true

  alias Tinycluster.{Discovery, FixedPort, Limits, Options}

  @module "Elixir.Tinycluster.EPMD"

  test "a fixed port wins; Tinycluster.EPMD's range is cut to the ports probed" do
    assert FixedPort.ports(6789, nil, nil) == {6789, 6789}
    assert FixedPort.ports(6789, @module, {9100, 9115}) == {6789, 6789}
    assert FixedPort.ports(nil, @module, {9100, 9115}) == {9100, 9115}
    assert Limits.get(:max_dist_ports) == 64
    assert FixedPort.ports(nil, @module, {9100, 9999}) == {9100, 9163}
    # Any free port, another module, EPMD: nothing to probe.
    assert FixedPort.ports(nil, @module, nil) == nil
    assert FixedPort.ports(nil, "Elixir.Other.EPMD", {9100, 9115}) == nil
    assert FixedPort.ports(nil, nil, {9100, 9115}) == nil
  end

  test "every host gets the range, but for a port given with it; :local always" do
    specs = Tinycluster.Hosts.Specs.specs([:local, "b", {"c", 9200}], :a@vm, :inet)
    # The local host's EPMD port may be another (ERL_EPMD_PORT): still the range.
    specs = [%{hd(specs) | epmd_port: 4999} | tl(specs)]

    assert [
             %{label: "local", dist_port: 9100, dist_port_last: 9115},
             %{label: "b", dist_port: 9100, dist_port_last: 9115},
             %{label: "c", dist_port: 9200, dist_port_last: nil}
           ] = FixedPort.specs(specs, {9100, 9115})

    assert [%{dist_port: 6789, dist_port_last: nil} | _] = FixedPort.specs(specs, {6789, 6789})
    assert FixedPort.specs(specs, nil) == specs
  end

  test "what is said once about the module's setup" do
    facts = &%{epmd_module: @module, range: &1, ports: FixedPort.ports(nil, @module, &1)}
    assert FixedPort.warnings(facts.({9100, 9115}), nil, nil) == []
    assert [no_range] = FixedPort.warnings(facts.(nil), nil, nil)
    assert no_range =~ "inet_dist_listen_min FIRST inet_dist_listen_max LAST"
    assert [wide] = FixedPort.warnings(facts.({9100, 9999}), nil, nil)
    assert wide =~ "probes the first 64 of them"
    # With a fixed port the module listens there: nothing to say.
    assert FixedPort.warnings(facts.(nil), nil, 6789) == []

    other = %{epmd_module: "Elixir.Other.EPMD", range: nil, ports: nil}
    assert [unknown] = FixedPort.warnings(other, nil, nil)
    assert unknown =~ "does not know"
    assert FixedPort.warnings(%{other | epmd_module: nil}, nil, nil) == []
  end

  test "the NIF refuses a range of more ports than it probes" do
    {:ok, request} = Discovery.request(Options.new!(hosts: [{"127.0.0.1", 1}]))
    [host] = request.hosts
    wide = %{request | hosts: [%{host | dist_port: 9100, dist_port_last: 9164}]}
    assert {:error, {:badarg, why}} = Discovery.start(wide)
    assert why =~ "a range of 1 to 64 ports"
    backwards = %{request | hosts: [%{host | dist_port: 9100, dist_port_last: 9099}]}
    assert {:error, {:badarg, _}} = Discovery.start(backwards)
  end
end
