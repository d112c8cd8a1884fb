defmodule Tinycluster.Discovery do
  # Builds the NIF's scan request from options and the local node, and runs a synchronous
  # scan. The one place that knows how node names and probe names are made.
  @moduledoc false

  alias Tinycluster.{Backoff, Candidate, Filter, Hosts, Native, Options, Tls}

  # The probe claims a fixed name per poller: distinct between pollers (so they never answer
  # for each other) and never a fresh one per probe, since the peer makes an atom of it.
  @probe_prefix "tinycluster_probe_"

  @doc """
  The NIF request for one scan, or `{:error, :not_distributed}`. `tls_known` are the TLS
  listeners seen so far (see `Tinycluster.Tls`), which get the TLS probe.
  """
  @spec request(Options.t(), [node()], Tls.known()) :: {:ok, map()} | {:error, :not_distributed}
  def request(%Options{} = opts, skip, tls_known \\ %{}) do
    if Node.alive?() do
      [alive, host] = node() |> Atom.to_string() |> String.split("@", parts: 2)
      probe_name = probe_name(alive, host, opts.name)
      family = Hosts.family()

      {:ok,
       %{
         hosts: Hosts.specs(opts.hosts, node(), family),
         family: family,
         probe_name: probe_name,
         creation: :erlang.phash2(probe_name, 0xFFFF_FFFE) + 1,
         local_name: Atom.to_string(node()),
         skip: Enum.map(skip, &Atom.to_string/1),
         probe_timeout_ms: opts.probe_timeout,
         epmd_timeout_ms: opts.epmd_timeout,
         gate: Filter.active?(opts),
         tls: Tls.probes(tls_known),
         park: Backoff.park?()
       }}
    else
      {:error, :not_distributed}
    end
  end

  @doc "The name the probes of poller `name` on this node claim."
  @spec probe_name(String.t(), String.t(), atom()) :: String.t()
  def probe_name(alive, host, name) do
    suffix = if name == Tinycluster, do: "", else: "_#{:erlang.phash2(name, 1_000_000)}"
    room = 255 - byte_size(@probe_prefix) - byte_size(suffix)
    @probe_prefix <> binary_part(alive, 0, min(byte_size(alive), room)) <> suffix <> "@" <> host
  end

  @doc "The longest a scan with these options can take, with a wide margin."
  @spec deadline(Options.t()) :: pos_integer()
  def deadline(%Options{} = opts), do: opts.epmd_timeout + 40 * opts.probe_timeout + 5_000

  @doc """
  Answers a scan's `{:listed, {index, label, names}}` event: lets through the names the
  options' `:only`/`:except` admit, so that the others are never probed.
  """
  @spec admit(
          Options.t(),
          map(),
          non_neg_integer(),
          {non_neg_integer(), String.t(), [String.t()]}
        ) ::
          :ok | {:error, :unknown_scan}
  def admit(%Options{} = opts, request, id, {index, label, names}) do
    host = Enum.at(request.hosts, index)
    node_host = (host && host.node_host) || label
    admitted = Enum.filter(names, &Filter.allowed?(opts, &1 <> "@" <> node_host))
    Native.admit(id, index, admitted)
  end

  @doc "Runs one scan in the calling process and waits for its end."
  @spec scan(Options.t()) :: {:ok, [Candidate.t()]} | {:error, term()}
  def scan(%Options{} = opts) do
    with {:ok, request} <- request(opts, Node.list(:connected)),
         {:ok, id} <- Native.start_scan(request) do
      await(opts, request, id, deadline(opts))
    end
  end

  defp await(opts, request, id, timeout) do
    receive do
      {:tinycluster_scan, ^id, {:done, report}} ->
        result(report)

      {:tinycluster_scan, ^id, {:listed, listed}} ->
        admit(opts, request, id, listed)
        await(opts, request, id, timeout)

      {:tinycluster_scan, ^id, _event} ->
        await(opts, request, id, timeout)
    after
      timeout -> {:error, :timeout}
    end
  end

  defp result(%{hosts: hosts, candidates: candidates}) do
    case Enum.reject(hosts, &(&1.status == :ok)) do
      failed when failed == hosts and hosts != [] ->
        [%{label: label, status: {:error, reason}} | _] = failed
        {:error, {:epmd, label, reason}}

      _ ->
        {:ok, candidates |> Enum.map(&Candidate.from_native/1) |> Enum.sort_by(& &1.name)}
    end
  end
end
