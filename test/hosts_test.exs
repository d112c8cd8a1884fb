defmodule Tinycluster.HostsTest do
  # Changes the VM's current directory in the .hosts.erlang tests: not async.
  use ExUnit.Case, async: false

  alias Tinycluster.{Hosts, Options}
  alias Tinycluster.Hosts.ErlangHosts

  doctest Tinycluster.Hosts

  describe "validate!/1" do
    test "takes names, addresses of both families, tuples, ports and :local" do
      assert Hosts.validate!([
               :local,
               "b",
               "b.example.com",
               "B-2.example.com",
               "198.18.0.2",
               "2001:2::2",
               "[2001:2::3]",
               {"c.example.com", 4370},
               {"[2001:2::4]", 4371},
               {198, 18, 0, 5},
               {{0x2001, 2, 0, 0, 0, 0, 0, 6}, 4372}
             ]) == [
               :local,
               "b",
               "b.example.com",
               "B-2.example.com",
               "198.18.0.2",
               "2001:2::2",
               "2001:2::3",
               {"c.example.com", 4370},
               {"2001:2::4", 4371},
               "198.18.0.5",
               {"2001:2::6", 4372}
             ]
    end

    test "drops duplicates, whatever their case or form" do
      assert Hosts.validate!([:local, "b.example", {"B.EXAMPLE", 4369}, :local, "b.example"]) ==
               [:local, "b.example"]

      assert Hosts.validate!(["b", {"b", 4370}]) == ["b", {"b", 4370}]
    end

    test "refuses anything else, naming the entry" do
      for bad <- [
            "bad host",
            "",
            "-b",
            "b..example",
            "b.example.",
            "1.2.3",
            "198.18.0.256",
            "fe80::1%eth0",
            "[198.18.0.2]",
            "[2001:2::2",
            String.duplicate("a", 64),
            {"b", 0},
            {"b", 65_536},
            {"b", "4369"},
            {1, 2, 3},
            :remote,
            ~c"b.example",
            nil
          ] do
        assert_raise ArgumentError, ~r/invalid entry in tinycluster option :hosts/, fn ->
          Hosts.validate!([bad])
        end
      end

      assert_raise ArgumentError, ~r/:hosts.*non-empty list/, fn -> Hosts.validate!([]) end
      assert_raise ArgumentError, ~r/:hosts/, fn -> Hosts.validate!("b") end
    end

    test "is what Options.new!/1 runs for :hosts" do
      assert Options.new!(hosts: [{198, 18, 0, 2}]).hosts == ["198.18.0.2"]
      assert_raise ArgumentError, ~r/:hosts/, fn -> Options.new!(hosts: ["bad host"]) end
    end
  end

  test "host_name?/1: labels of 1-63 letters, digits, _ and -, not at an end; 253 bytes" do
    long_label = String.duplicate("a", 63)
    names = ["a", "a.b", "my-host_1.example.com", long_label, "10.0.0.x"]
    not_names = ["", "-a", "a-", "a..b", "a.", "1.2.3.4", "1.2.3", "a b", "héllo", "a@b"]
    too_long = [long_label <> "a", String.duplicate("a.", 126) <> "ab"]

    assert Enum.all?(names, &Hosts.host_name?/1)
    refute Enum.any?(not_names ++ too_long, &Hosts.host_name?/1)
    assert Hosts.host_name?(String.duplicate("a.", 126) <> "a")
  end

  describe ".hosts.erlang" do
    @describetag :tmp_dir

    test "a good file: atoms and strings, names and addresses, in order", %{tmp_dir: dir} do
      path = Path.join(dir, ".hosts.erlang")

      File.write!(path, """
      % the hosts of the cluster
      'b.example.com'.
      "198.18.0.2".
      '2001:2::3'.
      'b.example.com'.
      """)

      assert ErlangHosts.read_hosts_file(path) ==
               {:ok, ["b.example.com", "198.18.0.2", "2001:2::3"]}

      assert ErlangHosts.erlang_hosts([dir]) ==
               {:ok, path, ["b.example.com", "198.18.0.2", "2001:2::3"]}
    end

    test "an empty file lists no hosts", %{tmp_dir: dir} do
      path = Path.join(dir, ".hosts.erlang")
      File.write!(path, "")
      assert ErlangHosts.read_hosts_file(path) == {:ok, []}
    end

    test "the first directory that has one wins, as in net_adm", %{tmp_dir: dir} do
      [first, second, third] = for d <- ~w(cwd home root), do: Path.join(dir, d)
      Enum.each([first, second, third], &File.mkdir_p!/1)
      File.write!(Path.join(second, ".hosts.erlang"), "'from-home'.\n")
      File.write!(Path.join(third, ".hosts.erlang"), "'from-root'.\n")

      assert {:ok, path, ["from-home"]} = ErlangHosts.erlang_hosts([first, second, third])
      assert path == Path.join(second, ".hosts.erlang")

      File.write!(Path.join(first, ".hosts.erlang"), "'from-cwd'.\n")
      assert {:ok, _, ["from-cwd"]} = ErlangHosts.erlang_hosts([first, second, third])
    end

    test "the search path is the current directory, then home, then the OTP root" do
      [cwd | rest] = ErlangHosts.search_path()
      assert cwd == File.cwd!()
      assert List.last(rest) == List.to_string(:code.root_dir())
    end

    test "a missing file is an error that names where it was looked for", %{tmp_dir: dir} do
      empty = Path.join(dir, "empty")
      File.mkdir_p!(empty)
      assert {:error, message} = ErlangHosts.erlang_hosts([empty, dir])
      assert message =~ "no .hosts.erlang in #{empty}, #{dir}"
    end

    test "a malformed file is an error that names it and the line", %{tmp_dir: dir} do
      path = Path.join(dir, ".hosts.erlang")
      File.write!(path, "'b.example'.\n'c.example'\n'd.example'.\n")
      assert {:error, message} = ErlangHosts.read_hosts_file(path)
      assert message =~ path
      assert message =~ "3:"
      assert message =~ "syntax error"
    end

    test "an entry that is not a host is an error that names the file and the entry",
         %{tmp_dir: dir} do
      path = Path.join(dir, ".hosts.erlang")

      for {text, shown} <- [
            {"'b.example'.\n42.\n", "42"},
            {"{'b.example', 4370}.\n", ~s|{:"b.example", 4370}|},
            {"'bad host'.\n", ~s|:"bad host"|},
            {"[].\n", "[]"}
          ] do
        File.write!(path, text)
        assert {:error, message} = ErlangHosts.read_hosts_file(path)
        assert message =~ path
        assert message =~ shown
        assert message =~ "is not a host name or address"
      end
    end

    test ":erlang_hosts reads the file at start and fails the start on a bad one",
         %{tmp_dir: dir} do
      File.cd!(dir, fn ->
        File.write!(".hosts.erlang", "'b.example'.\n\"198.18.0.2\".\n")

        assert Options.new!(hosts: [:local, :erlang_hosts, "b.example"]).hosts ==
                 [:local, "b.example", "198.18.0.2"]

        File.write!(".hosts.erlang", "'b.example'\n")

        error =
          assert_raise ArgumentError, fn -> Tinycluster.child_spec(hosts: [:erlang_hosts]) end

        assert error.message =~ ":erlang_hosts"
        assert error.message =~ Path.join(File.cwd!(), ".hosts.erlang")

        File.write!(".hosts.erlang", "")

        assert_raise ArgumentError, ~r/:hosts names no host/, fn ->
          Options.new!(hosts: [:erlang_hosts])
        end

        File.rm!(".hosts.erlang")
        # Missing everywhere, unless this machine has one at home or in the OTP root.
        elsewhere =
          Enum.any?(tl(ErlangHosts.search_path()), &File.exists?(Path.join(&1, ".hosts.erlang")))

        unless elsewhere do
          assert_raise ArgumentError,
                       ~r/no \.hosts\.erlang in #{Regex.escape(File.cwd!())}/,
                       fn ->
                         Tinycluster.child_spec(hosts: [:erlang_hosts])
                       end
        end
      end)
    end
  end

  describe "the local node" do
    test "naming/1 tells the mode by the host part, as net_kernel does" do
      assert Tinycluster.LocalNode.naming(:a@vm) == :shortnames
      assert Tinycluster.LocalNode.naming(:a@localhost) == :shortnames
      assert Tinycluster.LocalNode.naming(:"a@vm.example.com") == :longnames
      assert Tinycluster.LocalNode.naming(:"a@198.18.0.1") == :longnames
      assert Tinycluster.LocalNode.naming(:"a@2001:2::1") == :longnames
      assert Tinycluster.LocalNode.naming(:nonode@nohost) == nil
      # The test VM runs with -sname.
      assert Tinycluster.LocalNode.naming() == :shortnames
    end

    test "family/0 follows -proto_dist" do
      assert Tinycluster.LocalNode.family() == :inet
    end

    @tag :tmp_dir
    test "the local EPMD port follows -epmd_port and ERL_EPMD_PORT, not -erl_epmd_port",
         %{tmp_dir: dir} do
      elixir = System.find_executable("elixir")
      # A copy of the modules, so that a concurrent `mix compile` cannot pull them away.
      for mod <- [Options, Tinycluster.LocalNode] do
        {module, beam, _} = :code.get_object_code(mod)
        File.write!(Path.join(dir, "#{module}.beam"), beam)
      end

      port_of = fn erl_flags, env ->
        args =
          if(erl_flags == "", do: [], else: ["--erl", erl_flags]) ++
            ["-pa", dir, "-e", ~s|IO.write("port=\#{Tinycluster.LocalNode.epmd_port()}")|]

        case System.cmd(elixir, args, env: [{"ERL_EPMD_PORT", env}], stderr_to_stdout: true) do
          {out, 0} ->
            with [_, port] <- Regex.run(~r/port=(\d+)/, out), do: String.to_integer(port)

          {out, status} ->
            flunk("elixir #{Enum.join(args, " ")} exited #{status}: #{out}")
        end
      end

      cases = [
        {"", nil, 4369},
        {"", "4371", 4371},
        {"-epmd_port 4372", nil, 4372},
        # In OTP this is the port a node's own distribution listens on without EPMD.
        {"-erl_epmd_port 4373", nil, 4369},
        {"", "not a port", 4369}
      ]

      cases
      |> Task.async_stream(fn {flags, env, _} -> port_of.(flags, env) end, timeout: 60_000)
      |> Enum.zip(cases)
      |> Enum.each(fn {{:ok, got}, {flags, env, expected}} ->
        assert got == expected, "flags #{inspect(flags)}, ERL_EPMD_PORT #{inspect(env)}"
      end)
    end
  end

  describe "specs/3 and label/2" do
    test "the local host is asked on loopback with this node's host part; others by name" do
      entries = [:local, "b.example.com", {"198.18.0.2", 4370}]

      assert [
               %{label: "local", address: "127.0.0.1", node_host: "vm", epmd_port: local},
               %{label: "b.example.com", address: "b.example.com", epmd_port: 4369},
               %{label: "198.18.0.2", address: "198.18.0.2", epmd_port: 4370, node_host: nil}
             ] = Hosts.Specs.specs(entries, :a@vm, :inet)

      assert local == Tinycluster.LocalNode.epmd_port()
      assert [%{address: "::1"}] = Hosts.Specs.specs([:local], :a@vm, :inet6)
    end

    test "one host with several EPMD ports is labelled by port" do
      entries = ["b", {"B", 4370}, {"2001:2::2", 4369}, {"2001:2::2", 4371}, "c"]

      # As specs/3 and status label them, with :local, no seed.
      seed = {:dns, "app.test", %{type: nil, nameservers: []}}

      assert Hosts.Specs.labels([:local | entries] ++ [seed]) ==
               ["local", "b:4369", "B:4370", "[2001:2::2]:4369", "[2001:2::2]:4371", "c"]

      assert Enum.map(Hosts.Specs.specs(entries, :a@vm, :inet), & &1.label) ==
               ["b:4369", "B:4370", "[2001:2::2]:4369", "[2001:2::2]:4371", "c"]
    end
  end

  describe "warnings/3" do
    test "an address under short names, and IPv6 under an IPv4 distribution" do
      assert [short] =
               Hosts.Warnings.warnings(
                 [:local, "b", "b.example", "198.18.0.2"],
                 :shortnames,
                 :inet
               )

      assert short =~ "198.18.0.2"
      assert short =~ "short names (-sname)"

      assert [v6] = Hosts.Warnings.warnings([{"2001:2::2", 4369}], :longnames, :inet)
      assert v6 =~ "IPv6 address 2001:2::2"
      assert v6 =~ "inet6_tcp"

      assert Hosts.Warnings.warnings(
               ["b", "b.example", "198.18.0.2", "2001:2::2"],
               :longnames,
               :inet6
             ) ==
               []
    end
  end
end
