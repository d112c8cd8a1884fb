# Many hosts on this one machine, for the scenarios that need them (`hosts`, `cluster`):
# each a loopback address 127.1.x.y with its own EPMD, plain nodes registered there, and
# measuring nodes that reach them by name.
#
# Naming. Every node here is a long name (`-name`): a host's nodes `<prefix>_<role>@127.1.x.y`,
# the measuring nodes `...@127.0.0.1`, so a node that connects `app@127.1.0.2` asks that
# address's EPMD, as it would ask a remote host's. Short and long names cannot connect, so
# the measuring nodes are not `Driver.start_measuring/3`'s `-sname` ones. `-connect_all
# false` everywhere, so that no node connects on another's behalf (global's mesh): each
# poller's connections, and the EPMD requests they take, are its own.
#
# EPMDs. OTP registers a node with the EPMD at 127.0.0.1 only, and an epmd always listens on
# 127.0.0.1 too, so real epmds cannot share a port: each host's real one runs as
# `epmd -address 127.1.x.y -port Q` on a port of its own, and a node of that host registers
# with it through `ERL_EPMD_PORT=Q`. A measuring node asks every host at its own
# `ERL_EPMD_PORT` P, where a counting front (`Bench.EpmdFront`) listens at `127.1.x.y:P` and
# forwards to the host's real epmd.
defmodule Bench.Loopback do
  alias Bench.{Driver, Epmd, VM}

  @doc "The first `n` host addresses: 127.1.0.1 to 127.1.0.250, then 127.1.1.1 and on."
  def ips(n), do: for(i <- 1..n, do: {127, 1, div(i - 1, 250), rem(i - 1, 250) + 1})

  @doc "An address as a string, as tinycluster's `:hosts` and node names take it."
  def address(ip), do: to_string(:inet.ntoa(ip))

  @doc """
  Starts an epmd at `address` (127.0.0.1: a measuring node's private one) under the run's
  count of its own processes, so the machine's noise is not charged with it.
  """
  def epmd(ctx, address \\ "127.0.0.1") do
    epmd = Epmd.start(address)
    if ctx[:noise], do: Bench.Noise.own(ctx.noise, [epmd.os_pid])
    epmd
  end

  @doc "The flags every node here runs with (see the top): a long name, no global mesh."
  def flags(name), do: ["-name", name, "-connect_all", "false"]

  @doc "A plain node `<prefix>_<role>@ip`, registered with that host's real `epmd`."
  def host_node(ctx, epmd, role, ip) do
    name = "#{ctx.prefix}_#{role}@#{address(ip)}"
    VM.start(%{ctx | epmd_port: epmd.port}, args: flags(name))
  end

  @doc """
  A fresh measuring node `<prefix>_<role>N@127.0.0.1` (Elixir and tinycluster loaded) whose
  EPMD is the one at `epmd_port`: its `:local`, and the port at which it asks every host.
  """
  def measuring(ctx, role, epmd_port, setup \\ []) do
    name = "#{Driver.name(ctx, role)}@127.0.0.1"
    vm = VM.start(%{ctx | epmd_port: epmd_port}, elixir: true, args: flags(name))
    setup = Keyword.merge([preload: true, all: not ctx.smoke], setup)
    :ok = VM.call(vm, Bench.Child, :setup, [setup])
    vm
  end
end
