defmodule Tinycluster.AutostartTest do
  # `config :tinycluster, autostart: ...` (README, "Usage"): the application starts one
  # poller, with default options for `true` or the options of a keyword list; a bad value
  # is a clear error. Each test restarts this VM's tinycluster application with the value
  # set, and puts it back as it was.
  use ExUnit.Case, async: false

  alias Tinycluster.TestNodes

  setup do
    previous = Application.fetch_env(:tinycluster, :autostart)

    on_exit(fn ->
      Application.stop(:tinycluster)

      case previous do
        {:ok, value} -> Application.put_env(:tinycluster, :autostart, value)
        :error -> Application.delete_env(:tinycluster, :autostart)
      end

      {:ok, _} = Application.ensure_all_started(:tinycluster)
    end)
  end

  defp restart_with(value) do
    :ok = Application.stop(:tinycluster)
    Application.put_env(:tinycluster, :autostart, value)
    Application.ensure_all_started(:tinycluster)
  end

  test "true starts one poller with the default options, which connects nodes" do
    node = TestNodes.start()
    assert {:ok, _} = restart_with(true)
    assert Tinycluster.status().options == Tinycluster.Options.new!([])
    TestNodes.wait_state(Tinycluster, node, :connected)
  end

  test "a keyword list starts one poller with those options" do
    name = TestNodes.poller_name()
    assert {:ok, _} = restart_with(name: name, interval: 300, connect: false)
    assert Process.whereis(Tinycluster) == nil
    assert %{name: ^name, interval: 300, connect: false} = Tinycluster.status(name).options
  end

  test "false, the default, starts none" do
    assert {:ok, _} = restart_with(false)
    assert Process.whereis(Tinycluster) == nil
    assert [] = Supervisor.which_children(Tinycluster.Supervisor)
  end

  # Today a value that is neither a boolean nor a list crashes the start with a
  # CaseClauseError (lib/tinycluster/application.ex), which names neither the key nor what it
  # takes.
  @tag :bug_autostart_value
  test "a bad value fails the start with an ArgumentError that names :autostart" do
    assert {:error, reason} = restart_with(:yes)
    assert inspect(reason) =~ "ArgumentError"
    assert inspect(reason) =~ ":autostart"
  end
end
