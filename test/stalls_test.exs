defmodule Tinycluster.StallsTest do
  # How a stalled connection attempt is told from a refusal, and what is said of it, with
  # the durations and the time passed in and no node started. test/stalled_handshake_test.exs shows the
  # same against a real node behind a proxy that stalls its handshakes.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.Options
  alias Tinycluster.Poller.{Candidates, Report}
  alias Tinycluster.Poller.Candidates.Stalls

  @opts Options.new!(interval: 100, max_backoff: 1_000)
  @at ~U[2026-01-01 00:00:00Z]

  describe "the rule" do
    test "net_setuptime is read as net_kernel reads it: seconds, 7 unset, 120 at most" do
      assert Stalls.setup_ms(:undefined) == 7_000
      assert Stalls.setup_ms({:ok, 2}) == 2_000
      assert Stalls.setup_ms({:ok, 0.5}) == 500
      assert Stalls.setup_ms({:ok, 500}) == 120_000
      assert Stalls.setup_ms({:ok, 0}) == 7_000
      assert Stalls.setup_ms({:ok, :soon}) == 7_000
    end

    test "a false after half of net_setuptime or more is a stall; a prompt one a refusal" do
      # OTP's setup timer never ends an attempt before net_setuptime; a refusal comes a
      # round trip after the challenge reply.
      assert Stalls.classify(false, 7_012, 7_000) == :stalled
      assert Stalls.classify(false, 3_500, 7_000) == :stalled
      assert Stalls.classify(false, 3_499, 7_000) == false
      assert Stalls.classify(false, 3, 7_000) == false
      assert Stalls.classify(false, 1_000, 2_000) == :stalled
      assert Stalls.classify(false, 999, 2_000) == false
      # Anything but a false is what it is, however long it took.
      for result <- [true, :ignored, {:crashed, :x}],
          do: assert(Stalls.classify(result, 60_000, 7_000) == result)
    end

    test "stalls in a row are counted per candidate and port; anything but a crash clears them" do
      {stalls, 1} = Stalls.note(Stalls.new(), :a, 4000, :stalled)
      {stalls, 2} = Stalls.note(stalls, :a, 4000, :stalled)
      assert {_, 2} = Stalls.note(stalls, :a, 4000, {:crashed, :x})
      assert {_, 1} = Stalls.note(stalls, :a, 4001, :stalled)
      assert {_, 1} = Stalls.note(stalls, :b, 4000, :stalled)
      {cleared, 0} = Stalls.note(stalls, :a, 4000, false)
      assert {_, 1} = Stalls.note(cleared, :a, 4000, :stalled)
      {cleared, 0} = Stalls.note(stalls, :a, 4000, true)
      assert {_, 1} = Stalls.note(cleared, :a, 4000, :stalled)
    end
  end

  describe "what is said" do
    setup do
      test = self()
      id = {__MODULE__, make_ref()}
      events = [[:tinycluster, :node, :unreachable], [:tinycluster, :node, :rejected]]
      handler = fn event, _, meta, _ -> send(test, {:event, event, meta}) end
      :telemetry.attach_many(id, events, handler, nil)
      on_exit(fn -> :telemetry.detach(id) end)
    end

    test "one warning and one event for a run of stalls, none of them a refusal" do
      opts = %{@opts | name: :"stalls_test_#{System.unique_integer([:positive])}"}
      probe = %{host: "h", alive: "a", name: "a@vm", address: "127.0.0.1", port: 4000}
      probe = Map.merge(probe, %{state: :live, reason: nil, latency_us: 50})

      log =
        capture_log(fn ->
          Enum.reduce(0..2, Candidates.new(), fn n, table ->
            now = %{ms: n * 1_000, at: DateTime.add(@at, n, :second)}
            {table, [_], changes} = Candidates.probed(table, [probe], opts, now)
            Report.changes(opts, changes)
            {table, changes} = Candidates.connect_ended(table, {"h", "a"}, :stalled, opts, now)
            Report.changes(opts, changes)
            table
          end)
        end)

      assert Tinycluster.TestNodes.count(log, "a@vm answered the probe, but the connection's") ==
               1,
             log

      assert log =~ "not a refusal"
      refute log =~ "refused"
      name = opts.name

      assert_received {:event, [:tinycluster, :node, :unreachable],
                       %{poller: ^name, state: :unreachable, reason: :connect_timeout}}

      refute_received {:event, _, %{poller: ^name}}
    end
  end
end
