# Helpers that run inside a measuring node (a fresh BEAM started by the driver with Elixir,
# tinycluster and these modules on its code path): setting it up, recording when other
# nodes come up, on this node's monotonic clock, and waiting for them.
defmodule Bench.Child do
  @doc """
  Starts Logger (tinycluster logs through it) and loads every module of kernel, stdlib,
  Elixir and Logger, and with `preload: true` of tinycluster too (its NIF included), as a
  release in embedded mode does at boot: a measurement then times the work, not the code
  loading, which in an interactive VM falls on the first call of each module. Warms up the
  host name resolver (`inet_gethost`), which every approach's first connection would start.
  The NIF's runtime still starts with the first scan. With `all: false` (smoke runs, where
  figures do not matter and the second this takes does), only tinycluster's modules load.
  """
  def setup(opts \\ []) do
    {:ok, _} = Application.ensure_all_started(:logger)
    apps = if Keyword.get(opts, :all, true), do: [:kernel, :stdlib, :elixir, :logger], else: []
    apps = if Keyword.get(opts, :preload, true), do: apps ++ [:tinycluster], else: apps

    for app <- apps do
      :ok = with {:error, {:already_loaded, _}} <- Application.load(app), do: :ok
      {:ok, modules} = :application.get_key(app, :modules)
      for module <- modules, do: Code.ensure_loaded(module)
    end

    if :tinycluster in apps, do: nil = Tinycluster.Native.load_error()

    for module <- [Bench.Approach, Bench.Util, Bench.Proc, :dist_util],
        do: Code.ensure_loaded(module)

    {:ok, _} = :inet.gethostbyname(String.to_charlist(Bench.Util.short_host()))
    :ok
  end

  @doc """
  Starts a process that records the time (`Bench.Util.mono_us/0`) each node comes up, and
  returns once it is subscribed.
  """
  def watch_nodes do
    caller = self()

    pid =
      spawn(fn ->
        :ok = :net_kernel.monitor_nodes(true)
        send(caller, :watching)
        watch(%{}, nil)
      end)

    receive do
      :watching -> pid
    end
  end

  @doc """
  Waits until every node in `nodes` is up (or was already), or `timeout` ms; returns
  `{:ok | :timeout, %{node => up_at_us}}`.
  """
  def await_nodes(watcher, nodes, timeout) do
    ref = make_ref()
    send(watcher, {:await, self(), ref, MapSet.new(nodes)})

    receive do
      {^ref, ups} -> {:ok, ups}
    after
      timeout ->
        send(watcher, {:report, self(), ref})

        receive do
          {^ref, ups} -> {:timeout, ups}
        end
    end
  end

  defp watch(ups, waiter) do
    receive do
      {:nodeup, node} ->
        ups = Map.put_new(ups, node, Bench.Util.mono_us())
        watch(ups, check(ups, waiter))

      {:await, pid, ref, nodes} ->
        now = Bench.Util.mono_us()
        ups = Enum.reduce(Node.list(), ups, &Map.put_new(&2, &1, now))
        watch(ups, check(ups, {pid, ref, nodes}))

      {:report, pid, ref} ->
        send(pid, {ref, ups})
        watch(ups, nil)

      _ ->
        watch(ups, waiter)
    end
  end

  defp check(_ups, nil), do: nil

  defp check(ups, {pid, ref, nodes} = waiter) do
    if Enum.all?(nodes, &Map.has_key?(ups, &1)) do
      send(pid, {ref, Map.take(ups, MapSet.to_list(nodes))})
      nil
    else
      waiter
    end
  end

  @doc "Waits until every node of `nodes` is connected: `:ok`, or `:timeout` after `timeout` ms."
  def await_connected(nodes, timeout) do
    if Bench.Util.wait_until(fn -> Enum.all?(nodes, &(&1 in Node.list())) end, timeout),
      do: :ok,
      else: :timeout
  end

  @doc "How many hosts the poller `:bench_poller` holds settled."
  def settled_hosts do
    Tinycluster.status(:bench_poller).hosts |> Enum.count(fn {_, h} -> h.settled end)
  end
end
