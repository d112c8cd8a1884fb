defmodule Tinycluster.PacingTest do
  # When each host is asked, on its own: settling, the doubling, the cap, each event that
  # reopens a host, :local and new hosts; time passed in, no node started.
  use ExUnit.Case, async: true

  alias Tinycluster.Options
  alias Tinycluster.Poller.Pacing

  @opts Options.new!(interval: 1_000, settled_interval: 10_000)

  # The host's answers, one a poll from t = 0, each `settled?` or not; returns the pacing.
  defp answers(pacing \\ Pacing.new(), label \\ "b", settled) do
    settled
    |> Enum.with_index()
    |> Enum.reduce(pacing, fn {settled?, i}, acc ->
      Pacing.answered(acc, label, settled?, @opts, i * 1_000)
    end)
  end

  defp due_at(pacing, label \\ "b"), do: Pacing.view(pacing, label, 0).next_ask_in_ms

  # A settled host's wait `w`: cut by up to a quarter, so that hosts drift apart.
  defp spread?(wait, w), do: wait <= w and wait >= w - div(w, 4)

  test "a host never seen, and :local, are always due" do
    assert Pacing.due?(Pacing.new(), "b", 0, 1_000)
    local = answers(Pacing.new(), "local", List.duplicate(true, 5))
    assert Pacing.due?(local, "local", 4_001, 1_000)
    refute Pacing.view(local, "local", 0).settled
  end

  test "an unsettled host is asked every interval" do
    pacing = answers([false, false])
    assert due_at(pacing) == 2_000
    refute Pacing.view(pacing, "b", 0).settled
  end

  test "a settled host waits twice as long each time, up to :settled_interval" do
    # Settled at its first unchanged answer (t = 0), then at each ask.
    waits =
      Enum.map_reduce(1..6, {Pacing.new(), 0}, fn _, {pacing, t} ->
        pacing = Pacing.answered(pacing, "b", true, @opts, t)
        wait = Pacing.view(pacing, "b", t).next_ask_in_ms
        {wait, {pacing, t + wait}}
      end)
      |> elem(0)

    expected = [2_000, 4_000, 8_000, 10_000, 10_000, 10_000]

    assert Enum.all?(Enum.zip(waits, expected), fn {wait, w} -> spread?(wait, w) end),
           inspect(waits)
  end

  test "hosts that settle together are asked apart" do
    labels = for i <- 1..200, do: "10.0.0.#{i}"
    pacing = Enum.reduce(labels, Pacing.new(), &Pacing.answered(&2, &1, true, @opts, 0))
    dues = for label <- labels, do: Pacing.view(pacing, label, 0).next_ask_in_ms
    assert Enum.all?(dues, &spread?(&1, 2_000))
    # Over the quarter of the wait they may fall in (500 ms), 200 hosts spread wide.
    assert length(Enum.uniq(dues)) > 100
    assert Enum.max(dues) - Enum.min(dues) > 400
  end

  test "a settled host is not due before its time, and due a little before it" do
    pacing = answers([true])
    refute Pacing.due?(pacing, "b", 1_000, 1_000)
    # A timer that fires a few ms early still asks it.
    assert Pacing.due?(pacing, "b", 1_990, 1_000)
    assert %{settled: true, next_ask_in_ms: next} = Pacing.view(pacing, "b", 500)
    assert spread?(next + 500, 2_000)
  end

  test "an answer that is not unchanged (EPMD failed, or lists something new) reopens it" do
    pacing = answers([true, true, true, false])
    refute Pacing.view(pacing, "b", 0).settled
    assert due_at(pacing) == 3_000 + 1_000
    # And it settles again from the start: twice the interval.
    pacing = Pacing.answered(pacing, "b", true, @opts, 4_000)
    assert spread?(due_at(pacing) - 4_000, 2_000)
  end

  test "reopen (a nodedown there, a refused connection) makes it due at the next poll" do
    pacing = answers([true, true, true])
    refute Pacing.due?(pacing, "b", 3_000, 1_000)
    pacing = Pacing.reopen(pacing, "b")
    assert Pacing.due?(pacing, "b", 3_000, 1_000)
    # Monotonic time may be far below zero.
    assert Pacing.due?(pacing, "b", -576_460_752_303, 1_000)
    refute Pacing.view(pacing, "b", 0).settled
    # Reopening a host never seen changes nothing.
    assert Pacing.reopen(Pacing.new(), "x") == Pacing.new()
  end

  test "a nodedown holds its host open for :settled_interval: a restarting node is asked for" do
    pacing = answers([true, true, true]) |> Pacing.reopen("b", 3_000 + 10_000)

    # Its EPMD answers unchanged (the node is not back yet) poll after poll: still open.
    pacing =
      Enum.reduce(3..12, pacing, fn t, acc ->
        acc = Pacing.answered(acc, "b", true, @opts, t * 1_000)
        refute Pacing.view(acc, "b", t * 1_000).settled, "settled at #{t} s"
        assert Pacing.view(acc, "b", t * 1_000).next_ask_in_ms == 1_000
        acc
      end)

    # Past it, it settles as before, from twice the interval.
    pacing = Pacing.answered(pacing, "b", true, @opts, 13_000)
    assert %{settled: true, next_ask_in_ms: next} = Pacing.view(pacing, "b", 13_000)
    assert spread?(next, 2_000)

    # A refused connection reopens without holding it open, and never shortens a hold.
    refused = answers([true]) |> Pacing.reopen("b") |> Pacing.answered("b", true, @opts, 1_000)
    assert Pacing.view(refused, "b", 1_000).settled
    held = answers([true]) |> Pacing.reopen("b", 5_000) |> Pacing.reopen("b")
    held = Pacing.answered(held, "b", true, @opts, 1_000)
    refute Pacing.view(held, "b", 1_000).settled
  end

  test "a host no longer kept is due again as new, and :settled_interval defaults sensibly" do
    pacing = answers([true]) |> Pacing.keep([])
    assert Pacing.due?(pacing, "b", 0, 1_000)
    assert Options.new!([]).settled_interval == 30_000
    assert Options.new!(interval: 60_000).settled_interval == 60_000

    assert_raise ArgumentError, ~r/:settled_interval/, fn ->
      Options.new!(interval: 1_000, settled_interval: 500)
    end
  end
end
