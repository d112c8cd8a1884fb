# A private EPMD per benchmark (on a free port, loopback only), and a tiny NAMES client.
# Every node of a benchmark registers with that EPMD (ERL_EPMD_PORT), so the nodes other
# runs start on this machine (engineers' `mix test`, other benchmarks) are neither seen nor
# disturbed, and each measurement starts from an EPMD that lists only its own nodes.
defmodule Bench.Epmd do
  defstruct [:port, :guard, :os_pid]

  @doc """
  Starts `epmd -port P -address A` under a shell guard: when the guard's stdin closes (the
  driver is done or died) it kills that epmd, and only that one. An epmd always listens on
  127.0.0.1 too (it adds loopback to any `-address`), so P is a port free there, and two
  epmds cannot share a port even on different addresses.
  """
  def start(address \\ "127.0.0.1") do
    {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(listener)
    :ok = :gen_tcp.close(listener)
    epmd = System.find_executable("epmd") || raise "epmd is not on the PATH"

    guard =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        args: [
          "-c",
          "#{epmd} -port #{port} -address #{address} 2>/dev/null & e=$!; echo $e; read x; kill $e"
        ]
      ])

    os_pid =
      receive do
        {^guard, {:data, text}} -> text |> String.trim() |> String.to_integer()
      after
        5_000 -> raise "epmd did not start"
      end

    epmd = %__MODULE__{port: port, guard: guard, os_pid: os_pid}
    Bench.Util.wait_until(fn -> match?({:ok, _}, names(epmd)) end, 5_000)
    epmd
  end

  @doc "Stops the epmd `start/0` started."
  def stop(%__MODULE__{guard: guard}) do
    if Port.info(guard), do: Port.close(guard)
    :ok
  end

  @doc "The names EPMD lists, newest registration first (EPMD's own order)."
  def names(%__MODULE__{port: port}) do
    with {:ok, socket} <-
           :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false, packet: 0], 1_000),
         :ok <- :gen_tcp.send(socket, <<1::16, 110>>),
         {:ok, reply} <- read_all(socket, "") do
      <<_epmd_port::32, text::binary>> = reply

      {:ok,
       for "name " <> rest <- String.split(text, "\n", trim: true) do
         [name, port] = String.split(rest, " at port ")
         {name, String.to_integer(port)}
       end}
    end
  end

  @doc "Waits until EPMD lists nothing: the previous measurement's nodes are all gone."
  def wait_empty(epmd, timeout \\ 10_000) do
    Bench.Util.wait_until(fn -> names(epmd) == {:ok, []} end, timeout) ||
      raise "EPMD still lists #{inspect(names(epmd))}"
  end

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 1_000) do
      {:ok, data} -> read_all(socket, acc <> data)
      {:error, :closed} -> {:ok, acc}
      error -> error
    end
  end
end
