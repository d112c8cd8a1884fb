defmodule Tinycluster.CLI.Format do
  # How the terminal tasks (`mix tinycluster.demo`, `mix tinycluster.scan`) print
  # candidates and hosts: one way of saying a state, a probe latency, the reason in words
  # (`Tinycluster.Candidate.describe/1`, or `scanned/1` after a scan) and an EPMD's answer,
  # in aligned columns, or as
  # plain maps for JSON. Pure functions from data to text.
  @moduledoc false

  alias Tinycluster.Candidate

  @doc "A candidate's state as a word; `nil` (not seen yet) is `waiting`."
  @spec state(Candidate.state() | nil) :: String.t()
  def state(nil), do: "waiting"
  def state(state), do: Atom.to_string(state)

  @doc "A probe latency in milliseconds, or nothing when there was no probe."
  @spec latency(non_neg_integer() | nil) :: String.t()
  def latency(nil), do: ""
  def latency(us), do: :erlang.float_to_binary(us / 1000, decimals: 1) <> " ms"

  @doc "A probe timeout in milliseconds, or nothing when none was in force."
  @spec timeout(non_neg_integer() | nil) :: String.t()
  def timeout(nil), do: ""
  def timeout(ms), do: "#{ms} ms"

  @doc "What a candidate's state means, in words: `Candidate.describe/1`."
  @spec describe(Candidate.t() | %{state: Candidate.state(), reason: term()}) :: String.t()
  def describe(%Candidate{} = c), do: Candidate.describe(c)

  def describe(%{state: state, reason: reason}),
    do: describe(%Candidate{state: state, reason: reason})

  @doc """
  What a scanned candidate's state means, in words about the cluster rather than about the
  scanning VM: a scan connects nothing, so "not connected" (to the scanning VM) would read
  as a failure even for nodes connected to each other. States the scan shares with a poller
  keep `describe/1`'s words.

      iex> Tinycluster.CLI.Format.scanned(%{state: :live, reason: nil})
      "answered the probe: live, so a poller connects it (only a connection checks the cookie)"
  """
  @spec scanned(Candidate.t() | %{state: Candidate.state(), reason: term()}) :: String.t()
  def scanned(%{state: :live, reason: :tls}),
    do:
      "a live TLS distribution listener under the name EPMD lists (TLS confirms no name): " <>
        "a poller that runs TLS distribution connects it"

  def scanned(%{state: :live}),
    do: "answered the probe: live, so a poller connects it (only a connection checks the cookie)"

  def scanned(%{state: :hidden}),
    do: "a hidden node: answered the probe; a poller connects it only with include_hidden: true"

  def scanned(candidate), do: describe(candidate)

  @doc """
  What a host's EPMD answered, in words. `names` counts the names the `:only`/`:except`
  filters let through, so when they are `filtered?` the words say so: "0 names" alone would
  read as an EPMD that listed none.
  """
  @spec host_status(map(), boolean()) :: String.t()
  def host_status(host, filtered? \\ false)

  def host_status(%{status: :ok, names: names}, false),
    do: "answered: #{names} #{plural(names, "name")}"

  def host_status(%{status: :ok, names: names} = host, true) do
    listed = Map.get(host, :listed, names)
    pass = if names == 1, do: "passes", else: "pass"
    "answered: #{listed} #{plural(listed, "name")}, #{names} #{pass} --only/--except"
  end

  def host_status(%{status: {:error, reason}}, _filtered?), do: "failed: " <> host_error(reason)

  defp host_error(:timeout), do: "no answer within the EPMD timeout"
  defp host_error(:econnrefused), do: "connection refused: no EPMD runs there"
  defp host_error(:closed), do: "closed the connection before answering"
  defp host_error({:resolve, text}), do: "the host name does not resolve (#{text})"
  defp host_error({:io, text}), do: "I/O error (#{text})"
  defp host_error({:malformed, text}), do: "not an EPMD reply (#{text})"
  defp host_error({:reply_too_large, n}), do: "reply over #{n} bytes: refused whole"
  defp host_error({:too_many_names, n}), do: "over #{n} names: refused whole"
  defp host_error(:plan_timeout), do: "the poller did not plan its names in time"
  defp host_error(other), do: inspect(other)

  defp plural(1, word), do: word
  defp plural(_, word), do: word <> "s"

  @doc "A reason as JSON can carry it: `nil`, an atom's name, or the term as Elixir shows it."
  @spec reason(term()) :: nil | String.t()
  def reason(nil), do: nil
  def reason(atom) when is_atom(atom), do: Atom.to_string(atom)
  def reason(other), do: inspect(other)

  @doc "One line of `{text, width}` cells, each padded to its width."
  @spec row([{String.t(), non_neg_integer()}]) :: iodata()
  def row(cells) do
    line = Enum.map_join(cells, fn {text, width} -> String.pad_trailing(text, width) end)
    [String.trim_trailing(line), "\n"]
  end

  @doc "The width of a column: its longest text, or its header, plus two spaces."
  @spec width([String.t()], String.t()) :: pos_integer()
  def width(texts, header),
    do: [header | texts] |> Enum.map(&String.length/1) |> Enum.max() |> Kernel.+(2)
end
