defmodule Tinycluster.TestRunRecipeTest do
  # The README's recipe for a project that depends on tinycluster: its `mix test` runs in a
  # VM that is not distributed, where a poller in its supervision tree warns "this node is
  # not distributed" in every run. The recipe (a poller from configuration, none configured
  # for tests) keeps it out. Run as the user runs it: `mix test` in that project, as an OS
  # process, with the README's code as it is written there.
  use ExUnit.Case, async: false

  @moduletag timeout: 300_000

  @application """
  defmodule MyApp.Application do
    use Application

    def start(_type, _args) do
      # As the README writes it, less the children this project does not have.
      cluster =
        case Application.fetch_env!(:my_app, :cluster) do
          false -> []
          opts -> [{Tinycluster, opts}]
        end

      children = cluster ++ []
      Supervisor.start_link(children, strategy: :one_for_one)
    end
  end
  """

  @tag :tmp_dir
  test "a poller from configuration, none for tests: mix test says nothing of it",
       %{tmp_dir: dir} do
    File.write!(Path.join(dir, "mix.exs"), """
    defmodule MyApp.MixProject do
      use Mix.Project

      def project do
        [app: :my_app, version: "0.1.0", deps: [{:tinycluster, path: #{inspect(File.cwd!())}}]]
      end

      def application, do: [extra_applications: [:logger], mod: {MyApp.Application, []}]
    end
    """)

    for sub <- ~w(lib config test), do: File.mkdir_p!(Path.join(dir, sub))
    File.write!(Path.join(dir, "lib/application.ex"), @application)
    File.write!(Path.join(dir, "test/test_helper.exs"), "ExUnit.start()\n")

    File.write!(Path.join(dir, "test/app_test.exs"), """
    defmodule MyAppTest do
      use ExUnit.Case
      test "runs", do: assert(Process.whereis(MyApp.Supervisor) == nil)
    end
    """)

    config = fn test_config ->
      File.write!(Path.join(dir, "config/config.exs"), """
      import Config
      config :my_app, :cluster, interval: 1_000
      import_config "\#{config_env()}.exs"
      """)

      for env <- ~w(dev test),
          do: File.write!(Path.join(dir, "config/#{env}.exs"), "import Config\n")

      File.write!(Path.join(dir, "config/test.exs"), "import Config\n" <> test_config)
    end

    # Its own _build, as in scan_task_test.exs; `mix test` picks the test environment.
    env = [{"MIX_ENV", nil}, {"MIX_BUILD_ROOT", nil}, {"MIX_BUILD_PATH", nil}]
    mix_test = fn -> System.cmd("mix", ["test"], cd: dir, env: env, stderr_to_stdout: true) end

    # Without the recipe's test config, the poller runs in the tests and warns.
    config.("")
    {out, 0} = mix_test.()
    assert out =~ "this node is not distributed", out

    # With it, nothing.
    config.("config :my_app, :cluster, false\n")
    {out, 0} = mix_test.()
    assert out =~ "1 test, 0 failures", out
    refute out =~ "not distributed", out
  end
end
