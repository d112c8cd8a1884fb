defmodule Tinycluster.SameNameProbesTest do
  # Two probes under one name to one node at once make the node treat the second as a
  # simultaneous connection attempt: one of them gets `nok`/`alive` or loses its socket.
  # The NIF must never do that to itself, whatever its callers do at the same time.
  use ExUnit.Case, async: false

  alias Tinycluster.{TestEpmd, WatchedNode}

  @moduletag timeout: 120_000

  test "concurrent scans under one name each see the node live, and it logs nothing" do
    epmd = TestEpmd.start()
    hosts = [{"127.0.0.1", epmd.port}]
    node = WatchedNode.start(epmd_port: epmd.port)
    WatchedNode.settled_atoms(node)
    name = Atom.to_string(node.name)

    outcomes =
      for _round <- 1..20,
          result <-
            Task.await_many(
              for(
                _ <- 1..3,
                do: Task.async(fn -> Tinycluster.scan(hosts: hosts, name: :twin) end)
              ),
              30_000
            ) do
        assert {:ok, [candidate]} = result
        {candidate.name, candidate.state, candidate.reason}
      end

    assert Enum.uniq(outcomes) == [{name, :live, nil}]
    WatchedNode.settled_atoms(node)
    noise = WatchedNode.noise(node)
    assert noise == [], "the probed node printed:\n#{Enum.join(noise, "\n")}"
  end
end
