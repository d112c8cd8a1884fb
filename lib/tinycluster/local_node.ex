defmodule Tinycluster.LocalNode do
  # The facts of the node tinycluster runs on, read in one place: its naming mode, its
  # distribution's address family and protocol (TLS or not), the port of its host's EPMD,
  # its EPMD module and listening range, and its VM's command-line flags. Every other module is handed these facts, so that its
  # rules stay pure.
  #
  # The flags never change while the VM runs, and each `:init.get_argument/1` is a message
  # round trip to the `init` process: four per poll were a good part of an idle poll's work
  # on the scheduler side (traced on the poller's mailbox). So each is asked once per VM.
  @moduledoc false

  @typedoc "Erlang's naming modes: `-sname` or `-name`."
  @type naming :: :shortnames | :longnames

  @typedoc "The address family of the distribution."
  @type family :: :inet | :inet6

  @default_epmd_port 4369

  @doc "A VM flag, `:init.get_argument(flag)`, asked once and then remembered."
  @spec arg(atom()) :: {:ok, [[charlist()]]} | :error
  def arg(flag) when is_atom(flag) do
    key = {__MODULE__, flag}

    case :persistent_term.get(key, nil) do
      nil ->
        value = :init.get_argument(flag)
        :persistent_term.put(key, value)
        value

      value ->
        value
    end
  end

  @doc """
  The naming mode of `node` (default: this node), told by its host part as `net_kernel`
  tells it: a dot or an IP address is a long name. `nil` for a node that is not distributed.
  """
  @spec naming(node()) :: naming() | nil
  def naming(node \\ node())
  def naming(:nonode@nohost), do: nil

  def naming(node) do
    [_alive, host] = node |> Atom.to_string() |> String.split("@", parts: 2)

    if String.contains?(host, ".") or Tinycluster.Hosts.ip?(host),
      do: :longnames,
      else: :shortnames
  end

  @doc "The address family of this node's distribution: `:inet6` under `-proto_dist inet6_*`."
  @spec family() :: family()
  def family do
    case arg(:proto_dist) do
      {:ok, [[~c"inet6" ++ _ | _] | _]} -> :inet6
      _ -> :inet
    end
  end

  @doc "Whether this node runs TLS distribution (`-proto_dist inet_tls` or `inet6_tls`)."
  @spec tls?() :: boolean()
  def tls? do
    case arg(:proto_dist) do
      {:ok, [[proto | _] | _]} -> proto in [~c"inet_tls", ~c"inet6_tls"]
      _ -> false
    end
  end

  @doc """
  The EPMD port of the local host, as OTP's own EPMD client finds it: the `-epmd_port` flag
  (which `erl` also sets from `ERL_EPMD_PORT`), then `ERL_EPMD_PORT`, then 4369.

  `-erl_epmd_port` is not it: in OTP it is the port a node's own distribution listens on
  when it runs without EPMD.
  """
  @spec epmd_port() :: :inet.port_number()
  def epmd_port do
    with :error <- port_from(arg(:epmd_port)),
         :error <- port_from(System.get_env("ERL_EPMD_PORT")) do
      @default_epmd_port
    end
  end

  @doc "The `-epmd_module` this node runs with, as given (`\"Elixir.Tinycluster.EPMD\"`), or nil."
  @spec epmd_module() :: String.t() | nil
  def epmd_module do
    case arg(:epmd_module) do
      {:ok, [[module | _] | _]} -> List.to_string(module)
      _ -> nil
    end
  end

  @doc """
  The range of ports this node's distribution listens on, as OTP's `inet_tcp_dist` reads it:
  the kernel's `inet_dist_listen_min` and `inet_dist_listen_max` (the minimum alone when no
  maximum is set); nil when no minimum is set (any free port).
  """
  @spec listen_range() :: {:inet.port_number(), :inet.port_number()} | nil
  def listen_range do
    case :application.get_env(:kernel, :inet_dist_listen_min) do
      {:ok, min} when is_integer(min) ->
        case :application.get_env(:kernel, :inet_dist_listen_max) do
          {:ok, max} when is_integer(max) -> {min, max}
          _ -> {min, min}
        end

      _ ->
        nil
    end
  end

  @doc "The EPMD port of a host given without one."
  @spec default_epmd_port() :: :inet.port_number()
  def default_epmd_port, do: @default_epmd_port

  defp port_from({:ok, [[value | _] | _]}), do: port_from(List.to_string(value))

  defp port_from(value) when is_binary(value) do
    case Integer.parse(value) do
      {port, ""} when port in 1..65_535 -> port
      _ -> :error
    end
  end

  defp port_from(_), do: :error
end
