defmodule Tinycluster.ScanNotStartedTest do
  # The README's "`error` when a scan cannot start", on a real node: a node whose host part
  # is no host a node name may have (`erl -sname 'a@bad+host'` starts, and registers with
  # EPMD) gives its pollers a probe name the NIF refuses, so no scan ever starts. The poller
  # says so once, not once per poll; it keeps running, the same process; and
  # `Tinycluster.scan/1` there returns the error rather than raising.
  use ExUnit.Case, async: false

  alias Tinycluster.TestNodes
  alias Tinycluster.Poller.Report

  @moduletag timeout: 120_000

  @polls 10

  # Runs a poller at 100 ms, waits for its next @polls polls (traced, so that nothing is
  # timed), for the last one to be handled and for Logger to print what it was given, then
  # prints whether the poller is still the one started and what a scan returns.
  @script """
  {ok, _} = application:ensure_all_started(tinycluster),
  {ok, Poller} = 'Elixir.Tinycluster':start_link([{interval, 100}]),
  erlang:trace(Poller, true, ['receive', {tracer, self()}]),
  Polls = fun L(0) -> ok; L(N) -> receive {trace, Poller, 'receive', poll} -> L(N - 1) end end,
  Polls(#{@polls}),
  _ = 'Elixir.Tinycluster':status('Elixir.Tinycluster'),
  ok = 'Elixir.Logger':flush(),
  io:format("same ~w~n", [whereis('Elixir.Tinycluster') =:= Poller andalso is_process_alive(Poller)]),
  io:format("scan ~s~n", ['Elixir.Kernel':inspect('Elixir.Tinycluster':scan([]))]),
  io:format("done~n").
  """

  test "a scan that cannot start is logged once, and the poller keeps running" do
    alive = TestNodes.unique_alive("tcbad")
    args = TestNodes.code_path_args() ++ ["-eval", @script]
    node = TestNodes.start(name: "#{alive}@bad+host", args: args)
    lines = until_done(node, [])
    printed = "the node printed:\n" <> Enum.join(lines, "\n")
    reason = ~s({:badarg, "probe_name is not a node name"})

    said = Enum.filter(lines, &(&1 =~ "could not start a scan"))
    assert length(said) == 1, "said #{length(said)} times over #{@polls} polls; " <> printed
    assert hd(said) =~ "[error] tinycluster: could not start a scan: #{reason}"
    assert "same true" in lines, printed
    assert "scan {:error, #{reason}}" in lines, printed
  end

  test "a scan that starts lets the next refusal be said again" do
    said = MapSet.new([:hosts, :not_distributed, {:scan_not_started, :a}, {:capped, [:tls]}])
    assert Report.scan_started(said) == MapSet.new([:hosts, {:capped, [:tls]}])
  end

  # Every line `node` prints before "done".
  defp until_done(node, acc) do
    case TestNodes.next_line(node, 60_000) do
      "done" -> Enum.reverse(acc)
      line -> until_done(node, [line | acc])
    end
  end
end
