defmodule Tinycluster.Demo.View do
  # What `mix tinycluster.demo` prints: the live table of the nodes it started, the line
  # printed for each change when the output is not a terminal, and the final mesh matrix.
  # Pure functions from data to iodata, so the task only decides when to print. States,
  # latencies and reasons are said as `mix tinycluster.scan` says them (`Tinycluster.CLI.Format`).
  @moduledoc false

  alias Tinycluster.CLI.Format

  @doc "Whom the demo's poller clusters: only the nodes whose names start with `prefix`."
  def scope(prefix) do
    "The demo's poller clusters only its own nodes (names that start with #{prefix}): " <>
      "it probes and connects no other node on this host."
  end

  @doc "The live table: one row per demo node with its kind, state, probe latency and join time."
  def table(rows, elapsed_ms, poller_node) do
    name_width = name_width(rows)

    header =
      "tinycluster demo: poller on #{poller_node}, #{format_s(elapsed_ms)} since start_link\n\n"

    lines =
      for row <- rows do
        format_row([
          {row.name, name_width},
          {kind(row.kind), 14},
          {Format.state(row.state), 13},
          {Format.latency(row.latency_us), 10},
          {joined(row.joined_ms), 10},
          {expected(row), 0}
        ])
      end

    [
      header,
      format_row([
        {"NODE", name_width},
        {"STARTED AS", 14},
        {"STATE", 13},
        {"PROBE", 10},
        {"JOINED", 10},
        {"", 0}
      ]),
      lines
    ]
  end

  @doc """
  The headings of the lines `change/3` prints, and what their figures are: printed once,
  before the first change, so that piped output explains itself as the table does.
  """
  def change_heading(name_width) do
    [
      "AFTER is the time since the poller started; PROBE, how long the node took to " <>
        "answer the probe.\n",
      format_row([
        {"AFTER", 10},
        {"NODE", name_width},
        {"STARTED AS", 14},
        {"STATE", 13},
        {"PROBE", 0}
      ])
    ]
  end

  @doc "One line for a state change, for output that is not a terminal."
  def change(row, elapsed_ms, name_width) do
    format_row([
      {"+" <> format_s(elapsed_ms), 10},
      {row.name, name_width},
      {kind(row.kind), 14},
      {Format.state(row.state), 13},
      {Format.latency(row.latency_us), 0}
    ])
  end

  @doc """
  The mesh: for each node that could be asked, which of the others it is connected to,
  read from that node itself. `links` maps a node to its `:erlang.nodes/0`, or to an atom
  saying why it was not asked.
  """
  def mesh(order, links) do
    width = order |> Enum.map(&String.length(short(&1))) |> Enum.max(fn -> 4 end)
    head = String.duplicate(" ", width + 2) <> Enum.map_join(1..length(order), " ", &col/1)

    rows =
      for {node, i} <- Enum.with_index(order, 1) do
        label = String.pad_trailing(short(node), width) <> "  "

        case Map.fetch!(links, node) do
          peers when is_list(peers) ->
            cells = Enum.map_join(order, " ", &cell(&1, node, peers))
            [label, cells, "   ", col(i), "\n"]

          why ->
            [label, "(", reason(why), ")\n"]
        end
      end

    ["\nMesh, as each node sees it (x: connected):\n", head, "\n", rows]
  end

  @doc "The width of the name column for these rows."
  def name_width(rows),
    do: rows |> Enum.map(&String.length(&1.name)) |> Enum.max(fn -> 4 end) |> Kernel.+(2)

  defp cell(same, same, _peers), do: " -"
  defp cell(other, _node, peers), do: if(other in peers, do: " x", else: " .")
  defp col(i), do: String.pad_leading(Integer.to_string(i), 2)

  defp reason(:frozen), do: "frozen with SIGSTOP: not asked"
  defp reason(:hidden), do: "hidden node: not connected, not asked"
  defp reason(:rejected), do: "another cookie: not connected, not asked"
  defp reason(:unreachable), do: "not connected: not asked"

  defp short(node), do: node |> Atom.to_string()

  defp kind(:plain), do: "plain"
  defp kind(:late), do: "late"
  defp kind(:hidden), do: "hidden"
  defp kind(:other_cookie), do: "other cookie"
  defp kind(:frozen), do: "frozen"

  defp joined(nil), do: ""
  defp joined(ms), do: "+" <> format_s(ms)

  defp expected(%{state: nil}), do: ""

  defp expected(%{kind: kind, state: state} = row) do
    if state == expected_state(kind),
      do: "ok: " <> Format.describe(%{state: state, reason: row.reason}),
      else: ""
  end

  @doc "The state each kind of demo node ends in."
  def expected_state(kind) when kind in [:plain, :late], do: :connected
  def expected_state(:hidden), do: :hidden
  def expected_state(:other_cookie), do: :rejected
  def expected_state(:frozen), do: :unreachable

  defp format_s(ms), do: :erlang.float_to_binary(ms / 1000, decimals: 2) <> " s"

  defp format_row(cells), do: Format.row(cells)
end
