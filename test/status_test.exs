defmodule Tinycluster.StatusTest do
  # `Tinycluster.status/1` returns exactly what its documented type says (the keys of
  # `Tinycluster.Status.t/0`, of each host's `HostTable.host_view/0` and of `last_scan/0`,
  # read from the compiled typespecs), in the user's terms: no listing digests, no monotonic
  # times, no state the docs do not list. And the pure host table, on its own.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.{Candidate, TestNodes}
  alias Tinycluster.Poller.HostTable

  defp keys_of(module, type) do
    {:ok, types} = Code.Typespec.fetch_types(module)
    [ast] = for {kind, {^type, ast, []}} <- types, kind in [:type, :opaque], do: ast
    map_keys(ast)
  end

  defp map_keys({:type, _, :map, fields}),
    do: Enum.sort(for {:type, _, :map_field_exact, [{:atom, _, key}, _]} <- fields, do: key)

  # `last_scan() | nil` and the like: the map's keys.
  defp map_keys({:type, _, :union, [map | _]}), do: map_keys(map)

  defp documented_states do
    {:ok, types} = Code.Typespec.fetch_types(Candidate)
    [ast] = for {:type, {:state, ast, []}} <- types, do: ast
    {:type, _, :union, atoms} = ast
    for {:atom, _, state} <- atoms, do: state
  end

  test "status/1 has the documented keys, in the user's terms" do
    capture_log(fn ->
      prefix = "st#{System.unique_integer([:positive])}_"
      node = TestNodes.start(name: TestNodes.unique_alive(prefix))
      name = TestNodes.poller_name()
      start_supervised!({Tinycluster, name: name, interval: 200, only: [prefix]})
      TestNodes.wait_state(name, node, :connected)
      TestNodes.wait_until(fn -> Tinycluster.status(name).scans >= 2 end, "2 scans")
      status = Tinycluster.status(name)

      assert Enum.sort(Map.keys(status)) == keys_of(Tinycluster.Status, :t)
      assert Enum.sort(Map.keys(status.last_scan)) == keys_of(Tinycluster.Status, :last_scan)

      for {_label, host} <- status.hosts,
          do: assert(Enum.sort(Map.keys(host)) == keys_of(HostTable, :host_view))

      assert status.hosts["local"].nodes == [Atom.to_string(node.name)]
      assert status.options.dns_timeout == status.options.epmd_timeout

      states = documented_states()
      assert Enum.all?(Map.keys(status.last_scan.by_state), &(&1 in states))

      for {_name, candidate} <- status.candidates do
        assert candidate.state in states
        assert candidate.retry_at in [nil, :never]
        assert is_binary(candidate.description)
      end

      # Nothing twice: a candidate is under `candidates` only; hosts name it.
      refute Map.has_key?(status, :by_host)
    end)
  end

  describe "the host table" do
    @at ~U[2026-01-01 00:00:00Z]

    defp report(label, status, fields \\ []) do
      Map.merge(
        %{
          label: label,
          address: "127.0.0.1",
          epmd_port: 4369,
          status: status,
          names: 1,
          malformed: [],
          latency_us: 300,
          listing: 42,
          unchanged: false
        },
        Map.new(fields)
      )
    end

    test "keeps each host's last answer, when it was asked and when it last answered" do
      {table, nil} = HostTable.answered(HostTable.new(), report("h", :ok), @at)
      later = DateTime.add(@at, 1)
      {table, previous} = HostTable.answered(table, report("h", {:error, :timeout}), later)
      assert previous.status == :ok

      view = HostTable.view(table, [{"h", 4369}], %{}, 0)["h"]
      assert %{status: {:error, :timeout}, checked_at: ^later, last_ok_at: @at} = view
    end

    test "gives the asked hosts' listing digests back, and forgets them after a scan that " <>
           "did not end" do
      {table, _} = HostTable.answered(HostTable.new(), report("h", :ok), @at)
      {table, _} = HostTable.answered(table, report("g", {:error, :x}, listing: nil), @at)
      {table, _} = HostTable.answered(table, report("f", :ok), @at)
      digests = fn table -> for label <- ~w(h g new), do: HostTable.listing(table, label) end
      assert digests.(table) == [42, nil, nil]
      assert digests.(HostTable.forget_listings(table)) == [nil, nil, nil]
    end

    test "makes the host specs once, and again when the node's name or family changes" do
      entries = [:local, {"10.0.0.9", 4369}]
      {table, specs} = HostTable.specs(HostTable.new(), entries, :a@h, :inet)
      assert specs == Tinycluster.Hosts.Specs.specs(entries, :a@h, :inet)
      assert {^table, ^specs} = HostTable.specs(table, entries, :a@h, :inet)
      {_table, renamed} = HostTable.specs(table, entries, :b@g, :inet6)
      assert hd(renamed) == %{hd(specs) | node_host: "g", address: "::1"}
    end

    test "shows every configured host, :pending before its first answer, and no other" do
      {table, _} = HostTable.answered(HostTable.new(), report("10.0.0.9", :ok), @at)
      candidates = %{"a@h" => %Candidate{name: "a@h", host: "10.0.0.9"}}
      view = HostTable.view(table, ["10.0.0.9", "10.0.0.8"], candidates, 0)
      assert Map.keys(view) == ["10.0.0.8", "10.0.0.9"]
      assert %{status: :pending, nodes: [], names: nil} = view["10.0.0.8"]
      assert %{status: :ok, nodes: ["a@h"], names: 1} = view["10.0.0.9"]
      # A host no longer asked (an address that left a DNS answer) is dropped.
      assert HostTable.view(HostTable.keep(table, MapSet.new()), [], candidates, 0) == %{}
    end
  end
end
