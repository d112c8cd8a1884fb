defmodule Tinycluster.BatchTest do
  # Candidates whose probes finished together are connected as one batch: what
  # `Tinycluster.Poller.Batch` takes from a mailbox, and a real poller whose candidates queued up
  # (the NIF's own batching is tested in native/tinycluster_nif/tests/batch.rs).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{Telemetry, TestNodes}
  alias Tinycluster.Poller.{Batch, Report}

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

  # What the poller (and the processes its task supervisor starts) is traced for: its
  # batches, its log lines and telemetry events, and the connects of its tasks.
  @traced [
    {{Batch, :take_queued, 2}, [{:_, [], [{:return_trace}]}]},
    {{Report, :log, 4}, true},
    {{Telemetry, :execute, 3}, true},
    {{Node, :connect, 1}, true}
  ]

  describe "a poller" do
    setup do
      on_exit(fn ->
        :erlang.trace(:all, false, [:all])
        for {mfa, _} <- @traced, do: :erlang.trace_pattern(mfa, false, [:local])
      end)
    end

    # A frozen node's probe ends at the probe timeout, while the poller is suspended: its
    # candidate (`:unreachable`, whose node event is said at once) joins the batch of the
    # live ones, so that the batch has both connects and an event to order.
    test "connects the candidates whose messages queued together in one batch, each once, " <>
           "every connect started before any log line or event of the batch" do
      nodes = TestNodes.start_many(3)
      frozen = TestNodes.start()
      TestNodes.freeze(frozen)
      names = MapSet.new(nodes, &to_string(&1.name))
      frozen_name = to_string(frozen.name)
      test = self()
      id = {__MODULE__, make_ref()}
      handler = fn _, _, meta, _ -> send(test, {:connected, meta.node}) end
      :telemetry.attach(id, [:tinycluster, :node, :connected], handler, nil)
      on_exit(fn -> :telemetry.detach(id) end)

      {batches, trace, log} = queued_batches(names, frozen_name, 3)
      everyone = MapSet.put(names, frozen_name)
      assert Enum.any?(batches, &MapSet.subset?(everyone, &1.names)), inspect(batches)
      for node <- nodes, do: assert(node.name in Node.list())
      # The "connected" lines come after the connects; each node's event follows its line.
      for name <- names, do: assert_receive({:connected, ^name}, 10_000)

      for name <- names do
        assert length(String.split(log, "tinycluster: connected to #{name}\n")) == 2, log
      end

      # In the trace: in each batch, the spawn of every process that went on to call
      # Node.connect/1 comes before the poller's first log line or telemetry event.
      connects = for {:trace_ts, pid, :call, {Node, :connect, [n]}, _} <- trace, do: {pid, n}
      connects = Map.new(connects)

      for batch <- batches do
        spawned = for {:spawn, pid, ts} <- batch.seen, Map.has_key?(connects, pid), do: ts
        said = for {:said, _what, ts} <- batch.seen, do: ts

        if spawned != [] and said != [] do
          assert Enum.max(spawned) < Enum.min(said), inspect(summary(batch.seen))
        end
      end

      # The batch of all four: its three connects, and the frozen node's event.
      batch = Enum.find(batches, &MapSet.subset?(everyone, &1.names))
      spawned = for {:spawn, pid, _} <- batch.seen, node = connects[pid], do: to_string(node)
      assert MapSet.new(spawned) == names, inspect(summary(batch.seen))

      assert Enum.any?(batch.seen, fn
               {:said, {Telemetry, :execute, [[:tinycluster, :node, :unreachable], _, meta]}, _} ->
                 meta.node == frozen_name

               _ ->
                 false
             end),
             inspect(summary(batch.seen))
    end
  end

  # Starts a poller, suspends it once it planned but before its first probes answer, lets
  # the candidates of `names` and `frozen` queue, resumes it and returns its batches (as
  # `batches/1` gives them), the trace and the log of the last try. Tries again with a fresh
  # poller if a candidate of `names` was taken before the suspension (a busy host), once
  # the nodes are disconnected again, so that it connects them itself.
  defp queued_batches(names, frozen, tries) do
    {{queued?, trace}, log} = with_log(fn -> try_batches(names, frozen) end)
    batches = batches(trace)

    if tries > 1 and not (queued? and Enum.any?(batches, &MapSet.subset?(names, &1.names))) do
      for name <- names, do: Node.disconnect(String.to_atom(name))

      TestNodes.wait_until(
        fn -> not Enum.any?(names, &(String.to_atom(&1) in Node.list())) end,
        "the nodes to disconnect"
      )

      flush_connected()
      queued_batches(names, frozen, tries - 1)
    else
      {batches, trace, log}
    end
  end

  defp flush_connected do
    receive do
      {:connected, _} -> flush_connected()
    after
      0 -> :ok
    end
  end

  defp try_batches(names, frozen) do
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

    # Timestamps that order the events of different processes; the connect tasks inherit
    # the trace of the supervisor that starts them.
    for {mfa, match} <- @traced, do: :erlang.trace_pattern(mfa, match, [:local])
    flags = [:call, :strict_monotonic_timestamp]
    :erlang.trace(pid, true, flags)
    :erlang.trace(task_supervisor(pid), true, [:procs, :set_on_spawn | flags])

    queued? =
      try do
        TestNodes.wait_until(
          fn -> MapSet.subset?(MapSet.put(names, frozen), queued_names(pid)) end,
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

    :erlang.trace(:all, false, [:all])
    ref = :erlang.trace_delivered(:all)
    assert_receive {:trace_delivered, :all, ^ref}, 5_000
    trace = traced([])
    stop_supervised!(name)
    {queued?, trace}
  end

  defp flush_traces do
    receive do
      {:trace, _, :receive, _} -> flush_traces()
    after
      0 -> :ok
    end
  end

  # The names of our candidates' messages in the poller's mailbox, that it has not taken.
  # The poller's connect tasks run under the Task.Supervisor it links at start: found among
  # its links by what it is, not by the shape of the poller's state.
  defp task_supervisor(poller) do
    {:links, links} = Process.info(poller, :links)

    [supervisor] =
      for link <- links,
          is_pid(link),
          {:dictionary, dictionary} = Process.info(link, :dictionary),
          dictionary[:"$initial_call"] == {:supervisor, Task.Supervisor, 1},
          do: link

    supervisor
  end

  defp queued_names(pid) do
    {:messages, messages} = Process.info(pid, :messages)

    for {:tinycluster_scan, _, {:candidates, list}} <- messages,
        %{name: name} <- list,
        into: MapSet.new(),
        do: name
  end

  # Every trace message so far, in the order of their timestamps.
  defp traced(acc) do
    receive do
      {:trace_ts, _, _, _, _} = t -> traced([t | acc])
      {:trace_ts, _, _, _, _, _} = t -> traced([t | acc])
      {:trace, _, _, _} -> traced(acc)
    after
      0 -> Enum.sort_by(acc, &elem(&1, tuple_size(&1) - 1))
    end
  end

  # Each batch the poller took: the names in it, and what happened from its taking until
  # the poller took the next: `{:spawn, pid, ts}` of a process the task supervisor
  # started, `{:said, call, ts}` of a log line or telemetry event of the poller's.
  defp batches(trace) do
    trace
    |> Enum.reduce([], fn
      {:trace_ts, _, :return_from, {Batch, :take_queued, 2}, batch, _}, acc ->
        [%{names: MapSet.new(batch, & &1.name), seen: []} | acc]

      _, [] ->
        []

      {:trace_ts, _, :call, {Batch, :take_queued, _}, _}, acc ->
        acc

      {:trace_ts, _, :spawn, pid, _, ts}, [batch | acc] ->
        [%{batch | seen: [{:spawn, pid, ts} | batch.seen]} | acc]

      {:trace_ts, _, :call, {m, _, _} = call, ts}, [batch | acc] when m in [Report, Telemetry] ->
        [%{batch | seen: [{:said, call, ts} | batch.seen]} | acc]

      _, acc ->
        acc
    end)
    |> Enum.reverse()
    |> Enum.map(&%{&1 | seen: Enum.reverse(&1.seen)})
  end

  defp summary(seen) do
    Enum.map(seen, fn
      {:spawn, pid, _} -> {:spawn, pid}
      {:said, {Report, :log, [_opts, level, text, _meta]}, _} -> {level, text}
      {:said, {Telemetry, :execute, [event, _, meta]}, _} -> {event, meta[:node]}
    end)
  end
end
