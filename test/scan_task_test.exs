defmodule Tinycluster.ScanTaskTest do
  # `mix tinycluster.scan` on real nodes (plain, hidden, another cookie, frozen): in this
  # VM, as this repository runs it, and as an OS process from a project that depends on
  # tinycluster, with its exit statuses. Also the JSON encoder it prints with. (`--dns`,
  # whose addresses' EPMDs are on port 4369, is tested in a network namespace of its own:
  # test/dns_multihost_test.exs.)
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias Tinycluster.{DepProject, FakeServer, JSONDecode, TestNodes, WatchedNode}
  alias Tinycluster.CLI.JSON

  @moduletag timeout: 300_000

  setup do
    {:ok, prefix: "sc#{System.pid()}x#{System.unique_integer([:positive])}x"}
  end

  # One node of each kind, all named with `prefix`, so that the scan can be kept to them.
  defp start_kinds(prefix) do
    named = fn opts -> TestNodes.start([name: TestNodes.unique_alive(prefix)] ++ opts) end

    kinds = %{
      plain: named.([]),
      hidden: named.(hidden: true),
      other_cookie: named.(cookie: "another_cookie"),
      frozen: named.([])
    }

    TestNodes.freeze(kinds.frozen)
    kinds
  end

  defp run_task(argv) do
    Mix.Task.reenable("tinycluster.scan")
    capture_io(fn -> Mix.Tasks.Tinycluster.Scan.run(argv) end)
  end

  defp line_of(output, node) do
    output |> String.split("\n") |> Enum.find(&String.starts_with?(&1, Atom.to_string(node.name)))
  end

  test "prints one line per host and one per candidate, with the reason in words",
       %{prefix: prefix} do
    kinds = start_kinds(prefix)
    output = run_task(["--only", prefix])

    # The round trip, and the probe timeout in force: loopback is near, so the option's.
    assert output =~
             ~r/^local\s+127\.0\.0\.1:\d+\s+[\d.]+ ms\s+300 ms\s+answered: \d+ names?, \d+ pass(es)? --only\/--except$/m

    # In words about the cluster: a scan connects nothing, so "not connected" (to the
    # scanning VM) would read as a failure.
    assert line_of(output, kinds.plain) =~
             ~r/\slocal\s+live\s+[\d.]+ ms\s+answered the probe: live, so a poller connects it/

    assert line_of(output, kinds.hidden) =~
             ~r/\shidden\s+[\d.]+ ms\s+a hidden node: .* only with include_hidden: true$/

    refute output =~ "not connected"

    # It connects nothing, so a node with another cookie looks live to a probe: the cookie
    # matters only from the challenge reply on, which the probe never sends.
    assert line_of(output, kinds.other_cookie) =~ ~r/\slive\s/

    assert line_of(output, kinds.frozen) =~
             ~r/\sunreachable\s+[\d.]+ ms\s+listed by EPMD but silent within the probe timeout/

    # Only the nodes the filter lets through, and none of them connected.
    candidates = output |> String.split("\n") |> Enum.filter(&(&1 =~ ~r/^\S+@\S+\s/))
    assert length(candidates) == 4
    for {_, node} <- kinds, do: refute(node.name in Node.list(:connected))
  end

  test "a filter that takes nothing says its count is after the filters, as JSON does too",
       %{prefix: prefix} do
    _ = start_kinds(prefix)
    output = run_task(["--only", prefix <> "nomatch"])

    assert output =~
             ~r/^local\s+\S+\s+[\d.]+ ms\s+\d+ ms\s+answered: [1-9]\d* names?, 0 pass --only\/--except$/m

    assert output =~ "No candidates."

    # Without a filter, the count is every name EPMD listed.
    output = run_task(["--host", "local"])
    assert output =~ ~r/^local\s+\S+\s+[\d.]+ ms\s+\d+ ms\s+answered: \d+ names$/m

    json = JSONDecode.decode!(run_task(["--json", "--except", prefix]))

    assert [%{"names" => n, "listed" => listed, "description" => words, "filtered" => true}] =
             json["hosts"]

    # Both counts: what EPMD listed, and what the filters let through (the kinds left out).
    assert listed >= n + 4

    assert words ==
             "answered: #{listed} names, #{n} #{if n == 1, do: "passes", else: "pass"} --only/--except"
  end

  test "--json prints one object with every host and candidate", %{prefix: prefix} do
    kinds = start_kinds(prefix)
    json = JSONDecode.decode!(run_task(["--json", "--only", prefix, "--probe-timeout", "500"]))

    assert %{"node" => node, "duration_us" => us, "hosts" => [host], "candidates" => list} = json
    assert node == Atom.to_string(node())
    assert is_integer(us) and us > 0
    assert %{"label" => "local", "status" => "ok", "reason" => nil, "names" => n} = host
    assert n >= 4
    assert %{"latency_us" => rtt, "probe_timeout_ms" => 500} = host
    assert is_integer(rtt) and rtt > 0

    by_name = Map.new(list, &{&1["name"], &1})
    state = fn kind -> by_name[Atom.to_string(kinds[kind].name)]["state"] end

    assert {state.(:plain), state.(:hidden), state.(:other_cookie), state.(:frozen)} ==
             {"live", "hidden", "live", "unreachable"}

    frozen = by_name[Atom.to_string(kinds.frozen.name)]
    assert %{"reason" => "timeout", "latency_us" => latency, "description" => words} = frozen
    assert latency >= 500_000
    assert words =~ "silent within the probe timeout"
    assert by_name[Atom.to_string(kinds.plain.name)]["latency_us"] < 500_000
    assert by_name[Atom.to_string(kinds.plain.name)]["description"] =~ "a poller connects it"
  end

  test "flags: hosts with ports, regex filters, and errors that exit non-zero",
       %{prefix: prefix} do
    plain = TestNodes.start(name: TestNodes.unique_alive(prefix))
    other = TestNodes.start(name: TestNodes.unique_alive(prefix))
    [_, other_suffix] = String.split(other.alive, prefix)

    # The suite's EPMD by address and port, an --except regex that keeps the other node out.
    epmd = Tinycluster.SuiteEpmd.port()
    host = "127.0.0.1:#{epmd}"
    output = run_task(["--host", host, "--only", prefix, "--except", "/#{other_suffix}@/"])

    assert output =~ ~r/^127\.0\.0\.1\s+127\.0\.0\.1:#{epmd}\s/m
    assert line_of(output, plain) =~ ~r/\slive\s/
    refute line_of(output, other)

    # One host answers and another fails: the task returns normally (exit status 0).
    closed = Tinycluster.TestEpmd.free_port()
    output = run_task(["--host", "local", "--host", "127.0.0.1:#{closed}", "--only", prefix])
    assert line_of(output, plain) =~ ~r/\slive\s/
    assert output =~ ~r/^127\.0\.0\.1\s+127\.0\.0\.1:#{closed}\s+.*failed: connection refused/m

    # No host answers: the hosts say why, and the task exits 1. (An IPv6 address in
    # brackets with a port; this VM's distribution is IPv4, which the answer says.)
    Mix.Task.reenable("tinycluster.scan")
    argv = ["--host", "127.0.0.1:#{closed}", "--host", "[::1]:#{closed}"]

    output =
      capture_io(fn ->
        assert catch_exit(Mix.Tasks.Tinycluster.Scan.run(argv)) == {:shutdown, 1}
      end)

    assert output =~
             ~r/^127\.0\.0\.1\s+127\.0\.0\.1:#{closed}\s+.*failed: connection refused/m

    assert output =~ ~r/^::1\s+\[::1\]:#{closed}\s+.*failed: .*IPv4/m

    for {argv, message} <- [
          {["--host", "a:b"], ~r/not a port number/},
          {["--bogus"], ~r/^tinycluster.scan: unknown flag --bogus\./},
          {["--only"], ~r/^tinycluster.scan: --only needs a value \(--only PATTERN\)\./},
          {["--host"], ~r/--host needs a value/},
          {["--probe-timeout", "soon"],
           ~r/--probe-timeout takes a whole number of milliseconds, got "soon"/},
          {["--json", "--bogus", "--only"], ~r/unknown flag --bogus\. --only needs a value/},
          {["--only", "/(/"], ~r/bad regex/},
          {["--dns", "app.test", "--nameserver", "127.0.0.1"], ~r/ADDRESS:PORT/},
          {["--probe-timeout", "0"], ~r/:probe_timeout/},
          {["extra"], ~r/unexpected arguments: extra/}
        ] do
      Mix.Task.reenable("tinycluster.scan")
      error = assert_raise Mix.Error, message, fn -> Mix.Tasks.Tinycluster.Scan.run(argv) end
      # Every usage error points to the help, and Mix exits with the status `mix` holds.
      assert error.message =~ ~r/See `mix help tinycluster.scan` for the flags\.$/
      refute error.message =~ "nil}"
      assert error.mix == 2
    end
  end

  test "--epmd-timeout is how long a host's EPMD has to answer" do
    silent = Tinycluster.FakeServer.start(Tinycluster.FakeServer.Epmd.silent())
    argv = ["--json", "--host", "127.0.0.1:#{silent.port}", "--epmd-timeout", "2500"]
    Mix.Task.reenable("tinycluster.scan")

    out =
      capture_io(fn ->
        assert catch_exit(Mix.Tasks.Tinycluster.Scan.run(argv)) == {:shutdown, 1}
      end)

    json = JSONDecode.decode!(out)
    assert [%{"status" => "error", "reason" => "timeout"}] = json["hosts"]
    # Not the default of 1 s: the host had the 2.5 s it was given.
    assert json["duration_us"] >= 2_500_000
  end

  test "JSON: strings escaped, unicode kept, bytes that are not UTF-8 shown as Elixir does" do
    term = %{
      "quote\"back\\slash" => ["tab\tnew\nline", "\u0001", "é€😀", "\u2028"],
      nested: %{list: [1, -2, 3.5, true, false, nil, :atom]},
      bad: <<0xFF, 0xFE>>
    }

    text = term |> JSON.encode!() |> IO.iodata_to_binary()
    refute text =~ "\n"
    assert text =~ ~S("\u0001")
    assert text =~ ~S("\u2028")

    assert JSONDecode.decode!(text) == %{
             "quote\"back\\slash" => ["tab\tnew\nline", "\u0001", "é€😀", "\u2028"],
             "nested" => %{"list" => [1, -2, 3.5, true, false, nil, "atom"]},
             "bad" => ~S(<<255, 254>>)
           }

    assert_raise ArgumentError, fn -> JSON.encode!({:a, :tuple}) end
  end

  test "runs as an OS process from a project that depends on tinycluster", %{prefix: prefix} do
    DepProject.build!()
    kinds = start_kinds(prefix)

    # stdout only, so that it is nothing but JSON.
    {out, status} = DepProject.mix(["tinycluster.scan", "--json", "--only", prefix])

    assert status == 0, out
    json = JSONDecode.decode!(out)

    # It ran as the node `tinycluster_scan` (hidden and listen-less while it runs: see the
    # test below).
    assert json["node"] == "tinycluster_scan@#{Tinycluster.Demo.OSNode.host()}"

    states = Map.new(json["candidates"], &{&1["name"], &1["state"]})

    assert states == %{
             Atom.to_string(kinds.plain.name) => "live",
             Atom.to_string(kinds.hidden.name) => "hidden",
             Atom.to_string(kinds.other_cookie.name) => "live",
             Atom.to_string(kinds.frozen.name) => "unreachable"
           }

    # --name: a long name, which the VM takes; the nodes run short names, so each is a name
    # mismatch, named in the reason. (The host by address: see the test below for :local.)
    {json, name} = long_name_scan(prefix, ["--host", "127.0.0.1:#{Tinycluster.SuiteEpmd.port()}"])
    assert json["node"] == name

    plain =
      Enum.find(json["candidates"], &String.starts_with?(&1["name"], kinds.plain.alive <> "@"))

    assert {plain["state"], plain["reason"]} ==
             {"name_mismatch", inspect({:short_name, Atom.to_string(kinds.plain.name)})}

    # The text form, and the exit statuses.
    opts = [stderr_to_stdout: true]
    {out, 0} = DepProject.mix(["tinycluster.scan", "--only", prefix, "--sname", "sc_x"], opts)
    assert out =~ "tinycluster scan from sc_x@"
    assert line_of(out, kinds.hidden) =~ "a hidden node"

    closed = Integer.to_string(Tinycluster.TestEpmd.free_port())
    {out, 1} = DepProject.mix(["tinycluster.scan", "--host", "127.0.0.1:" <> closed], opts)
    assert out =~ "connection refused"
    {out, 2} = DepProject.mix(["tinycluster.scan", "--nope"], opts)
    assert out =~ "unknown flag --nope. See `mix help tinycluster.scan` for the flags."
  end

  # The scan is held while it runs: besides this host, it asks a host whose EPMD accepts
  # and does not answer until told. Meanwhile the scanning VM is looked at from here: an
  # -eval of the test's (through ERL_AFLAGS) connects it to this VM once the task made it
  # a node, so that this VM sees how it connected and can ask it what runs in it.
  @tag :tmp_dir
  test "while it runs, its VM is hidden, listens nowhere and runs no application; " <>
         "one host failing, it exits 0",
       %{prefix: prefix, tmp_dir: dir} do
    DepProject.build!()
    # It logs everything and prints every node monitor message: a connection included.
    watched = WatchedNode.start(name: TestNodes.unique_alive(prefix))
    test = self()

    held =
      FakeServer.start(fn _socket ->
        send(test, {:held, self()})
        receive do: (:release -> :ok)
      end)

    scanner = :"tinycluster_scan@#{Tinycluster.Demo.OSNode.host()}"

    connect_here = """
    spawn(fun Wait() ->
      case node() of
        nonode@nohost -> timer:sleep(10), Wait();
        _ -> erlang:set_cookie('#{node()}', '#{TestNodes.cookie()}'),
             true = net_kernel:connect_node('#{node()}')
      end
    end)
    """

    args_file = Path.join(dir, "args")
    File.write!(args_file, ~s(-eval "#{String.replace(connect_here, "\n", " ")}"\n))
    argv = ["tinycluster.scan", "--json", "--only", prefix, "--host", "local"]
    argv = argv ++ ["--host", "127.0.0.1:#{held.port}", "--epmd-timeout", "30000"]
    port = DepProject.start_mix(argv, env: [{"ERL_AFLAGS", "-args_file #{args_file}"}])

    assert_receive {:held, handler}, 60_000
    TestNodes.wait_until(fn -> scanner in Node.list(:hidden) end, "the scanning VM")

    # Hidden, and nowhere to be connected to: EPMD does not list it, it has no listener.
    refute scanner in Node.list(:visible)
    refute TestNodes.registered?("tinycluster_scan")
    os_pid = :erpc.call(scanner, :os, :getpid, []) |> List.to_integer()
    assert listening(os_pid) -- mix_listeners(scanner) == []
    # (A node that listens, as every plain node does, is seen to.)
    assert listening(watched.os_pid) != []

    # No application of the project's started, nor tinycluster's, so no autostart poller.
    apps = for {app, _, _} <- :erpc.call(scanner, Application, :started_applications, []), do: app
    assert :dep_user not in apps and :tinycluster not in apps, inspect(apps)
    assert :erpc.call(scanner, Process, :whereis, [Tinycluster]) == nil

    send(handler, :release)
    {out, status} = collect(port, [])
    # One host answered, the other failed: exit status 0.
    assert status == 0, out
    json = JSONDecode.decode!(out)

    assert Enum.map(json["hosts"], &{&1["label"], &1["status"]}) ==
             [{"local", "ok"}, {"127.0.0.1", "error"}]

    assert [%{"state" => "live"}] = json["candidates"]
    # It connected nothing: the probed node saw no node come up.
    noise = WatchedNode.noise(watched)
    refute Enum.any?(noise, &(&1 =~ "nodeup")), inspect(noise)
  end

  # The ports OS process `os_pid` listens on for TCP, from /proc.
  defp listening(os_pid) do
    sockets =
      for fd <- File.ls!("/proc/#{os_pid}/fd"),
          {:ok, "socket:[" <> inode} <- [File.read_link("/proc/#{os_pid}/fd/#{fd}")],
          into: MapSet.new(),
          do: String.trim_trailing(inode, "]")

    for table <- ["/proc/net/tcp", "/proc/net/tcp6"],
        line <- table |> File.read!() |> String.split("\n", trim: true) |> tl(),
        [_, local, _, "0A", _, _, _, _, _, inode | _] <- [String.split(line)],
        MapSet.member?(sockets, inode),
        do: local |> String.split(":") |> List.last() |> String.to_integer(16)
  end

  # The ports Mix itself listens on in `node`: from Elixir 1.18, Mix.Sync.PubSub listens on
  # loopback (for what other mix processes of the project compile). Mix's, not a node's.
  defp mix_listeners(node) do
    case :erpc.call(node, Process, :whereis, [Mix.Sync.PubSub]) do
      nil ->
        []

      pubsub ->
        for port <- :erpc.call(node, :erlang, :ports, []),
            :erpc.call(node, :erlang, :port_info, [port, :connected]) == {:connected, pubsub},
            {:ok, {_address, number}} <- [:erpc.call(node, :inet, :sockname, [port])],
            do: number
    end
  end

  defp collect(port, acc) do
    receive do
      {^port, {:data, data}} -> collect(port, [acc | data])
      {^port, {:exit_status, status}} -> {IO.iodata_to_binary(acc), status}
    after
      60_000 -> flunk("mix tinycluster.scan did not end: #{IO.iodata_to_binary(acc)}")
    end
  end

  # Under long names, this host's short-named nodes are found under `alive@<this node's host
  # part>`; their challenge names `alive@vm`, a name mismatch `{:short_name, name}` (not
  # `{:claimed, name}`, "a stale EPMD entry or a port reused", as :local once said).
  test "--name with a long name: this host's short-named nodes are {:short_name, name}",
       %{prefix: prefix} do
    node = TestNodes.start(name: TestNodes.unique_alive(prefix))
    {json, _name} = long_name_scan(prefix, [])
    assert [candidate] = json["candidates"]

    assert {candidate["state"], candidate["reason"]} ==
             {"name_mismatch", inspect({:short_name, Atom.to_string(node.name)})}
  end

  # Runs the scan task as an OS process under a fresh long name, with `argv` added.
  defp long_name_scan(prefix, argv) do
    name = "sc#{System.unique_integer([:positive])}@127.0.0.1"
    args = ["tinycluster.scan", "--json", "--only", prefix, "--name", name] ++ argv
    {out, 0} = DepProject.mix(args)
    {JSONDecode.decode!(out), name}
  end
end
