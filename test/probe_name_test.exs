defmodule Tinycluster.ProbeNameTest do
  # Every probed node makes an atom of the probe's name, and an atom holds 255 characters at
  # most: a longer name makes every probed node log an error report on every probe.
  use ExUnit.Case, async: false

  alias Tinycluster.{Discovery, TestEpmd, TestNodes, WatchedNode}
  alias Tinycluster.Demo.OSNode

  @valid ~r/\A[A-Za-z0-9_-]+@[A-Za-z0-9._-]+\z/

  test "a short name is the prefix, the alive part and the host" do
    assert Discovery.probe_name("a", "vm", Tinycluster) == "tinycluster_probe_a@vm"
    assert Discovery.probe_name("a", "vm", :other) =~ ~r/\Atinycluster_probe_a_\d+@vm\z/
  end

  test "every name fits 255 bytes, keeps its host and one @, and stays apart per poller" do
    for host_len <- [2, 40, 120, 200, 240, 253],
        alive_len <- [1, 17, 100, 200, 240],
        alive_len + 1 + host_len <= 255 do
      {alive, host} = {String.duplicate("a", alive_len), String.duplicate("h", host_len)}

      names =
        for poller <- [Tinycluster, :one, :two], do: Discovery.probe_name(alive, host, poller)

      for name <- names do
        assert byte_size(name) <= 255, "#{alive_len}@#{host_len}: #{byte_size(name)} bytes"
        assert name =~ @valid
        assert String.ends_with?(name, "@" <> host)
        refute name == alive <> "@" <> host
      end

      assert names ==
               for(p <- [Tinycluster, :one, :two], do: Discovery.probe_name(alive, host, p))

      # Only a host part that leaves a few bytes can keep pollers apart.
      if host_len <= 245,
        do: assert(length(Enum.uniq(names)) == 3, "pollers share #{inspect(names)}")
    end
  end

  test "an alive part outside ASCII still gives a name every node accepts" do
    assert Discovery.probe_name("nœud", "vm", Tinycluster) =~ @valid
  end

  test "a node with a 240-character name probes a node that logs nothing" do
    # The probe runs on a node of its own, whose name is 240 characters long.
    epmd = TestEpmd.start()
    peer = WatchedNode.start(epmd_port: epmd.port)
    alive = String.duplicate("l", 240 - byte_size("@" <> OSNode.host()))
    long = TestNodes.start(name: alive, args: TestNodes.code_path_args())
    assert byte_size(Atom.to_string(long.name)) == 240
    WatchedNode.settled_atoms(peer)

    for _ <- 1..5 do
      assert {:ok, [candidate]} =
               :erpc.call(long.name, Tinycluster, :scan, [[hosts: [{"127.0.0.1", epmd.port}]]])

      assert {candidate.name, candidate.state} == {Atom.to_string(peer.name), :live}
    end

    WatchedNode.settled_atoms(peer)
    noise = WatchedNode.noise(peer)
    assert noise == [], "the probed node printed:\n#{Enum.join(noise, "\n")}"
  end
end
