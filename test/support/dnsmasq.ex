defmodule Tinycluster.Dnsmasq do
  @moduledoc """
  A real DNS server for the DNS seed tests: `dnsmasq` from Debian's packages, answering
  only from a hosts file the test writes (`--no-resolv --no-hosts`, nothing forwarded) and
  from `--srv-host` and `--cname` records, on one address and port, in the foreground.

  It runs under the same guard as `Tinycluster.Demo.OSNode`'s nodes, so it dies when its port
  closes or the test VM dies, and `stop/1` kills it by its own pid, which the guard reports
  (under `ip netns exec` the command started is `sh`, not dnsmasq). `set_hosts/2` rewrites
  the hosts file and sends SIGHUP to that pid, then waits until dnsmasq says it read the
  file again. Names under the `:local` domain (default `test`) that the file does not hold
  answer NXDOMAIN, not REFUSED.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  alias Tinycluster.Demo.OSNode

  defstruct [:dir, :hosts_file, :address, :port, :os_pid, :guard, :ns]

  @type t :: %__MODULE__{
          dir: Path.t(),
          hosts_file: Path.t(),
          address: String.t(),
          port: :inet.port_number(),
          os_pid: pos_integer(),
          guard: port(),
          ns: String.t() | nil
        }

  @doc "`:ok` when dnsmasq is installed, or why the tests that need it are skipped."
  @spec available() :: :ok | {:error, String.t()}
  def available do
    if executable(),
      do: :ok,
      else: {:error, "the DNS seed tests need dnsmasq (apt-get install dnsmasq-base)"}
  end

  defp executable, do: System.find_executable("dnsmasq") || existing("/usr/sbin/dnsmasq")

  defp existing(path), do: if(File.exists?(path), do: path)

  @doc """
  Starts dnsmasq and waits until it has read its hosts file, which lives in a directory of
  its own (dnsmasq takes commas in paths for list separators). Options: `:hosts`
  (a list of `{address, name}`), `:srv` (a list of `{service, target, port}`, as
  `--srv-host`), `:cname` (a list of `{alias, target}`, as `--cname`), `:address`
  (default `"127.0.0.1"`), `:port` (default a free UDP port of 127.0.0.1), `:ns` (a network
  namespace to run in), `:local` (default `"test"`). Stopped on test exit, unless `on_exit: false` (outside ExUnit: the benchmarks), when the caller
  stops it.
  """
  @spec start(keyword()) :: t()
  def start(opts \\ []) do
    dir =
      Path.join(System.tmp_dir!(), "tcdns#{System.pid()}_#{System.unique_integer([:positive])}")

    File.mkdir_p!(dir)
    hosts_file = Path.join(dir, "dns_hosts")
    File.write!(hosts_file, hosts_text(Keyword.get(opts, :hosts, [])))
    address = Keyword.get(opts, :address, "127.0.0.1")
    port = Keyword.get_lazy(opts, :port, &free_port/0)

    args =
      ~w(--keep-in-foreground --no-resolv --no-hosts --bind-interfaces --user=root
         --log-facility=- --cache-size=0 --local-ttl=0) ++
        [
          "--listen-address=#{address}",
          "--port=#{port}",
          "--addn-hosts=#{hosts_file}",
          "--local=/#{Keyword.get(opts, :local, "test")}/",
          "--pid-file=#{Path.join(dir, "dnsmasq.pid")}"
        ] ++
        for(
          {service, target, srv_port} <- Keyword.get(opts, :srv, []),
          do: "--srv-host=#{service},#{target},#{srv_port}"
        ) ++
        for({alias, target} <- Keyword.get(opts, :cname, []), do: "--cname=#{alias},#{target}")

    command = ["-c", OSNode.guard_script(), "sh", executable() | args]

    {exe, args} =
      case opts[:ns] do
        nil -> {"/bin/sh", command}
        ns -> {System.find_executable("ip"), ["netns", "exec", ns, "/bin/sh" | command]}
      end

    guard =
      Port.open({:spawn_executable, exe}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 65_536},
        args: args
      ])

    os_pid =
      case OSNode.await_pid(guard) do
        {:ok, pid} -> pid
        {:error, why} -> raise "dnsmasq did not start: #{inspect(why)}"
      end

    dns = %__MODULE__{
      dir: dir,
      hosts_file: hosts_file,
      address: address,
      port: port,
      os_pid: os_pid,
      guard: guard,
      ns: opts[:ns]
    }

    if Keyword.get(opts, :on_exit, true) do
      on_exit(fn ->
        stop(dns)
        File.rm_rf(dir)
      end)
    end

    await_read(dns, 15_000)
    dns
  end

  @doc "Rewrites the hosts file with `hosts` (`{address, name}`), and makes dnsmasq reread it."
  @spec set_hosts(t(), [{String.t(), String.t()}]) :: :ok
  def set_hosts(%__MODULE__{} = dns, hosts) do
    File.write!(dns.hosts_file, hosts_text(hosts))
    flush(dns)
    {_, 0} = System.cmd("kill", ["-HUP", Integer.to_string(dns.os_pid)], stderr_to_stdout: true)
    await_read(dns, 15_000)
  end

  @doc "The server as `:nameservers` takes it."
  @spec nameserver(t()) :: {String.t(), :inet.port_number()}
  def nameserver(%__MODULE__{address: address, port: port}), do: {address, port}

  @doc "Kills dnsmasq by its pid and closes its guard. Safe to call twice."
  @spec stop(t()) :: :ok
  def stop(%__MODULE__{os_pid: os_pid, guard: guard}) do
    System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)

    try do
      Port.close(guard)
    rescue
      ArgumentError -> :ok
    end

    # Gone when /proc no longer has it (a zombie's reaping is the guard's job).
    Tinycluster.TestNodes.wait_until(
      fn -> not alive?(os_pid) end,
      "dnsmasq #{os_pid} to stop",
      10_000
    )
  end

  defp alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not String.contains?(stat, ") Z ")
      {:error, _} -> false
    end
  end

  @doc "A port of 127.0.0.1 that nothing uses right now, over UDP and TCP (dnsmasq takes both)."
  @spec free_port() :: :inet.port_number()
  def free_port do
    {:ok, socket} = :gen_udp.open(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)

    case :gen_tcp.listen(port, ip: {127, 0, 0, 1}) do
      {:ok, listener} ->
        :gen_tcp.close(listener)
        :gen_udp.close(socket)
        port

      {:error, _} ->
        port = free_port()
        :gen_udp.close(socket)
        port
    end
  end

  defp hosts_text(hosts),
    do: Enum.map_join(hosts, fn {address, name} -> "#{address} #{name}\n" end)

  # dnsmasq logs "read <file> - N names" (addresses, in fact) at start and after each SIGHUP.
  defp await_read(%__MODULE__{guard: guard, hosts_file: file} = dns, timeout, seen \\ []) do
    receive do
      {^guard, {:data, {:eol, line}}} ->
        if String.contains?(line, "read #{file}"),
          do: :ok,
          else: await_read(dns, timeout, [line | seen])

      {^guard, {:exit_status, status}} ->
        raise "dnsmasq exited with status #{status}: #{Enum.join(Enum.reverse(seen), "\n")}"
    after
      timeout ->
        raise "dnsmasq did not read #{file} in #{timeout} ms; it said:\n" <>
                Enum.join(Enum.reverse(seen), "\n")
    end
  end

  defp flush(%__MODULE__{guard: guard} = dns) do
    receive do
      {^guard, {:data, _}} -> flush(dns)
    after
      0 -> :ok
    end
  end
end
