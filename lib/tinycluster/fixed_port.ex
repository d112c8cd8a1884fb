defmodule Tinycluster.FixedPort do
  # Clusters without EPMD. Nodes started with `-start_epmd false -erl_epmd_port P` (the
  # recipe of Phoenix's clustering guide and of `mix release`) all listen on port P, and
  # OTP's own `erl_epmd` then answers P for every node without asking an EPMD. Nodes started
  # with `-epmd_module Elixir.Tinycluster.EPMD` each listen on a free port of the kernel's
  # `inet_dist_listen_min..inet_dist_listen_max`, several per host. Either way a node is
  # found by probing its ports on each address its hosts give: the challenge names it
  # (native/tinycluster_nif/src/direct.rs), and `Node.connect/1` reaches it, through OTP's
  # `erl_epmd` or through `Tinycluster.EPMD`, which is told the address and port.
  #
  # This module says which ports the local node's cluster listens on, turns the hosts' specs
  # into specs of those ports, and names the setups tinycluster cannot follow. Pure but for
  # `ports/0` and `warnings/0`, which read the local node's flags.
  @moduledoc false

  alias Tinycluster.{Limits, LocalNode}

  @epmd_module "Elixir.Tinycluster.EPMD"

  @typedoc "The first and last distribution port of a cluster without EPMD."
  @type ports :: {:inet.port_number(), :inet.port_number()}

  @doc """
  The distribution ports of this node's cluster when it runs without EPMD, or nil when it
  finds its nodes through EPMD: `{P, P}` under `-erl_epmd_port P`; under
  `-epmd_module Elixir.Tinycluster.EPMD`, the kernel's listening range, cut to its first
  `max_dist_ports` ports (`Tinycluster.Limits`).
  """
  @spec ports() :: ports() | nil
  def ports do
    ports(fixed_port(), LocalNode.epmd_module(), LocalNode.listen_range())
  end

  @doc """
  `ports/0` for a fixed port (`-erl_epmd_port`, nil without), an `-epmd_module` and a
  listening range. A fixed port wins: `Tinycluster.EPMD` listens on it too.
  """
  @spec ports(:inet.port_number() | nil, String.t() | nil, ports() | nil) :: ports() | nil
  def ports(port, _epmd_module, _range) when is_integer(port), do: {port, port}

  def ports(nil, @epmd_module, {first, last}) when last >= first,
    do: {first, min(last, first + Limits.get(:max_dist_ports) - 1)}

  def ports(_port, _epmd_module, _range), do: nil

  defp fixed_port do
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
  The host specs `specs` for a cluster whose nodes listen on `ports` without EPMD (nil:
  unchanged): every host's distribution ports are `ports` (`dist_port` and, for a range of
  more than one, `dist_port_last`), but for a port given with the host (`{host, port}` in
  `:hosts`, or an SRV record's), which is that host's one port. The local host always has
  `ports`. Specs come with
  `dist_port: nil` (`Tinycluster.Hosts.Specs.specs/3`), so that a cluster with EPMD pays
  nothing here per poll.
  """
  @spec specs([map()], ports() | nil) :: [map()]
  def specs(specs, nil), do: specs

  def specs(specs, {first, last}) do
    default = LocalNode.default_epmd_port()
    last = if last > first, do: last

    # The local host's EPMD port is this node's (`-epmd_port`, `ERL_EPMD_PORT`): never a
    # distribution port.
    Enum.map(specs, fn
      %{node_host: host} = spec when host != nil ->
        %{spec | dist_port: first, dist_port_last: last}

      %{epmd_port: ^default} = spec ->
        %{spec | dist_port: first, dist_port_last: last}

      spec ->
        %{spec | dist_port: spec.epmd_port, dist_port_last: nil}
    end)
  end

  @doc """
  What to say once about this node's setup, when tinycluster cannot follow it: an
  `-epmd_module` it does not know (its nodes may be found neither through EPMD nor on a
  fixed port), `Tinycluster.EPMD` without a listening range (this node listens on any free
  port, where no probe looks) or with one wider than it probes, or `ERL_DIST_PORT` without
  `-erl_epmd_port` (this node listens on that port, but OTP still asks EPMD for the others').
  """
  @spec warnings() :: [String.t()]
  def warnings do
    port = fixed_port()
    module = LocalNode.epmd_module()
    range = LocalNode.listen_range()
    facts = %{epmd_module: module, range: range, ports: ports(port, module, range)}
    warnings(facts, System.get_env("ERL_DIST_PORT"), port)
  end

  @doc """
  `warnings/0` for the given facts (`epmd_module`, listening `range` and the `ports` probed),
  `ERL_DIST_PORT` and fixed port.
  """
  @spec warnings(map(), String.t() | nil, :inet.port_number() | nil) :: [String.t()]
  def warnings(facts, dist_port_env, port) do
    module_lines(facts, port) ++ env_lines(dist_port_env, port)
  end

  defp module_lines(%{epmd_module: module}, _port) when module in [nil, "erl_epmd"], do: []

  defp module_lines(%{epmd_module: @epmd_module} = facts, port) do
    case facts do
      _ when is_integer(port) ->
        []

      %{range: nil} ->
        [
          "tinycluster: this node runs with -epmd_module #{@epmd_module} but no " <>
            "listening range: it listens on any free port, where no probe looks. Start " <>
            "every node with -kernel inet_dist_listen_min FIRST inet_dist_listen_max LAST, " <>
            "the same range everywhere"
        ]

      %{range: {first, last}, ports: {first, probed}} when probed < last ->
        [
          "tinycluster: this node listens on ports #{first} to #{last}, but tinycluster " <>
            "probes the first #{probed - first + 1} of them on each host (OTP takes them " <>
            "from the first up): a host's nodes past port #{probed} are not found"
        ]

      _ ->
        []
    end
  end

  defp module_lines(%{epmd_module: module}, _port) do
    [
      "tinycluster: this node runs with -epmd_module #{module}, which tinycluster " <>
        "does not know: it finds nodes through EPMD, on the fixed port of -start_epmd " <>
        "false -erl_epmd_port P (the same P on every node), or on the listening range of " <>
        "-epmd_module #{@epmd_module}"
    ]
  end

  defp env_lines(dist_port_env, port) do
    if dist_port_env not in [nil, ""] and port == nil,
      do: [
        "tinycluster: ERL_DIST_PORT=#{dist_port_env} is set but not -erl_epmd_port: this " <>
          "node listens on that port, but OTP still asks EPMD where the other nodes " <>
          "listen. For a cluster without EPMD, start every node with -start_epmd false " <>
          "-erl_epmd_port #{dist_port_env}"
      ],
      else: []
  end
end
