defmodule Tinycluster.PollersTest do
  # Several pollers at once, on several nodes of the host and two in one node, all polling
  # every 100 ms while nodes join and leave: the mesh always forms, and no real connection
  # fails because of a probe.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Tinycluster.TestNodes

  @moduletag timeout: 300_000

  @cycles 40

  # A node whose pollers (one per name) poll every 100 ms for the nodes of this test only.
  # With `-connect_all false` no node connects to the nodes its peers know: every
  # connection of the mesh is made by a poller (or by a node itself, see the joiners).
  defp start_mesh_node(prefix, pollers) do
    names = Enum.map_join(pollers, ",", &Atom.to_string/1)

    eval = """
    {ok, _} = application:ensure_all_started(tinycluster),
    lists:foreach(fun(Name) ->
        {ok, Pid} = 'Elixir.Tinycluster':start_link(
          [{name, Name}, {interval, 100}, {only, [<<"#{prefix}">>]}]),
        unlink(Pid)
      end, [#{names}]),
    io:format("pollers_started~n").
    """

    node =
      TestNodes.start(
        name: "#{prefix}#{System.unique_integer([:positive])}",
        args: TestNodes.code_path_args() ++ ["-connect_all", "false", "-eval", eval]
      )

    await_line(node, "pollers_started")
    node
  end

  # A plain node that, as soon as it is up, connects to `target` itself with a real
  # Node.connect, racing the probes the pollers send it, and prints the result.
  defp start_joiner(prefix, target) do
    eval = "io:format(\"connect_result ~p~n\", [net_kernel:connect_node('#{target}')])."

    TestNodes.start(
      name: "#{prefix}#{System.unique_integer([:positive])}",
      args: ["-connect_all", "false", "-eval", eval]
    )
  end

  defp await_line(node, text, timeout \\ 30_000) do
    receive do
      {port, {:data, {:eol, line}}} when port == node.port ->
        if line =~ text, do: line, else: await_line(node, text, timeout)
    after
      timeout -> flunk("#{node.alive} never printed #{inspect(text)}")
    end
  end

  defp lines(node, acc \\ []) do
    receive do
      {port, {:data, {:eol, line}}} when port == node.port -> lines(node, [line | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp nodes_of(member) when member == node(), do: Node.list()
  defp nodes_of(member), do: :erpc.call(member, :erlang, :nodes, [], 10_000)

  defp meshed?(members) do
    Enum.all?(members, fn member ->
      others = List.delete(members, member)
      seen = nodes_of(member)
      Enum.all?(others, &(&1 in seen))
    end)
  end

  defp refusals(text), do: Regex.scan(~r/refused the connection|refuses this node/, text)

  test "pollers on several nodes, two in one, keep the mesh through #{@cycles} joins and leaves" do
    prefix = "tcm#{System.pid()}_"

    log =
      capture_log(fn ->
        # Two pollers in one node, one in each of two others, and one in this VM.
        a = start_mesh_node(prefix, [:mesh_poller_1, :mesh_poller_2])
        b = start_mesh_node(prefix, [:mesh_poller])
        c = start_mesh_node(prefix, [:mesh_poller])
        start_supervised!({Tinycluster, name: :pollers_test, interval: 100, only: [prefix]})

        mesh = [node(), a.name, b.name, c.name]
        TestNodes.wait_until(fn -> meshed?(mesh) end, "the mesh to form", 30_000)

        {failed_connects, previous} =
          Enum.reduce(1..@cycles, {0, nil}, fn cycle, {failed, previous} ->
            joiner = start_joiner(prefix, a.name)
            # This VM connects to it too, as a user would, while its poller probes it.
            own = Node.connect(joiner.name)
            result = await_line(joiner, "connect_result")

            TestNodes.wait_until(
              fn -> meshed?([joiner.name | mesh]) end,
              "cycle #{cycle}: #{joiner.alive} to be meshed",
              30_000
            )

            # The previous joiner leaves while this one is in the mesh.
            if previous do
              TestNodes.kill(previous)

              TestNodes.wait_until(
                fn -> Enum.all?(mesh, &(previous.name not in nodes_of(&1))) end,
                "cycle #{cycle}: #{previous.alive} to leave the mesh",
                30_000
              )
            end

            failed = failed + if(result =~ "true", do: 0, else: 1) + if(own, do: 0, else: 1)
            {failed, joiner}
          end)

        TestNodes.kill(previous)
        assert failed_connects == 0, "#{failed_connects} real connections failed"

        # Every poller ran throughout.
        for {member, names} <- [
              {a.name, [:mesh_poller_1, :mesh_poller_2]},
              {b.name, [:mesh_poller]},
              {c.name, [:mesh_poller]}
            ],
            name <- names do
          assert is_pid(:erpc.call(member, Process, :whereis, [name], 10_000))
          status = :erpc.call(member, Tinycluster, :status, [name], 10_000)
          assert status.scans >= @cycles

          rejected = for {n, %{state: :rejected}} <- status.candidates, do: n
          assert rejected == [], "#{member}/#{name} has rejected candidates: #{inspect(rejected)}"
        end

        # No poller anywhere saw a connection refused.
        for node <- [a, b, c] do
          output = node |> lines() |> Enum.join("\n")
          assert refusals(output) == [], "#{node.alive} logged:\n#{output}"
        end
      end)

    assert refusals(log) == [], log
  end
end
