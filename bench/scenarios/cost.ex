# Scenario 1b: what each approach costs a hung node and a node with another cookie, over a
# window (60 s) of polling at tinycluster's default interval (1 s). The two targets are
# measured apart, so that a baseline stuck 7 s on the hung node (net_setuptime) is not
# thereby spared from hitting the other-cookie node: each approach runs in its own
# measuring node against one target, on its own private EPMD, all at once (the counts
# depend on timers, not on CPU). A control ("none": a measuring node that runs nothing)
# gives the targets' CPU time without visitors.
#
# Other-cookie node: handshakes it accepted (net_kernel's accept messages, traced), events
# it logged, its CPU time. Hung node (frozen with SIGSTOP): its accept queue and sockets at
# the end of the window (connections the kernel accepted that the frozen VM never took);
# then the measuring node is killed, the hung node thawed, and we count the handshakes it
# works through, the events it logs and the CPU it spends in the next 3 s: what the
# approach left behind.
#
# Thawed node: frozen for a third of the window while the approach polls, then thawed; how
# long until the measuring node is connected to it. With the hung node's queue, this is the
# trade-off of the probe of a frozen node: how many connections it collects against how
# long a node that comes back waits.
#
# Other peers, tinycluster only (the baselines probe nothing, so a node with an allow list
# or a TLS node sees each of their connection attempts): a node with an allow list
# (`net_kernel:allow/1` not naming the measuring node) and a TLS distribution node; handshakes
# accepted and events logged over the window.
#
# The baselines poll as dns_cluster and libcluster's polling strategies do: the next attempt
# `interval` after the previous one ended (a blocked attempt delays the next).
defmodule Bench.Scenario.Cost do
  alias Bench.{Approach, Driver, Epmd, Proc, Stats, VM}

  # The other side of the frozen-node trade-off (silent probes closed at the deadline, not
  # parked, and `:unreachable` backing off up to 8 intervals instead of 2) was measured here
  # until the design was chosen; its figures stay in bench/RESULTS.md, its switch left lib/.
  @approaches [:none | Approach.all()]

  def run(ctx) do
    window = if ctx.smoke, do: 3_000, else: 60_000

    jobs =
      for(target <- [:hung, :cookie, :thaw], approach <- @approaches, do: {target, approach}) ++
        for target <- peer_targets(ctx), do: {target, :tinycluster}

    results =
      for _round <- 1..ctx.runs do
        Driver.progress(".")

        jobs
        |> Task.async_stream(
          fn {target, approach} = job ->
            {job, Driver.with_epmd(ctx, &measure(&1, target, approach, window))}
          end,
          timeout: window + 120_000,
          max_concurrency: length(jobs)
        )
        |> Enum.map(fn {:ok, result} -> result end)
      end

    report(ctx, window, List.flatten(results))
  end

  defp measure(ctx, :cookie, approach, window) do
    other = VM.start(ctx, alive: Driver.name(ctx, "cookie"), count: true, cookie: "another")
    m = Driver.start_measuring(ctx, "m")
    Driver.settle(ctx, [other, m])
    before = snapshot(other)
    if approach != :none, do: VM.call(m, Approach, :start_polling, [approach, []])
    Process.sleep(window)
    later = snapshot(other)
    polls = VM.call(m, __MODULE__, :child_polls, [approach])
    Driver.kill([m, other])

    %{
      polls: polls,
      accepts: later.stats.accepts - before.stats.accepts,
      logs: later.stats.log_events - before.stats.log_events,
      cpu_ms: (later.cpu - before.cpu) / 1_000_000,
      sample: List.first(later.stats.log_samples)
    }
  end

  defp measure(ctx, :thaw, approach, window) do
    node = VM.start(ctx, alive: Driver.name(ctx, "thaw"))
    m = Driver.start_measuring(ctx, "m")
    Driver.settle(ctx, [node, m])
    :ok = VM.freeze(node)
    start(m, approach)
    Process.sleep(div(window, 3))
    VM.thaw(node)
    thawed = System.monotonic_time(:millisecond)
    # The control connects nothing: it shows that the wait is the approach's doing.
    connected? = fn -> node.node in VM.call(m, :erlang, :nodes, []) end
    limit = if approach == :none, do: 2_000, else: 30_000
    connected = Bench.Util.wait_until(connected?, limit)
    wait = System.monotonic_time(:millisecond) - thawed
    Driver.kill([m, node])
    %{thaw_ms: if(connected, do: wait, else: nil)}
  end

  defp measure(ctx, {:peer, kind}, :tinycluster, window) do
    peer =
      VM.start(ctx, [alive: Driver.name(ctx, "#{kind}"), count: true] ++ peer_opts(ctx, kind))

    m = Driver.start_measuring(ctx, "m")
    Driver.settle(ctx, [peer, m])
    before = snapshot(peer)
    VM.call(m, Approach, :start_polling, [:tinycluster, []])
    Process.sleep(window)
    later = snapshot(peer)
    polls = VM.call(m, __MODULE__, :child_polls, [:tinycluster])
    Driver.kill([m, peer])

    %{
      polls: polls,
      accepts: later.stats.accepts - before.stats.accepts,
      logs: later.stats.log_events - before.stats.log_events,
      sample: List.first(later.stats.log_samples)
    }
  end

  defp measure(ctx, :hung, approach, window) do
    hung = VM.start(ctx, alive: Driver.name(ctx, "hung"), count: true)
    m = Driver.start_measuring(ctx, "m")
    Driver.settle(ctx, [hung, m])
    before = snapshot(hung)
    :ok = VM.freeze(hung)
    {:ok, names} = Epmd.names(ctx.epmd)
    port = names |> Map.new() |> Map.fetch!(hung.alive)

    start(m, approach)
    Process.sleep(window)
    tcp = Proc.tcp_port(port)
    polls = VM.call(m, __MODULE__, :child_polls, [approach])

    # What is left behind: the measuring node goes, the hung node resumes.
    Driver.kill([m])
    cpu = Proc.cpu_ns(hung.os_pid)
    VM.thaw(hung)
    Process.sleep(if ctx.smoke, do: 1_000, else: 3_000)
    later = snapshot(hung)
    Driver.kill([hung])

    %{
      polls: polls,
      queue: tcp.accept_queue,
      sockets: tcp.connections,
      accepts: later.stats.accepts - before.stats.accepts,
      logs: later.stats.log_events - before.stats.log_events,
      cpu_ms: (later.cpu - cpu) / 1_000_000,
      sample: List.first(later.stats.log_samples)
    }
  end

  # The TLS row needs openssl for a certificate; without it the row is left out.
  defp peer_targets(ctx) do
    tls = if tls_conf(ctx), do: [{:peer, :tls}], else: []
    [{:peer, :allow_list} | tls]
  end

  defp peer_opts(_ctx, :allow_list),
    do: [args: ["-eval", "net_kernel:allow(['nobody@nowhere'])"]]

  defp peer_opts(ctx, :tls),
    do: [args: ["-proto_dist", "inet_tls", "-ssl_dist_optfile", tls_conf(ctx)]]

  # A throwaway certificate and a TLS distribution option file, made once per run.
  defp tls_conf(ctx) do
    dir = Path.join(ctx.agent_dir, "tls")
    conf = Path.join(dir, "ssl_dist.conf")
    openssl = System.find_executable("openssl")

    cond do
      File.exists?(conf) ->
        conf

      openssl == nil ->
        nil

      true ->
        File.mkdir_p!(dir)
        {key, cert} = {Path.join(dir, "key.pem"), Path.join(dir, "cert.pem")}

        {_, 0} =
          System.cmd(
            openssl,
            ~w(req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench) ++
              ["-keyout", key, "-out", cert],
            stderr_to_stdout: true
          )

        File.write!(conf, """
        [{server, [{certfile, "#{cert}"}, {keyfile, "#{key}"}]},
         {client, [{verify, verify_none}]}].
        """)

        conf
    end
  end

  defp start(_m, :none), do: :ok

  defp start(m, approach), do: VM.call(m, Approach, :start_polling, [approach, []])

  defp snapshot(vm) do
    %{stats: VM.call(vm, :bench_node, :stats, []), cpu: Proc.cpu_ns(vm.os_pid)}
  end

  @doc false
  # In the measuring node: how many attempts the approach made.
  def child_polls(:none), do: 0

  def child_polls(:tinycluster), do: Tinycluster.status(:bench_poller).scans

  def child_polls(_baseline), do: Approach.polls()

  ## Report

  defp report(ctx, window, results) do
    by = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))
    cell = fn rs, key -> rs |> Enum.map(&Map.fetch!(&1, key)) |> Stats.spread(&count/1) end
    cpu = fn rs -> rs |> Enum.map(& &1.cpu_ms) |> Stats.spread(&ms_value/1) end

    hung_rows =
      for approach <- @approaches do
        rs = by[{:hung, approach}]

        "| #{label(approach)} | #{cell.(rs, :polls)} | #{cell.(rs, :queue)} | " <>
          "#{cell.(rs, :accepts)} | #{cell.(rs, :logs)} | #{cpu.(rs)} |"
      end

    cookie_rows =
      for approach <- @approaches do
        rs = by[{:cookie, approach}]

        "| #{label(approach)} | #{cell.(rs, :polls)} | #{cell.(rs, :accepts)} | " <>
          "#{cell.(rs, :logs)} | #{cpu.(rs)} |"
      end

    thaw_rows =
      for approach <- @approaches do
        rs = by[{:thaw, approach}]
        waits = for %{thaw_ms: ms} when ms != nil <- rs, do: ms
        missed = Enum.count(rs, &(&1.thaw_ms == nil))
        missed = if missed > 0, do: " (#{missed} not connected)", else: ""
        "| #{label(approach)} | #{Stats.spread(waits, &ms_value/1)}#{missed} |"
      end

    peer_rows =
      for {:peer, kind} = target <- peer_targets(ctx), rs = by[{target, :tinycluster}] do
        "| #{peer_label(kind)} | #{cell.(rs, :polls)} | #{cell.(rs, :accepts)} | " <>
          "#{cell.(rs, :logs)} |"
      end

    samples =
      for {target, approach} <- Enum.sort(Map.keys(by)),
          r = Enum.find(by[{target, approach}], & &1[:sample]),
          r != nil,
          do: "- #{target_label(target)} node, #{label(approach)}: `#{trim(r.sample)}`"

    sockets =
      for approach <- @approaches,
          do: "#{approach}: #{inspect(hd(by[{:hung, approach}]).sockets)}"

    """
    ## 1b. What each approach leaves on a hung node and on a node with another cookie

    #{div(window, 1000)} s of polling at a 1 s interval, #{ctx.runs} rounds, each target measured apart;
    median (min–max). "Attempts": scans (tinycluster) or finished attempts (baselines).

    Hung node (frozen): its accept queue at the end of the window (connections the kernel
    accepted for the frozen VM); then, in the 3 s after the measuring node is gone and the
    node is thawed, the handshakes it works through, the events it logs, its CPU time.

    | approach | attempts | queued connections | handshakes after thaw | log events after thaw | CPU after thaw |
    |---|---|---|---|---|---|
    #{Enum.join(hung_rows, "\n")}

    Node with another cookie: handshakes it accepted, events it logged, its CPU time over
    the window.

    | approach | attempts | handshakes | log events | CPU |
    |---|---|---|---|---|
    #{Enum.join(cookie_rows, "\n")}

    What the nodes logged (first event, where any):
    #{if samples == [], do: "- nothing", else: Enum.join(samples, "\n")}

    The hung node's sockets at the end of the window (first round, by state): #{Enum.join(sockets, "; ")}

    Thawed node: frozen for #{div(window, 3000)} s while the approach polls, then thawed; time until
    the measuring node is connected to it (goal for tinycluster: 3 intervals + the probe
    timeout, 3.3 s).

    | approach | connected after thaw |
    |---|---|
    #{Enum.join(thaw_rows, "\n")}

    Other peers of tinycluster (guides/probe.md, "What a peer sees"), each measured apart:
    handshakes accepted and events logged (at the node's default level) over the window.

    | peer | scans | handshakes | log events |
    |---|---|---|---|
    #{Enum.join(peer_rows, "\n")}
    """
  end

  defp count(v), do: "#{round(v)}"
  defp ms_value(v), do: "#{:erlang.float_to_binary(v / 1, decimals: 1)} ms"

  defp trim(text), do: text |> String.replace(~r/\s+/, " ") |> String.slice(0, 120)

  defp target_label({:peer, kind}), do: kind
  defp target_label(target), do: target

  defp peer_label(:allow_list), do: "allow list without the poller (`net_kernel:allow/1`)"
  defp peer_label(:tls), do: "TLS distribution node, plain poller"

  defp label(:none), do: "none (control)"

  defp label(approach), do: Bench.Scenario.Hung.label(approach)
end
