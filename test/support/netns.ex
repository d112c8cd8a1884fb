defmodule Tinycluster.Netns do
  @moduledoc """
  Separate hosts for the multi-host tests: Linux network namespaces, each with its own
  loopback, its own `epmd` and its own nodes, joined by a bridge that lives in a namespace of
  its own, so that nothing is added to the host's own network. Root only.

  Host `i` (1-based) has the addresses `198.18.0.i/24` and `2001:2::i/64`, from the
  benchmarking ranges (RFC 2544, RFC 5180), which exist only inside these namespaces; the
  tests send traffic only to them and to loopback.

  Namespaces are named `tcmh<os pid>-...`, unique to the test run. `teardown/1` kills every
  process in them by pid and deletes them, and with them their veths; `setup!/2` first
  removes what a run that died without its teardown left behind (namespaces whose run's OS
  process is gone). Nodes halt when their stdin closes, and each `epmd` runs under a guard
  that kills it when its port closes, so nothing outlives a test VM that dies.
  """

  defstruct [:prefix, :switch, :hosts, :cookie]

  @type host :: %{
          ns: String.t(),
          index: pos_integer(),
          ipv4: String.t(),
          ipv6: String.t(),
          veth: String.t(),
          peer: String.t()
        }
  @type t :: %__MODULE__{
          prefix: String.t(),
          switch: String.t(),
          hosts: [host()],
          cookie: String.t()
        }

  alias Tinycluster.Demo.OSNode

  @prefix "tcmh"

  @doc "`:ok` when namespaces can be made here (root and `ip`), or why not."
  @spec available() :: :ok | {:error, String.t()}
  def available do
    cond do
      not root?() ->
        {:error,
         "the multi-host tests need root: they create network namespaces " <>
           "(run `mix test` as root, as .ci/run does)"}

      System.find_executable("ip") == nil ->
        {:error, "the multi-host tests need `ip` (apt-get install iproute2)"}

      true ->
        :ok
    end
  end

  @doc "Whether this OS process runs as root."
  @spec root?() :: boolean()
  def root? do
    match?({"0\n", 0}, System.cmd("id", ["-u"], stderr_to_stdout: true))
  end

  @doc """
  Creates `count` hosts joined by a bridge, each with its loopback up and its own `epmd`.
  Call `teardown/1` when done, also on failure: register it with `on_exit` first.

  `:loopback_epmd` lists the indexes of hosts whose `epmd` listens on their loopback only
  (`epmd -address 127.0.0.1`), so that something else can take port 4369 on their own
  address: a `Tinycluster.DelayLine`, to make the host far away. `epmd: false` starts no
  `epmd` anywhere: a cluster without EPMD, whose nodes run with `-start_epmd false
  -erl_epmd_port P` (`start_node/4`'s `:dist_port`).
  """
  @spec setup!(t(), keyword()) :: t()
  def setup!(%__MODULE__{} = net, opts \\ []) do
    remove_stale()
    ip!(["netns", "add", net.switch])
    ip!(["-n", net.switch, "link", "add", "br0", "type", "bridge"])
    ip!(["-n", net.switch, "link", "set", "br0", "up"])

    for %{veth: veth, peer: peer} = host <- net.hosts do
      ip!(["netns", "add", host.ns])
      ip!(["-n", host.ns, "link", "set", "lo", "up"])

      ip!(~w(link add #{veth} netns #{host.ns} type veth peer name #{peer} netns #{net.switch}))

      ip!(["-n", net.switch, "link", "set", peer, "master", "br0"])
      ip!(["-n", net.switch, "link", "set", peer, "up"])
      ip!(["-n", host.ns, "addr", "add", host.ipv4 <> "/24", "dev", veth])
      # No duplicate address detection: the address is usable at once, not in a second.
      ip!(["-n", host.ns, "addr", "add", host.ipv6 <> "/64", "dev", veth, "nodad"])
      ip!(["-n", host.ns, "link", "set", veth, "up"])

      cond do
        Keyword.get(opts, :epmd, true) == false ->
          :ok

        host.index in Keyword.get(opts, :loopback_epmd, []) ->
          start_epmd(host, 4369, address: "127.0.0.1")

        true ->
          start_epmd(host)
      end
    end

    net
  end

  @doc "The description of `count` hosts for this run; nothing is created until `setup!/1`."
  @spec new(pos_integer(), String.t()) :: t()
  def new(count, cookie) do
    prefix = "#{@prefix}#{System.pid()}"
    # Interface names have at most 15 bytes; the pid makes them unique to the run.
    veth = "tc#{System.pid()}"

    hosts =
      for index <- 1..count do
        %{
          ns: "#{prefix}-h#{index}",
          index: index,
          ipv4: "198.18.0.#{index}",
          ipv6: "2001:2::#{index}",
          veth: "#{veth}v#{index}",
          peer: "#{veth}p#{index}"
        }
      end

    %__MODULE__{prefix: prefix, switch: "#{prefix}-sw", hosts: hosts, cookie: cookie}
  end

  @doc """
  Kills every process in the namespaces of `net` by pid, then deletes the namespaces (and so
  their veths). Safe to call on a half-made or already removed setup.
  """
  @spec teardown(t()) :: :ok
  def teardown(%__MODULE__{} = net) do
    Enum.each([net.switch | Enum.map(net.hosts, & &1.ns)], &remove_namespace/1)
  end

  defp remove_namespace(ns) do
    if ns in namespaces() do
      kill_all_in(ns)
      ip(["netns", "del", ns])
    end

    :ok
  end

  defp kill_all_in(ns) do
    Enum.reduce_while(1..50, nil, fn _, _ ->
      case pids_in(ns) do
        [] ->
          {:halt, :ok}

        pids ->
          Enum.each(pids, &kill/1)
          Process.sleep(100)
          {:cont, :ok}
      end
    end)
  end

  defp pids_in(ns) do
    {out, _} = ip(["netns", "pids", ns])
    for line <- String.split(out), {pid, ""} <- [Integer.parse(line)], do: pid
  end

  @doc "Kills an OS process by pid with SIGKILL; a pid that is gone is fine."
  @spec kill(pos_integer()) :: :ok
  def kill(os_pid) do
    System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  defp namespaces do
    {out, _} = ip(["netns", "list"])
    for line <- String.split(out, "\n", trim: true), do: line |> String.split() |> hd()
  end

  # Namespaces of earlier runs whose test VM is gone: their on_exit never ran.
  defp remove_stale do
    for ns <- namespaces(),
        [_, pid] <- [Regex.run(~r/\A#{@prefix}(\d+)-/, ns)],
        pid != System.pid(),
        not File.exists?("/proc/#{pid}") do
      remove_namespace(ns)
    end

    :ok
  end

  ## Processes in a namespace

  @doc """
  Starts an `epmd` in `host` on `epmd_port` (`setup!/1` starts one on 4369 in each host)
  and waits until it answers. It dies with the namespace, or when the test VM does.
  `address: "127.0.0.1"` makes it listen on that address only.
  """
  @spec start_epmd(host(), :inet.port_number(), keyword()) :: :ok
  def start_epmd(host, epmd_port \\ 4369, opts \\ []) do
    epmd = System.find_executable("epmd")
    address = if opts[:address], do: ["-address", opts[:address]], else: []

    args =
      ["/bin/sh", "-c", OSNode.guard_script(), "sh", epmd, "-port", "#{epmd_port}"] ++ address

    port = open(host, args, [])
    {:ok, _pid} = OSNode.await_pid(port)

    wait_until(
      fn -> epmd_names(host, epmd_port) != :error end,
      "epmd on port #{epmd_port} in #{host.ns}"
    )
  end

  @doc "The names the `epmd` of `host` lists, or `:error` when it does not answer."
  @spec epmd_names(host(), :inet.port_number()) :: [String.t()] | :error
  def epmd_names(host, epmd_port \\ 4369) do
    epmd = System.find_executable("epmd")

    case ip(["netns", "exec", host.ns, epmd, "-port", "#{epmd_port}", "-names"]) do
      {out, 0} -> for [_, name] <- Regex.scan(~r/^name (\S+) at port/m, out), do: name
      _ -> :error
    end
  end

  @doc """
  Starts a plain node `alive@address` in `host` (`address` defaults to its IPv4 address;
  `-name`), which halts when its stdin closes, and waits until that host's `epmd` lists it.
  `extra` are more `erl` arguments (`-proto_dist inet6_tcp`); `epmd_port` is the port of
  the `epmd` to wait for (default 4369; the node's own `-epmd_port` goes in `extra`).
  `dist_port: P` starts a node without EPMD (`-start_epmd false -erl_epmd_port P`, before
  `extra`) and waits until it listens on P in its host instead: no `epmd` lists it;
  `listens_on: range` waits until it listens on a port of `range` (its `extra` says how).
  `erl` is the `erl` to run (default: the one on the PATH).
  """
  @spec start_node(t(), host(), String.t(), keyword()) :: map()
  def start_node(net, host, alive, opts \\ []) do
    address = Keyword.get(opts, :address, host.ipv4)
    name = "#{alive}@#{address}"
    dist_port = opts[:dist_port]

    erl = Keyword.get_lazy(opts, :erl, fn -> System.find_executable("erl") end)

    args =
      [erl, "-name", name, "-setcookie", net.cookie, "-noshell"] ++
        without_epmd(dist_port) ++
        Keyword.get(opts, :extra, []) ++
        ["-eval", ~s|spawn(fun() -> io:get_line(""), erlang:halt() end).|]

    port = open(host, args, [])
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    epmd_port = Keyword.get(opts, :epmd_port, 4369)

    cond do
      dist_port ->
        wait_until(
          fn -> listening?(host, dist_port) end,
          "#{name} to listen on port #{dist_port} in #{host.ns}"
        )

      listens = opts[:listens_on] ->
        wait_until(
          fn -> listen_ports(host, os_pid) |> Enum.any?(&(&1 in listens)) end,
          "#{name} to listen on a port of #{inspect(listens)} in #{host.ns}"
        )

      true ->
        wait_until(
          fn -> registered?(host, alive, epmd_port) end,
          "#{name} to register in #{host.ns}"
        )
    end

    %{name: String.to_atom(name), alive: alive, os_pid: os_pid, port: port, host: host}
  end

  @doc """
  The `erl` arguments of a node of a cluster without EPMD whose nodes all listen on
  `dist_port` (none for nil): it starts no `epmd`, and OTP's `erl_epmd` answers that port
  for every node without asking one.
  """
  @spec without_epmd(:inet.port_number() | nil) :: [String.t()]
  def without_epmd(nil), do: []
  def without_epmd(dist_port), do: ~w(-start_epmd false -erl_epmd_port #{dist_port})

  @doc "Whether something in `host` listens on TCP `port`, as `ss -ltn` there says."
  @spec listening?(host(), :inet.port_number()) :: boolean()
  def listening?(host, port) do
    case ip(["netns", "exec", host.ns, "ss", "-Hltn", "sport = :#{port}"]) do
      {out, 0} -> String.trim(out) != ""
      _ -> false
    end
  end

  @doc "The TCP ports OS process `os_pid` listens on in `host`, as `ss -ltnp` there says."
  @spec listen_ports(host(), pos_integer()) :: [:inet.port_number()]
  def listen_ports(host, os_pid) do
    case ip(["netns", "exec", host.ns, "ss", "-Hltnp"]) do
      {out, 0} ->
        for line <- String.split(out, "\n", trim: true),
            line =~ "pid=#{os_pid},",
            [_, port] <- [Regex.run(~r/:(\d+)\s/, line)],
            do: String.to_integer(port)

      _ ->
        []
    end
  end

  @doc "The command names (`/proc/<pid>/comm`) of the processes in `host`'s namespace."
  @spec commands(host()) :: [String.t()]
  def commands(host) do
    for pid <- pids_in(host.ns),
        {:ok, comm} <- [File.read("/proc/#{pid}/comm")],
        do: String.trim(comm)
  end

  @doc "Stops a node or agent by its OS pid and closes its port."
  @spec stop(map()) :: :ok
  def stop(%{os_pid: os_pid, port: port}) do
    kill(os_pid)
    if Port.info(port) != nil, do: Port.close(port)
    :ok
  catch
    :error, _ -> :ok
  end

  @doc """
  Asserts that no `epmd` runs in any namespace of `net` and that port 4369 refuses a
  connection from `agent` on every host's address.
  """
  @spec assert_no_epmd(t(), map()) :: :ok
  def assert_no_epmd(%__MODULE__{} = net, agent) do
    import ExUnit.Assertions

    for host <- net.hosts do
      refute "epmd" in commands(host), "an epmd runs in #{host.ns}"
      refute listening?(host, 4369), "something listens on 4369 in #{host.ns}"
      address = String.to_charlist(host.ipv4)

      assert {:ok, {:error, :econnrefused}} =
               call(agent, :gen_tcp, :connect, [address, 4369, [], 10_000])
    end

    :ok
  end

  @doc "Whether the `epmd` of `host` lists `alive`."
  @spec registered?(host(), String.t(), :inet.port_number()) :: boolean()
  def registered?(host, alive, epmd_port \\ 4369) do
    case epmd_names(host, epmd_port) do
      :error -> false
      names -> alive in names
    end
  end

  @doc """
  Makes `address` a black hole seen from `host`: a permanent neighbour entry with a MAC
  address nobody has, so that packets to it leave and nothing ever answers; a connect to
  it hangs until its caller gives up, as to a host that is down behind a router.
  """
  @spec blackhole(host(), String.t()) :: :ok
  def blackhole(host, address) do
    family = if String.contains?(address, ":"), do: "-6", else: "-4"

    ip!(
      ~w(-n #{host.ns} #{family} neigh replace #{address} lladdr 02:00:5e:c6:12:63) ++
        ~w(dev #{host.veth} nud permanent)
    )

    :ok
  end

  @doc """
  Takes `host` off the network (`:down`) or puts it back (`:up`): its veth's link state,
  as a cable pulled and plugged back. Its processes and addresses stay; nothing it sends
  leaves, nothing reaches it.
  """
  @spec link(host(), :up | :down) :: :ok
  def link(host, :down), do: ip!(["-n", host.ns, "link", "set", host.veth, "down"])

  def link(host, :up) do
    ip!(["-n", host.ns, "link", "set", host.veth, "up"])
    # Linux drops an interface's IPv6 addresses when its link goes down (unless
    # keep_addr_on_down is set); IPv4 ones stay. Put it back as setup!/1 made it.
    ip!(["-n", host.ns, "addr", "replace", host.ipv6 <> "/64", "dev", host.veth, "nodad"])
  end

  @doc """
  Starts dnsmasq in `host` (see `Tinycluster.Dnsmasq.start/1` for `opts`; it listens on
  the namespace's own loopback unless `:address` says otherwise). Stopped on test exit, and
  by `teardown/1` with everything else in the namespace.
  """
  @spec start_dnsmasq(host(), keyword()) :: Tinycluster.Dnsmasq.t()
  def start_dnsmasq(host, opts) do
    Tinycluster.Dnsmasq.start(Keyword.put(opts, :ns, host.ns))
  end

  ## The agent: a node running tinycluster in a namespace, driven over its stdio

  @doc """
  Starts an agent node in `host`: `erl` with tinycluster's and Elixir's code paths, running
  `Tinycluster.NetnsAgent`, which applies the calls `call/5` sends over its stdin and writes
  the results to its stdout. It halts when its stdin closes. Options: `:name` (`"alive"` for
  `-name alive@ipv4`, or a full `-name`), `:sname` (runs with `-sname` instead), `:extra`
  (more `erl` arguments), `:dist_port` (a node without EPMD, as in `start_node/4`), `:cd`
  (its current directory). With neither `:name` nor `:sname` it is no node until
  `distribute/2` makes it one.
  """
  @spec start_agent(t(), host(), keyword()) :: map()
  def start_agent(net, host, opts) do
    name_args =
      cond do
        sname = opts[:sname] ->
          ["-sname", sname]

        name = opts[:name] ->
          ["-name", if(String.contains?(name, "@"), do: name, else: "#{name}@#{host.ipv4}")]

        true ->
          []
      end

    args =
      [System.find_executable("erl")] ++
        name_args ++
        ["-setcookie", net.cookie, "-noshell"] ++
        without_epmd(opts[:dist_port]) ++
        Tinycluster.TestNodes.code_path_args() ++
        Keyword.get(opts, :extra, []) ++
        ["-eval", "'Elixir.Tinycluster.NetnsAgent':main()."]

    port_opts = if opts[:cd], do: [cd: opts[:cd]], else: []
    port = open(host, args, port_opts)
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    agent = %{port: port, os_pid: os_pid, host: host}
    {:ok, name} = call(agent, :erlang, :node, [], 30_000)
    Map.put(agent, :name, name)
  end

  @doc """
  Makes an agent started without a name (`start_agent/3`) the node `alive@<its host's IPv4
  address>`, with the cookie its `-setcookie` gave; it is registered with its host's `epmd`
  when this returns. Its VM is up already, so it registers moments after the call: a node
  restarted, without a VM's boot, which a loaded machine stretches to seconds.
  """
  @spec distribute(map(), String.t()) :: map()
  def distribute(agent, alive) do
    name = :"#{alive}@#{agent.host.ipv4}"
    {:ok, _} = call!(agent, :net_kernel, :start, [name, %{name_domain: :longnames}])
    %{agent | name: name}
  end

  @doc """
  Applies `module.fun(args)` in the agent and returns `{:ok, result}`, or
  `{:error, {kind, reason, stacktrace}}` when it raised. Flunks after `timeout` ms, showing
  what the agent printed meanwhile.
  """
  @spec call(map(), module(), atom(), list(), timeout()) :: {:ok, term()} | {:error, term()}
  def call(agent, module, fun, args, timeout \\ 30_000) do
    ref = make_ref()
    request = {ref, {module, fun, args}} |> :erlang.term_to_binary() |> Base.encode64()
    true = Port.command(agent.port, request <> "\n")
    await_reply(agent, ref, System.monotonic_time(:millisecond) + timeout, [])
  end

  defp await_reply(%{port: port} = agent, ref, deadline, printed) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, {:eol, "tinycluster_agent " <> reply}}} ->
        case reply |> Base.decode64!() |> :erlang.binary_to_term() do
          {^ref, result} -> result
          _other -> await_reply(agent, ref, deadline, printed)
        end

      {^port, {:data, {_, line}}} ->
        await_reply(agent, ref, deadline, [line | printed])

      {^port, {:exit_status, status}} ->
        ExUnit.Assertions.flunk(
          "the agent in #{agent.host.ns} exited with status #{status}; it printed:\n" <>
            (printed |> Enum.reverse() |> Enum.join("\n"))
        )
    after
      remaining ->
        ExUnit.Assertions.flunk(
          "no answer from the agent in #{agent.host.ns}; it printed:\n" <>
            (printed |> Enum.reverse() |> Enum.join("\n"))
        )
    end
  end

  @doc "Like `call/5`, but returns the result and flunks when the call raised."
  @spec call!(map(), module(), atom(), list(), timeout()) :: term()
  def call!(agent, module, fun, args, timeout \\ 30_000) do
    case call(agent, module, fun, args, timeout) do
      {:ok, result} ->
        result

      {:error, {kind, reason, stack}} ->
        ExUnit.Assertions.flunk(
          "#{inspect(module)}.#{fun} raised in the agent: " <>
            Exception.format(kind, reason, stack)
        )
    end
  end

  ## A poller in an agent, seen from the test

  @doc "Starts a poller with `opts` in `agent` under a fresh name, and returns that name."
  @spec start_poller(map(), keyword()) :: atom()
  def start_poller(agent, opts) do
    name = :"netns_poller_#{System.unique_integer([:positive])}"
    call!(agent, Tinycluster.NetnsAgent, :start_poller, [Keyword.put(opts, :name, name)])
  end

  @doc "One moment of `poller` in `agent`: see `Tinycluster.NetnsAgent.snapshot/1`."
  @spec snapshot(map(), atom()) :: map()
  def snapshot(agent, poller), do: call!(agent, Tinycluster.NetnsAgent, :snapshot, [poller])

  @doc """
  Waits until `agent` is connected to every node of `expected`, and returns a snapshot of
  `poller`; flunks after `timeout` ms with the poller's view of every seed, host and
  candidate.
  """
  @spec wait_connected(map(), atom(), [node()], timeout()) :: map()
  def wait_connected(agent, poller, expected, timeout \\ 60_000) do
    wait_until(
      fn -> Enum.all?(expected, &(&1 in snapshot(agent, poller).nodes)) end,
      "#{inspect(agent.name)} to connect #{inspect(expected)}",
      timeout
    )

    snapshot(agent, poller)
  rescue
    error in ExUnit.AssertionError ->
      status = snapshot(agent, poller).status
      candidates = for {name, c} <- status.candidates, do: {name, c.state, c.reason}

      message =
        "#{error.message}\ndns: #{inspect(status.dns)}\nhosts: #{inspect(status.hosts)}" <>
          "\ncandidates: #{inspect(candidates)}"

      reraise %{error | message: message}, __STACKTRACE__
  end

  ## Helpers

  # Without the suite's ERL_EPMD_PORT (Tinycluster.SuiteEpmd): a namespace's nodes use its
  # own EPMDs, on 4369 unless their `-epmd_port` says otherwise.
  defp open(host, args, port_opts) do
    Port.open(
      {:spawn_executable, System.find_executable("ip")},
      [:binary, :exit_status, :stderr_to_stdout, {:line, 1_000_000}] ++
        port_opts ++
        [env: [{~c"ERL_EPMD_PORT", false}], args: ["netns", "exec", host.ns | args]]
    )
  end

  defp ip(args), do: System.cmd("ip", args, stderr_to_stdout: true)

  defp ip!(args) do
    case ip(args) do
      {_, 0} -> :ok
      {out, status} -> raise "ip #{Enum.join(args, " ")} failed (#{status}): #{out}"
    end
  end

  @doc "Polls `fun` every 50 ms until it returns truthy; flunks after `timeout` ms."
  @spec wait_until((() -> term()), String.t(), timeout()) :: :ok
  def wait_until(fun, what, timeout \\ 30_000) do
    Tinycluster.TestNodes.wait_until(fun, what, timeout)
  end
end
