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
  target refuses the whole answer with `{:malformed, text}`. A lookup that fails
  (`:timeout`, `:nxdomain`, `:servfail`, `:refused`, `:formerr` for an answer that does not
  decode, `:econnrefused`, `:no_records` for an empty answer) disconnects nothing: the seed
  keeps its last good addresses, which are still scanned, and is reported with its error in
  `Tinycluster.status/1`'s `dns`, with one warning when it starts failing and one info line
  when it answers again. An address that leaves DNS is no longer asked, and its candidates
  become `:gone`.
  """

  alias Tinycluster.{Hosts, Options}

  @max_addresses 1024
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

  ## Lookups

  @doc """
  Looks `seed` up once, for a node of `family`, within `timeout` ms: the addresses it gives,
  or why it gives none. Blocks the caller, so a poller runs it in a task (`lookup_all/3`).
  """
  @spec lookup(t(), Hosts.family(), pos_integer()) :: {:ok, [address()]} | {:error, term()}
  def lookup({:dns, name, %{type: :srv} = opts}, family, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout

    with {:ok, records} <- query(name, :srv, opts, timeout),
         :ok <- cap(records, :too_many_records),
         {:ok, targets} <- srv_targets(records) do
      targets
      |> Task.async_stream(
        fn {target, port} ->
          left = max(deadline - System.monotonic_time(:millisecond), 1)

          case host_addresses(target, family, opts, left) do
            {:ok, [ip | _]} -> {:ok, address(ip, port)}
            {:error, reason} -> {:error, {target, reason}}
          end
        end,
        max_concurrency: 16,
        timeout: timeout + 100,
        on_timeout: :kill_task
      )
      |> Enum.reduce_while({:ok, []}, fn
        {:ok, {:ok, address}}, {:ok, acc} -> {:cont, {:ok, [address | acc]}}
        {:ok, {:error, {target, reason}}}, _ -> {:halt, {:error, {:target, target, reason}}}
        {:exit, _}, _ -> {:halt, {:error, :timeout}}
      end)
      |> case do
        {:ok, addresses} -> {:ok, addresses |> Enum.reverse() |> Enum.uniq_by(& &1.label)}
        error -> error
      end
    end
  end

  def lookup({:dns, name, opts}, family, timeout) do
    with {:ok, ips} <- host_addresses(name, family, opts, timeout) do
      {:ok, Enum.map(ips, &address(&1, Options.default_epmd_port()))}
    end
  end

  # A name's addresses of the type asked, or for a node's family: AAAA then A under inet6.
  defp host_addresses(name, family, %{type: type} = opts, timeout)
       when type in [nil, :srv] and family == :inet6 do
    started = System.monotonic_time(:millisecond)

    case addresses(name, :aaaa, opts, timeout) do
      {:error, reason} when reason in [:no_records, :nxdomain] ->
        left = timeout - (System.monotonic_time(:millisecond) - started)
        if left > 0, do: addresses(name, :a, opts, left), else: {:error, :timeout}

      other ->
        other
    end
  end

  defp host_addresses(name, _family, %{type: type} = opts, timeout) when type in [nil, :srv],
    do: addresses(name, :a, opts, timeout)

  defp host_addresses(name, _family, %{type: type} = opts, timeout),
    do: addresses(name, type, opts, timeout)

  defp addresses(name, type, opts, timeout) do
    with {:ok, ips} <- query(name, type, opts, timeout),
         ips = Enum.uniq(ips),
         :ok <- cap(ips, :too_many_addresses),
         :ok <- host_ips(ips) do
      {:ok, ips}
    end
  end

  # The records of `type` in the answer, CNAMEs followed by the server as usual.
  defp query(name, type, %{nameservers: servers}, timeout) do
    res_opts = if servers == [], do: [], else: [nameservers: servers]
    started = System.monotonic_time(:millisecond)

    case resolve(name, type, res_opts, timeout, started) do
      {:ok, msg} ->
        case for(
               rr <- :inet_dns.msg(msg, :anlist),
               :inet_dns.rr(rr, :type) == type,
               do: :inet_dns.rr(rr, :data)
             ) do
          [] -> {:error, :no_records}
          data -> {:ok, data}
        end

      {:error, {reason, _msg}} when is_atom(reason) ->
        {:error, reason}

      {:error, reason} ->
        {:error, reason}
    end
  catch
    # The resolver's own checks (a name too long for DNS, say) raise.
    kind, reason -> {:error, {:malformed, Exception.format_banner(kind, reason)}}
  end

  # OTP 27's resolver answers `formerr` where a truncated UDP answer should have sent it to
  # TCP (1100 records from dnsmasq: OTP 25 and 29 ask again over TCP and get them all), so
  # a `formerr` is asked again over TCP in the time left; the first reason stands if that
  # fails too.
  defp resolve(name, type, res_opts, timeout, started) do
    charlist = String.to_charlist(name)

    case :inet_res.resolve(charlist, :in, type, res_opts, timeout) do
      {:error, reason} = formerr when reason == :formerr or elem(reason, 0) == :formerr ->
        left = timeout - (System.monotonic_time(:millisecond) - started)

        with true <- left > 0,
             {:ok, msg} <- :inet_res.resolve(charlist, :in, type, [usevc: true] ++ res_opts, left) do
          {:ok, msg}
        else
          _ -> formerr
        end

      other ->
        other
    end
  end

  defp cap(list, reason) do
    if length(list) > @max_addresses, do: {:error, {reason, @max_addresses}}, else: :ok
  end

  # Addresses no host has: asking them would reach this host, many hosts or none.
  defp host_ips(ips) do
    case Enum.find(ips, &(not host_ip?(&1))) do
      nil -> :ok
      ip -> {:error, {:malformed, "#{:inet.ntoa(ip)} is not a host's address"}}
    end
  end

  defp host_ip?({0, 0, 0, 0}), do: false
  defp host_ip?({255, 255, 255, 255}), do: false
  defp host_ip?({a, _, _, _}) when a in 224..239, do: false
  defp host_ip?({0, 0, 0, 0, 0, 0, 0, 0}), do: false
  defp host_ip?({a, _, _, _, _, _, _, _}) when a in 0xFF00..0xFFFF, do: false
  defp host_ip?(_ip), do: true

  # SRV data is {priority, weight, port, target}; a target of "." means "no such service".
  defp srv_targets(records) do
    Enum.reduce_while(records, {:ok, []}, fn
      {_prio, _weight, _port, ~c"."}, {:ok, acc} ->
        {:cont, {:ok, acc}}

      {_prio, _weight, port, target}, {:ok, acc} when port in 1..65_535 and is_list(target) ->
        target = target |> List.to_string() |> String.trim_trailing(".")

        if String.valid?(target) and Hosts.host_name?(target),
          do: {:cont, {:ok, [{target, port} | acc]}},
          else:
            {:halt, {:error, {:malformed, "SRV target #{inspect(target)} is not a host name"}}}

      record, _ ->
        {:halt, {:error, {:malformed, "SRV record #{inspect(record)} has no usable port"}}}
    end)
    |> case do
      {:ok, []} -> {:error, :no_records}
      {:ok, targets} -> {:ok, targets |> Enum.reverse() |> Enum.uniq()}
      error -> error
    end
  end

  defp address(ip, port) do
    string = ip |> :inet.ntoa() |> List.to_string()

    label =
      cond do
        port == Options.default_epmd_port() -> string
        tuple_size(ip) == 8 -> "[#{string}]:#{port}"
        true -> "#{string}:#{port}"
      end

    %{label: label, address: string, epmd_port: port}
  end

  @doc """
  Looks up every seed of `entries` at once, in the calling process, within `timeout` ms
  (and a little more for the lookups' own bookkeeping): the result of `lookup/3` by seed
  name. A lookup that overruns is killed and answers `{:error, :timeout}`.
  """
  @spec lookup_all([Hosts.entry()], Hosts.family(), pos_integer()) :: %{
          String.t() => {:ok, [address()]} | {:error, term()}
        }
  def lookup_all(entries, family, timeout) do
    seeds = seeds(entries)

    seeds
    |> Task.async_stream(&lookup(&1, family, timeout),
      max_concurrency: max(length(seeds), 1),
      timeout: timeout + 500,
      on_timeout: :kill_task,
      ordered: true
    )
    |> Enum.zip(seeds)
    |> Map.new(fn
      {{:ok, result}, {:dns, name, _}} -> {name, result}
      {{:exit, _}, {:dns, name, _}} -> {name, {:error, :timeout}}
    end)
  end

  ## Bookkeeping

  @doc "The state of every seed of `entries` before its first lookup, by name."
  @spec new([Hosts.entry()]) :: %{String.t() => seed_status()}
  def new(entries) do
    Map.new(seeds(entries), fn {:dns, name, opts} ->
      {name,
       %{
         name: name,
         type: opts.type,
         status: :pending,
         addresses: [],
         hosts: [],
         checked_at: nil,
         last_ok_at: nil
       }}
    end)
  end

  @doc """
  Records the answers of `lookup_all/3` in `seeds` (from `new/1`) and returns the new state
  and the log lines to write, as `{level, message, metadata}`: one warning when a seed
  starts failing, one info line when it answers again. A failed seed keeps its last good
  addresses.
  """
  @spec update(map(), map(), DateTime.t()) :: {map(), [{Logger.level(), String.t(), keyword()}]}
  def update(seeds, answers, now \\ DateTime.utc_now()) do
    Enum.reduce(answers, {seeds, []}, fn {name, answer}, {seeds, lines} ->
      case Map.fetch(seeds, name) do
        {:ok, seed} ->
          {seed, line} = record(seed, answer, now)
          {Map.put(seeds, name, seed), if(line, do: [line | lines], else: lines)}

        :error ->
          {seeds, lines}
      end
    end)
    |> then(fn {seeds, lines} -> {seeds, Enum.reverse(lines)} end)
  end

  defp record(seed, {:ok, hosts}, now) do
    line =
      if match?({:error, _}, seed.status),
        do:
          {:info, "tinycluster: DNS seed #{seed.name} answers again (#{length(hosts)} addresses)",
           [tinycluster_seed: seed.name]}

    seed = %{
      seed
      | status: :ok,
        hosts: hosts,
        addresses: Enum.map(hosts, & &1.label),
        checked_at: now,
        last_ok_at: now
    }

    {seed, line}
  end

  defp record(seed, {:error, reason}, now) do
    line =
      unless match?({:error, _}, seed.status) do
        kept =
          if seed.hosts == [],
            do: "no addresses yet",
            else: "keeping its last #{length(seed.hosts)} addresses"

        {:warning,
         "tinycluster: cannot look up DNS seed #{seed.name}: #{describe(reason)}; " <>
           "#{kept}, and nothing is disconnected", [tinycluster_seed: seed.name]}
      end

    {%{seed | status: {:error, reason}, checked_at: now}, line}
  end

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
  The NIF's host specs for the addresses `seeds` currently give, for the hosts `taken` (the
  static hosts' specs, whose addresses are not asked twice).
  """
  @spec specs(map(), [map()]) :: [map()]
  def specs(seeds, taken) do
    taken = MapSet.new(taken, &{String.downcase(&1.address), &1.epmd_port})

    seeds
    |> Map.values()
    |> Enum.sort_by(& &1.name)
    |> Enum.flat_map(& &1.hosts)
    |> Enum.uniq_by(& &1.label)
    |> Enum.reject(&MapSet.member?(taken, {&1.address, &1.epmd_port}))
    |> Enum.map(&Map.put(&1, :node_host, nil))
  end

  @doc "How many addresses each seed gives now, by name, as the scan events carry it."
  @spec counts(map()) :: %{String.t() => non_neg_integer()}
  def counts(seeds), do: Map.new(seeds, fn {name, seed} -> {name, length(seed.hosts)} end)

  @doc "What `Tinycluster.status/1` shows of each seed, by name."
  @spec status(map()) :: %{String.t() => seed_status()}
  def status(seeds), do: Map.new(seeds, fn {name, seed} -> {name, Map.delete(seed, :hosts)} end)

  @doc """
  What is wrong with `seeds` for a node of `naming` and `family`, as log lines to write
  once: addresses under short names (nodes are then found under their short host names,
  which must resolve here), and AAAA records under an IPv4 distribution.
  """
  @spec warnings([Hosts.entry()], Hosts.naming() | nil, Hosts.family()) :: [String.t()]
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
