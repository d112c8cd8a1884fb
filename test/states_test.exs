defmodule Tinycluster.Candidate.StatesTest do
  # The states table on its own: it names every state the public struct has and documents,
  # each row leads to a known state, and what the NIF reports has a row. No node started.
  use ExUnit.Case, async: true

  alias Tinycluster.Candidate
  alias Tinycluster.Candidate.States

  @root Path.expand("..", __DIR__)

  # The actions each event's handler knows (`Tinycluster.Poller.Candidates`, `Connect`).
  @actions %{
    probed: [:take, :keep],
    connect: [:connect, :when_due, :if_included],
    connect_ok: [:clear],
    connect_ignored: [:none],
    connect_failed: [:refused],
    connect_stalled: [:stalled],
    nodeup: [:keep_creation, :forget_creation],
    nodedown: [:unless_left, :none],
    unlisted: [:forget_later, :none],
    left: [:none],
    join: [:none],
    cookie_changed: [:retry_now]
  }

  defp kind({:probed, _}), do: :probed
  defp kind(event), do: event

  test "the table's states are the ones Candidate's type names" do
    {:ok, types} = Code.Typespec.fetch_types(Candidate)
    [{:union, members}] = for {:type, {:state, {:type, _, u, m}, []}} <- types, do: {u, m}
    typed = for {:atom, _, state} <- members, do: state
    assert Enum.sort(typed) == Enum.sort(States.states())
  end

  test "the table's states are the ones Candidate's \"States\" section lists, in its order" do
    {:docs_v1, _, :elixir, _, %{"en" => doc}, _, _} = Code.fetch_docs(Candidate)
    [_, section] = String.split(doc, "## States\n", parts: 2)
    [section | _] = String.split(section, "\n## ", parts: 2)
    listed = for [_, s] <- Regex.scan(~r/^\s+\* `:(\w+)`/m, section), do: String.to_atom(s)
    assert listed == States.states()
  end

  test "every row comes from and leads to known states, with an action its handler knows" do
    known = States.states()

    for {from, event, to, action} = row <- States.transitions() do
      assert from == :any or Enum.all?(List.wrap(from), &(&1 in known)), inspect(row)
      assert to == :same or to in known, inspect(row)
      assert action in Map.fetch!(@actions, kind(event)), inspect(row)
    end
  end

  test "every outcome a probe reports has a row from any state; the rest are passed over" do
    %{probed: probed, passed_over: passed} = States.outcomes()

    for outcome <- probed, state <- [nil | States.states()] do
      assert {_next, action} = States.next(state, {:probed, outcome})
      assert action in [:take, :keep]
    end

    for outcome <- probed, do: assert(States.teaches?(outcome))
    for outcome <- passed, do: refute(States.teaches?(outcome))
    # A plan's `:skipped` is a candidate connected already.
    assert %Candidate{state: :connected} = Candidate.from_native(native(:skipped))
  end

  test "every state the NIF's encoding names is an outcome the table knows" do
    source = File.read!(Path.join(@root, "native/tinycluster_nif/src/encode.rs"))
    [_, body] = String.split(source, "pub fn candidate", parts: 2)
    [body | _] = String.split(body, "\nfn ", parts: 2)
    named = for [_, s] <- Regex.scan(~r/=>\s*\{?\s*\(\s*atoms::(\w+)\(\)/, body), do: s

    assert named != []
    for state <- named, do: assert(String.to_atom(state) in States.outcomes().probed, state)
  end

  test "every state is reached by a row, or is a plan's outcome the table passes over" do
    reached = for {_, _, to, _} <- States.transitions(), to != :same, into: MapSet.new(), do: to
    passed = MapSet.new(States.outcomes().passed_over)

    for state <- States.states() do
      assert MapSet.member?(reached, state) or MapSet.member?(passed, state), inspect(state)
    end
  end

  test "every state has its attributes and its words" do
    for state <- States.states() do
      assert States.count(state) in [:clear, :back_off, :keep, :back_off_unless_connect]
      assert States.hold(state) in [:backoff, :while_connected, false]
      assert States.pending(state) in [true, false, :if_connected]
      assert is_boolean(States.plain?(state))
      assert States.words(state) =~ ~r/^[a-z]/
      assert Candidate.describe(%Candidate{state: state}) =~ States.words(state)
      # A state held back by its backoff has a cap, and only such a state.
      assert States.hold(state) == :backoff or States.cap(state) == nil
      if States.hold(state) == :backoff, do: assert(States.cap(state) != nil)
    end
  end

  test "rows in their own words" do
    # The poller's own view of a connection wins over a probe sent before it.
    assert States.next(:connected, {:probed, :live}) == {:connected, :keep}
    assert States.next(:rejected, {:probed, :busy}) == {:rejected, :keep}
    assert States.next(:connecting, {:probed, :unreachable}) == {:unreachable, :take}
    # A new candidate, or a restarted one, takes what its probe says.
    assert States.next(nil, {:probed, :hidden}) == {:hidden, :take}
    # Connected: live, an allow list, a refusal once due, a hidden node if wanted; not others.
    assert States.next(:live, :connect) == {:connecting, :connect}
    assert States.next(:rejected, :connect) == {:connecting, :when_due}
    assert States.next(:hidden, :connect) == {:connecting, :if_included}
    assert States.next(:down, :connect) == nil
    assert States.next(:left, :connect) == nil
    # Node events and listings.
    assert States.next(:connected, :nodedown) == {:down, :unless_left}
    assert States.next(:live, :nodedown) == {:live, :none}
    assert States.next(:connecting, :nodeup) == {:connected, :keep_creation}
    assert States.next(:down, :nodeup) == {:connected, :forget_creation}
    assert States.next(:gone, :unlisted) == {:gone, :forget_later}
    assert States.next(:busy, :unlisted) == {:gone, :none}
    assert States.next(:gone, :left) == {:gone, :none}
    assert States.next(:left, :join) == {:live, :none}
  end

  defp native(state) do
    %{
      host: "h",
      alive: "a",
      name: "a@vm",
      address: "127.0.0.1",
      port: 4000,
      state: state,
      reason: nil,
      latency_us: 1
    }
  end
end
