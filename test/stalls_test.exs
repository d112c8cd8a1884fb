defmodule Tinycluster.StallsTest do
  # How a stalled connection attempt is told from a refusal, and what is said of it, with
  # the durations and the time passed in and no node started. test/stalled_handshake_test.exs shows the
  # same against a real node behind a proxy that stalls its handshakes.
  use ExUnit.Case, async: false

  alias Tinycluster.Candidates.Stalls

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
end
