# Tests run against the real thing: a real epmd and real nodes. The suite's epmd is one of
# its own (Tinycluster.SuiteEpmd, on the port the `mix test` alias gave this VM), never the
# host's on 4369; it runs before this VM becomes a distributed node.

:ok = Tinycluster.SuiteEpmd.start!()

unless Node.alive?() do
  {:ok, _} = Node.start(:"tinycluster_test_#{System.pid()}", :shortnames)
end

Node.set_cookie(String.to_atom(Tinycluster.TestNodes.cookie()))
ExUnit.after_suite(fn _ -> Tinycluster.DepProject.remove() end)

# Foreign nodes on the host's EPMD, for test/hermetic_test.exs: .ci/foreign-nodes starts
# them in CI and names them in TINYCLUSTER_FOREIGN_NODES.
if System.get_env("TINYCLUSTER_FOREIGN_NODES") in [nil, ""],
  do: ExUnit.configure(exclude: [foreign_nodes: true] ++ ExUnit.configuration()[:exclude])

ExUnit.start(capture_log: true)
