# The driver's context and the chores every scenario shares: the run's cookie and node-name
# prefix, the code paths of the measuring nodes, a private EPMD per scenario, node names,
# letting fresh VMs settle, and stopping every node (and EPMD and front) a scenario started.
defmodule Bench.Driver do
  alias Bench.{Epmd, VM}

  @doc """
  The context of one run: a cookie and a name prefix unique to it, so that no other run on
  this machine can join its nodes, and the code paths the measuring nodes load.
  """
  def context(out, opts) do
    id = "#{System.pid()}#{:rand.uniform(999)}"
    app = Mix.Project.app_path()

    %{
      cookie: "tinycluster_bench_#{id}_#{Base.encode16(:crypto.strong_rand_bytes(6))}",
      prefix: "tcb#{id}",
      agent_dir: out,
      elixir_paths: [
        Path.join(:code.lib_dir(:elixir), "ebin"),
        Path.join(:code.lib_dir(:logger), "ebin"),
        Path.join(app, "ebin")
      ],
      smoke: Keyword.get(opts, :smoke, false),
      runs: Keyword.fetch!(opts, :runs),
      epmd: nil,
      epmd_port: nil,
      noise: nil
    }
  end

  @doc "Runs `fun.(ctx)` with a private EPMD, and stops every node it started afterwards."
  def with_epmd(ctx, fun) do
    epmd = Epmd.start()
    if ctx[:noise], do: Bench.Noise.own(ctx.noise, [epmd.os_pid])

    try do
      fun.(%{ctx | epmd: epmd, epmd_port: epmd.port})
    after
      VM.kill_all(epmd.port)
      Epmd.stop(epmd)
    end
  end

  @doc "A fresh node name (alive part) for `role`, with the run's prefix."
  def name(ctx, role), do: "#{ctx.prefix}_#{role}#{System.unique_integer([:positive])}"

  @doc "Starts a measuring node: Elixir and tinycluster on its path, Logger started."
  def start_measuring(ctx, role, opts \\ []) do
    setup = Keyword.merge([preload: true, all: not ctx.smoke], Keyword.get(opts, :setup, []))
    opts = Keyword.merge([alive: name(ctx, role), elixir: true], Keyword.delete(opts, :setup))
    vm = VM.start(ctx, opts)
    :ok = VM.call(vm, Bench.Child, :setup, [setup])
    vm
  end

  @doc """
  Runs `fun.(own)` and then, also when it raises, stops what `fun` handed to
  `own.(kind, x)` (which returns `x`): nodes (`:vms`) first, then the counting fronts
  (`:fronts`), then the epmds (`:epmds`). A scenario that builds many processes step by
  step leaves none behind when a step fails.
  """
  def owning(fun) do
    {:ok, agent} = Agent.start_link(fn -> %{epmds: [], fronts: [], vms: []} end)

    own = fn kind, x ->
      Agent.update(agent, &Map.update!(&1, kind, fn l -> [x | l] end))
      x
    end

    try do
      fun.(own)
    after
      owned = Agent.get(agent, & &1)
      Agent.stop(agent)
      kill(owned.vms)
      Enum.each(owned.fronts, &Bench.EpmdFront.stop/1)
      Enum.each(owned.epmds, &Epmd.stop/1)
    end
  end

  @doc "Kills nodes concurrently and waits for each to exit."
  def kill(vms) do
    vms
    |> Task.async_stream(&VM.kill/1, timeout: 30_000, max_concurrency: 32)
    |> Stream.run()
  end

  @doc """
  Waits until `vms` are quiet, so that the boot of fresh VMs does not run into the
  measurement: until they used under 1% of one core together over 100 ms, at most
  `max_ms` (500 in smoke runs). Returns how long it waited.
  """
  def settle(ctx, vms, max_ms \\ 5_000) do
    max_ms = if ctx.smoke, do: min(max_ms, 500), else: max_ms
    t0 = System.monotonic_time(:millisecond)
    cpu = fn -> vms |> Enum.map(&(Bench.Proc.cpu_ns(&1.os_pid) || 0)) |> Enum.sum() end

    Bench.Util.wait_until(
      fn ->
        before = cpu.()
        Process.sleep(100)
        cpu.() - before < 1_000_000
      end,
      max_ms
    )

    System.monotonic_time(:millisecond) - t0
  end

  @doc "Prints progress on stderr, so stdout stays the report."
  def progress(text), do: IO.write(:stderr, text)
end
