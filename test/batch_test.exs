defmodule Tinycluster.BatchTest do
  # Candidates whose probes finished together are connected as one batch (issue 13): what
  # `Tinycluster.Poller.Batch` takes from a mailbox, and a real poller whose candidates queued up
  # (the NIF's own batching is tested in native/tinycluster_nif/tests/batch.rs).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.TestNodes
  alias Tinycluster.Poller.Batch

  describe "take_queued/2" do
    test "takes the queued candidates of its scan, in order, and leaves every other message" do
      others = [
        {:tinycluster_scan, 7, {:host, %{label: "a"}}},
        {:tinycluster_scan, 8, {:candidates, [%{alive: "of another scan"}]}},
        :unrelated,
        {:tinycluster_scan, 7, {:done, %{}}}
      ]

      [host, other_scan, unrelated, done] = others
      send(self(), host)
      send(self(), {:tinycluster_scan, 7, {:candidates, [%{alive: "b"}, %{alive: "c"}]}})
      send(self(), other_scan)
      send(self(), unrelated)
      send(self(), {:tinycluster_scan, 7, {:candidates, [%{alive: "d"}]}})
      send(self(), done)

      assert Batch.take_queued(7, [%{alive: "a"}]) ==
               [%{alive: "a"}, %{alive: "b"}, %{alive: "c"}, %{alive: "d"}]

      assert Process.info(self(), :messages) == {:messages, others}
    end

    test "never waits for a candidate that is not there yet" do
      parent = self()

      spawn(fn ->
        Process.sleep(200)
        send(parent, {:tinycluster_scan, 1, {:candidates, [%{alive: "late"}]}})
      end)

      # Had it waited, the late candidate would be in the batch.
      assert Batch.take_queued(1, [%{alive: "a"}]) == [%{alive: "a"}]
      assert_receive {:tinycluster_scan, 1, {:candidates, [%{alive: "late"}]}}, 5_000
    end

    test "a batch is bounded; the rest stays queued for the next" do
      for i <- 1..100, do: send(self(), {:tinycluster_scan, 3, {:candidates, [%{i: i}]}})
      batch = Batch.take_queued(3, [])
      assert length(batch) == 63
      assert List.last(batch) == %{i: 63}
      assert {:message_queue_len, 37} = Process.info(self(), :message_queue_len)
      assert length(Batch.take_queued(3, [])) == 37
    end
  end

  describe "a poller" do
    setup do
      on_exit(fn -> :erlang.trace_pattern({Batch, :take_queued, 2}, false, [:local]) end)
    end

    test "connects the candidates whose messages queued together in one batch, each once" do
      nodes = TestNodes.start_many(3)
      names = MapSet.new(nodes, &to_string(&1.name))
      test = self()
      id = {__MODULE__, make_ref()}
      handler = fn _, _, meta, _ -> send(test, {:connected, meta.node}) end
      :telemetry.attach(id, [:tinycluster, :node, :connected], handler, nil)
      on_exit(fn -> :telemetry.detach(id) end)

      {batches, log} = queued_batches(names, 3)
      assert Enum.any?(batches, &MapSet.subset?(names, &1)), inspect(batches)
      for node <- nodes, do: assert(node.name in Node.list())
      # The "connected" lines come after the connects; each node's event follows its line.
      for name <- names, do: assert_receive({:connected, ^name}, 10_000)

      for name <- names do
        assert length(String.split(log, "tinycluster: connected to #{name}\n")) == 2, log
      end
    end
  end

  # Starts a poller, suspends it once it planned but before its first probes answer, lets the candidates queue,
  # resumes it and returns the alive names of each batch it took (traced). Tries again with
  # a fresh poller if a candidate of `names` was taken before the suspension (a busy host),
  # once the nodes are disconnected again, so that it connects them itself. Returns the
  # batches and the log of the last try.
  defp queued_batches(names, tries) do
    {{queued?, batches}, log} = with_log(fn -> try_batches(names) end)

    if tries > 1 and not (queued? and Enum.any?(batches, &MapSet.subset?(names, &1))) do
      for name <- names, do: Node.disconnect(String.to_atom(name))

      TestNodes.wait_until(
        fn -> not Enum.any?(names, &(String.to_atom(&1) in Node.list())) end,
        "the nodes to disconnect"
      )

      flush_connected()
      queued_batches(names, tries - 1)
    else
      {batches, log}
    end
  end

  defp flush_connected do
    receive do
      {:connected, _} -> flush_connected()
    after
      0 -> :ok
    end
  end

  defp try_batches(names) do
    name = TestNodes.poller_name()
    # Suspended as soon as it has planned the local host's listing (its plan is sent while
    # it handles that message), so that the probes' answers queue up behind it.
    :erlang.trace(:new_processes, true, [:receive])
    pid = start_supervised!({Tinycluster, name: name, interval: 60_000}, id: name)
    :erlang.trace(:new_processes, false, [:receive])

    receive do
      {:trace, ^pid, :receive, {:tinycluster_scan, _, {:listed, _}}} -> :ok
    after
      10_000 -> flunk("the poller got no listing")
    end

    :ok = :sys.suspend(pid)
    :erlang.trace(pid, false, [:receive])
    flush_traces()
    :erlang.trace_pattern({Batch, :take_queued, 2}, [{:_, [], [{:return_trace}]}], [:local])
    :erlang.trace(pid, true, [:call])

    queued? =
      try do
        TestNodes.wait_until(
          fn -> MapSet.subset?(names, queued_names(pid)) end,
          "the candidates to queue up",
          5_000
        ) == :ok
      rescue
        ExUnit.AssertionError -> false
      end

    :ok = :sys.resume(pid)

    TestNodes.wait_until(
      fn -> Enum.all?(names, &(String.to_atom(&1) in Node.list())) end,
      "the nodes to connect"
    )

    :erlang.trace(pid, false, [:call])
    batches = traced_batches([])
    stop_supervised!(name)
    {queued?, batches}
  end

  defp flush_traces do
    receive do
      {:trace, _, :receive, _} -> flush_traces()
    after
      0 -> :ok
    end
  end

  # The names of our candidates' messages in the poller's mailbox, that it has not taken.
  defp queued_names(pid) do
    {:messages, messages} = Process.info(pid, :messages)

    for {:tinycluster_scan, _, {:candidates, list}} <- messages,
        %{name: name} <- list,
        into: MapSet.new(),
        do: name
  end

  defp traced_batches(acc) do
    receive do
      {:trace, _, :return_from, {Batch, :take_queued, 2}, batch} ->
        names = for %{name: name} <- batch, into: MapSet.new(), do: name
        traced_batches([names | acc])

      {:trace, _, :call, _} ->
        traced_batches(acc)
    after
      200 -> Enum.reverse(acc)
    end
  end
end
