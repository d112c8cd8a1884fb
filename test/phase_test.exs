defmodule Tinycluster.PhaseTest do
  # Pollers started together do not stay in step: after the first scan each shifts its
  # polls once by a random offset, then keeps the exact interval.
  use ExUnit.Case, async: false

  alias Tinycluster.{Phase, TestNodes}

  doctest Tinycluster.Phase

  test "the offset is drawn once, from -interval/2..interval/2" do
    offsets = for _ <- 1..10_000, do: Phase.offset(1_000, 0)
    assert Enum.min(offsets) >= -500 and Enum.max(offsets) <= 500
    # Spread over the whole range, not bunched.
    assert Enum.count(offsets, &(&1 < -250)) > 2_000
    assert Enum.count(offsets, &(&1 > 250)) > 2_000
    assert abs(Enum.sum(offsets) / 10_000) < 25
    assert Enum.all?(1..100, &(Phase.offset(1_000, &1) == 0))
    assert Phase.next_delay(1_000, 1_500, 3) == 0
  end

  test "pollers started in the same instant poll at spread phases, each at its interval" do
    test = self()
    id = {__MODULE__, make_ref()}

    :telemetry.attach(
      id,
      [:tinycluster, :scan, :start],
      fn _, %{monotonic_time: t}, %{poller: poller}, _ -> send(test, {:scan, poller, t}) end,
      nil
    )

    on_exit(fn -> :telemetry.detach(id) end)

    # Filtered to nothing: each scan is one EPMD request, so the timing is the poller's.
    names = for _ <- 1..6, do: TestNodes.poller_name()
    only = "nothing#{System.pid()}x"

    for name <- names,
        do: start_supervised!({Tinycluster, name: name, interval: 1_000, only: [only]})

    starts =
      Map.new(names, fn name ->
        times =
          for _ <- 1..4 do
            assert_receive {:scan, ^name, t}, 5_000
            System.convert_time_unit(t, :native, :millisecond)
          end

        {name, times}
      end)

    firsts = for {_, [t | _]} <- starts, do: t
    thirds = for {_, [_, _, t, _]} <- starts, do: t
    # Started together, first scans together; by the third, spread over the interval.
    assert Enum.max(firsts) - Enum.min(firsts) < 300
    assert Enum.max(thirds) - Enum.min(thirds) > 150

    # From the second scan on, each keeps its interval.
    for {_, [_, second, third, fourth]} <- starts do
      assert_in_delta third - second, 1_000, 150
      assert_in_delta fourth - third, 1_000, 150
    end
  end
end
