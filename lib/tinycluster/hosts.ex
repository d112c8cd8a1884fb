defmodule Tinycluster.Hosts do
  @moduledoc """
  The `:hosts` option: whose EPMDs a poller asks, and how the nodes they list are named.

  ## Entries

    * `:local` - this host's EPMD, asked at the loopback address of this node's distribution
      family (`127.0.0.1`, or `::1` under `-proto_dist inet6_tcp`) on the local EPMD port
      (`LocalNode.epmd_port/0`). Its nodes are named with this node's host
      part until their probe gives their own (`a@localhost`, say).
    * `"host"` - a host name, an IPv4 address or an IPv6 address (brackets optional), whose
      EPMD listens on port 4369.
    * `{"host", epmd_port}` - the same, with another EPMD port.
    * `{198, 18, 0, 2}` or `{{198, 18, 0, 2}, epmd_port}` - an address as a tuple.
    * `:erlang_hosts` - every host of `.hosts.erlang`, found as `:net_adm.world/0` finds it:
      in the current directory, then in the home directory, then in `:code.root_dir/0`. The
      file is read once, when the poller starts; one that is missing or malformed is an
      `ArgumentError` that names it. Entries are atoms or strings (`'b.example.com'.` or
      `"198.18.0.2".`), one per line, each ending with a dot.
    * `{:dns, "myapp.internal"}` or `{:dns, name, type: :srv, nameservers: [{"10.0.0.2", 53}]}`
      - a DNS seed: looked up again at every poll, each address it gives asked as a host of
      its own. See `Tinycluster.DnsSeed`.

  Entries are validated, `:erlang_hosts` expanded and duplicates dropped once, at start.

  ## Names

  Erlang connects nodes of one naming mode only: with `-sname` a node's host part has no
  dot, with `-name` it has one or is an IP address. EPMD lists only the alive part of each
  name (`b1`), so the host part comes from elsewhere:

    * on every host, the probe's challenge names the node in full, as the node itself
      registered it (`b1@b.example.com`, `b1@198.18.0.2`, `a@localhost` on this host), and
      that name is used once it is of this node's mode. A node of the other mode is reported
      `:name_mismatch` with the reason `{:long_name, name}` or `{:short_name, name}`, and
      never connected; one whose challenge names another alive part than EPMD listed is
      `{:claimed, name}` (a stale entry, or a port reused).
    * Before a probe answers, a node of `:local` is named with this node's host part, and a
      node of another host after the host as given, reduced to its first label under
      `-sname` (`b1@b` for `"b.example.com"`), as `-sname` names nodes.

  With short names an IP address cannot be part of a node name, so an address in `:hosts`
  is the wrong form for an `-sname` node: it still finds the nodes there, under their short
  host names, but connecting to them needs those names to resolve here. `warnings/3` says
  so, once, when the poller starts scanning (`Tinycluster.Hosts.Warnings`).
  """

  alias Tinycluster.{DnsSeed, LocalNode}
  alias Tinycluster.Hosts.ErlangHosts

  @typedoc "A validated entry of `:hosts`."
  @type entry :: :local | String.t() | {String.t(), :inet.port_number()} | DnsSeed.t()

  @typedoc "An entry as a user may write it, before `validate!/1`."
  @type input ::
          entry()
          | :erlang_hosts
          | :inet.ip_address()
          | {:inet.ip_address(), :inet.port_number()}
          | {:dns, String.t()}
          | {:dns, String.t(), keyword()}

  @typedoc "Erlang's naming modes (`Tinycluster.LocalNode`)."
  @type naming :: LocalNode.naming()

  @typedoc "The address family of a node's distribution (`Tinycluster.LocalNode`)."
  @type family :: LocalNode.family()

  @expected ":local, :erlang_hosts, \"host\", an IP address, {host, epmd_port} or {:dns, name}"

  @doc """
  Validates the value of the `:hosts` option and returns its entries: addresses as strings,
  `:erlang_hosts` expanded, duplicates dropped. Raises an `ArgumentError` that names the
  entry or the file at fault.

      iex> Tinycluster.Hosts.validate!([:local, "b.example.com", {{198, 18, 0, 2}, 4370}])
      [:local, "b.example.com", {"198.18.0.2", 4370}]
  """
  @spec validate!(term()) :: [entry()]
  def validate!([_ | _] = hosts) do
    hosts
    |> Enum.flat_map(fn
      :erlang_hosts -> ErlangHosts.hosts!()
      entry -> [entry!(entry)]
    end)
    |> Enum.uniq()
    |> one_seed_per_name!()
    |> Enum.uniq_by(&identity/1)
    |> case do
      [] -> raise ArgumentError, "tinycluster option :hosts names no host: #{inspect(hosts)}"
      entries -> entries
    end
  end

  def validate!(other) do
    raise ArgumentError,
          "invalid value for tinycluster option :hosts: #{inspect(other)} " <>
            "(expected a non-empty list of #{@expected})"
  end

  # Status reports seeds by name, so one name is one seed.
  defp one_seed_per_name!(entries) do
    entries
    |> DnsSeed.seeds()
    |> Enum.group_by(fn {:dns, name, _} -> String.downcase(name, :ascii) end)
    |> Enum.find(fn {_name, seeds} -> length(seeds) > 1 end)
    |> case do
      nil ->
        entries

      {name, _} ->
        raise ArgumentError,
              "tinycluster option :hosts lists the DNS seed #{name} twice, with different " <>
                "options; list it once"
    end
  end

  defp entry!(:local), do: :local
  defp entry!({:dns, _name} = seed), do: DnsSeed.validate!(seed)
  defp entry!({:dns, _name, _opts} = seed), do: DnsSeed.validate!(seed)

  defp entry!({host, port} = entry) when is_integer(port) and port in 1..65_535 do
    case host(host) do
      {:ok, host} -> {host, port}
      :error -> bad_entry!(entry)
    end
  end

  defp entry!(entry) do
    case host(entry) do
      {:ok, host} -> host
      :error -> bad_entry!(entry)
    end
  end

  defp bad_entry!(entry) do
    raise ArgumentError,
          "invalid entry in tinycluster option :hosts: #{inspect(entry)} " <>
            "(expected #{@expected}, with epmd_port in 1..65535)"
  end

  @doc """
  A host as `:hosts` takes it (a host name, or an IP address as a string, brackets allowed,
  or as a tuple) as the string tinycluster uses, or `:error`.
  """
  @spec host(term()) :: {:ok, String.t()} | :error
  def host(ip) when is_tuple(ip) do
    case :inet.ntoa(ip) do
      {:error, _} -> :error
      chars -> {:ok, List.to_string(chars)}
    end
  end

  def host("[" <> rest) do
    case String.split(rest, "]") do
      [ip, ""] -> if ip?(ip) and String.contains?(ip, ":"), do: {:ok, ip}, else: :error
      _ -> :error
    end
  end

  def host(host) when is_binary(host) do
    if ip?(host) or host_name?(host), do: {:ok, host}, else: :error
  end

  def host(_), do: :error

  @doc """
  Whether `host` is a host name: dot-separated labels of letters, digits, `-` and `_`, at
  most 253 bytes. Digits and dots only are an attempt at an IPv4 address, not a name.
  """
  @spec host_name?(String.t()) :: boolean()
  # Plain binary matching, not a compiled regex in a module attribute: OTP 28 and later
  # cannot keep a compiled regex in a module's literals.
  def host_name?(host) when is_binary(host) do
    byte_size(host) in 1..253 and not digits_and_dots?(host) and
      host |> :binary.split(".", [:global]) |> Enum.all?(&label?/1)
  end

  # 1 to 63 bytes of letters, digits, `_` and `-`, not starting or ending with `-`.
  defp label?(label) when byte_size(label) in 1..63,
    do: :binary.first(label) != ?- and :binary.last(label) != ?- and label_bytes?(label)

  defp label?(_label), do: false

  defp label_bytes?(<<c, rest::binary>>)
       when c in ?a..?z or c in ?A..?Z or c in ?0..?9 or c in [?_, ?-],
       do: label_bytes?(rest)

  defp label_bytes?(<<>>), do: true
  defp label_bytes?(_), do: false

  defp digits_and_dots?(<<c, rest::binary>>) when c in ?0..?9 or c == ?.,
    do: rest == "" or digits_and_dots?(rest)

  defp digits_and_dots?(_), do: false

  @doc "Whether `host` is an IPv4 or IPv6 address written as a string."
  @spec ip?(String.t()) :: boolean()
  def ip?(host) when is_binary(host) do
    not String.contains?(host, "%") and
      match?({:ok, _}, :inet.parse_strict_address(String.to_charlist(host)))
  end

  defp identity(:local), do: :local
  defp identity({:dns, name, _opts}), do: {:dns, String.downcase(name, :ascii)}
  defp identity({host, port}), do: {String.downcase(host, :ascii), port}
  defp identity(host), do: identity({host, LocalNode.default_epmd_port()})

  @doc "An entry's host and EPMD port (4369 unless the entry gives one)."
  @spec host_port(String.t() | {String.t(), :inet.port_number()}) ::
          {String.t(), :inet.port_number()}
  def host_port({host, port}), do: {host, port}
  def host_port(host), do: {host, LocalNode.default_epmd_port()}
end
