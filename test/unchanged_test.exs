defmodule Tinycluster.UnchangedTest do
  # A host whose EPMD lists what it did last time, every node connected or held back, costs
  # its listing and the scan's end, and no per-candidate message (`Tinycluster.Poller.Plan` finds
  # nothing to probe or report), and a change on it is still seen at once. A private EPMD
  # keeps other test runs' nodes, which come and go on the system one, out of the listing.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{TestEpmd, TestNodes}

  test "an unchanged host costs no candidate message; a new node on it is reported" do
    epmd = TestEpmd.start()
    # Their allow lists name nobody: their probes are refused, and so are the connection
    # attempts that follow, after which they are left alone, probe included. (A node that
    # refused only another cookie is left alone too, but still probed: its probe is silent,
    # and only a probe shows that it restarted at the same port.)
    allow = ["-eval", "net_kernel:allow([nobody@nowhere])."]
    _nodes = TestNodes.start_many(2, epmd_port: epmd.port, args: allow)
    name = TestNodes.poller_name()

    capture_log(fn ->
      # This VM's own EPMD does not know these nodes either, so every connect fails and the
      # candidates are held back (backoff) rather than probed: nothing to probe.
      start_supervised!(
        {Tinycluster, name: name, hosts: [{"127.0.0.1", epmd.port}], interval: 100}
      )

      TestNodes.wait_until(
        fn ->
          candidates = Map.values(Tinycluster.status(name).candidates)

          length(candidates) == 2 and
            Enum.all?(candidates, &(&1.state == :rejected and &1.retry_in_ms > 1_500))
        end,
        "both nodes to be held back for a while",
        30_000
      )

      pid = Process.whereis(name)
      :erlang.trace(pid, true, [:receive])
      before = Tinycluster.status(name)

      TestNodes.wait_until(
        fn -> Tinycluster.status(name).scans >= before.scans + 3 end,
        "three more scans"
      )

      status = Tinycluster.status(name)
      assert status.hosts["127.0.0.1"].unchanged
      # The host's status still follows each answer, from the report.
      last_ok = before.hosts["127.0.0.1"].last_ok_at
      assert DateTime.compare(status.hosts["127.0.0.1"].last_ok_at, last_ok) == :gt
      assert Enum.all?(Map.values(status.candidates), &(&1.state == :rejected))
      # A quiet scan's messages: the host's listing, when it is due, and the scan's end.
      tags = scan_messages()
      assert Enum.count(tags, &(&1 == :done)) >= 3
      assert Enum.sort(Enum.uniq(tags)) -- [:done, :listed] == [], inspect(tags)

      late = TestNodes.start(epmd_port: epmd.port)

      TestNodes.wait_until(
        fn -> Map.has_key?(Tinycluster.status(name).candidates, to_string(late.name)) end,
        "the new node to be seen"
      )

      :erlang.trace(pid, false, [:receive])
      assert to_string(late.name) in List.flatten(candidate_messages())
      refute Tinycluster.status(name).hosts["127.0.0.1"].unchanged
    end)
  end

  # The tag of every scan message the traced poller received so far.
  defp scan_messages(acc \\ []) do
    receive do
      {:trace, _, :receive, {:tinycluster_scan, _, {tag, _}}} -> scan_messages([tag | acc])
      {:trace, _, :receive, _} -> scan_messages(acc)
    after
      0 -> Enum.reverse(acc)
    end
  end

  # The alive names of every candidates message the traced poller received so far.
  defp candidate_messages(acc \\ []) do
    receive do
      {:trace, _, :receive, {:tinycluster_scan, _, {:candidates, list}}} ->
        candidate_messages([Enum.map(list, & &1.name) | acc])

      {:trace, _, :receive, _} ->
        candidate_messages(acc)
    after
      0 -> Enum.reverse(acc)
    end
  end
end
