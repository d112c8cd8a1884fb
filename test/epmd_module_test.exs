defmodule Tinycluster.EPMDModuleTest do
  # Several nodes per host without EPMD, across real hosts: two network namespaces
  # (Tinycluster.Netns) where no epmd runs, each with three nodes started with
  # -epmd_module Elixir.Tinycluster.EPMD -start_epmd false and the same listening range, as
  # a release's vm.args does. The nodes of host 1 run a poller over both hosts' addresses;
  # those of host 2 run the module alone, so they connect each other only through the
  # module's own probes, when `global` tells them of the others. Root only; skipped with a
  # reason otherwise.
  use ExUnit.Case, async: false

  alias Tinycluster.{Netns, NetnsAgent, OTPReleases, TestNodes}

  @moduletag :multihost
  @moduletag timeout: 300_000

  case Netns.available() do
    :ok -> :ok
    {:error, why} -> @moduletag skip: why
  end

  @wait 60_000
  @first 9100
  @last 9115
  @flags ~w(-epmd_module Elixir.Tinycluster.EPMD -start_epmd false
            -kernel inet_dist_listen_min #{@first} inet_dist_listen_max #{@last}
            -kernel logger_level all)

  setup do
    net = Netns.new(2, Tinycluster.TestNodes.cookie())
    on_exit(fn -> Netns.teardown(net) end)
    Netns.setup!(net, epmd: false)
    %{net: net, hosts: Enum.map(net.hosts, & &1.ipv4)}
  end

  # A node `alive@<its host's address>` with the module's flags, whose log events are
  # kept from its boot on; with `poller: hosts`, it runs a poller over those hosts.
  defp start(ctx, index, alive, opts \\ []) do
    host = Enum.at(ctx.net.hosts, index - 1)
    node = Netns.start_agent(ctx.net, host, name: alive, extra: @flags)
    on_exit(fn -> Netns.stop(node) end)
    :ok = Netns.call!(node, NetnsAgent, :capture_logs, [])

    if hosts = opts[:poller],
      do: Netns.start_poller(node, hosts: hosts, interval: 300, settled_interval: 300)

    node
  end

  defp wait_mesh(nodes) do
    names = Enum.map(nodes, & &1.name)

    Netns.wait_until(
      fn ->
        Enum.all?(nodes, fn node ->
          seen = Netns.call!(node, :erlang, :nodes, [])
          (names -- [node.name]) -- seen == []
        end)
      end,
      "the full mesh of #{inspect(names)}",
      @wait
    )
  end

  test "three nodes per host on two hosts mesh, and a node started later joins", ctx do
    [a1, a2, a3] = for alive <- ~w(a1 a2 a3), do: start(ctx, 1, alive, poller: ctx.hosts)
    [b1, b2, b3] = for alive <- ~w(b1 b2 b3), do: start(ctx, 2, alive)
    everyone = [a1, a2, a3, b1, b2, b3]

    # Each listens on a port of the range, the first free one up, and nothing on 4369.
    ports =
      for node <- everyone do
        {node.name, dist_port(node)}
      end

    for group <- Enum.chunk_every(ports, 3),
        do: assert(Enum.sort(for {_, port} <- group, do: port) == [9100, 9101, 9102])

    wait_mesh(everyone)

    # Each node was reached where the module said: the pollers told it (host 1), or its
    # own probes found the name (host 2, whose nodes have no poller and met each other
    # through `global`). No EPMD could have answered.
    real = Map.new(ports, fn {name, port} -> {Atom.to_string(name), port} end)

    learned =
      for node <- everyone, do: {node, Netns.call!(node, :ets, :tab2list, [Tinycluster.EPMD])}

    for {node, rows} <- learned,
        {full, _alive, _ip, port} <- rows,
        do: assert(real[full] == port, "#{node.name} has #{full} at #{port}: #{inspect(real)}")

    assert Enum.any?(learned, fn {node, rows} -> node.host.index == 2 and rows != [] end),
           "no node of host 2 probed for a name: #{inspect(learned)}"

    # A node started later on host 2, without a poller, joins: the pollers of host 1 find
    # it on the next free port, and `global` meshes it with every other node.
    b4 = start(ctx, 2, "b4")
    assert dist_port(b4) == 9103
    wait_mesh(everyone ++ [b4])

    # No epmd was ever needed: none runs in any namespace, and port 4369 refuses everywhere.
    Netns.assert_no_epmd(ctx.net, a1)

    # The probes of every port, pollers' and module's alike, left no line in any node's
    # log (all of it kept): nothing names a probe, nothing is above info (the pollers'
    # lines about the nodes they connected, OTP's progress reports).
    for node <- everyone ++ [b4] do
      logs = Netns.call!(node, NetnsAgent, :logs, [])
      printed = Enum.map_join(logs, "\n", fn {level, text} -> "#{level}: #{text}" end)
      refute Enum.any?(logs, fn {_, text} -> text =~ "probe" end), "#{node.name}:\n#{printed}"

      loud = for {level, _} <- logs, level not in [:info, :debug], do: level
      assert loud == [], "#{node.name}:\n#{printed}"
    end
  end

  test "nodes of the other OTP releases found, running the module alone, join", ctx do
    # The module is Elixir: a release that cannot load this VM's Elixir and tinycluster as
    # compiled here (OTP 29 cannot load Elixir 1.14's; OTP 25 some of OTP 27's) cannot run
    # it, whatever tinycluster does. A real node runs code compiled for its own OTP.
    {others, skipped} =
      OTPReleases.all()
      |> Enum.reject(&(&1.release == System.otp_release()))
      |> Enum.split_with(&loads_this_code?(&1.erl))

    IO.puts(
      "epmd_module_test: nodes of OTP #{Enum.map_join(others, ", ", & &1.release)}" <>
        if(skipped == [],
          do: "",
          else:
            "; not of #{Enum.map_join(skipped, ", ", & &1.release)}, whose VM cannot load this VM's code"
        )
    )

    a1 = start(ctx, 1, "a1", poller: ctx.hosts)
    b1 = start(ctx, 2, "b1")
    host = Enum.at(ctx.net.hosts, 1)

    # Plain `erl` nodes of each release, with this VM's tinycluster and Elixir on their
    # code path and no poller: their siblings reach them only through the module.
    plain =
      for %{release: release, erl: erl} <- others do
        extra = @flags ++ TestNodes.code_path_args()

        node =
          Netns.start_node(ctx.net, host, "otp#{release}",
            erl: erl,
            extra: extra,
            listens_on: @first..@last
          )

        on_exit(fn -> Netns.stop(node) end)
        node
      end

    names = Enum.map([a1, b1 | plain], & &1.name)

    Netns.wait_until(
      fn ->
        mesh = Netns.call!(a1, NetnsAgent, :mesh, [names -- [a1.name]])
        Enum.all?(mesh, fn {node, seen} -> (names -- [node]) -- seen == [] end)
      end,
      "the full mesh of #{inspect(names)}",
      @wait
    )

    releases =
      for n <- plain,
          do: Netns.call!(a1, :erpc, :call, [n.name, :erlang, :system_info, [:otp_release]])

    assert Enum.map(releases, &List.to_string/1) == Enum.map(others, & &1.release)
  end

  # Whether a node of `erl` can load this VM's Elixir and every module of tinycluster as
  # compiled here: a VM loads code compiled by its own OTP or an older one, and not always
  # by a newer one (OTP 25 cannot load some of OTP 27's), which no release would ask of it.
  defp loads_this_code?(erl) do
    modules =
      Enum.map_join([GenServer | Application.spec(:tinycluster, :modules)], ",", &"'#{&1}'")

    eval =
      ~s|halt(case lists:all(fun(M) -> element(1, code:ensure_loaded(M)) == module end, | <>
        ~s|[#{modules}]) of true -> 0; false -> 1 end).|

    args = Enum.flat_map([:elixir, :tinycluster], &["-pa", Application.app_dir(&1, "ebin")])

    match?(
      {_, 0},
      System.cmd(erl, ["-noshell" | args] ++ ["-eval", eval], stderr_to_stdout: true)
    )
  end

  # The port of the range `node`'s distribution listens on.
  defp dist_port(node) do
    listening = Netns.call!(node, NetnsAgent, :listen_ports, [])
    assert [port] = Enum.filter(listening, &(&1 in @first..@last)), inspect(listening)
    port
  end
end
