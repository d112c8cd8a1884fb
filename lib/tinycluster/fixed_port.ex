defmodule Tinycluster.FixedPort do
  # Clusters without EPMD: nodes started with `-start_epmd false -erl_epmd_port P` (the
  # recipe of Phoenix's clustering guide and of `mix release`) all listen on port P, and
  # OTP's own `erl_epmd` then answers P for every node without asking an EPMD. A node of
  # this kind is found by probing P on each address its hosts give: the challenge names it
  # (native/tinycluster_nif/src/direct.rs), and `Node.connect/1` reaches it as OTP does.
  #
  # This module says whether the local node runs that way, turns the hosts' specs into
  # specs of their distribution port, and names the setups tinycluster cannot follow.
  # Pure but for `port/0` and `warnings/0`, which read the local node's flags.
  @moduledoc false

  alias Tinycluster.LocalNode

  @doc """
  The fixed distribution port of this node's cluster (`-erl_epmd_port P`), or nil when it
  finds its nodes through EPMD.
  """
  @spec port() :: :inet.port_number() | nil
  def port do
    case LocalNode.arg(:erl_epmd_port) do
      {:ok, [[value | _] | _]} ->
        case Integer.parse(List.to_string(value)) do
          {port, ""} when port in 1..65_535 -> port
          _ -> nil
        end

      _ ->
        nil
    end
  end

  @doc """
  The host specs `specs` for a cluster whose nodes listen on `port` without EPMD (nil:
  unchanged): every host's distribution port is `port`, but for a port given with the host
  (`{host, port}` in `:hosts`, or an SRV record's), which is that host's. Specs come with
  `dist_port: nil` (`Tinycluster.Hosts.Specs.specs/3`), so that a cluster with EPMD pays nothing
  here per poll.
  """
  @spec specs([map()], :inet.port_number() | nil) :: [map()]
  def specs(specs, nil), do: specs

  def specs(specs, port) do
    default = LocalNode.default_epmd_port()

    Enum.map(specs, fn spec ->
      dist_port = if spec.epmd_port == default, do: port, else: spec.epmd_port
      Map.put(spec, :dist_port, dist_port)
    end)
  end

  @doc """
  What to say once about this node's setup, when tinycluster cannot follow it: an
  `-epmd_module` it does not know (its nodes may be found neither through EPMD nor on a
  fixed port), or `ERL_DIST_PORT` without `-erl_epmd_port` (this node listens on that port,
  but OTP still asks EPMD for the others').
  """
  @spec warnings() :: [String.t()]
  def warnings do
    epmd_module =
      case LocalNode.arg(:epmd_module) do
        {:ok, [[module | _] | _]} -> List.to_string(module)
        _ -> nil
      end

    warnings(epmd_module, System.get_env("ERL_DIST_PORT"), port())
  end

  @doc "`warnings/0` for the given `-epmd_module`, `ERL_DIST_PORT` and fixed port."
  @spec warnings(String.t() | nil, String.t() | nil, :inet.port_number() | nil) :: [String.t()]
  def warnings(epmd_module, dist_port_env, port) do
    module =
      if epmd_module not in [nil, "erl_epmd"],
        do: [
          "tinycluster: this node runs with -epmd_module #{epmd_module}, which tinycluster " <>
            "does not know: it finds nodes through EPMD, or, without EPMD, on the fixed " <>
            "port of -start_epmd false -erl_epmd_port P (the same P on every node)"
        ],
        else: []

    env =
      if dist_port_env not in [nil, ""] and port == nil,
        do: [
          "tinycluster: ERL_DIST_PORT=#{dist_port_env} is set but not -erl_epmd_port: this " <>
            "node listens on that port, but OTP still asks EPMD where the other nodes " <>
            "listen. For a cluster without EPMD, start every node with -start_epmd false " <>
            "-erl_epmd_port #{dist_port_env}"
        ],
        else: []

    module ++ env
  end
end
