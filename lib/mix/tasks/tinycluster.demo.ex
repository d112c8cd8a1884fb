defmodule Mix.Tasks.Tinycluster.Demo do
  @shortdoc "Starts a few local nodes and shows tinycluster cluster them"
  @moduledoc """
  Starts a few plain `erl` nodes on this host, runs a tinycluster poller in this VM, and
  shows each node's state live until every node has settled, then the mesh (who is
  connected to whom, asked of each node) and stops every node it started.

      mix tinycluster.demo
      mix tinycluster.demo --nodes 6 --hidden 1 --other-cookie 1 --frozen 1 --late 2

  ## Flags

    * `--nodes N` - plain nodes started before the poller (default 4).
    * `--hidden K` - hidden nodes: reported `hidden`, never connected (default 0).
    * `--other-cookie K` - nodes with another cookie: they answer the probe, refuse the
      connection, and are reported `rejected` (default 0).
    * `--frozen K` - nodes frozen with SIGSTOP: reported `unreachable` after the probe
      timeout, without delaying the others (default 0).
    * `--late K` - nodes started one per interval after the poller (default 0).
    * `--interval MS` - the poll interval (default 1000).
    * `--timeout MS` - give up waiting for the nodes to settle after this long (default 30000).

  In a terminal the table is redrawn in place; when the output is piped, one line is printed
  per change instead, under one line of column headings, with no escape codes. Every node
  runs under a guard that kills it when this VM exits, so Ctrl-C leaves nothing behind.

  The demo's poller clusters only the nodes the demo started (`only:` their names' prefix,
  `demo-<OS pid>-`), so it never probes nor connects another node on the host, such as a
  release running there. It starts no application: in a project that depends on
  tinycluster, that project's own application (and its poller, or tinycluster's
  `autostart`) stays stopped.
  """
  use Mix.Task

  alias Tinycluster.Demo.View
  alias Tinycluster.Demo.OSNode

  @switches [
    nodes: :integer,
    hidden: :integer,
    other_cookie: :integer,
    frozen: :integer,
    late: :integer,
    interval: :integer,
    timeout: :integer
  ]

  @impl true
  def run(argv) do
    {flags, _} = OptionParser.parse!(argv, strict: @switches)
    interval = Keyword.get(flags, :interval, 1_000)

    # Compiled and loaded, but nothing started: in a dependent project, `app.start` would
    # start that project's application, its own poller among it, and tinycluster's
    # autostart. The demo needs only tinycluster's code and its own poller.
    Mix.Task.run("compile", [])
    nif_loaded!()
    # The view shows every state change; log lines would only break it up.
    Logger.configure(level: :error)
    distribute!()

    plan = plan(flags)
    {early, late} = Enum.split_with(plan, &(&1.kind != :late))
    Mix.shell().info(View.scope(prefix()))
    Mix.shell().info("Starting #{length(early)} nodes (#{summary(early)})...")
    nodes = start_nodes(early)

    try do
      for %{kind: :frozen} = n <- nodes, do: OSNode.freeze(n.os_node)
      started = System.monotonic_time(:millisecond)

      # Only the demo's own nodes: a poller without `:only` would probe every node on the
      # host, and try to connect each with the demo's cookie, which a release next to it
      # logs as "Invalid challenge reply".
      {:ok, _} =
        Tinycluster.start_link(name: Tinycluster.Demo, interval: interval, only: [prefix()])

      demo = self()
      spawn_link(fn -> start_late(late, interval, demo) end)
      tty? = IO.ANSI.enabled?()
      settled = watch(nodes, length(late), started, tty?, Keyword.get(flags, :timeout, 30_000))
      nodes = settled.nodes
      await_mesh(nodes)
      order = [node() | Enum.map(nodes, & &1.name)]
      IO.write(View.mesh(order, links(nodes)))

      unless settled.ok? do
        Mix.shell().error("\nNot every node reached its expected state in time.")
      end
    after
      stop_all()
    end
  end

  defp nif_loaded! do
    Code.ensure_loaded(Tinycluster.Native)

    with {path, reason} <- Tinycluster.Native.load_error() do
      Mix.raise("tinycluster.demo: the NIF did not load from #{path}.so: #{inspect(reason)}")
    end
  end

  defp distribute! do
    :ok = OSNode.ensure_epmd()

    unless Node.alive?() do
      {:ok, _} = Node.start(:"tinycluster_demo_#{System.pid()}", :shortnames)
    end

    Node.set_cookie(:"tinycluster_demo_#{System.pid()}")
  end

  defp plan(flags) do
    counts = [
      plain: Keyword.get(flags, :nodes, 4),
      hidden: Keyword.get(flags, :hidden, 0),
      other_cookie: Keyword.get(flags, :other_cookie, 0),
      frozen: Keyword.get(flags, :frozen, 0),
      late: Keyword.get(flags, :late, 0)
    ]

    for {kind, count} <- counts, i <- Enum.to_list(1..count//1) do
      %{kind: kind, alive: prefix() <> String.replace("#{kind}-#{i}", "_", "-")}
    end
  end

  # Every node this run starts, and no other, has a name that starts with this.
  defp prefix, do: "demo-#{System.pid()}-"

  defp summary(plan) do
    plan |> Enum.frequencies_by(& &1.kind) |> Enum.map_join(", ", fn {k, n} -> "#{n} #{k}" end)
  end

  defp start_nodes(plan) do
    owner = self()

    plan
    |> Task.async_stream(&start_node(&1, owner), timeout: 60_000, max_concurrency: 4)
    |> Enum.map(fn {:ok, node} -> node end)
  end

  defp start_node(%{kind: kind, alive: alive} = spec, owner) do
    cookie =
      if kind == :other_cookie, do: "another_cookie", else: Atom.to_string(Node.get_cookie())

    case OSNode.start(alive, cookie, hidden: kind == :hidden, owner: owner) do
      {:ok, os_node} ->
        :persistent_term.put({__MODULE__, alive}, os_node)
        Map.merge(spec, %{os_node: os_node, name: os_node.name})

      {:error, reason} ->
        Mix.raise("could not start node #{alive}: #{inspect(reason)}")
    end
  end

  defp start_late(late, interval, demo) do
    for spec <- late do
      Process.sleep(interval)
      send(demo, {:late_started, start_node(spec, demo)})
    end
  end

  # Redraws (or prints changes) until every node is in its expected state, or time is up.
  defp watch(nodes, late_left, started, tty?, timeout) do
    loop(%{nodes: nodes, late_left: late_left, shown: %{}, lines: 0}, started, tty?, timeout)
  end

  defp loop(acc, started, tty?, timeout) do
    acc = receive_late(acc)
    elapsed = System.monotonic_time(:millisecond) - started
    rows = rows(acc.nodes, started)
    acc = render(acc, rows, elapsed, tty?)
    ok? = acc.late_left == 0 and Enum.all?(rows, &(&1.state == View.expected_state(&1.kind)))

    cond do
      ok? -> Map.put(acc, :ok?, true)
      elapsed > timeout -> Map.put(acc, :ok?, false)
      true -> Process.sleep(100) && loop(acc, started, tty?, timeout)
    end
  end

  defp receive_late(acc) do
    receive do
      {:late_started, node} ->
        receive_late(%{acc | nodes: acc.nodes ++ [node], late_left: acc.late_left - 1})
    after
      0 -> acc
    end
  end

  defp rows(nodes, started) do
    candidates = Tinycluster.status(Tinycluster.Demo).candidates

    for node <- nodes do
      c = candidates[Atom.to_string(node.name)]
      joined = :persistent_term.get({__MODULE__, :joined, node.name}, nil)

      joined =
        if joined == nil and c && c.state == :connected do
          ms = System.monotonic_time(:millisecond) - started
          :persistent_term.put({__MODULE__, :joined, node.name}, ms)
          ms
        else
          joined
        end

      %{
        name: Atom.to_string(node.name),
        kind: node.kind,
        state: c && c.state,
        reason: c && c.reason,
        latency_us: c && c.latency_us,
        joined_ms: joined
      }
    end
  end

  defp render(acc, rows, elapsed, true) do
    table = View.table(rows, elapsed, node())
    clear = if acc.lines > 0, do: "\e[#{acc.lines}A\e[J", else: ""
    IO.write([clear, table])

    %{
      acc
      | lines: table |> IO.iodata_to_binary() |> String.split("\n") |> length() |> Kernel.-(1)
    }
  end

  defp render(acc, rows, elapsed, false) do
    Enum.reduce(rows, acc, fn row, acc ->
      if row.state != nil and Map.get(acc.shown, row.name) != row.state do
        # The headings once, over the first change: nothing before it needs them.
        if acc.shown == %{}, do: IO.write(View.change_heading(View.name_width(rows)))
        IO.write(View.change(row, elapsed, View.name_width(rows)))
        %{acc | shown: Map.put(acc.shown, row.name, row.state)}
      else
        acc
      end
    end)
  end

  defp connected(nodes), do: for(n <- nodes, n.name in Node.list(), do: n.name)

  # global meshes a node that just joined within moments; give it up to 5 s before asking.
  defp await_mesh(nodes, tries \\ 50) do
    asked = [node() | connected(nodes)]

    full? =
      Enum.all?(asked, fn n ->
        peers = :erpc.call(n, :erlang, :nodes, [], 5_000)
        Enum.all?(asked, &(&1 == n or &1 in peers))
      end)

    if not full? and tries > 0, do: Process.sleep(100) && await_mesh(nodes, tries - 1)
  end

  defp links(nodes) do
    asked = [node() | connected(nodes)]

    answers =
      Map.new(asked, fn n ->
        {n, :erpc.call(n, :erlang, :nodes, [], 5_000) |> then(&[n | &1]) |> Enum.sort()}
      end)

    Enum.reduce(nodes, answers, fn n, acc ->
      Map.put_new(acc, n.name, not_asked(n.kind))
    end)
  end

  defp not_asked(:frozen), do: :frozen
  defp not_asked(:hidden), do: :hidden
  defp not_asked(:other_cookie), do: :rejected
  defp not_asked(_), do: :unreachable

  defp stop_all do
    for {{__MODULE__, alive}, %OSNode{} = node} <- :persistent_term.get(),
        is_binary(alive) do
      OSNode.stop(node)
    end

    :ok
  end
end
