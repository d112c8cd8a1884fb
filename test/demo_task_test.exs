defmodule Tinycluster.DemoTaskTest do
  # `mix tinycluster.demo` as a user runs it: an OS process, from a project that depends on
  # tinycluster, with its output piped. Next to it runs a node that is not the demo's (as a
  # release would), which must see nothing of the demo: no probe (it would make an atom of
  # the probe's name) and no connection attempt (it would log "Invalid challenge reply").
  # Both, and the demo's nodes, register with a private EPMD (ERL_EPMD_PORT), so that the
  # pollers of other test runs on this host see none of them.
  use ExUnit.Case, async: false

  alias Tinycluster.{TestEpmd, WatchedNode}

  @moduletag timeout: 300_000

  @tag :tmp_dir
  test "clusters only its own nodes, says so, heads its columns, starts nothing else",
       %{tmp_dir: dir} do
    File.write!(Path.join(dir, "mix.exs"), """
    defmodule DemoUser.MixProject do
      use Mix.Project

      def project do
        [app: :demo_user, version: "0.1.0", deps: [{:tinycluster, path: #{inspect(File.cwd!())}}]]
      end

      def application, do: [extra_applications: [:logger], mod: {DemoUser.Application, []}]
    end
    """)

    # The project's own application runs a poller of its own, and asks for tinycluster's.
    File.mkdir_p!(Path.join(dir, "lib"))

    File.write!(Path.join(dir, "lib/demo_user.ex"), """
    defmodule DemoUser.Application do
      use Application

      def start(_type, _args) do
        IO.puts("demo_user application started")
        Supervisor.start_link([{Tinycluster, name: DemoUser.Poller}], strategy: :one_for_one)
      end
    end
    """)

    File.mkdir_p!(Path.join(dir, "config"))

    File.write!(
      Path.join(dir, "config/config.exs"),
      "import Config\nconfig :tinycluster, autostart: true\n"
    )

    epmd = TestEpmd.start()
    neighbour = WatchedNode.start(epmd_port: epmd.port)
    atoms = WatchedNode.settled_atoms(neighbour)

    # Its own _build, as in scan_task_test.exs.
    env = [
      {"MIX_ENV", "dev"},
      {"MIX_BUILD_ROOT", nil},
      {"MIX_BUILD_PATH", nil},
      {"ERL_EPMD_PORT", Integer.to_string(epmd.port)}
    ]

    opts = [cd: dir, env: env, stderr_to_stdout: true]
    {out, 0} = System.cmd("mix", ["compile"], opts)
    assert out =~ "demo_user", out

    {out, status} =
      System.cmd("mix", ["tinycluster.demo", "--nodes", "2", "--interval", "300"], opts)

    assert status == 0, out

    # It says whom it clusters, and the neighbour heard nothing from it.
    assert out =~ ~r/clusters only its own nodes \(names that start with demo-\d+-\)/, out
    # (What it printed meanwhile is read first, so that the atom count is today's.)
    noise = WatchedNode.noise(neighbour)
    assert WatchedNode.settled_atoms(neighbour) == atoms
    assert noise == []

    # Piped, each change is a line under a line of column headings.
    lines = String.split(out, "\n")
    heading = Enum.find_index(lines, &(&1 =~ ~r/^AFTER\s+NODE\s+STARTED AS\s+STATE\s+PROBE$/))
    first_change = Enum.find_index(lines, &(&1 =~ ~r/^\+\d+\.\d+ s\s+demo-/))
    assert heading && first_change && heading < first_change, out
    assert Enum.count(lines, &(&1 =~ ~r/^\+\d+\.\d+ s\s+demo-\S+\s+plain\s+connected/)) == 2, out

    # Nothing of the project ran: neither its application nor tinycluster's autostart.
    refute out =~ "demo_user application started", out
  end
end
