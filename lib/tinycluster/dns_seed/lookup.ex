defmodule Tinycluster.DnsSeed.Lookup do
  @moduledoc """
  The lookups of DNS seeds (`Tinycluster.DnsSeed`): OTP's resolver, `:inet_res`, asked for
  a seed's records, with the caps and checks that keep a hostile or broken DNS server from
  handing the poller more, or other, hosts than it should. Blocking calls, run by the
  poller in a task; nothing here keeps state.
  """

  alias Tinycluster.{DnsSeed, Hosts, LocalNode}

  @max_addresses 1024
  @system "a system port (below 1024), where no EPMD listens"

  @doc """
  Looks `seed` up once, for a node of `family`, within `timeout` ms: the addresses it gives,
  or why it gives none. Blocks the caller, so a poller runs it in a task (`lookup_all/3`).
  """
  @spec lookup(DnsSeed.t(), LocalNode.family(), pos_integer()) ::
          {:ok, [DnsSeed.address()]} | {:error, term()}
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
      {:ok, Enum.map(ips, &address(&1, LocalNode.default_epmd_port()))}
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
        records(name, type, :inet_dns.msg(msg, :anlist))

      {:error, {reason, _msg}} when is_atom(reason) ->
        {:error, reason}

      {:error, reason} ->
        {:error, reason}
    end
  catch
    # The resolver's own checks (a name too long for DNS, say) raise.
    kind, reason -> {:error, {:malformed, Exception.format_banner(kind, reason)}}
  end

  # The data of the answer's records of `type`, each owned by `name` or by a name of its
  # CNAME chain, followed through the answer's own CNAME records. A server that answers
  # with another name's records (which `:inet_res` passes on) is answering what it was not
  # asked, and would hand the poller hosts of its choosing: the whole answer is refused.
  defp records(name, type, anlist) do
    answer = for rr <- anlist, do: {owner(rr), :inet_dns.rr(rr, :type), :inet_dns.rr(rr, :data)}
    chain = chain(MapSet.new([dns_name(name)]), answer)
    typed = for {owner, ^type, data} <- answer, do: {owner, data}

    case Enum.find(typed, fn {owner, _} -> not MapSet.member?(chain, owner) end) do
      {owner, _} -> {:error, {:malformed, "a record for #{printable(owner)} answers #{name}"}}
      nil when typed == [] -> {:error, :no_records}
      nil -> {:ok, Enum.map(typed, &elem(&1, 1))}
    end
  end

  # The names reached from `chain` by CNAMEs; a loop ends when a pass adds no name.
  defp chain(chain, answer) do
    next =
      for {owner, :cname, target} <- answer,
          is_list(target),
          MapSet.member?(chain, owner),
          into: chain,
          do: dns_name(target)

    if MapSet.size(next) == MapSet.size(chain), do: chain, else: chain(next, answer)
  end

  defp owner(rr), do: rr |> :inet_dns.rr(:domain) |> dns_name()

  # DNS names compare without case and without the root's trailing dot.
  defp dns_name(name) when is_list(name), do: name |> List.to_string() |> dns_name()
  defp dns_name(name), do: name |> String.trim_trailing(".") |> String.downcase(:ascii)

  defp printable(text), do: if(String.printable?(text), do: text, else: inspect(text))

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
  # The port is the one the poller's EPMD request goes to: a system port (below 1024, where
  # EPMD's 4369 is not) is a well-known service's (SSH, SMTP, HTTP), so a server that
  # names one could aim every poller at such services; the answer is refused.
  defp srv_targets(records) do
    Enum.reduce_while(records, {:ok, []}, fn
      {_prio, _weight, _port, ~c"."}, {:ok, acc} ->
        {:cont, {:ok, acc}}

      {_prio, _weight, port, target}, {:ok, acc} when port in 1..65_535 and is_list(target) ->
        target = target |> List.to_string() |> String.trim_trailing(".")

        cond do
          not (String.valid?(target) and Hosts.host_name?(target)) ->
            {:halt, {:error, {:malformed, "SRV target #{inspect(target)} is not a host name"}}}

          port < 1024 ->
            {:halt, {:error, {:malformed, "SRV target #{target} has port #{port}, " <> @system}}}

          true ->
            {:cont, {:ok, [{target, port} | acc]}}
        end

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
        port == LocalNode.default_epmd_port() -> string
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
  @spec lookup_all([Hosts.entry()], LocalNode.family(), pos_integer()) :: %{
          String.t() => {:ok, [DnsSeed.address()]} | {:error, term()}
        }
  def lookup_all(entries, family, timeout) do
    seeds = DnsSeed.seeds(entries)

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
end
