defmodule Tinycluster.SuiteEpmd do
  @moduledoc """
  The EPMD of the whole test run: `epmd -port P` on a port of its own, so that the suite
  never uses the host's EPMD on 4369 and whatever else runs on this host (a developer's
  `iex --sname a -S mix`, a release, nodes of another cookie or oddly named) is never in a
  test's view.

  The `mix test` alias in mix.exs picks the port and starts the test VM with
  `ERL_EPMD_PORT` (and `TINYCLUSTER_TEST_EPMD`) set to it: OTP's EPMD client reads its port
  from the `-epmd_port` flag, which `erl` sets from `ERL_EPMD_PORT` at boot, so it cannot be
  changed once the VM runs. `start!/0`, from test_helper.exs before the VM registers, starts
  that EPMD under the same kind of guard as `Tinycluster.Demo.OSNode`'s nodes (it dies with the
  test VM) and kills it by pid when the suite ends. The OS nodes the tests start inherit
  `ERL_EPMD_PORT`, so they register with it too; `:local` pollers and scans ask it.
  """

  alias Tinycluster.TestEpmd
  alias Tinycluster.Demo.OSNode

  @key {__MODULE__, :epmd}

  @doc "The suite's EPMD port."
  @spec port() :: :inet.port_number()
  def port do
    case Integer.parse(System.get_env("TINYCLUSTER_TEST_EPMD") || "") do
      {port, ""} -> port
      _ -> raise "the suite runs through `mix test`, which sets TINYCLUSTER_TEST_EPMD"
    end
  end

  @doc """
  Starts the suite's EPMD and waits until it answers; `ExUnit.after_suite/1` kills it.
  Raises when the VM was not started on that port (the suite was not run by `mix test`).
  """
  @spec start!() :: :ok
  def start! do
    port = port()

    unless :init.get_argument(:epmd_port) == {:ok, [[~c"#{port}"]]} do
      raise "the test VM does not run with -epmd_port #{port}: run the suite with `mix test`"
    end

    parent = self()
    # A process of its own owns the guard, so that the EPMD lives as long as the test VM.
    owner = spawn(fn -> own(parent, port) end)

    receive do
      {^owner, {:ok, os_pid}} -> :persistent_term.put(@key, {owner, os_pid})
      {^owner, {:error, reason}} -> raise "epmd -port #{port} did not start: #{inspect(reason)}"
    after
      15_000 -> raise "epmd -port #{port} did not start"
    end

    wait(fn -> TestEpmd.answers?(port) end, 10_000) ||
      raise "epmd -port #{port} does not answer"

    ExUnit.after_suite(fn _ -> stop() end)
    :ok
  end

  @doc "Kills the suite's EPMD by pid."
  @spec stop() :: :ok
  def stop do
    case :persistent_term.get(@key, nil) do
      nil ->
        :ok

      {owner, os_pid} ->
        System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
        send(owner, :stop)
        :persistent_term.erase(@key)
        :ok
    end
  end

  defp own(parent, port) do
    guard = TestEpmd.spawn_guarded(port)

    send(parent, {self(), OSNode.await_pid(guard)})

    receive do
      :stop -> Port.close(guard)
    end
  end

  defp wait(fun, timeout) do
    cond do
      fun.() -> true
      timeout <= 0 -> false
      true -> Process.sleep(25) && wait(fun, timeout - 25)
    end
  end
end
