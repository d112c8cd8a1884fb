defmodule Tinycluster.BusyTest do
  # The README's `:busy` row, on real nodes: a node that already has a connection with the
  # name a probe claims answers the probe's `send_name` with status `alive`, and the probe
  # reports `:busy` (reason `:alive`) in `Tinycluster.scan/1` and in `Tinycluster.status/1`;
  # the poller does nothing about it and asks again next poll, so once that connection is
  # gone it connects the node. (How `:busy` merges into a candidate already `:rejected` is
  # the pure table's, in candidates_test.exs.)
  #
  # The connection is made by a real node named as this VM's probes of the poller: it
  # stands in for a probe's handshake still in flight, which a scan cannot be made to meet
  # on purpose.
  use ExUnit.Case, async: false

  alias Tinycluster.{Discovery, TestNodes}

  @moduletag timeout: 120_000

  # Starts a node whose name is the probe name of poller `poller` on this VM, and connects
  # it to `target`.
  defp impostor(poller, target) do
    [alive, host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
    name = Discovery.probe_name(alive, host, poller)
    eval = "io:format(\"connected ~p~n\", [net_kernel:connect_node('#{target.name}')])."
    impostor = TestNodes.start(name: name, args: ["-eval", eval])
    assert TestNodes.await_line(impostor, "connected ") == "connected true"
    assert Atom.to_string(impostor.name) == name
    impostor
  end

  test "a node connected to the probe's name answers alive: :busy, then connected" do
    # Only the target is scanned: the impostor is listed by the same EPMD, and a probe of it
    # would claim its own name.
    prefix = "busy#{System.unique_integer([:positive])}_"
    target = TestNodes.start(name: TestNodes.unique_alive(prefix))
    poller = TestNodes.poller_name()
    impostor = impostor(poller, target)

    # One scan under the poller's name: its probes claim the impostor's name.
    assert {:ok, [candidate]} = Tinycluster.scan(name: poller, only: [prefix])

    assert {candidate.name, candidate.state, candidate.reason} ==
             {Atom.to_string(target.name), :busy, :alive}

    start_supervised!({Tinycluster, name: poller, interval: 200, only: [prefix]})
    TestNodes.wait_state(poller, target, :busy)
    assert %{state: :busy, reason: :alive} = TestNodes.candidate(poller, target)

    # Still :busy after polls that came later, and never connected meanwhile.
    scans = TestNodes.scans(poller)
    TestNodes.wait_scans(poller, scans + 3)
    assert %{state: :busy, reason: :alive} = TestNodes.candidate(poller, target)
    refute target.name in Node.list(:connected)

    # The connection goes with the impostor: the next probes get `ok`, and the poller
    # connects the node.
    TestNodes.kill(impostor)
    TestNodes.wait_state(poller, target, :connected)
    assert target.name in Node.list()
  end
end
