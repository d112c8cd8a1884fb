defmodule Tinycluster.NotDistributedTest do
  # A poller on a node that is not distributed warns once, keeps quiet while polling, and
  # starts clustering as soon as Node.start/2 makes the node distributed. The node under test
  # is a separate BEAM started without -sname, since the test VM is already distributed.
  use ExUnit.Case, async: false

  alias Tinycluster.TestNodes

  test "warns once, then clusters once the node is distributed" do
    target = TestNodes.start()
    alive = "tcnd#{System.unique_integer([:positive])}"

    script = """
    {ok, _} = application:ensure_all_started(tinycluster),
    {ok, _} = 'Elixir.Tinycluster':start_link([{interval, 100}]),
    timer:sleep(1500),
    io:format("STARTING DISTRIBUTION~n"),
    {ok, _} = net_kernel:start(['#{alive}', shortnames]),
    erlang:set_cookie(node(), '#{TestNodes.cookie()}'),
    Wait = fun W(0) -> io:format("NOT CONNECTED~n");
               W(N) -> case lists:member('#{target.name}', nodes()) of
                         true -> io:format("CONNECTED~n");
                         false -> timer:sleep(100), W(N - 1)
                       end
           end,
    Wait(150),
    erlang:halt().
    """

    port =
      Port.open({:spawn_executable, System.find_executable("erl")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-noshell" | TestNodes.code_path_args()] ++ ["-eval", script]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)

    on_exit(fn ->
      System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
    end)

    output = collect(port, "")
    [before, _after] = String.split(output, "STARTING DISTRIBUTION", parts: 2)

    assert length(Regex.scan(~r/not distributed/, output)) == 1,
           "expected one warning, got:\n#{output}"

    assert before =~ "not distributed"
    assert output =~ "CONNECTED"
    refute output =~ "NOT CONNECTED"
    refute output =~ ~r/crash|error/i
  end

  defp collect(port, acc) do
    receive do
      {^port, {:data, data}} -> collect(port, acc <> data)
      {^port, {:exit_status, _}} -> acc
    after
      30_000 -> flunk("the node did not finish; output so far:\n#{acc}")
    end
  end
end
