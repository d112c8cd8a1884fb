defmodule Tinycluster.DnsSeed do
  @moduledoc """
  DNS seeds in `:hosts`: a name whose DNS records list the cluster's hosts, looked up again
  at every poll, each address it gives asked like a host of its own.

  ## Forms

    * `{:dns, "myapp.internal"}` - every A record (IPv4), or under `-proto_dist inet6_tcp`
      every AAAA record (IPv6), or the A records when the name has no AAAA record.
    * `{:dns, name, opts}` with:
      * `:type` - `:a`, `:aaaa` or `:srv`. An SRV record names a target host and a port:
        the target is looked up (AAAA then A under `inet6_tcp`, else A) and the port is
        that host's EPMD port.
      * `:nameservers` - the DNS servers to ask, a list of `{address, port}` (`{"10.0.0.2",
        53}` or `{{10, 0, 0, 2}, 53}`). Default: the system's, from `/etc/resolv.conf`.

  The name is asked as given, without the resolver's search list: write it in full
  (`myapp-headless.prod.svc.cluster.local`). The lookup is OTP's own resolver, `:inet_res`,
  run in a task so that the poller never waits on DNS: the scan starts when every seed
  answered or the `:dns_timeout` (default `:epmd_timeout`) passed.

  ## Names

  DNS gives addresses, never names: the nodes of each address are the ones its EPMD lists,
  named as their challenges say (`app@10.0.0.5`, `worker@10.0.0.5`,
  `app@pod-1.app.prod.svc.cluster.local`), so no basename is configured and any number of
  releases share a host. This node is never its own candidate, whatever address DNS gives
  for it. An address is labelled by itself (`"10.0.0.5"`), or by `"address:port"`
  (`"[v6]:port"`) when its EPMD port is not 4369.

  ## Limits and failures

  An answer gives at most 1024 addresses (`{:too_many_addresses, 1024}` beyond, and
  `{:too_many_records, 1024}` for SRV); a record that is not a usable host address or SRV
  target refuses the whole answer with `{:malformed, text}`, and so does a record owned by
  another name than the one asked or a name its CNAMEs lead to (a server answering what it
  was not asked), and an SRV record whose port is below 1024 (its port is an EPMD port,
  and the ports below 1024 are other services'). A lookup that fails
  (`:timeout`, `:nxdomain`, `:servfail`, `:refused`, `:formerr` for an answer that does not
  decode, `:econnrefused`, `:no_records` for an empty answer) disconnects nothing: the seed
  keeps its last good addresses, which are still scanned, and is reported with its error in
  `Tinycluster.status/1`'s `dns`, with one warning when it starts failing and one info line
  when it answers again. An address that leaves DNS is no longer asked, and its candidates
  become `:gone`.

  ## Modules

  This module holds the seed's forms, their validation, the warnings they are worth and
  the reasons in words. The lookups are `Tinycluster.DnsSeed.Lookup`; the seeds' state
  between polls, `Tinycluster.DnsSeed.Table`, which the poller calls directly.
  """

  alias Tinycluster.Hosts

  @types [:a, :aaaa, :srv]

  @typedoc "A validated seed, as it stands in `Tinycluster.Options`' `:hosts`."
  @type t :: {:dns, String.t(), %{type: :a | :aaaa | :srv | nil, nameservers: [server()]}}

  @typedoc "A DNS server: an address and a port."
  @type server :: {:inet.ip_address(), :inet.port_number()}

  @typedoc "A seed's last lookup, as `Tinycluster.status/1` shows it under `dns`."
  @type seed_status :: %{
          name: String.t(),
          type: :a | :aaaa | :srv | nil,
          status: :pending | :ok | {:error, term()},
          addresses: [String.t()],
          checked_at: DateTime.t() | nil,
          last_ok_at: DateTime.t() | nil
        }

  @typedoc "An address a seed gave: the label it is reported under, its address and EPMD port."
  @type address :: %{label: String.t(), address: String.t(), epmd_port: :inet.port_number()}

  ## Validation

  @doc """
  Validates a `{:dns, name}` or `{:dns, name, opts}` entry of `:hosts`. Raises an
  `ArgumentError` that names the entry and what is wrong.

      iex> Tinycluster.DnsSeed.validate!({:dns, "app.internal", type: :srv, nameservers: [{"127.0.0.1", 5353}]})
      {:dns, "app.internal", %{type: :srv, nameservers: [{{127, 0, 0, 1}, 5353}]}}
  """
  @spec validate!(term()) :: t()
  def validate!({:dns, name}), do: validate!({:dns, name, []})

  def validate!({:dns, name, opts} = entry) do
    name = name!(entry, name)

    unless Keyword.keyword?(opts) do
      bad!(entry, "the options must be a keyword list of :type and :nameservers")
    end

    Enum.reduce(opts, {:dns, name, %{type: nil, nameservers: []}}, fn
      {:type, type}, {:dns, name, acc} when type in @types ->
        {:dns, name, %{acc | type: type}}

      {:type, _}, _ ->
        bad!(entry, ":type must be :a, :aaaa or :srv")

      {:nameservers, [_ | _] = servers}, {:dns, name, acc} ->
        {:dns, name, %{acc | nameservers: Enum.map(servers, &server!(entry, &1))}}

      {:nameservers, _}, _ ->
        bad!(entry, ":nameservers must be a non-empty list of {address, port}")

      {key, _}, _ ->
        bad!(entry, "unknown option #{inspect(key)} (known: :type, :nameservers)")
    end)
  end

  defp name!(entry, name) when is_binary(name) do
    name = String.trim_trailing(name, ".")

    if Hosts.ip?(name) or not Hosts.host_name?(name),
      do: bad!(entry, "the name must be a DNS name, such as \"myapp.internal\""),
      else: name
  end

  defp name!(entry, _name), do: bad!(entry, "the name must be a string")

  defp server!(entry, {address, port}) when is_integer(port) and port in 1..65_535 do
    parsed =
      cond do
        is_tuple(address) -> if :inet.ntoa(address) |> is_list(), do: {:ok, address}
        is_binary(address) -> :inet.parse_strict_address(String.to_charlist(address))
        true -> nil
      end

    case parsed do
      {:ok, ip} -> {ip, port}
      _ -> bad_server!(entry, {address, port})
    end
  end

  defp server!(entry, server), do: bad_server!(entry, server)

  defp bad_server!(entry, server) do
    bad!(
      entry,
      "nameserver #{inspect(server)} is not {address, port} with an IP address and a port " <>
        "in 1..65535"
    )
  end

  defp bad!(entry, why) do
    raise ArgumentError,
          "invalid DNS seed in tinycluster option :hosts: #{inspect(entry)}: #{why}"
  end

  @doc "Whether `entry` of `:hosts` is a DNS seed."
  @spec seed?(term()) :: boolean()
  def seed?(entry), do: match?({:dns, _, %{}}, entry)

  @doc "The seeds among `entries`."
  @spec seeds([Hosts.entry()]) :: [t()]
  def seeds(entries), do: Enum.filter(entries, &seed?/1)

  ## Words

  @doc "A seed's error reason in words."
  @spec describe(term()) :: String.t()
  def describe(:timeout), do: "no answer in time (timeout)"
  def describe(:nxdomain), do: "no such name (nxdomain)"
  def describe(:servfail), do: "the server failed (servfail)"
  def describe(:refused), do: "the server refused (refused)"
  def describe(:formerr), do: "the answer could not be decoded (formerr)"
  def describe(:no_records), do: "no records of the type asked (no_records)"
  def describe(:econnrefused), do: "no DNS server listens (econnrefused)"

  def describe({:too_many_addresses, max}),
    do: "the answer has more than #{max} addresses (too_many_addresses)"

  def describe({:too_many_records, max}),
    do: "the answer has more than #{max} SRV records (too_many_records)"

  def describe({:malformed, text}), do: "a record is unusable: #{text} (malformed)"

  def describe({:target, target, reason}),
    do: "cannot look up SRV target #{target}: #{describe(reason)}"

  def describe(other), do: inspect(other)

  @doc """
  What is wrong with `seeds` for a node of `naming` and `family`, as log lines to write
  once: addresses under short names (nodes are then found under their short host names,
  which must resolve here), and AAAA records under an IPv4 distribution.
  """
  @spec warnings(
          [Hosts.entry()],
          Tinycluster.LocalNode.naming() | nil,
          Tinycluster.LocalNode.family()
        ) :: [String.t()]
  def warnings(entries, naming, family) do
    for {:dns, name, opts} <- seeds(entries), line <- warning(name, opts, naming, family) do
      line
    end
  end

  defp warning(name, %{type: :aaaa}, _naming, :inet) do
    [
      "tinycluster: DNS seed #{name} asks for AAAA (IPv6) records, but this node's " <>
        "distribution is IPv4 (inet_tcp), which cannot reach them; start every node with " <>
        "-proto_dist inet6_tcp to cluster over IPv6"
    ]
  end

  defp warning(name, _opts, :shortnames, _family) do
    [
      "tinycluster: DNS seed #{name} gives addresses, but this node runs with short names " <>
        "(-sname): the nodes there are found under their short host names (name@host), " <>
        "and connecting to them needs those names to resolve on this host. Run every " <>
        "node with -name to cluster by address."
    ]
  end

  defp warning(_name, _opts, _naming, _family), do: []
end
