defmodule Tinycluster.BuildTest do
  # The build and load path: the Mix compiler in mix.exs, its message when cargo is missing,
  # tinycluster as a dependency of another application, and a clear error when the NIF
  # cannot be loaded.
  use ExUnit.Case, async: false

  alias Tinycluster.DepProject

  test "the compiler says what to do when cargo is missing" do
    path = System.get_env("PATH")

    try do
      System.put_env("PATH", "/nonexistent")

      assert_raise Mix.Error, ~r/needs Rust's `cargo`/, fn ->
        Mix.Tasks.Compile.TinyclusterNif.run([])
      end
    after
      System.put_env("PATH", path)
    end
  end

  test "a NIF that failed to load stops the application and the poller with a clear error" do
    key = {Tinycluster.Native, :load_error}
    :persistent_term.put(key, {~c"/nowhere/libtinycluster_nif", {:load_failed, ~c"no such file"}})

    try do
      assert {:error, {:nif_not_loaded, message}} = Tinycluster.Application.start(:normal, [])
      assert message =~ "/nowhere/libtinycluster_nif.so"
      assert message =~ "mix compile"
      assert {:error, {:nif_not_loaded, _, _}} = Tinycluster.start_link(name: :never_started)
    after
      :persistent_term.erase(key)
    end
  end

  @tag timeout: 300_000
  test "an application that depends on tinycluster by path builds and loads the NIF" do
    {dir, out} = DepProject.build!()
    # Built into the dependent project's own _build, NIF included (what cargo printed, if
    # anything, depends on what it had built before).
    built = Path.join(dir, "_build/dev/lib/tinycluster")
    assert File.exists?(Path.join(built, "ebin/Elixir.Tinycluster.Native.beam")), out
    assert File.exists?(Path.join(built, "priv/native/libtinycluster_nif.so")), out

    script = "IO.inspect({Tinycluster.Native.load_error(), Tinycluster.scan()})"
    {out, status} = DepProject.mix(["run", "-e", script], stderr_to_stdout: true)
    assert status == 0, out
    # Loaded, and answering: not distributed here, so scan says so instead of raising.
    assert out =~ "{nil, {:error, :not_distributed}}"
  end
end
