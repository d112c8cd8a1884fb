defmodule Tinycluster.DepProject do
  @moduledoc """
  An application that depends on tinycluster by path, as a user's project does: written and
  compiled once per test run (`mix compile` in its own directory, `MIX_ENV=dev`, its own
  `_build`), then shared by the tests that run mix tasks in it. Its config asks for
  tinycluster's autostart, as a user's may, which tinycluster's own tasks must not start.
  test_helper.exs removes it when the suite ends.
  """

  @key {__MODULE__, :built}

  @doc """
  The project's directory and what its `mix compile` printed, compiling it the first time.
  Flunks when the compile fails.
  """
  @spec build!() :: {Path.t(), String.t()}
  def build! do
    case :persistent_term.get(@key, nil) do
      nil ->
        built = compile!()
        :persistent_term.put(@key, built)
        built

      built ->
        built
    end
  end

  @doc """
  Runs `mix args` in the project (built first if need be) and returns `{output, status}`.
  `opts` as `System.cmd/3`'s; `:env` is added to the project's own; `:ns` runs it in that
  network namespace (`ip netns exec`), without the suite's ERL_EPMD_PORT.
  """
  @spec mix([String.t()], keyword()) :: {String.t(), non_neg_integer()}
  def mix(args, opts \\ []) do
    {dir, _} = build!()
    {ns, opts} = Keyword.pop(opts, :ns)
    env = env() ++ Keyword.get(opts, :env, [])
    mix = System.find_executable("mix")

    {command, args, env} =
      case ns do
        nil -> {mix, args, env}
        ns -> {"ip", ["netns", "exec", ns, mix | args], [{"ERL_EPMD_PORT", nil} | env]}
      end

    System.cmd(command, args, Keyword.merge(opts, cd: dir, env: env))
  end

  @doc """
  Starts `mix args` in the project (built first if need be) as an OS process, and returns
  its port: its stdout comes as `{port, {:data, bytes}}`, its end as `{port,
  {:exit_status, status}}`. `:env` as for `mix/2`. Killed by its OS pid on test exit if it
  still runs (a process of that pid that works in the project's directory).
  """
  @spec start_mix([String.t()], keyword()) :: port()
  def start_mix(args, opts \\ []) do
    {dir, _} = build!()

    env =
      for {name, value} <- env() ++ Keyword.get(opts, :env, []),
          do: {String.to_charlist(name), value && String.to_charlist(value)}

    port =
      Port.open({:spawn_executable, System.find_executable("mix")}, [
        :binary,
        :exit_status,
        args: args,
        cd: dir,
        env: Enum.map(env, fn {name, value} -> {name, value || false} end)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)

    # The port closes with the test's process, before this runs: the OS process may not.
    ExUnit.Callbacks.on_exit(fn ->
      if File.read_link("/proc/#{os_pid}/cwd") == {:ok, dir},
        do: System.cmd("kill", ["-KILL", "#{os_pid}"], stderr_to_stdout: true)
    end)

    port
  end

  @doc "Removes the project's directory, if it was made."
  @spec remove() :: :ok
  def remove do
    case :persistent_term.get(@key, nil) do
      nil ->
        :ok

      {dir, _} ->
        File.rm_rf!(dir)
        :persistent_term.erase(@key)
        :ok
    end
  end

  # Its own _build, whatever build root and environment this run uses (.ci/otp/test sets
  # both): a dependency compiled into this run's build would replace the test build.
  defp env, do: [{"MIX_ENV", "dev"}, {"MIX_BUILD_ROOT", nil}, {"MIX_BUILD_PATH", nil}]

  defp compile! do
    dir = Path.join(System.tmp_dir!(), "tcdep#{System.pid()}")
    File.rm_rf!(dir)
    File.mkdir_p!(dir)

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule DepUser.MixProject do
      use Mix.Project

      def project do
        [app: :dep_user, version: "0.1.0", deps: [{:tinycluster, path: #{inspect(File.cwd!())}}]]
      end

      def application, do: [extra_applications: [:logger]]
    end
    """)

    File.mkdir_p!(Path.join(dir, "config"))

    File.write!(
      Path.join(dir, "config/config.exs"),
      "import Config\nconfig :tinycluster, autostart: true\n"
    )

    case System.cmd("mix", ["compile"], cd: dir, env: env(), stderr_to_stdout: true) do
      {out, 0} -> {dir, out}
      {out, status} -> ExUnit.Assertions.flunk("mix compile exited #{status}:\n#{out}")
    end
  end
end
