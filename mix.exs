defmodule Mix.Tasks.Compile.TinyclusterNif do
  @shortdoc "Builds tinycluster's Rust NIF with cargo and copies it into priv/"
  @moduledoc """
  Builds `native/tinycluster_nif` with `cargo build --release` and copies the library to
  `priv/native/`, where `Tinycluster.Native` loads it.

  It is what Rustler's own compiler does, kept small because this project has no hex
  dependencies. It runs from the project's directory, so it works the same when
  tinycluster is a dependency of another application.
  """
  use Mix.Task.Compiler

  @crate "native/tinycluster_nif"
  @library "libtinycluster_nif"

  @impl true
  def run(_args) do
    cargo =
      System.find_executable("cargo") ||
        Mix.raise("""
        tinycluster needs Rust's `cargo` to build its NIF, and none is on the PATH.
        Install Rust >= 1.91 (https://rustup.rs, or `apt-get install cargo` where recent
        enough), then run `mix compile` again.
        """)

    manifest = Path.join(@crate, "Cargo.toml")
    args = ["build", "--release", "--manifest-path", manifest]

    case System.cmd(cargo, args, stderr_to_stdout: true) do
      {output, 0} ->
        # Stay quiet when cargo had nothing to do; show what it built otherwise.
        if output =~ "Compiling", do: Mix.shell().info(output)
        install(Path.join([@crate, "target", "release", so_name()]))

      {output, status} ->
        Mix.shell().error(output)
        Mix.raise("cargo build of #{@crate} failed with exit status #{status}")
    end
  end

  defp install(built) do
    dir = Path.join(["priv", "native"])
    File.mkdir_p!(dir)
    # A fresh clone has no _build/.../priv link yet; this makes it point at priv/.
    Mix.Project.build_structure()
    target = Path.join(dir, @library <> ".so")

    if File.read(target) == File.read(built) do
      {:noop, []}
    else
      # Write then rename: overwriting a library in place can crash a VM that has it mapped.
      tmp = target <> ".tmp"
      File.cp!(built, tmp)
      File.rename!(tmp, target)
      {:ok, []}
    end
  end

  defp so_name do
    case :os.type() do
      {:unix, :darwin} -> @library <> ".dylib"
      _ -> @library <> ".so"
    end
  end
end

defmodule Tinycluster.MixProject do
  use Mix.Project

  def project do
    [
      app: :tinycluster,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      # The NIF first: compiling Tinycluster.Native loads it, and its @on_load needs the
      # library in priv/ already.
      compilers: [:tinycluster_nif | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      aliases: aliases(),
      docs: [main: "Tinycluster"]
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {Tinycluster.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  # `mix test` runs the Rust suite first, so that one command runs every test.
  # TINYCLUSTER_SKIP_CARGO_TEST=1 skips it while iterating on one Elixir test file.
  defp aliases do
    [test: [&cargo_test/1, &test_on_own_epmd/1]]
  end

  # The ExUnit suite runs on an EPMD of its own, so that whatever else runs on this host's
  # EPMD (a developer's `iex --sname a -S mix`, whose :dev config starts a poller, another
  # application's release, nodes of another cookie) is never in a test's view, and the
  # suite's nodes are in no one else's. OTP's EPMD client takes its port from the VM's
  # `-epmd_port` flag only, which `erl` sets from ERL_EPMD_PORT at boot, so the test VM
  # itself must start with it: this runs `mix test` again in a VM of its own, with
  # ERL_EPMD_PORT set to a free port. test/test_helper.exs starts `epmd -port` there, before
  # the VM registers, and kills it by pid when the suite ends; the nodes the tests start
  # inherit the variable.
  defp test_on_own_epmd(args) do
    if System.get_env("TINYCLUSTER_TEST_EPMD") in [nil, ""] do
      {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
      {:ok, port} = :inet.port(listener)
      :ok = :gen_tcp.close(listener)
      port = Integer.to_string(port)
      color = if IO.ANSI.enabled?(), do: ["--color"], else: []

      env = [
        {"MIX_ENV", to_string(Mix.env())},
        {"ERL_EPMD_PORT", port},
        {"TINYCLUSTER_TEST_EPMD", port},
        # The Rust suite ran already, in this VM.
        {"TINYCLUSTER_SKIP_CARGO_TEST", "1"}
      ]

      mix = System.find_executable("mix") || Mix.raise("mix is not on the PATH")

      {_, status} =
        System.cmd(mix, ["test" | color ++ args],
          env: env,
          into: IO.stream(:stdio, :line),
          stderr_to_stdout: true
        )

      if status != 0, do: exit({:shutdown, status})
    else
      Mix.Task.run("test", args)
    end
  end

  defp cargo_test(_args) do
    if System.get_env("TINYCLUSTER_SKIP_CARGO_TEST") in [nil, "", "0"], do: run_cargo_test()
  end

  defp run_cargo_test do
    Mix.shell().info("==> cargo test (native/tinycluster_nif)")

    {_, status} =
      System.cmd(
        "cargo",
        ["test", "--no-default-features", "--manifest-path", "native/tinycluster_nif/Cargo.toml"],
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true
      )

    if status != 0, do: Mix.raise("cargo test failed with exit status #{status}")
  end
end
