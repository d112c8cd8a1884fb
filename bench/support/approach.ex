# The ways to cluster the nodes of a host that the benchmarks compare, as they run inside a
# measuring node. Each is a faithful, dependency-free rendering of what the library does:
#
#   :tinycluster - `Tinycluster.start_link/1`: EPMD, a silent probe per node, connect the live.
#   :world_list  - `:net_adm.world_list([host])`: EPMD, then `net_adm:ping/1` node after node
#                  (what tinycluster's seed did).
#   :sequential  - `:erl_epmd.names/0`, then `:net_kernel.connect_node/1` node after node,
#                  skipping itself and the connected (libcluster's LocalEpmd strategy).
#   :parallel    - `:erl_epmd.names/0`, then `Node.connect/1` to every unconnected node at
#                  once in `Task.async_stream` with dns_cluster's 10 s timeout, and no probe
#                  (dns_cluster, with EPMD instead of DNS as the source of names).
#
# `once/2` runs one attempt and returns when the approach's call returns. `start_polling/2`
# keeps doing it: tinycluster is its own poller; the others poll as dns_cluster and
# libcluster's polling strategies do, `interval` ms after the previous attempt ended.
defmodule Bench.Approach do
  @baselines [:world_list, :sequential, :parallel]

  def all, do: [:tinycluster | @baselines]

  @doc "One attempt. For :tinycluster, starts a poller linked to the caller and returns."
  def once(:tinycluster, opts) do
    {:ok, pid} = Tinycluster.start_link(Keyword.put_new(opts, :name, :bench_poller))
    pid
  end

  def once(:world_list, _opts) do
    [_, host] = node() |> Atom.to_string() |> String.split("@")
    :net_adm.world_list([String.to_atom(host)])
  end

  def once(:sequential, _opts) do
    need = epmd_nodes() -- [node() | Node.list()]
    Enum.map(need, &:net_kernel.connect_node/1)
  end

  def once(:parallel, _opts) do
    connected = Node.list()
    nodes = epmd_nodes() -- [node() | connected]

    nodes
    |> Task.async_stream(&Node.connect/1, max_concurrency: max(1, length(nodes)), timeout: 10_000)
    |> Enum.to_list()
  end

  @doc "Clusters forever at `interval`; returns the poller's (or the loop's) pid."
  def start_polling(:tinycluster, opts), do: once(:tinycluster, opts)

  def start_polling(approach, opts) when approach in @baselines do
    interval = Keyword.get(opts, :interval, 1_000)
    :persistent_term.put({__MODULE__, :polls}, :counters.new(1, []))

    spawn_link(fn -> poll_loop(approach, interval) end)
  end

  @doc "How many attempts the baseline loop of this node finished."
  def polls do
    case :persistent_term.get({__MODULE__, :polls}, nil) do
      nil -> 0
      counter -> :counters.get(counter, 1)
    end
  end

  defp poll_loop(approach, interval) do
    once(approach, [])
    :counters.add(:persistent_term.get({__MODULE__, :polls}), 1, 1)
    Process.sleep(interval)
    poll_loop(approach, interval)
  end

  @doc "The nodes the local EPMD lists, as libcluster's LocalEpmd names them."
  def epmd_nodes do
    [_, host] = node() |> Atom.to_string() |> String.split("@")
    {:ok, names} = :erl_epmd.names()
    for {name, _port} <- names, do: :"#{name}@#{host}"
  end

  @doc """
  dns_cluster's approach over a DNS seed: every A record of `app.test`, asked of the
  nameserver `{address, port}`, connected at once as `app@ip`, each within 10 s.
  """
  def dns_cluster({address, port}) do
    {:ok, ip} = :inet.parse_address(String.to_charlist(address))
    ips = :inet_res.lookup(~c"app.test", :in, :a, nameservers: [{ip, port}])

    ips
    |> Enum.map(&:"app@#{:inet.ntoa(&1)}")
    |> Task.async_stream(&Node.connect/1,
      max_concurrency: max(length(ips), 1),
      timeout: 10_000,
      on_timeout: :kill_task
    )
    |> Stream.run()
  end
end
