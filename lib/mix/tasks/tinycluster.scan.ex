defmodule Mix.Tasks.Tinycluster.Scan do
  @shortdoc "Runs one discovery scan and says why each node would or would not join"
  @moduledoc """
  Runs one tinycluster scan from the terminal and prints what it found: one line per host
  (what its EPMD answered, or why it could not be asked; the round trip of its EPMD request,
  and the probe timeout its candidates had, longer than `--probe-timeout` for a far host) and
  one per candidate (its name, host, state, probe latency and the reason in words, as
  `Tinycluster.status/1` says it, but about the cluster: "live" is a node a poller
  connects, not one this scan failed to connect).
  It connects nothing. For the "why did that node not join?" moment:

      mix tinycluster.scan
      mix tinycluster.scan --host app2.example.com --host 198.18.0.3:4370 --name scan@10.0.0.9
      mix tinycluster.scan --only myapp_ --except /^remsh/ --json

  It works in any project that depends on tinycluster, and in tinycluster's own. It does
  not start any application (no poller of the project's config runs).

  ## Flags

    * `--host HOST[:PORT]` - a host whose EPMD to ask: a host name, an IPv4 address, an
      IPv6 address (`[::1]:4370` with a port), or `local` (this host). Repeatable. Default:
      this host only.
    * `--dns NAME` - a DNS name whose addresses are all hosts to ask (tinycluster's
      `hosts: [{:dns, name}]`). Repeatable.
    * `--nameserver ADDRESS:PORT` - the DNS server to ask for every `--dns` name instead of
      the system's resolver (`nameservers:`). Repeatable.
    * `--only PATTERN`, `--except PATTERN` - which nodes to probe: a prefix of the full node
      name, or a regex between slashes (`/^rem-/`). Repeatable.
    * `--sname NAME`, `--name NAME` - the name this VM takes (short or long names). Default
      `tinycluster_scan`. Either way the VM is hidden and does not listen, so EPMD does not
      list it: it can clash with no node, and no poller sees it. (The name is fixed rather
      than fresh per run because every probed node makes an atom of the probe name, which
      derives from it; two scans at once cost at most a `busy` answer.) An already
      distributed VM keeps its name.
    * `--probe-timeout MS`, `--epmd-timeout MS` - as the options of the same names. Defaults
      300 and 1000.
    * `--json` - print one JSON object instead: `node`, `duration_us`, `hosts` and
      `candidates`, with each reason both as a term (`reason`) and in words
      (`description`). A host's `names` counts the names `--only`/`--except` let through
      (`filtered` is then true), not every name its EPMD listed.

  ## Exit status

  0 when at least one host's EPMD answered (whatever the nodes' states), 1 when none did or
  the scan could not run, 2 on a usage error.
  """
  use Mix.Task

  alias Tinycluster.{Discovery, Filter}
  alias Tinycluster.CLI.{Format, JSON, ScanFlags}

  @impl true
  def run(argv) do
    {flags, opts} = ScanFlags.parse!(argv)
    json? = Keyword.get(flags, :json, false)

    # Compiled and loaded, but nothing started: the project's own poller (an autostart in
    # its config) must not connect what this task only looks at.
    quietly(json?, fn -> Mix.Task.run("compile", []) end)
    nif_loaded!()
    distribute!(flags)

    started = System.monotonic_time(:microsecond)

    case Discovery.run(opts) do
      {:ok, report} ->
        duration = System.monotonic_time(:microsecond) - started

        candidates = Discovery.candidates(report)

        scan = %{
          hosts: report.hosts,
          candidates: candidates,
          duration_us: duration,
          filtered?: Filter.active?(opts)
        }

        IO.write(if json?, do: [JSON.encode!(json(scan)), "\n"], else: text(scan))
        if Enum.any?(report.hosts, &(&1.status == :ok)), do: :ok, else: exit({:shutdown, 1})

      {:error, reason} ->
        Mix.shell().error("tinycluster.scan: the scan could not run: #{inspect(reason)}")
        exit({:shutdown, 1})
    end
  end

  ## Setting up the VM

  defp quietly(false, fun), do: fun.()

  # JSON on stdout must be JSON only: compile messages go nowhere, errors still to stderr.
  defp quietly(true, fun) do
    shell = Mix.shell()
    Mix.shell(Mix.Shell.Quiet)

    try do
      fun.()
    after
      Mix.shell(shell)
    end
  end

  defp nif_loaded! do
    Code.ensure_loaded(Tinycluster.Native)

    with {path, reason} <- Tinycluster.Native.load_error() do
      Mix.shell().error(
        "tinycluster.scan: the NIF did not load from #{path}.so: #{inspect(reason)}"
      )

      exit({:shutdown, 1})
    end
  end

  defp distribute!(flags) do
    if Node.alive?() do
      :ok
    else
      {name, domain} =
        cond do
          flags[:name] -> {flags[:name], :longnames}
          flags[:sname] -> {flags[:sname], :shortnames}
          true -> {"tinycluster_scan", :shortnames}
        end

      # Hidden, and no listener: EPMD does not list this VM, so its name is unique on the
      # host whatever it is, no poller probes it, and the probes need no listener.
      opts = %{name_domain: domain, hidden: true, dist_listen: false}

      with {:ok, node} <- Tinycluster.NodeName.to_atom(name),
           {:ok, _} <- :net_kernel.start(node, opts) do
        :ok
      else
        {:error, reason} ->
          Mix.shell().error(
            "tinycluster.scan: could not make this VM the node #{name} (#{domain}): " <>
              inspect(reason)
          )

          exit({:shutdown, 1})
      end
    end
  end

  ## Output

  defp text(%{hosts: hosts, candidates: candidates, duration_us: us, filtered?: filtered?}) do
    host_rows =
      for h <- hosts do
        [
          h.label,
          endpoint(h.address, h.epmd_port),
          Format.latency(h.latency_us),
          Format.timeout(h.probe_timeout_ms),
          Format.host_status(h, filtered?)
        ]
      end

    candidate_rows =
      for c <- candidates do
        [c.name, c.host, Format.state(c.state), Format.latency(c.latency_us), Format.scanned(c)]
      end

    [
      "tinycluster scan from #{node()}: #{length(hosts)} #{plural(hosts, "host")}, " <>
        "#{length(candidates)} #{plural(candidates, "candidate")} in #{Format.latency(us)}\n\n",
      table(["HOST", "EPMD", "LATENCY", "PROBE TIMEOUT", "ANSWER"], host_rows),
      "\n",
      if(candidates == [],
        do: "No candidates.\n",
        else: table(["NODE", "HOST", "STATE", "PROBE", "REASON"], candidate_rows)
      )
    ]
  end

  defp table(headers, rows) do
    widths =
      headers
      |> Enum.with_index()
      |> Enum.map(fn {header, i} -> Format.width(Enum.map(rows, &Enum.at(&1, i)), header) end)

    for line <- [headers | rows], do: Format.row(Enum.zip(line, widths))
  end

  defp endpoint(address, port) do
    if String.contains?(address, ":"), do: "[#{address}]:#{port}", else: "#{address}:#{port}"
  end

  defp plural([_], word), do: word
  defp plural(_, word), do: word <> "s"

  defp json(%{hosts: hosts, candidates: candidates, duration_us: us, filtered?: filtered?}) do
    %{
      node: Atom.to_string(node()),
      duration_us: us,
      hosts:
        for h <- hosts do
          %{
            label: h.label,
            address: h.address,
            epmd_port: h.epmd_port,
            latency_us: h.latency_us,
            probe_timeout_ms: h.probe_timeout_ms,
            status: if(h.status == :ok, do: "ok", else: "error"),
            reason: Format.reason(elem_or_nil(h.status)),
            description: Format.host_status(h, filtered?),
            names: h.names,
            listed: h.listed,
            filtered: filtered?,
            malformed: Enum.map(h.malformed, &inspect/1)
          }
        end,
      candidates:
        for c <- candidates do
          %{
            name: c.name,
            host: c.host,
            address: c.address,
            port: c.port,
            state: c.state,
            reason: Format.reason(c.reason),
            description: Format.scanned(c),
            latency_us: c.latency_us
          }
        end
    }
  end

  defp elem_or_nil({:error, reason}), do: reason
  defp elem_or_nil(_), do: nil
end
