defmodule Tinycluster.Hosts.Warnings do
  # What is wrong with the `:hosts` option's entries for this node, said once when the
  # poller starts scanning.
  @moduledoc false

  alias Tinycluster.{DnsSeed, Hosts, LocalNode}

  @doc """
  What is wrong with `entries` for a node of `naming` and `family`, as log lines to write
  once: an IP address under short names (a short node name cannot hold an address, so the
  nodes there are named after their host's short name, which must resolve here), and an IPv6
  address under an IPv4 distribution (unreachable).

      Tinycluster.Hosts.Warnings.warnings(["198.18.0.2", "b"], :shortnames, :inet)
      #=> ["tinycluster: :hosts lists the address 198.18.0.2, but this node runs with short names (-sname), ..."]
  """
  @spec warnings([Hosts.entry()], LocalNode.naming() | nil, LocalNode.family()) ::
          [String.t()]
  def warnings(entries, naming \\ LocalNode.naming(), family \\ LocalNode.family()) do
    static =
      for entry <- entries,
          entry != :local,
          not DnsSeed.seed?(entry),
          warning = warning(entry, naming, family),
          do: warning

    static ++ DnsSeed.warnings(entries, naming, family)
  end

  defp warning(entry, naming, family) do
    {host, _port} = Hosts.host_port(entry)

    cond do
      not Hosts.ip?(host) ->
        nil

      family == :inet and String.contains?(host, ":") ->
        "tinycluster: :hosts lists the IPv6 address #{host}, but this node's distribution " <>
          "is IPv4 (inet_tcp), which cannot reach it; start every node with " <>
          "-proto_dist inet6_tcp to cluster over IPv6"

      naming == :shortnames ->
        "tinycluster: :hosts lists the address #{host}, but this node runs with short names " <>
          "(-sname), and a short node name cannot hold an address: the nodes there are " <>
          "found under their host's short name (name@host), and connecting to them needs " <>
          "that name to resolve on this host. List the host by name, or run every node " <>
          "with -name."

      true ->
        nil
    end
  end
end
