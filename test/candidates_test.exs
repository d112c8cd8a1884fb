defmodule Tinycluster.CandidatesTest do
  # The candidates' table on its own: every transition of the README's states table, with
  # the time passed in and no node started. The end-to-end tests show the same rules against
  # real nodes.
  use ExUnit.Case, async: true

  alias Tinycluster.{Candidate, Options}
  alias Tinycluster.Poller.Candidates

  @opts Options.new!(interval: 100, max_backoff: 1_000)
  @at ~U[2026-01-01 00:00:00Z]

  defp now(ms), do: %{ms: ms, at: DateTime.add(@at, ms, :millisecond)}

  # A candidate map as the NIF sends it.
  defp probe(alive, state, fields \\ []) do
    Map.merge(
      %{
        host: "h",
        alive: alive,
        name: "#{alive}@vm",
        address: "127.0.0.1",
        port: 4000,
        state: state,
        reason: nil,
        latency_us: 50
      },
      Map.new(fields)
    )
  end

  # As the poller takes a batch: the table decides, then the atoms of the names it connects
  # are made, at its edge, and given back.
  defp probed(table, maps, opts \\ @opts, ms \\ 0) do
    {table, connects, changes} = Candidates.probed(table, List.wrap(maps), opts, now(ms))
    connects = Tinycluster.NodeName.to_atoms(connects)
    {Candidates.named(table, connects), connects, changes}
  end

  defp entry(table, alive), do: entry_of(table, "h", alive)
  defp entry_of(table, host, alive), do: table.entries[{host, alive}]

  defp states(changes), do: Enum.map(changes, fn {old, new} -> {old && old.state, new.state} end)

  defp listing(listed, answered \\ ["h"], known \\ ["h"]) do
    %{
      listed: MapSet.new(listed, &{"h", &1}),
      deferred: [],
      asked: MapSet.new(answered),
      answered: MapSet.new(answered),
      known: MapSet.new(known)
    }
  end

  # The candidates a plan at `ms` holds back, with the nodes `connected` connected.
  defp holds(table, ms, connected) do
    connected = MapSet.new(connected, &Atom.to_string/1)

    for {{host, alive} = key, %{port: port}} <- table.entries,
        Candidates.held?(table, key, port, ms, connected),
        do: {host, alive, port}
  end

  describe "a probe's answer" do
    test "each state the NIF reports is the candidate's, and a new one is a change" do
      for {state, reason} <- [
            live: nil,
            hidden: nil,
            unreachable: :timeout,
            name_mismatch: {:claimed, "x@vm"},
            busy: :nok,
            bad_reply: {:malformed, "what"},
            tls: :alert,
            not_allowed: nil
          ] do
        {table, connects, changes} =
          probed(Candidates.new(), probe("a", state, reason: reason), %{@opts | connect: false})

        assert entry(table, "a").state == state
        assert entry(table, "a").reason == reason
        assert connects == []
        assert states(changes) == [{nil, state}]
        assert DateTime.compare(entry(table, "a").first_seen, @at) == :eq
      end
    end

    test "a live node is connected at once: :connecting, with its atom, and one connect" do
      {table, connects, changes} = probed(Candidates.new(), probe("a", :live))
      assert %Candidate{state: :connecting, node: :a@vm} = entry(table, "a")
      assert connects == [{{"h", "a"}, :a@vm}]
      assert states(changes) == [{nil, :connecting}]
    end

    test "connects all of a batch, and nothing filtered out, hidden, or with connect: false" do
      maps = [probe("a", :live), probe("b", :live), probe("c", :hidden), probe("skipme", :live)]
      opts = %{@opts | except: ["skipme@"]}
      {table, connects, _} = probed(Candidates.new(), maps, opts)
      assert Enum.map(connects, &elem(&1, 1)) == [:a@vm, :b@vm]
      assert entry(table, "c").state == :hidden
      assert entry(table, "skipme").state == :live

      {_, connects, _} = probed(Candidates.new(), maps, %{@opts | connect: false})
      assert connects == []

      {table, connects, _} = probed(Candidates.new(), maps, %{@opts | include_hidden: true})
      assert {{"h", "c"}, :c@vm} in connects
      assert entry(table, "c").state == :connecting
    end

    test "held back candidates teach nothing" do
      {table, connects, changes} = probed(Candidates.new(), probe("a", :held))
      assert {table.entries, connects, changes} == {%{}, [], []}
    end

    test "one already connected (skipped by the scan) is :connected" do
      {table, [], _} = probed(Candidates.new(), probe("a", :skipped))
      assert entry(table, "a").state == :connected
    end

    test "a connected node stays :connected when a late probe says :live, and no change" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, true, @opts, now(10))
      {table, connects, changes} = probed(table, probe("a", :live), @opts, 20)
      assert entry(table, "a").state == :connected
      assert {connects, changes} == {[], []}
    end

    test "a node allowing nobody (:not_allowed) is connected under EPMD's name" do
      {table, connects, _} = probed(Candidates.new(), probe("a", :not_allowed))
      assert [{{"h", "a"}, :a@vm}] = connects
      assert %{state: :connecting, reason: :not_allowed} = entry(table, "a")
      # Its refusal is :rejected, :not_allowed.
      {table, changes} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(5))
      assert %{state: :rejected, reason: :not_allowed, attempts: 1} = entry(table, "a")
      assert states(changes) == [{:connecting, :rejected}]
    end

    test "a name no atom can hold is :bad_reply, and nothing is connected" do
      long = String.duplicate("l", 253)
      {table, connects, _} = probed(Candidates.new(), probe(long, :not_allowed))
      assert connects == []
      assert %{state: :bad_reply, reason: {:name_too_long, 256}, node: nil} = entry(table, long)
    end
  end

  describe "connecting" do
    setup do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      %{table: table}
    end

    test "a connect that succeeds is :connected, with no attempts", %{table: table} do
      {table, changes} = Candidates.connect_ended(table, {"h", "a"}, true, @opts, now(5))
      assert %{state: :connected, attempts: 0, retry_at: nil} = entry(table, "a")
      assert states(changes) == [{:connecting, :connected}]
    end

    test "a refused one is :rejected, and retried after :interval", %{table: table} do
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))

      assert %{state: :rejected, reason: :connect_failed, attempts: 1, retry_at: 100} =
               entry(table, "a")

      # Not due: held, probed or not, and not connected.
      {table, connects, []} = probed(table, probe("a", :live), @opts, 50)
      assert connects == []
      assert entry(table, "a").state == :rejected

      # Due: connected again.
      {table, [_], _} = probed(table, probe("a", :live), @opts, 100)
      assert entry(table, "a").state == :connecting
    end

    test "a crashed connect is :rejected with the crash as reason", %{table: table} do
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, {:crashed, :boom}, @opts, now(0))
      assert %{state: :rejected, reason: {:crashed, :boom}} = entry(table, "a")
    end

    test "a node no longer distributed meanwhile is :live again", %{table: table} do
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, :ignored, @opts, now(0))
      assert entry(table, "a").state == :live
    end

    test "a node listed at a new port (it restarted) starts over", %{table: table} do
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      {table, connects, _} = probed(table, probe("a", :live, port: 4001), @opts, 10)
      assert [_] = connects
      assert %{state: :connecting, attempts: 0, port: 4001} = entry(table, "a")
    end

    test "the end of a connect for a forgotten candidate changes nothing", %{table: table} do
      assert {^table, []} = Candidates.connect_ended(table, {"h", "zz"}, true, @opts, now(0))
    end
  end

  describe "stalls" do
    # A connection attempt that ran into net_setuptime (`Tinycluster.Poller.Candidates.Stalls`).
    test "a node whose handshakes stall is unreachable, retried within two intervals, never left alone" do
      table =
        Enum.reduce(1..5, Candidates.new(), fn n, table ->
          at = n * 1_000
          {table, [{{"h", "a"}, :a@vm}], _} = probed(table, probe("a", :live), @opts, at)
          {table, changes} = Candidates.connect_ended(table, {"h", "a"}, :stalled, @opts, now(at))
          assert states(changes) == [{:connecting, :unreachable}]
          entry = entry(table, "a")
          assert %{state: :unreachable, reason: :connect_timeout, attempts: ^n} = entry
          assert is_integer(entry.retry_at) and entry.retry_at <= at + 2 * @opts.interval
          table
        end)

      # Held back until its retry, then probed and connected as before.
      assert holds(table, 5_000, []) == [{"h", "a", 4000}]
      assert holds(table, 5_200, []) == []
      {table, [_], _} = probed(table, probe("a", :live), @opts, 5_200)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, true, @opts, now(5_200))
      assert %{state: :connected, attempts: 0, retry_at: nil} = entry(table, "a")

      assert elem(Tinycluster.Status.candidates(table, 0), 0)["a@vm"].state == :connected
    end

    test "a stall between two refusals neither counts nor clears them" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      {table, [_], _} = probed(table, probe("a", :live), @opts, 100)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, :stalled, @opts, now(100))
      assert %{state: :unreachable, retry_at: retry_at} = entry(table, "a")
      assert is_integer(retry_at)
      {table, [_], _} = probed(table, probe("a", :live), @opts, 300)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(300))
      assert %{state: :rejected, reason: :connect_failed, retry_at: :never} = entry(table, "a")
    end

    test "a stall says what it is, and starts a new run after a connection" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, :stalled, @opts, now(0))
      assert elem(Tinycluster.Status.candidates(table, 0), 0)["a@vm"].description =~ "stalled"
      {table, [_], _} = probed(table, probe("a", :live), @opts, 100)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, true, @opts, now(100))
      {table, _} = Candidates.node_down(table, :a@vm, :connection_closed)
      {table, [_], _} = probed(table, probe("a", :live), @opts, 200)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, :stalled, @opts, now(200))
      assert %{state: :unreachable, attempts: 1} = entry(table, "a")
    end
  end

  describe "refusals" do
    test "after #{Tinycluster.Poller.Backoff.max_refusals()} refused connections a node is left alone" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      {table, [_], _} = probed(table, probe("a", :live), @opts, 100)
      {table, changes} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(100))
      assert %{state: :rejected, attempts: 2, retry_at: :never} = entry(table, "a")
      assert states(changes) == [{:connecting, :rejected}]
      # Never connected again, however long it waits. It is probed all the same (the probe
      # is silent, and only its creation tells a restart at the same port), so not held.
      assert holds(table, 10_000_000, []) == []
      {table, [], []} = probed(table, probe("a", :live), @opts, 10_000_000)

      assert elem(Tinycluster.Status.candidates(table, 0), 0)["a@vm"].description =~
               "left alone until it restarts"

      assert elem(Tinycluster.Status.candidates(table, 0), 0)["a@vm"].retry_at == :never

      # A new port is a restarted node: tried again at once.
      {restarted, [_], _} = probed(table, probe("a", :live, port: 4001), @opts, 10_000_001)
      assert entry(restarted, "a").state == :connecting
    end

    test "a node whose allow list names nobody gets the same bound" do
      {table, [_], _} = probed(Candidates.new(), probe("a", :not_allowed))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      {table, [_], _} = probed(table, probe("a", :not_allowed), @opts, 100)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(100))
      assert %{state: :rejected, reason: :not_allowed, retry_at: :never} = entry(table, "a")
      # Its probe is not silent (the node logs each), so it is held, probe included.
      assert holds(table, 10_000_000, []) == [{"h", "a", 4000}]
    end

    test "a failed probe between two refusals does not clear their count" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      # A probe that times out under load, then one that answers.
      {table, [], _} = probed(table, probe("a", :unreachable, reason: :timeout), @opts, 100)
      {table, [_], _} = probed(table, probe("a", :live), @opts, 400)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(400))
      assert entry(table, "a").retry_at == :never
    end

    test "a busy answer (the refused handshake still ending) keeps the count" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      {table, [], []} = probed(table, probe("a", :busy, reason: :alive), @opts, 10)
      assert %{state: :rejected, attempts: 1, retry_at: 100} = entry(table, "a")
      {table, [_], _} = probed(table, probe("a", :live), @opts, 100)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(100))
      assert entry(table, "a").retry_at == :never
    end

    # A scan started before the last refusal did not hold the node back; its probe may
    # still time out under load, or meet a broken answer, and end after the refusal.
    test "a probe of a scan started before the last refusal does not undo it" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      {table, [_], _} = probed(table, probe("a", :live), @opts, 100)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(100))

      for {state, reason} <- [unreachable: :timeout, bad_reply: :closed, hidden: nil] do
        {late, [], _} = probed(table, probe("a", state, reason: reason), @opts, 150)
        assert %{state: :rejected, retry_at: :never} = entry(late, "a"), inspect(state)
        {late, [], []} = probed(late, probe("a", :live), @opts, 10_000_000)
        assert entry(late, "a").retry_at == :never
      end
    end

    test "a crash of the connect is no refusal: it backs off as before" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, {:crashed, :x}, @opts, now(0))
      {table, [_], _} = probed(table, probe("a", :live), @opts, 100)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, {:crashed, :x}, @opts, now(100))
      assert is_integer(entry(table, "a").retry_at)
    end

    test "a change of this node's cookie for it starts it over" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      {table, [_], _} = probed(table, probe("a", :live), @opts, 100)
      old = Candidates.cookie_digest(:old)
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(100), old)
      # The cookie it refused changes nothing.
      table = Candidates.cookies(table, fn :a@vm -> :old end)
      assert entry(table, "a").retry_at == :never
      table = Candidates.cookies(table, fn :a@vm -> :new end)
      assert %{attempts: 0, retry_at: nil} = entry(table, "a")
      {table, [_], _} = probed(table, probe("a", :live), @opts, 200)
      assert entry(table, "a").state == :connecting
    end
  end

  describe "deferred candidates" do
    test "keep the time they were first deferred, while their host's scans defer them" do
      table = Candidates.new()
      {table, []} = Candidates.scan_ended(table, %{listing([]) | deferred: [{"h", "b"}]}, now(0))
      assert table.deferred == %{{"h", "b"} => 0}

      # Still deferred, "b" keeps its time, before the newly deferred "a"; another host's
      # are kept while no scan of it says otherwise.
      deferred = [{"h", "a"}, {"h", "b"}, {"g", "c"}]
      {table, []} = Candidates.scan_ended(table, %{listing([]) | deferred: deferred}, now(100))
      assert table.deferred == %{{"h", "b"} => 0, {"h", "a"} => 100, {"g", "c"} => 100}

      # Probed, connected or gone: no longer deferred.
      {table, []} =
        Candidates.scan_ended(table, %{listing([]) | deferred: [{"h", "a"}]}, now(200))

      assert table.deferred == %{{"h", "a"} => 100, {"g", "c"} => 100}
    end
  end

  describe "the atom budget" do
    alias Tinycluster.Poller.AtomBudget

    defp fresh_names(prefix, n) do
      tag = "#{prefix}#{System.unique_integer([:positive])}_"
      for i <- 1..n, do: "#{tag}#{i}"
    end

    defp atoms_of(names), do: Enum.count(names, &Tinycluster.NodeName.existing("#{&1}@vm"))

    # Every connection the batch started ends with `result`.
    defp end_all(table, connects, result, ms) do
      Enum.reduce(connects, table, fn {key, _node}, acc ->
        {acc, _} = Candidates.connect_ended(acc, key, result, @opts, now(ms))
        acc
      end)
    end

    test "names of all hosts together make at most the rate's atoms a minute; one notice" do
      budget = AtomBudget.per_window()
      names = fresh_names("fresh", budget + 5)
      # Spread over several hosts: the rate is the poller's, not each host's.
      maps =
        for {alive, i} <- Enum.with_index(names), do: probe(alive, :live, host: "h#{rem(i, 4)}")

      {table, connects, changes} = probed(Candidates.new(), maps, @opts, 0)
      assert length(connects) == budget
      assert atoms_of(names) == budget
      assert [{:atom_budget, :window, _host}] = for({:atom_budget, _, _} = n <- changes, do: n)
      held = for {_, %{reason: :atom_budget} = c} <- table.entries, do: c
      assert length(held) == 5
      assert Enum.all?(held, &(&1.state == :live and &1.node == nil))

      # Their connections fail: the same minute, the others still wait, said no more.
      table = end_all(table, connects, false, 1_000)
      late = for c <- held, do: probe(c.alive, :live, host: c.host)
      {table, [], changes} = probed(table, late, @opts, 30_000)
      refute Enum.any?(changes, &match?({:atom_budget, _, _}, &1))
      assert AtomBudget.view(table.budget, 30_000).wasted == budget

      # The next minute: connected.
      {_table, connects, _} = probed(table, late, @opts, 60_000)
      assert length(connects) == 5
    end

    test "a connection repays its atom: real nodes under new names are never held back" do
      # Five times the rate within one minute, each connecting before the next is listed.
      names = fresh_names("real", AtomBudget.per_window() * 5)

      table =
        Enum.reduce(names, Candidates.new(), fn alive, table ->
          {table, [connect], _} = probed(table, probe(alive, :live), @opts, 1_000)
          end_all(table, [connect], true, 1_000)
        end)

      assert atoms_of(names) == length(names)
      assert Candidates.count(table, :connected) == length(names)
      assert %{window: 0, wasted: 0, proven_hosts: 1} = AtomBudget.view(table.budget, 1_000)
    end

    test "past the lifetime cap, only hosts whose new nodes connected make atoms" do
      cap = 3
      table = %{Candidates.new() | budget: AtomBudget.new(cap)}
      # A real host proves itself once.
      [first] = fresh_names("proof", 1)
      {table, [proof], _} = probed(table, probe(first, :live, host: "real"), @opts, 0)
      table = end_all(table, [proof], true, 0)

      # A hostile host's names never connect: each loses its atom, up to the cap...
      hostile = fresh_names("hostile", cap)
      maps = for alive <- hostile, do: probe(alive, :live, host: "bad")
      {table, connects, _} = probed(table, maps, @opts, 0)
      table = end_all(table, connects, false, 0)
      assert AtomBudget.view(table.budget, 0).wasted == cap

      # ...and past it, in every later minute, its new names stay strings, said once.
      {table, notices} =
        Enum.reduce(1..5, {table, []}, fn minute, {table, notices} ->
          more = fresh_names("hostile_more", 10)
          maps = for alive <- more, do: probe(alive, :live, host: "bad")
          {table, [], changes} = probed(table, maps, @opts, minute * 60_000)
          assert atoms_of(more) == 0
          assert Enum.all?(more, &(entry_of(table, "bad", &1).reason == :atom_cap))
          {table, notices ++ for({:atom_budget, _, _} = n <- changes, do: n)}
        end)

      assert notices == [{:atom_budget, :lifetime, "bad"}]
      # Nor does a host never heard of...
      [stranger] = fresh_names("stranger", 1)
      {table, [], _} = probed(table, probe(stranger, :live, host: "new"), @opts, 400_000)
      assert atoms_of([stranger]) == 0

      # ...while real nodes of the proven host, many more than the cap, all connect.
      real = fresh_names("real_more", cap * 20)

      table =
        Enum.reduce(real, table, fn alive, table ->
          {table, [connect], _} = probed(table, probe(alive, :live, host: "real"), @opts, 400_000)
          end_all(table, [connect], true, 400_000)
        end)

      assert atoms_of(real) == length(real)
      assert AtomBudget.view(table.budget, 400_000).wasted == cap
    end

    test "a proven host that then invents names loses its proof within one window" do
      table = %{Candidates.new() | budget: AtomBudget.new(1)}
      [first] = fresh_names("proof", 1)
      {table, [proof], _} = probed(table, probe(first, :live, host: "turn"), @opts, 0)
      table = end_all(table, [proof], true, 0)
      # The lifetime cap is spent by another host.
      [waste] = fresh_names("waste", 1)
      {table, [c], _} = probed(table, probe(waste, :live, host: "other"), @opts, 0)
      table = end_all(table, [c], false, 0)

      invented = fresh_names("turned", AtomBudget.per_window() * 3)

      Enum.reduce(Enum.with_index(invented), table, fn {alive, i}, table ->
        ms = 60_000 * (1 + div(i, 10))
        {table, connects, _} = probed(table, probe(alive, :live, host: "turn"), @opts, ms)
        end_all(table, connects, false, ms)
      end)

      assert atoms_of(invented) == AtomBudget.per_window()
    end

    test "the table makes no atom: it names whom to connect, and the caller makes the atoms" do
      names = fresh_names("pure", 3)
      maps = for alive <- names, do: probe(alive, :live)
      {table, connects, _} = Candidates.probed(Candidates.new(), maps, @opts, now(0))
      assert connects == for(alive <- names, do: {{"h", alive}, "#{alive}@vm"})
      assert atoms_of(names) == 0
      assert AtomBudget.view(table.budget, 0).window == 3
      assert Enum.all?(names, &(entry(table, &1).state == :connecting))
    end

    test "a new name two hosts list in one batch is one atom, counted once" do
      [alive] = fresh_names("twice", 1)
      maps = [probe(alive, :live), probe(alive, :live, host: "g", port: 5000)]
      {table, connects, _} = probed(Candidates.new(), maps, @opts, 0)
      node = String.to_existing_atom("#{alive}@vm")
      assert connects == [{{"h", alive}, node}, {{"g", alive}, node}]
      assert AtomBudget.view(table.budget, 0).window == 1
      # Both connections end: the one atom is repaid once, and nothing is counted lost.
      table = end_all(table, connects, true, 0)
      assert %{window: 0, wasted: 0} = AtomBudget.view(table.budget, 0)
    end

    test "a name that is an atom already costs nothing" do
      maps = for i <- 1..100, do: probe("known#{i}", :live, name: "a@vm")
      {_, connects, changes} = probed(Candidates.new(), maps, @opts, 0)
      assert length(connects) == 100
      assert changes |> Enum.filter(&match?({:atom_budget, _, _}, &1)) == []
    end
  end

  describe "a name that more than one host lists" do
    # The second host's listener answers the probe under the real node's name: it only
    # claims it. Both entries are connected while the node is (the name is in Node.list).
    defp claimed_pair do
      maps = [probe("a", :skipped, host: "fake"), probe("a", :skipped, host: "real", port: 5000)]
      {table, [], _} = probed(Candidates.new(), maps, @opts, 0)
      table
    end

    test "a nodedown marks every entry of the name :down, so each host is asked again" do
      table = claimed_pair()
      assert Candidates.count(table, :connected) == 2
      {table, changes} = Candidates.node_down(table, :a@vm, :connection_closed)

      assert Enum.sort(for {_, new} <- changes, do: {new.host, new.state}) ==
               [{"fake", :down}, {"real", :down}]

      {table, changes} = Candidates.node_up(table, :a@vm)
      assert length(changes) == 2
      assert Candidates.count(table, :connected) == 2
    end

    test "a :connected entry is held only while its node is connected" do
      table = claimed_pair()

      assert Enum.sort(holds(table, 0, [:a@vm])) ==
               [{"fake", "a", 4000}, {"real", "a", 5000}]

      assert holds(table, 0, []) == []
    end

    test "status shows it once in candidates and every entry, with its host, in claimed" do
      {table, _, _} = probed(claimed_pair(), probe("a", :live, host: "fake"), @opts, 10)
      {table, _} = Candidates.node_down(table, :a@vm, :connection_closed)
      {table, _} = Candidates.node_up(table, :a@vm)
      {candidates, claimed} = Tinycluster.Status.candidates(table, 0)
      assert map_size(candidates) == 1
      assert [%{host: "fake"}, %{host: "real"}] = claimed["a@vm"]
      refute Map.has_key?(claimed, "b@vm")
    end
  end

  describe "failed probes back off" do
    test ":unreachable is asked again after one interval, then two at most" do
      table =
        Enum.reduce([0, 100, 300, 500], Candidates.new(), fn ms, table ->
          assert holds(table, ms, []) == []
          {table, [], _} = probed(table, probe("a", :unreachable, reason: :timeout), @opts, ms)
          table
        end)

      assert %{attempts: 4, retry_at: 700} = entry(table, "a")
      assert holds(table, 699, []) == [{"h", "a", 4000}]
      assert holds(table, 700, []) == []
    end

    test ":bad_reply, :tls and :not_allowed (connect: false) double up to :max_backoff" do
      for state <- [:bad_reply, :tls, :not_allowed] do
        opts = %{@opts | connect: false}

        {table, _} =
          Enum.reduce(1..6, {Candidates.new(), 0}, fn _, {table, ms} ->
            {table, [], _} = probed(table, probe("a", state), opts, ms)
            {table, entry(table, "a").retry_at}
          end)

        assert %{attempts: 6} = entry(table, "a")
        # 100 + 200 + 400 + 800 + 1000 = 2500 before the sixth, then 1000 more.
        assert entry(table, "a").retry_at == 3_500, "#{state}"
      end
    end

    test "an answer clears the count" do
      {table, _, _} = probed(Candidates.new(), probe("a", :unreachable, reason: :timeout))
      {table, _, changes} = probed(table, probe("a", :live), %{@opts | connect: false}, 200)
      assert %{state: :live, attempts: 0, retry_at: nil} = entry(table, "a")
      assert states(changes) == [{:unreachable, :live}]
    end
  end

  describe "TLS listeners" do
    test "are probed with the TLS hello at the port they answered on, while listed" do
      {table, _, _} = probed(Candidates.new(), probe("t", :tls, reason: :alert))
      assert Tinycluster.Poller.Tls.listener?(table.tls, "h", "t", 4000)
      refute Tinycluster.Poller.Tls.listener?(table.tls, "h", "t", 4001)
      {table, _} = Candidates.scan_ended(table, listing(["t"]), now(10))
      assert Tinycluster.Poller.Tls.listener?(table.tls, "h", "t", 4000)
      # No longer listed: forgotten, with its TLS port.
      {table, _} = Candidates.scan_ended(table, listing([]), now(20))
      assert entry(table, "t").state == :gone
      assert table.tls == %{}
    end
  end

  describe "node events" do
    setup do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, true, @opts, now(5))
      %{table: table}
    end

    test "a nodedown is :down with its reason, a nodeup :connected", %{table: table} do
      {table, changes} = Candidates.node_down(table, :a@vm, :connection_closed)
      assert %{state: :down, reason: :connection_closed} = entry(table, "a")
      assert states(changes) == [{:connected, :down}]
      {table, changes} = Candidates.node_up(table, :a@vm)
      assert %{state: :connected, reason: nil} = entry(table, "a")
      assert states(changes) == [{:down, :connected}]
    end

    test "a down node is probed again, and connected when it answers", %{table: table} do
      {table, _} = Candidates.node_down(table, :a@vm, :net_tick_timeout)
      {table, [_], _} = probed(table, probe("a", :live), @opts, 50)
      assert entry(table, "a").state == :connecting
    end

    test "a nodedown of a node that was not connected (a refused attempt) changes nothing" do
      {table, _, _} = probed(Candidates.new(), probe("a", :live))
      {table, _} = Candidates.connect_ended(table, {"h", "a"}, false, @opts, now(0))
      assert {^table, []} = Candidates.node_down(table, :a@vm, :connection_closed)
    end

    test "a node no candidate names changes nothing", %{table: table} do
      assert {^table, []} = Candidates.node_up(table, :other@vm)
      assert {^table, []} = Candidates.node_down(table, :other@vm, :x)
    end
  end

  describe "the end of a scan" do
    setup do
      {table, _, _} = probed(Candidates.new(), [probe("a", :live), probe("b", :live)])
      %{table: table}
    end

    test "a candidate its host no longer lists is :gone", %{table: table} do
      {table, changes} = Candidates.scan_ended(table, listing(["a"]), now(10))
      assert entry(table, "b").state == :gone
      assert entry(table, "a").state == :connecting
      assert states(changes) == [{:connecting, :gone}]
    end

    test "a host that did not answer keeps its candidates", %{table: table} do
      {table, []} = Candidates.scan_ended(table, listing([], []), now(10))
      assert entry(table, "b").state == :connecting
    end

    test "a host no longer known (it left a DNS answer) has its candidates :gone", %{table: t} do
      {table, _} = Candidates.scan_ended(t, listing([], [], []), now(10))
      assert entry(table, "a").state == :gone
    end

    test "a gone candidate is forgotten an hour after it was last listed", %{table: table} do
      {table, _} = Candidates.scan_ended(table, listing(["a"]), now(10))
      hour = Candidates.limits().forget_gone_after_ms
      {table, []} = Candidates.scan_ended(table, listing(["a"]), now(hour))
      assert entry(table, "b").state == :gone
      {table, []} = Candidates.scan_ended(table, listing(["a"]), now(hour + 1))
      assert entry(table, "b") == nil
      assert entry(table, "a").state == :connecting
    end

    test "at most #{Candidates.limits().max_gone} gone candidates are kept, oldest first out" do
      max = Candidates.limits().max_gone
      maps = for i <- 1..(max + 10), do: probe("n#{i}", :live, name: "n#{i}@vm")

      table =
        maps
        |> Enum.with_index()
        |> Enum.reduce(Candidates.new(), fn {map, i}, table ->
          elem(probed(table, map, %{@opts | connect: false}, i), 0)
        end)

      {table, _} = Candidates.scan_ended(table, listing([]), now(100_000))
      assert map_size(table.entries) == max
      # The first ten seen (and last listed) are the ones forgotten.
      assert entry(table, "n1") == nil and entry(table, "n10") == nil
      assert entry(table, "n11").state == :gone
    end
  end

  describe "the view" do
    test "is by full name, with the state in words and the wait in ms, no monotonic time" do
      {table, _, _} = probed(Candidates.new(), probe("a", :bad_reply, reason: :closed))
      {view, claimed} = Tinycluster.Status.candidates(table, 30)
      assert claimed == %{}
      assert %Candidate{retry_in_ms: 70, retry_at: nil, description: text} = view["a@vm"]
      assert text == Candidate.describe(entry(table, "a"))
      assert elem(Tinycluster.Status.candidates(table, 1_000), 0)["a@vm"].retry_in_ms == 0
    end
  end
end
