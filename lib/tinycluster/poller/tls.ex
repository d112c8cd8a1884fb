defmodule Tinycluster.Poller.Tls do
  # TLS distribution, as far as probes go: whether this node runs it, and which candidates a
  # plain node probes with the TLS ClientHello instead of the plain `send_name`.
  #
  # A TLS node answers the plain `send_name` with an alert, and its `ssl` logs a notice for
  # it; it answers the ClientHello with a ServerHello, and logs nothing when the probe then
  # closes. So a node that runs TLS distribution probes everything with the ClientHello, and
  # a plain node probes a candidate with it once that candidate has answered TLS at the port
  # EPMD lists: one notice per (name, port) at most, ever. A new port is a restarted node,
  # which may run plain TCP now, so it gets the plain probe again.
  @moduledoc false

  alias Tinycluster.Candidate
  alias Tinycluster.Candidate.States

  @typedoc "The TLS listeners seen: `{host label, alive}` to the port that answered TLS."
  @type known :: %{{String.t(), String.t()} => :inet.port_number()}

  @doc "Whether the candidate `{label, alive}` answered TLS at `port` (`known`)."
  @spec listener?(known(), String.t(), String.t(), :inet.port_number()) :: boolean()
  def listener?(known, label, alive, port), do: Map.get(known, {label, alive}) == port

  @doc """
  Updates `known` with what a probe found: a TLS listener is remembered at its port; a
  plain answer (at another port, since a remembered port gets the TLS probe) forgets it.
  Other outcomes (unreachable, say) leave it as it was.
  """
  @spec learn(known(), Candidate.t()) :: known()
  def learn(known, %Candidate{host: host, alive: alive, port: port} = candidate) do
    case candidate do
      %{state: :tls} ->
        Map.put(known, {host, alive}, port)

      %{state: :bad_reply, reason: {:tls_alert, _}} ->
        Map.put(known, {host, alive}, port)

      %{state: :live, reason: :tls} ->
        known

      %{state: state} ->
        if States.plain?(state), do: Map.delete(known, {host, alive}), else: known
    end
  end
end
