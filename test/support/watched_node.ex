defmodule Tinycluster.WatchedNode do
  @moduledoc """
  A real node that reports everything a probe could make it do: it logs at the most verbose
  level there is (`logger_level all`), prints every message a node monitor of every node
  type gets (`nodeup`, `nodedown`), and prints its atom count every 100 ms. The tests read
  its output to prove that probes leave no trace.

  It runs in embedded mode, which loads every module at boot as a release does; an
  interactive node would load `dist_util` on its first incoming connection of any kind, a
  probe's included, and that load is not the probe's doing.
  """

  alias Tinycluster.TestNodes

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

  @doc """
  Starts a watched node with `TestNodes.start/1` (its options, `:args` appended to the
  watcher's) and waits until it watches, has printed the line `:await` when given (what an
  `-eval` of `:args` prints when done), and holds still.
  """
  @spec start(keyword()) :: Tinycluster.Demo.OSNode.t()
  def start(opts \\ []) do
    args =
      ["-mode", "embedded", "-kernel", "logger_level", "all", "-eval", @watcher] ++
        Keyword.get(opts, :args, [])

    node = opts |> Keyword.delete(:await) |> Keyword.put(:args, args) |> TestNodes.start()
    # The watcher prints from a process of its own, so another -eval's line may come first.
    await_lines(node, ["watching" | List.wrap(opts[:await])])
    # Newer releases' loggers print the boot's progress reports after the -eval has run:
    # what the node prints before it holds still is its own boot, not a probe's doing.
    settled_atoms(node)
    noise(node)
    node
  end

  @doc "The node's next line of output."
  @spec next_line(Tinycluster.Demo.OSNode.t(), timeout()) :: String.t()
  def next_line(node, timeout \\ 15_000), do: TestNodes.next_line(node, timeout)

  @doc "Reads the node's output up to a line that matches `text`."
  @spec await_line(Tinycluster.Demo.OSNode.t(), String.t() | Regex.t()) :: :ok
  def await_line(node, text) do
    line = next_line(node)
    if line =~ text, do: :ok, else: await_line(node, text)
  end

  @doc "Reads the node's output up to the point where each of `texts` has matched a line."
  @spec await_lines(Tinycluster.Demo.OSNode.t(), [String.t() | Regex.t()]) :: :ok
  def await_lines(_node, []), do: :ok

  def await_lines(node, texts) do
    line = next_line(node)
    await_lines(node, Enum.reject(texts, &(line =~ &1)))
  end

  @doc "The node's atom count once it has held still for half a second."
  @spec settled_atoms(Tinycluster.Demo.OSNode.t()) :: non_neg_integer()
  def settled_atoms(node), do: settled_atoms(node, nil, 0)

  defp settled_atoms(node, last, same) do
    case next_line(node) do
      "atoms " <> n ->
        n = String.to_integer(n)

        cond do
          n == last and same >= 4 -> n
          n == last -> settled_atoms(node, n, same + 1)
          true -> settled_atoms(node, n, 0)
        end

      other ->
        # Kept for `noise/1`: a line printed while the count settles is noise all the same.
        stash(node, [other])
        settled_atoms(node, last, same)
    end
  end

  @doc """
  Everything the node printed since it was last read, less its atom counts: what a probe
  made it log or receive. Empty for a silent probe.
  """
  @spec noise(Tinycluster.Demo.OSNode.t()) :: [String.t()]
  def noise(node) do
    stash(node, lines(node, []))
    stashed = Process.delete(key(node)) || []
    Enum.reject(stashed, &String.starts_with?(&1, "atoms "))
  end

  defp key(node), do: {__MODULE__, node.os_pid}

  defp stash(node, new), do: Process.put(key(node), (Process.get(key(node)) || []) ++ new)

  defp lines(node, acc) do
    receive do
      {port, {:data, {:eol, line}}} when port == node.port -> lines(node, [line | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end
end
