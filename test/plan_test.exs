defmodule Tinycluster.PlanTest do
  # One host's listing, planned with no node started: which names are probed, with which
  # hello, in which order and how many, and what the others are reported as.
  use ExUnit.Case, async: true

  alias Tinycluster.{Candidate, Options}
  alias Tinycluster.Poller.{Candidates, Plan}

  @opts Options.new!(interval: 100, max_backoff: 1_000)

  defp listing(names, label \\ "h") do
    %{
      index: 0,
      label: label,
      address: "10.0.0.2",
      names: for({alive, port} <- names, do: {alive, port, "#{alive}@h2"})
    }
  end

  defp context(fields \\ []) do
    Map.merge(
      %{
        table: Candidates.new(),
        connected: MapSet.new(),
        local_name: "me@h1",
        tls_local: false,
        opts: @opts,
        now_ms: 0,
        share: 1_024,
        last_listing: nil
      },
      Map.new(fields)
    )
  end

  defp entry(alive, fields) do
    struct!(
      %Candidate{host: "h", alive: alive, name: "#{alive}@h2", port: 4000, attempts: 1},
      fields
    )
  end

  defp states(plan), do: Map.new(plan.planned, &{&1.alive, {&1.state, &1.reason}})

  test "every name admitted is probed with send_name, in the listing's order" do
    plan = Plan.host(listing([{"a", 4000}, {"b", 4001}]), context())
    assert plan.targets == [{"a", 4000, :send_name}, {"b", 4001, :send_name}]
    assert plan.planned == []
    assert Enum.sort(plan.listed) == [{"h", "a"}, {"h", "b"}]
    refute plan.unchanged
  end

  test "connected names are skipped, this node and filtered names are left out" do
    opts = %{@opts | except: ["rabbit@"]}
    names = [{"a", 4000}, {"rabbit", 4001}, {"me", 4002}]

    plan =
      Plan.host(
        %{
          listing(names)
          | names: listing(names).names |> List.replace_at(2, {"me", 4002, "me@h1"})
        },
        context(opts: opts, connected: MapSet.new(["a@h2"]))
      )

    assert plan.targets == []
    assert states(plan) == %{"a" => {:skipped, nil}}
    assert plan.listed == [{"h", "a"}]
  end

  test "a name no atom can hold is a bad reply, never probed" do
    long = String.duplicate("x", 300)
    plan = Plan.host(listing([{long, 4000}]), context())
    assert plan.targets == []
    assert %{^long => {:bad_reply, {:name_too_long, _}}} = states(plan)
  end

  test "a candidate backing off, or connected at its port, is held; at another port probed" do
    table = %Candidates{
      entries: %{
        {"h", "a"} => entry("a", state: :rejected, retry_at: 500),
        {"h", "b"} => entry("b", state: :connected, node: :b@h2),
        {"h", "c"} => entry("c", state: :rejected, retry_at: :never)
      }
    }

    names = [{"a", 4000}, {"b", 4000}, {"c", 4001}]
    plan = Plan.host(listing(names), context(table: table, connected: MapSet.new(["b@h2"])))
    # b's name is connected: skipped before anything else.
    assert states(plan) == %{"a" => {:held, nil}, "b" => {:skipped, nil}}
    assert plan.targets == [{"c", 4001, :send_name}]

    # The retry is due; b is no longer connected (its nodedown lost): both probed.
    plan = Plan.host(listing(names), context(table: table, now_ms: 500))
    assert Enum.map(plan.targets, &elem(&1, 0)) == ["a", "b", "c"]
  end

  test "a TLS listener gets the ClientHello at the port it answered TLS; every one when local" do
    table = %Candidates{tls: %{{"h", "a"} => 4000, {"h", "b"} => 3999}}
    plan = Plan.host(listing([{"a", 4000}, {"b", 4000}]), context(table: table))
    assert plan.targets == [{"a", 4000, :client_hello}, {"b", 4000, :send_name}]

    plan = Plan.host(listing([{"a", 4000}, {"b", 4000}]), context(tls_local: true))
    assert Enum.all?(plan.targets, &(elem(&1, 2) == :client_hello))
  end

  test "past its share the rest are deferred; the longest-deferred go first" do
    names = for i <- 1..10, do: {"n#{i}", 4000 + i}
    table = %Candidates{deferred: %{{"h", "n9"} => 5, {"h", "n10"} => 1}}
    plan = Plan.host(listing(names), context(table: table, share: 4))
    assert Enum.map(plan.targets, &elem(&1, 0)) == ["n10", "n9", "n1", "n2"]
    assert length(Plan.deferred(plan)) == 6
    assert length(plan.listed) == 10
    refute plan.unchanged
  end

  test "the same listing with nothing to probe is unchanged" do
    names = [{"a", 4000}]
    connected = MapSet.new(["a@h2"])
    first = Plan.host(listing(names), context(connected: connected))
    refute first.unchanged
    again = Plan.host(listing(names), context(connected: connected, last_listing: first.digest))
    assert again.unchanged
    moved = Plan.host(listing([{"a", 4001}]), context(last_listing: first.digest))
    refute moved.unchanged
  end

  test "a scan's budget is shared: each host an equal part of what is left" do
    assert Plan.share(1_024, 4) == 256
    assert Plan.share(1_024, 1) == 1_024
    assert Plan.share(10, 2_000) == 1
    assert Plan.share(0, 3) == 0
    assert Plan.budget() == 1_024
  end
end
