# Tests run against the real thing: this host's epmd and real nodes. Make sure epmd runs and
# that this VM is a distributed node before any test starts.

:ok = Tinycluster.Demo.OSNode.ensure_epmd()

unless Node.alive?() do
  {:ok, _} = Node.start(:"tinycluster_test_#{System.pid()}", :shortnames)
end

Node.set_cookie(String.to_atom(Tinycluster.TestNodes.cookie()))
ExUnit.start(capture_log: true)
