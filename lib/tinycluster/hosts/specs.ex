defmodule Tinycluster.Hosts.Specs do
  # The NIF's host specs for the `:hosts` option's entries, and how each host is labelled in
  # reports and in `Tinycluster.status/1`. DNS seeds have no spec of their own: the
  # addresses they give do (`Tinycluster.DnsSeed.Table.specs/2`).
  @moduledoc false

  alias Tinycluster.{DnsSeed, Hosts, LocalNode}

  @doc """
  The NIF's host specs for `entries`, for the local node `local_node`: each a map with
  `label`, `address`, `epmd_port`, `node_host` (the local host part for `:local`, `nil`
  for the others, whose names the probes confirm), `dist_port` and `dist_port_last` (nil:
  their nodes are found through EPMD; see `Tinycluster.FixedPort`). DNS seeds have no spec
  of their own: the addresses they give do (`Tinycluster.DnsSeed.Table.specs/2`).
  """
  @spec specs([Hosts.entry()], node(), LocalNode.family()) :: [map()]
  def specs(entries, local_node \\ node(), family \\ LocalNode.family()) do
    [_alive, local_host] = local_node |> Atom.to_string() |> String.split("@", parts: 2)
    # Counted once: asking each entry's label of all the entries made every poll quadratic
    # in the hosts (`bench/run --only hosts` measures the poll's CPU at 1000 hosts).
    shared = shared_hosts(entries)

    entries
    |> Enum.reject(&DnsSeed.seed?/1)
    |> Enum.map(fn
      :local ->
        %{
          label: "local",
          address: loopback(family),
          epmd_port: LocalNode.epmd_port(),
          node_host: local_host,
          dist_port: nil,
          dist_port_last: nil
        }

      entry ->
        {host, port} = Hosts.host_port(entry)

        %{
          label: label_of(entry, shared),
          address: host,
          epmd_port: port,
          node_host: nil,
          dist_port: nil,
          dist_port_last: nil
        }
    end)
  end

  # Local nodes listen on every interface unless told otherwise; loopback reaches them
  # without depending on how the host name resolves.
  defp loopback(:inet6), do: "::1"
  defp loopback(:inet), do: "127.0.0.1"

  @doc """
  The labels of every entry but the DNS seeds (a seed is no host), in order: how each is
  named in reports and in `Tinycluster.status/1`: `"local"`, or the host as given;
  `"host:port"` (`"[v6]:port"`) when `entries` list the same host with several EPMD ports.
  """
  @spec labels([Hosts.entry()]) :: [String.t()]
  def labels(entries) do
    shared = shared_hosts(entries)

    for entry <- entries, not DnsSeed.seed?(entry) do
      if entry == :local, do: "local", else: label_of(entry, shared)
    end
  end

  # The hosts (lowercase) that more than one entry names, at different EPMD ports.
  defp shared_hosts(entries) do
    for entry <- entries,
        entry != :local and not DnsSeed.seed?(entry),
        reduce: %{} do
      acc ->
        Map.update(
          acc,
          entry |> Hosts.host_port() |> elem(0) |> String.downcase(:ascii),
          1,
          &(&1 + 1)
        )
    end
    |> Map.filter(fn {_host, count} -> count > 1 end)
  end

  defp label_of(entry, shared) do
    {host, port} = Hosts.host_port(entry)

    cond do
      not Map.has_key?(shared, String.downcase(host, :ascii)) -> host
      String.contains?(host, ":") -> "[#{host}]:#{port}"
      true -> "#{host}:#{port}"
    end
  end
end
