defmodule Tinycluster.SilentProbeTest do
  # The probe must leave no trace on the node it probes: no log line, no nodeup or nodedown,
  # and no atom beyond the one name each poller's probes claim.
  use ExUnit.Case, async: false

  alias Tinycluster.{TestEpmd, TestNodes}

  @moduletag timeout: 120_000

  # Runs on the probed node: reports every message a node monitor of every node type gets,
  # and the atom count every 100 ms.
  @watcher """
  spawn(fun() ->
    ok = net_kernel:monitor_nodes(true, [{node_type, all}]),
    io:format("watching~n"),
    Loop = fun L() ->
      receive
        Message -> io:format("message ~p~n", [Message]), L()
      after 100 ->
        io:format("atoms ~p~n", [erlang:system_info(atom_count)]), L()
      end
    end,
    Loop()
  end).
  """

  defp next_line(node, timeout \\ 15_000) do
    receive do
      {port, {:data, {:eol, line}}} when port == node.port -> line
    after
      timeout -> flunk("#{node.alive} printed nothing for #{timeout} ms")
    end
  end

  defp await_line(node, text) do
    line = next_line(node)
    if line =~ text, do: :ok, else: await_line(node, text)
  end

  # The atom count once it holds still for half a second.
  defp settled_atoms(node, last \\ nil, same \\ 0) do
    case next_line(node) do
      "atoms " <> n ->
        n = String.to_integer(n)

        cond do
          n == last and same >= 4 -> n
          n == last -> settled_atoms(node, n, same + 1)
          true -> settled_atoms(node, n, 0)
        end

      _other ->
        settled_atoms(node, last, same)
    end
  end

  defp lines(node, acc \\ []) do
    receive do
      {port, {:data, {:eol, line}}} when port == node.port -> lines(node, [line | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "a hundred probes: no log line, no nodeup or nodedown, one atom per poller" do
    # A private EPMD: no other test run's poller can reach this node and spoil the watch.
    epmd = TestEpmd.start()
    hosts = [{"127.0.0.1", epmd.port}]

    # Embedded mode loads every module at boot, as a release does; an interactive node would
    # load dist_util on its first incoming connection of any kind, a probe's included.
    # The log level is the most verbose there is, so that any line shows.
    node =
      TestNodes.start(
        epmd_port: epmd.port,
        args: ["-mode", "embedded", "-kernel", "logger_level", "all", "-eval", @watcher]
      )

    await_line(node, "watching")
    before = settled_atoms(node)

    # Fifty probes from scans under one name, fifty from a poller under another.
    for _ <- 1..50 do
      assert {:ok, [%{state: :live, name: name}]} =
               Tinycluster.scan(hosts: hosts, name: :silent_probe_scan)

      assert name == Atom.to_string(node.name)
    end

    poller = TestNodes.poller_name()
    start_supervised!({Tinycluster, name: poller, hosts: hosts, interval: 20, connect: false})

    TestNodes.wait_until(
      fn -> Tinycluster.status(poller).scans >= 50 end,
      "fifty scans of the poller"
    )

    assert Tinycluster.status(poller).candidates[Atom.to_string(node.name)].state == :live
    stop_supervised!({Tinycluster, poller})

    after_probes = settled_atoms(node)
    output = lines(node)
    atom_lines = Enum.filter(output, &String.starts_with?(&1, "atoms "))

    assert output -- atom_lines == [], "the probed node printed:\n#{Enum.join(output, "\n")}"
    assert after_probes - before <= 2, "its atom table grew by #{after_probes - before}"
    refute node.name in Node.list(:connected)
  end
end
