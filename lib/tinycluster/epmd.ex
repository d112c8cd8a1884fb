defmodule Tinycluster.EPMD do
  @moduledoc """
  An EPMD module for clusters that run several nodes per host without EPMD, or that mix
  hosts with and without it. Start every node with

      -epmd_module Elixir.Tinycluster.EPMD -start_epmd false
      -kernel inet_dist_listen_min 9100 inet_dist_listen_max 9115

  (the same range on every node) and run tinycluster's poller on them as usual:

    * **Listening.** Each node listens on a free port of its range: OTP takes the first
      free one, from `inet_dist_listen_min` up.
    * **Discovery.** tinycluster probes every port of the range on each host (at most the
      first `max_dist_ports`, see `Tinycluster.Limits`); each node that answers names itself
      in its challenge, as on a fixed port. Nothing else is configured.
    * **Connecting.** This module answers OTP with the address and port where tinycluster
      last found a name. A name not found yet (a node that `global` heard of before this
      node's poller probed its host, or any node, on a node that runs this module without a
      poller) is looked for by probing its host's ports at once, from the process that sets
      up the connection. A name found neither way is asked of the host's EPMD, when one
      runs.
    * **Registering.** When an EPMD runs on this host, the node registers with it, as
      `erl_epmd` does, so that nodes of EPMD see it too; without one, the node takes a
      random creation.

  It must be loaded when distribution starts: a release loads it with the rest of
  tinycluster; without a release, its directory goes on the code path with `-pa` inside
  `--erl` (`elixir --erl "-epmd_module Elixir.Tinycluster.EPMD ... -pa
  _build/dev/lib/tinycluster/ebin"`: an `elixir -pa` comes too late). See "Several nodes
  per host without EPMD" in guides/containers.md. Its callbacks are OTP's (`erl_epmd`'s),
  called by OTP, not by users.
  """

  use GenServer

  alias Tinycluster.{Discovery, FixedPort, Options}

  # The distribution protocol version of every OTP since 23, the one `erl_epmd` gives.
  @dist_version 6

  ## OTP's callbacks

  @doc "Starts the module's process, which owns the table of names found, and `erl_epmd`'s."
  @spec start_link() :: GenServer.on_start()
  def start_link, do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @doc "Registers this node with its host's EPMD when one runs, else takes a random creation."
  @spec register_node(charlist() | atom(), :inet.port_number()) ::
          {:ok, integer()} | {:error, term()}
  def register_node(name, port), do: register_node(name, port, :inet)

  @doc "`register_node/2` for the address family `family`."
  @spec register_node(charlist() | atom(), :inet.port_number(), atom()) ::
          {:ok, integer()} | {:error, term()}
  def register_node(name, port, family) do
    case :erl_epmd.register_node(name, port, family) do
      {:ok, creation} -> {:ok, creation}
      # An EPMD holds this name already: a second node under it would confuse its peers.
      {:error, :duplicate_name} = error -> error
      # No EPMD (refused, closed): none is needed.
      {:error, _} -> {:ok, :rand.uniform(0xFFFF_FFFE) + 1}
    end
  end

  @doc "The port to listen on: `erl_epmd`'s answer, 0 (the range) unless `-erl_epmd_port`."
  @spec listen_port_please(charlist() | atom(), term()) :: {:ok, :inet.port_number()}
  def listen_port_please(name, host), do: :erl_epmd.listen_port_please(name, host)

  @doc """
  Where node `name@host` listens: the address and port tinycluster found it at; else the
  host's address, and OTP then asks `port_please/2` for the port.

  OTP's `net_kernel` asks this too, in its own process, to choose a protocol: it must
  answer at once, so it never probes.
  """
  @spec address_please(charlist(), charlist() | :inet.ip_address(), :inet | :inet6) ::
          {:ok, :inet.ip_address(), :inet.port_number(), pos_integer()}
          | {:ok, :inet.ip_address()}
          | {:error, term()}
  def address_please(name, host, family) do
    case lookup("#{name}@#{host_string(host)}") do
      {:ok, ip, port} -> {:ok, ip, port, @dist_version}
      :error -> :erl_epmd.address_please(name, host, family)
    end
  end

  @doc "`port_please/3` without a timeout."
  @spec port_please(charlist() | atom(), term()) ::
          {:port, :inet.port_number(), pos_integer()} | :noport | :closed | {:error, term()}
  def port_please(name, host), do: port_please(name, host, :infinity)

  @doc """
  The port of node `name` at `host` (OTP gives the address `address_please/3` gave): where
  tinycluster found it, or finds it now by probing the host's ports from the process that
  sets up the connection; else what the host's EPMD answers.
  """
  @spec port_please(charlist() | atom(), term(), timeout()) ::
          {:port, :inet.port_number(), pos_integer()} | :noport | :closed | {:error, term()}
  def port_please(name, host, timeout) do
    alive = to_string(name)

    with :error <- lookup_at(alive, host),
         :error <- probe(alive, host) do
      :erl_epmd.port_please(name, host, timeout)
    else
      {:ok, port} -> {:port, port, @dist_version}
    end
  end

  @doc "The names `host`'s EPMD lists; without an EPMD, the ones tinycluster found there."
  @spec names(term()) :: {:ok, [{charlist(), :inet.port_number()}]} | {:error, term()}
  def names(host) do
    case :erl_epmd.names(host) do
      {:ok, names} ->
        {:ok, names}

      error ->
        suffix = "@" <> host_string(host)

        case for({full, _, _, port} <- rows(), String.ends_with?(full, suffix), do: {full, port}) do
          [] ->
            error

          found ->
            {:ok, for({full, port} <- found, do: {to_charlist(alive(full)), port})}
        end
    end
  end

  ## What tinycluster found

  @doc false
  @spec learn([map()]) :: :ok
  # Live nodes of hosts without EPMD, as a scan's candidates (`name`, `address`, `port`):
  # each is where a connection to it goes. Nothing without the table (this module unused).
  def learn(candidates) do
    if :ets.whereis(__MODULE__) != :undefined do
      for %{state: :live, name: name, address: address, port: port} <- candidates,
          {:ok, ip} <- [:inet.parse_address(to_charlist(address))] do
        :ets.insert(__MODULE__, {name, alive(name), ip, port})
      end
    end

    :ok
  end

  @doc false
  @spec listed(String.t(), [String.t()]) :: :ok
  # A host without EPMD at `address` lists `names` now: the nodes found there under other
  # names are gone, and a connection to them must not go there.
  def listed(address, names) do
    with tid when tid != :undefined <- :ets.whereis(__MODULE__),
         {:ok, ip} <- :inet.parse_address(to_charlist(address)) do
      keep = MapSet.new(names)

      for {full, _, ^ip, _} = row <- :ets.match_object(__MODULE__, {:_, :_, ip, :_}),
          not MapSet.member?(keep, full),
          do: :ets.delete_object(__MODULE__, row)
    end

    :ok
  end

  defp lookup(full) do
    case :ets.whereis(__MODULE__) != :undefined and :ets.lookup(__MODULE__, full) do
      [{^full, _, ip, port}] -> {:ok, ip, port}
      _ -> :error
    end
  end

  defp lookup_at(alive, ip) when is_tuple(ip) do
    case :ets.whereis(__MODULE__) != :undefined and
           :ets.match_object(__MODULE__, {:_, alive, ip, :_}) do
      [{_, _, _, port} | _] -> {:ok, port}
      _ -> :error
    end
  end

  defp lookup_at(alive, host),
    do: with({:ok, _, port} <- lookup("#{alive}@#{host}"), do: {:ok, port})

  defp rows do
    if :ets.whereis(__MODULE__) != :undefined, do: :ets.tab2list(__MODULE__), else: []
  end

  # A name not found yet (one `global` heard of before this node's poller probed its host,
  # or any name on a node without a poller): its host's ports are probed now, and what
  # answers is learned. Only for a node whose cluster listens on ports without EPMD.
  #
  # This runs in the process that sets up the connection, within `net_setuptime` (7 s by
  # default), and `global` does not try a connection that failed again: so the probe has
  # longer than a poller's, and a second look, for a peer that is slow to answer while it
  # starts (loading code, say).
  @probe_ms 2_000
  @looks 2

  defp probe(alive, host) do
    with {_first, _last} <- FixedPort.ports(),
         true <- :ets.whereis(__MODULE__) != :undefined,
         {:ok, opts} <- options(host) do
      look(alive, host, opts, @looks)
    else
      _ -> :error
    end
  end

  defp look(_alive, _host, _opts, 0), do: :error

  defp look(alive, host, opts, looks) do
    with {:ok, _report} <- Discovery.run(opts),
         {:ok, port} <- lookup_at(alive, host) do
      {:ok, port}
    else
      _ -> look(alive, host, opts, looks - 1)
    end
  end

  defp options(host) do
    opts = [hosts: [host_string(host)], name: __MODULE__, probe_timeout: @probe_ms]
    {:ok, Options.new!([epmd_timeout: @probe_ms] ++ opts)}
  rescue
    ArgumentError -> :error
  end

  defp host_string(host) when is_tuple(host), do: host |> :inet.ntoa() |> to_string()
  defp host_string(host), do: to_string(host)

  defp alive(full), do: full |> String.split("@", parts: 2) |> hd()

  ## The process

  @impl true
  def init([]) do
    :ets.new(__MODULE__, [:named_table, :public, :set, read_concurrency: true])
    # `erl_epmd`'s process holds the registration with a real EPMD, when one runs.
    case :erl_epmd.start_link() do
      {:ok, _pid} -> :ok
      {:error, {:already_started, _pid}} -> :ok
    end

    {:ok, nil}
  end
end
