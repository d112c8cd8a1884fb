defmodule Tinycluster.HermeticTest do
  # `mix test` keeps to an EPMD of its own (Tinycluster.SuiteEpmd): this VM, the nodes the
  # tests start and every `:local` poller and scan use it, so that whatever runs on the
  # host's EPMD (4369) is in no test's view. The second test needs foreign nodes on the
  # host's EPMD, which .ci/foreign-nodes starts for CI; it runs when
  # TINYCLUSTER_FOREIGN_NODES names them.
  use ExUnit.Case, async: false

  alias Tinycluster.{SuiteEpmd, TestEpmd, TestNodes}

  defp alive(node), do: node |> Atom.to_string() |> String.split("@") |> hd()

  test "this VM, its nodes and :local use the suite's EPMD, not the host's" do
    port = SuiteEpmd.port()
    assert port != 4369
    assert :init.get_argument(:epmd_port) == {:ok, [[~c"#{port}"]]}
    assert Tinycluster.LocalNode.epmd_port() == port

    node = TestNodes.start()
    assert TestEpmd.registered?(node.alive, port)
    assert TestEpmd.registered?(alive(node()), port)
    assert {:ok, [candidate]} = Tinycluster.scan(only: [node.alive <> "@"])
    assert {candidate.name, candidate.state} == {Atom.to_string(node.name), :live}
  end

  @tag :foreign_nodes
  test "nodes on the host's EPMD are in no test's view" do
    foreign = String.split(System.fetch_env!("TINYCLUSTER_FOREIGN_NODES"), ",")
    for name <- foreign, do: assert(TestEpmd.registered?(name, 4369), "#{name} is not on 4369")
    refute TestEpmd.registered?(alive(node()), 4369)

    assert {:ok, candidates} = Tinycluster.scan()
    assert Enum.filter(candidates, &(&1.alive in foreign)) == []

    poller = TestNodes.poller_name()
    start_supervised!({Tinycluster, name: poller, interval: 200})
    TestNodes.wait_scans(poller, 3)
    seen = Tinycluster.status(poller).candidates |> Map.values() |> Enum.map(& &1.alive)
    assert Enum.filter(seen, &(&1 in foreign)) == []
    refute Enum.any?(Node.list(:known), &(alive(&1) in foreign))
  end
end
