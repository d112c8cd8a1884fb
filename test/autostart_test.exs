defmodule Tinycluster.AutostartTest do
  # `config :tinycluster, autostart: ...`, as the application reads it at start: the
  # application is stopped and started again in this VM with each value. A bad value is a
  # start error that says what is wrong, never a crash; a poller the autostart already runs
  # under a name makes a second one of that name fail with a line that says why.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  @moduletag timeout: 60_000

  setup do
    before = Application.get_env(:tinycluster, :autostart)

    # Back as it was; the stop's notice is the test's doing, not news.
    on_exit(fn ->
      capture_log(fn ->
        Application.stop(:tinycluster)
        Application.put_env(:tinycluster, :autostart, before)
        :ok = Application.ensure_started(:tinycluster)
      end)
    end)
  end

  # Starts the application with `value` as its autostart; the result of the start.
  defp start_with(value) do
    # Not running after a start that failed.
    _ = Application.stop(:tinycluster)
    Application.put_env(:tinycluster, :autostart, value)
    Application.start(:tinycluster)
  end

  defp start_error(value) do
    assert {:error, {{:invalid_autostart, message}, _}} = start_with(value)
    message
  end

  test "a value that is no boolean and no keyword list is a start error in words" do
    for value <- [:yes, "true", 1, %{interval: 1}, [:interval]] do
      message = start_error(value)
      assert message =~ "invalid value for config :tinycluster, :autostart: #{inspect(value)}"
      assert message =~ "expected true, false or a keyword list of Tinycluster's options"
    end
  end

  test "options the poller would refuse are a start error that names the option" do
    message = start_error(interval: 0)
    assert message =~ "invalid config :tinycluster, autostart: [interval: 0]"
    assert message =~ "invalid value for tinycluster option :interval: 0"
  end

  test "true and a keyword list start a poller; false starts none" do
    assert :ok = start_with(false)
    assert Supervisor.which_children(Tinycluster.Supervisor) == []

    name = :"tinycluster_autostart_#{System.unique_integer([:positive])}"
    assert :ok = start_with(name: name, interval: 600_000)
    assert Tinycluster.status(name).options.interval == 600_000
  end

  test "a child of the autostart's name fails, and the log says they are exclusive" do
    name = :"tinycluster_autostart_#{System.unique_integer([:positive])}"
    assert :ok = start_with(name: name, interval: 600_000)
    autostarted = Process.whereis(name)

    # A supervisor that fails to start its child exits its caller too.
    Process.flag(:trap_exit, true)

    log =
      capture_log(fn ->
        assert {:error,
                {:shutdown, {:failed_to_start_child, _, {:already_started, ^autostarted}}}} =
                 Supervisor.start_link([{Tinycluster, name: name}], strategy: :one_for_one)
      end)

    assert log =~
             "a poller named #{inspect(name)} already runs, started by " <>
               "config :tinycluster, autostart"

    assert log =~ "are exclusive"

    # Not from the autostart: the usual error, nothing logged.
    other = :"tinycluster_other_#{System.unique_integer([:positive])}"
    {:ok, _} = Tinycluster.start_link(name: other, interval: 600_000)

    log =
      capture_log(fn ->
        assert {:error, {:already_started, _}} = Tinycluster.start_link(name: other)
      end)

    refute log =~ "exclusive"
  end
end
