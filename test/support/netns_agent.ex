defmodule Tinycluster.NetnsAgent do
  @moduledoc """
  Runs inside a node of a test namespace (see `Tinycluster.Netns.start_agent/3`): reads
  calls from stdin, one per line (`{ref, {module, fun, args}}` as Base64 of
  `term_to_binary`), applies each and writes `tinycluster_agent <Base64 of {ref, result}>`
  to stdout, where `result` is `{:ok, value}` or `{:error, {kind, reason, stacktrace}}`.
  Halts when stdin closes, so it never outlives the test that started it.

  The helpers below run in the agent too, so that one call observes one moment.
  """

  @doc "The agent's loop; never returns."
  def main do
    {:ok, _} = Application.ensure_all_started(:logger)
    loop()
  end

  defp loop do
    case IO.read(:stdio, :line) do
      line when is_binary(line) ->
        line |> String.trim() |> handle()
        loop()

      _eof_or_error ->
        System.halt(0)
    end
  end

  defp handle(""), do: :ok

  defp handle(line) do
    {ref, {module, fun, args}} = line |> Base.decode64!() |> :erlang.binary_to_term()

    result =
      try do
        {:ok, apply(module, fun, args)}
      catch
        kind, reason -> {:error, {kind, reason, __STACKTRACE__}}
      end

    IO.puts("tinycluster_agent " <> Base.encode64(:erlang.term_to_binary({ref, result})))
  end

  @doc "Starts a poller with `opts`, not linked to the agent's loop; returns its name."
  def start_poller(opts) do
    {:ok, pid} = Tinycluster.start_link(opts)
    Process.unlink(pid)
    Keyword.fetch!(opts, :name)
  end

  @doc """
  One moment of a poller: the nodes connected, its status, and its candidates grouped by
  host: each host's EPMD status (`epmd`) and its candidates, sorted by name, from
  `status.hosts`.
  """
  def snapshot(poller) do
    status = Tinycluster.status(poller)

    groups =
      Map.new(status.hosts, fn {label, host} ->
        {label,
         %{
           epmd: host.status,
           address: host.address,
           candidates: Enum.map(host.nodes, &status.candidates[&1])
         }}
      end)

    %{nodes: Node.list(), status: status, groups: groups}
  end

  @doc "The nodes each of `nodes` is connected to, asked over distribution."
  def mesh(nodes) do
    Map.new(nodes, fn node -> {node, :erpc.call(node, :erlang, :nodes, [], 10_000)} end)
  end

  @doc "Runs `Tinycluster.scan/1` and returns `{milliseconds, result}`."
  def timed_scan(opts) do
    {us, result} = :timer.tc(fn -> Tinycluster.scan(opts) end)
    {div(us, 1000), result}
  end
end
