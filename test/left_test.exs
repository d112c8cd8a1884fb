defmodule Tinycluster.LeftTest do
  # Leaving and coming back, as pure rules (`Tinycluster.Poller.Candidates.Left`) and as the
  # candidates' table applies them, with the time passed in and no node started. Each race
  # the README's "Leaving the cluster" names has its test here; test/leave_test.exs shows the
  # same against real nodes.
  use ExUnit.Case, async: true

  alias Tinycluster.Options
  alias Tinycluster.Poller.Candidates
  alias Tinycluster.Poller.Candidates.Left

  @opts Options.new!(interval: 100, max_backoff: 1_000)
  @at ~U[2026-01-01 00:00:00Z]

  # The candidates a plan at `ms` holds back, with the nodes `connected` connected.
  defp holds(table, ms, connected) do
    connected = MapSet.new(connected, &Atom.to_string/1)

    for {{host, alive} = key, %{port: port}} <- table.entries,
        Candidates.held?(table, key, port, ms, connected),
        do: {host, alive, port}
  end

  defp now(ms), do: %{ms: ms, at: DateTime.add(@at, ms, :millisecond)}

  # A candidate map as the NIF sends it: "c@vm", live, creation 7 unless told otherwise.
  defp probe(fields) do
    Map.merge(
      %{
        host: "h",
        alive: "c",
        name: "c@vm",
        address: "127.0.0.1",
        port: 4000,
        state: :live,
        reason: nil,
        latency_us: 50,
        creation: 7
      },
      Map.new(fields)
    )
  end

  # As the poller takes a batch: the atoms of the names the table connects are made after it.
  defp probed(table, fields \\ [], ms \\ 0) do
    {table, connects, changes} = Candidates.probed(table, [probe(fields)], @opts, now(ms))
    connects = Tinycluster.NodeName.to_atoms(connects)
    {Candidates.named(table, connects), connects, changes}
  end

  defp entry(table), do: table.entries[{"h", "c"}]

  defp leave(creation, sender \\ :c@vm),
    do: %{name: "c@vm", creation: creation, sender: sender}

  # C probed (creation 7) and connected.
  defp connected do
    {table, [{_, :c@vm}], _} = probed(Candidates.new())
    {table, _} = Candidates.connect_ended(table, {"h", "c"}, true, @opts, now(0))
    table
  end

  # C connected, then told this poller it leaves.
  defp left_table do
    {:ok, table, changes} = Candidates.leave(connected(), leave(7), now(10))
    assert [{%{state: :connected}, %{state: :left}}] = changes
    table
  end

  describe "the rules" do
    test "a leave holds its incarnation only: its creation, or one not known yet" do
      {:ok, left} = Left.leave(Left.new(), leave(7), [], 0)
      assert Left.holds?(left, "c@vm", 7)
      assert Left.holds?(left, "c@vm", nil)
      refute Left.holds?(left, "c@vm", 8)
      refute Left.holds?(left, "d@vm", 7)
      # A probe that shows another creation: the node restarted, the leave is forgotten.
      assert Left.seen(left, "c@vm", 7) == left
      assert Left.seen(left, "c@vm", nil) == left
      refute Left.holds?(Left.seen(left, "c@vm", 8), "c@vm", nil)
    end

    test "a leave from another node than the one it names is ignored" do
      assert Left.leave(Left.new(), leave(7, :d@vm), [], 0) == {:ignored, :forged}
    end

    test "a leave of an incarnation other than the ones seen is ignored" do
      assert Left.leave(Left.new(), leave(7), [8], 0) == {:ignored, :stale}
      assert {:ok, _} = Left.leave(Left.new(), leave(7), [8, 7], 0)
    end

    test "a join undoes the leave of its own incarnation, from the node itself only" do
      {:ok, left} = Left.leave(Left.new(), leave(7), [], 0)
      assert Left.join(left, leave(7, :d@vm)) == {:ignored, :forged}
      assert Left.join(left, leave(8)) == {:ignored, :stale}
      assert {:ok, joined} = Left.join(left, leave(7))
      refute Left.holds?(joined, "c@vm", 7)
      assert Left.join(Left.new(), leave(7)) == {:ok, Left.new()}
    end

    test "at most #{Left.max_peers()} leaves are remembered, the oldest forgotten first" do
      left =
        Enum.reduce(0..Left.max_peers(), Left.new(), fn i, acc ->
          message = %{name: "n#{i}@vm", creation: 1, sender: :"n#{i}@vm"}
          {:ok, acc} = Left.leave(acc, message, [], i)
          acc
        end)

      assert map_size(left.peers) == Left.max_peers()
      refute Left.holds?(left, "n0@vm", 1)
      assert Left.holds?(left, "n#{Left.max_peers()}@vm", 1)
    end

    test "this node: a visible node that connects while it has left is told and let go" do
      left = Left.leave_self(Left.new(), 5, [:poller], @at)
      assert Left.self_left?(left)
      assert {^left, {:leave, :a@vm, [:poller], 5}} = Left.node_up(left, :a@vm, :visible, 5)
      # A remote shell or `bin/app rpc` is hidden: let be.
      assert {^left, nil} = Left.node_up(left, :r@vm, :hidden, 5)

      # After a join, each node told of the leave is told of the join once, as it connects.
      joined = left |> Left.told([:a@vm]) |> Left.join_self()
      refute Left.self_left?(joined)
      assert {joined, {:join, :a@vm, [:poller], 5}} = Left.node_up(joined, :a@vm, :visible, 5)
      assert {_, nil} = Left.node_up(joined, :a@vm, :visible, 5)
      assert {_, nil} = Left.node_up(joined, :b@vm, :visible, 5)
    end
  end

  describe "the table" do
    test "a node that left is :left, probed but never connected, until it joins" do
      table = left_table()
      assert %{state: :left, creation: 7} = entry(table)
      # Probed (silently) to see a restart: not held.
      assert holds(table, 0, []) == []
      {table, _} = Candidates.node_down(table, :c@vm, :connection_closed)
      assert entry(table).state == :left

      for ms <- [100, 200, 10_000] do
        assert {_, [], []} = probed(table, [], ms)
      end

      {:ok, table, [{%{state: :left}, %{state: :live}}]} = Candidates.join(table, leave(7))
      assert {_, [{_, :c@vm}], _} = probed(table, [], 300)
    end

    test "a node disconnected by hand, without a leave, is connected again" do
      {table, _} = Candidates.node_down(connected(), :c@vm, :disconnect)
      assert entry(table).state == :down
      assert {_, [{_, :c@vm}], _} = probed(table, [], 100)
    end

    test "a probe in flight when the leave arrives does not connect the node" do
      # The scan started while C was connected (skipped) or just down (live); its answers
      # come after the leave.
      table = left_table()

      for state <- [:live, :skipped] do
        {late, connects, _} = probed(table, [state: state], 20)
        assert connects == [], inspect(state)
        assert entry(late).state == :left, inspect(state)
      end
    end

    test "a connection in flight when the leave arrives is undone" do
      {table, [{key, :c@vm}], _} = probed(Candidates.new())
      {:ok, table, _} = Candidates.leave(table, leave(7), now(10))
      {table, _} = Candidates.connect_ended(table, key, true, @opts, now(20))
      assert entry(table).state == :left
      assert Candidates.undo(table, key, true) == :c@vm
      # A connection of a node that did not leave is left alone.
      {other, _} =
        Candidates.connect_ended(elem(probed(Candidates.new()), 0), key, true, @opts, now(0))

      assert Candidates.undo(other, key, true) == nil
    end

    test "a leave from an incarnation older than the one seen holds nothing back" do
      # C restarted (creation 8) and its probe was seen; the old one's leave comes late.
      {table, [_], _} = probed(Candidates.new(), creation: 8)
      {table, _} = Candidates.connect_ended(table, {"h", "c"}, true, @opts, now(0))
      assert {{:ignored, :stale}, ^table, []} = Candidates.leave(table, leave(7), now(10))
      # The new incarnation goes through a disconnection by hand and comes back as any node.
      {table, _} = Candidates.node_up(table, :c@vm)
      {table, _} = Candidates.node_down(table, :c@vm, :disconnect)
      assert entry(table).state == :down
      assert {_, [{_, :c@vm}], _} = probed(table, [creation: 8], 100)
    end

    test "a leave sent from another node is ignored" do
      table = connected()
      assert {{:ignored, :forged}, ^table, []} = Candidates.leave(table, leave(7, :d@vm), now(0))
      {table, _} = Candidates.node_down(table, :c@vm, :disconnect)
      assert {_, [{_, :c@vm}], _} = probed(table, [], 100)
    end

    test "a restart (a new creation at the same port) clears the leave" do
      table = left_table()
      {table, _} = Candidates.node_down(table, :c@vm, :connection_closed)

      {table, [{_, :c@vm}], [{%{state: :left}, %{state: :connecting}}]} =
        probed(table, [creation: 8], 100)

      assert entry(table).creation == 8
      refute Left.holds?(table.left, "c@vm", nil)
    end

    test "a restart clears the refusals: the new incarnation gets two attempts of its own" do
      {table, [_], _} = probed(Candidates.new())
      {table, _} = Candidates.connect_ended(table, {"h", "c"}, false, @opts, now(0))
      {table, [_], _} = probed(table, [], 100)
      {table, _} = Candidates.connect_ended(table, {"h", "c"}, false, @opts, now(100))
      assert %{state: :rejected, retry_at: :never} = entry(table)
      # Left alone at this port and creation, and not held: its probe is what shows a restart.
      assert holds(table, 10_000, []) == []
      assert {_, [], []} = probed(table, [], 10_000)
      # Restarted at the same port, with the right cookie this time, say.
      {table, [{_, :c@vm}], _} = probed(table, [creation: 8], 10_100)
      # Had it refused again, that would be its first refusal, not a third.
      {refused, _} = Candidates.connect_ended(table, {"h", "c"}, false, @opts, now(10_200))
      assert %{state: :rejected, attempts: 1} = entry(refused)
      assert is_integer(entry(refused).retry_at)
    end

    test "a new incarnation that connected itself is connected, and reconnected as any node" do
      table = left_table()
      {table, _} = Candidates.node_down(table, :c@vm, :connection_closed)
      # C restarted at its port and connected itself before any probe of the new one.
      {table, _} = Candidates.node_up(table, :c@vm)
      {table, [], _} = probed(table, [state: :skipped, creation: nil], 100)
      assert %{state: :connected, creation: nil} = entry(table)
      # Disconnected by hand: its probe shows its creation, and it is connected again.
      {table, _} = Candidates.node_down(table, :c@vm, :disconnect)
      assert entry(table).state == :down
      assert {_, [{_, :c@vm}], _} = probed(table, [creation: 8], 200)
    end

    test "a leave told before any entry, then a new incarnation that connected itself" do
      # This poller had not listed C yet when it left; C restarted and connected itself.
      {:ok, table, []} = Candidates.leave(Candidates.new(), leave(7), now(0))
      {table, _} = Candidates.node_up(table, :c@vm)
      {table, [], _} = probed(table, [state: :skipped, creation: nil], 100)
      assert entry(table).state == :connected
      # Had the old one still been connected, its probe after the nodedown shows it.
      {table, _} = Candidates.node_down(table, :c@vm, :connection_closed)
      assert {_, [], _} = probed(table, [], 200)
      assert {_, [{_, :c@vm}], _} = probed(table, [creation: 8], 200)
    end

    test "a node connected without a probe (a restart that connected itself) has no creation" do
      table = connected()
      {table, _} = Candidates.node_down(table, :c@vm, :connection_closed)
      # It restarted at its port and connected itself before any probe of the new one.
      {table, _} = Candidates.node_up(table, :c@vm)
      assert %{state: :connected, creation: nil} = entry(table)
      # So its leave counts, and the leave tells its creation.
      assert {:ok, table, _} = Candidates.leave(table, leave(8), now(10))
      assert %{state: :left, creation: 8} = entry(table)
    end

    test "while this node has left, nothing is connected; after its join, as before" do
      {table, [], _} = Candidates.new() |> Candidates.leave_self(5, [:p], @at) |> probed()
      assert entry(table).state == :live
      assert {_, [{_, :c@vm}], _} = table |> Candidates.join_self() |> probed([], 100)
    end
  end
end
