# Small helpers shared by the driver and the measuring nodes: waiting, clocks, host names.
defmodule Bench.Util do
  @doc "Polls `fun` every 20 ms until it is truthy (true) or `timeout` ms passed (false)."
  def wait_until(fun, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, deadline)
  end

  defp do_wait(fun, deadline) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(20)
        do_wait(fun, deadline)
    end
  end

  @doc "This VM's monotonic clock in microseconds: for durations inside one VM."
  def mono_us, do: System.monotonic_time(:microsecond)

  @doc "The OS wall clock in microseconds: comparable between the OS processes of a host."
  def os_us, do: System.os_time(:microsecond)

  @doc "The host part of short node names on this machine."
  def short_host do
    {:ok, host} = :inet.gethostname()
    host |> List.to_string() |> String.split(".") |> hd()
  end

  @doc "The node name of `alive` on this host."
  def node_name(alive), do: :"#{alive}@#{short_host()}"
end
