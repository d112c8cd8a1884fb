# Tests run against the real thing: this host's epmd and real nodes. Make sure epmd runs and
# that this VM is a distributed node before any test starts.
{_, 0} = System.cmd(System.find_executable("epmd") || "epmd", ["-daemon"])

# epmd -daemon returns before epmd listens: retry the start for a few seconds.
Enum.reduce_while(1..50, nil, fn _, _ ->
  case Node.alive?() or Node.start(:"tinycluster_test_#{System.pid()}", :shortnames) do
    true -> {:halt, :ok}
    {:ok, _} -> {:halt, :ok}
    {:error, _} = error -> Process.sleep(100) && {:cont, error}
  end
end)

Node.alive?() || raise "could not make the test VM a distributed node (is epmd installed?)"

Node.set_cookie(String.to_atom(Tinycluster.TestNodes.cookie()))
ExUnit.start(capture_log: true)
