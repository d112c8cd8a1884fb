defmodule Tinycluster.BackoffTest do
  # The backoff rules on their own, with the numbers the README states; the poller tests and
  # test/peers_test.exs show them against real nodes.
  use ExUnit.Case, async: true

  alias Tinycluster.{Candidate, Options}
  alias Tinycluster.Poller.Backoff

  @opts Options.new!(interval: 100, max_backoff: 1_000)

  defp entry(state, fields \\ []),
    do: struct!(%Candidate{host: "h", alive: "a", port: 4000, state: state}, fields)

  test "waits double from the interval up to max_backoff; unreachable up to two intervals" do
    assert Enum.map(1..6, &Backoff.delay(&1, :bad_reply, @opts)) ==
             [100, 200, 400, 800, 1_000, 1_000]

    assert Enum.map(1..4, &Backoff.delay(&1, :unreachable, @opts)) == [100, 200, 200, 200]
    assert Backoff.delay(1_000, :rejected, @opts) == 1_000
  end

  test "every failing probe counts; a success clears the count" do
    for state <- [:unreachable, :bad_reply, :tls] do
      once = Backoff.after_probe(entry(state), @opts, 0)
      twice = Backoff.after_probe(once, @opts, 50)
      assert {once.attempts, once.retry_at} == {1, 100}
      assert {twice.attempts, twice.retry_at} == {2, 250}
      assert Backoff.after_probe(%{twice | state: :live}, @opts, 60).attempts == 0
    end

    # An allow list is counted by the connection attempt when the poller connects.
    assert Backoff.after_probe(entry(:not_allowed), @opts, 0).attempts == 0
    no_connect = %{@opts | connect: false}
    assert Backoff.after_probe(entry(:not_allowed), no_connect, 0).retry_at == 100
    # A refusal keeps the count of its connection attempts.
    rejected = entry(:rejected, attempts: 3, retry_at: 777)
    assert Backoff.after_probe(rejected, @opts, 0) == rejected
    first = Backoff.after_connect(entry(:live), :connect_failed, @opts, 0)
    assert {first.state, first.attempts, first.retry_at} == {:rejected, 1, 100}
    # The second refusal at one port is the last: left alone for good.
    assert Backoff.after_connect(first, :connect_failed, @opts, 100, 2).retry_at == :never
    assert Backoff.after_connect(rejected, :not_allowed, @opts, 0, 2).retry_at == :never
    assert Backoff.after_connect(rejected, :not_allowed, @opts, 0, 1).retry_at == 800
    # A crashed attempt is no refusal: it backs off.
    assert Backoff.after_connect(rejected, {:crashed, :x}, @opts, 0, 2).retry_at == 800

    assert holds(%{{"h", "a"} => %{rejected | retry_at: :never}}, 10 ** 12) == [
             {"h", "a", 4000}
           ]
  end

  test "a stalled connection backs off as an unreachable node, never for good" do
    first = Backoff.after_stall(entry(:connecting), 1, @opts, 0)

    assert {first.state, first.reason, first.attempts, first.retry_at} ==
             {:unreachable, :connect_timeout, 1, 100}

    assert Backoff.after_stall(first, 2, @opts, 500).retry_at == 700
    assert Backoff.after_stall(first, 50, @opts, 500).retry_at == 700
  end

  test "a new port starts over with the new node's state" do
    old = entry(:rejected, attempts: 5, retry_at: 10_000, reason: :connect_failed)
    assert Backoff.restarted(old, entry(:live)) == old
    new = Backoff.restarted(old, entry(:live, port: 4001))
    assert {new.state, new.attempts, new.retry_at} == {:live, 0, nil}
  end

  defp holds(candidates, ms) do
    for {{host, alive}, %{port: port} = entry} <- candidates,
        Backoff.held?(entry, ms),
        do: {host, alive, port}
  end

  test "a new creation at the same port starts over; an unknown one does not" do
    old = entry(:rejected, attempts: 2, retry_at: :never, reason: :connect_failed, creation: 7)
    assert Backoff.restarted(old, entry(:live, creation: 7)) == old
    assert Backoff.restarted(old, entry(:live)) == old
    refute Backoff.restarted?(entry(:live), entry(:live, creation: 9))
    new = Backoff.restarted(old, entry(:live, creation: 9))
    assert {new.state, new.attempts, new.retry_at, new.creation} == {:live, 0, nil, 9}
  end

  test "a node left alone for another cookie is not held (its probe is silent); others are" do
    never = entry(:rejected, attempts: 2, retry_at: :never, reason: :connect_failed)
    assert holds(%{{"h", "a"} => never}, 10 ** 12) == []
    allow_list = %{never | reason: :not_allowed}
    assert holds(%{{"h", "a"} => allow_list}, 10 ** 12) == [{"h", "a", 4000}]
  end

  test "holds the candidates backing off, by host, name and port, until they are due" do
    candidates = %{
      {"h", "a"} => entry(:unreachable, retry_at: 100),
      {"h", "b"} => entry(:live, alive: "b", retry_at: 100),
      {"h", "c"} => entry(:rejected, alive: "c", retry_at: 50)
    }

    assert Enum.sort(holds(candidates, 0)) == [{"h", "a", 4000}, {"h", "c", 4000}]
    assert holds(candidates, 60) == [{"h", "a", 4000}]
    assert holds(candidates, 100) == []
  end
end
