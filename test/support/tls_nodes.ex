defmodule Tinycluster.TlsNodes do
  @moduledoc """
  Real TLS distribution nodes for the tests: a throwaway self-signed certificate made with
  `openssl`, the `-ssl_dist_optfile` that uses it, and `erl -proto_dist inet_tls` nodes
  started with `Tinycluster.TestNodes` (so they are stopped by pid like the others), among
  them a node that runs a tinycluster poller itself.
  """

  alias Tinycluster.TestNodes

  @doc "Whether `openssl` is here to make a certificate; the TLS tests skip without it."
  def available?, do: System.find_executable("openssl") != nil

  @doc """
  Writes a throwaway CA, a node key and certificate it signed, and two distribution option
  files to `dir`: `:tls12` (OTP's server defaults, TLS 1.2 on OTP 25) and `:tls13` (TLS 1.3
  only, with client certificates required and verified, as a production cluster runs).
  Both connect out with their certificate, TLS 1.3 or 1.2. Returns `%{tls12: path, tls13:
  path}`.
  """
  def configs(dir) do
    [ca_key, ca, key, csr, cert] =
      Enum.map(~w(ca.key ca.pem key.pem node.csr cert.pem), &Path.join(dir, &1))

    openssl!(
      ~w(req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=tinycluster-ca) ++
        ["-keyout", ca_key, "-out", ca]
    )

    openssl!(
      ~w(req -newkey rsa:2048 -nodes -subj /CN=tinycluster) ++
        ["-keyout", key, "-out", csr]
    )

    openssl!(
      ~w(x509 -req -days 1 -CAcreateserial) ++
        ["-in", csr, "-CA", ca, "-CAkey", ca_key, "-out", cert]
    )

    client = """
    {client, [{certfile, "#{cert}"}, {keyfile, "#{key}"}, {cacertfile, "#{ca}"},
              {versions, ['tlsv1.3', 'tlsv1.2']}, {verify, verify_none}]}
    """

    tls12 = Path.join(dir, "tls12.conf")
    tls13 = Path.join(dir, "tls13.conf")

    File.write!(
      tls12,
      ~s([{server, [{certfile, "#{cert}"}, {keyfile, "#{key}"}]},\n#{client}].\n)
    )

    File.write!(tls13, """
    [{server, [{certfile, "#{cert}"}, {keyfile, "#{key}"}, {versions, ['tlsv1.3']},
               {verify, verify_peer}, {fail_if_no_peer_cert, true}, {cacertfile, "#{ca}"}]},
     #{client}].
    """)

    %{tls12: tls12, tls13: tls13}
  end

  defp openssl!(args) do
    {_, 0} = System.cmd(System.find_executable("openssl"), args, stderr_to_stdout: true)
  end

  @doc "The `erl` arguments of a TLS distribution node with option file `conf`."
  def args(conf), do: ["-proto_dist", "inet_tls", "-ssl_dist_optfile", conf]

  # Every 200 ms: write out what the default log handler holds, then say so.
  @flushed "tinycluster_flushed"
  @flusher """
  spawn(fun() ->
    Loop = fun L() ->
      logger_std_h:filesync(default), io:format("#{@flushed}~n"), timer:sleep(200), L()
    end,
    Loop()
  end).
  """

  @doc """
  The `erl` arguments of a node that logs everything (`-kernel logger_level all`) and
  prints a line every 200 ms once its log handler has written out what it held, for
  `flushed_lines/2`.
  """
  def logging_args, do: ["-kernel", "logger_level", "all", "-eval", @flusher]

  @doc """
  Starts a TLS node that logs everything (`-kernel logger_level all`) to its stdout, which
  `lines/1` and `flushed_lines/2` read. Options as `TestNodes.start/1`; `:args` are added.
  """
  def start(conf, opts \\ []) do
    args = args(conf) ++ logging_args() ++ Keyword.get(opts, :args, [])
    TestNodes.start(Keyword.put(opts, :args, args))
  end

  @doc """
  Every line a node started with `logging_args/0` has printed so far, and then up to the
  `markers`-th time it says its log handler wrote out all it held: with 1, all it logged
  while it booted; with 2, all it logged before this call. The markers are left out.
  """
  def flushed_lines(node, markers \\ 1) do
    Enum.reject(TestNodes.lines(node), &(&1 == @flushed)) ++ until_markers(node, markers, [])
  end

  defp until_markers(_node, 0, acc), do: Enum.reverse(acc)

  defp until_markers(node, markers, acc) do
    case TestNodes.next_line(node) do
      @flushed -> until_markers(node, markers - 1, acc)
      line -> until_markers(node, markers, [line | acc])
    end
  end

  @doc """
  Starts a node that runs a tinycluster poller with `poller_opts` (an Erlang term in text):
  a TLS node with option file `conf`, or a plain one for `conf` nil. It prints, every 200 ms, `nodes [...]` and a line `state name state reason` per
  candidate, for `lines/1` and `await_line/3` to read.
  """
  def start_poller(conf, poller_opts, opts \\ []) do
    eval = """
    spawn(fun() ->
      {ok, _} = application:ensure_all_started(tinycluster),
      {ok, _} = 'Elixir.Tinycluster':start_link(#{poller_opts}),
      Loop = fun L() ->
        S = 'Elixir.Tinycluster':status('Elixir.Tinycluster'),
        io:format("nodes ~w~n", [lists:sort(nodes())]),
        [io:format("state ~s ~s ~w~n", [K, maps:get(state, V), maps:get(reason, V)])
         || {K, V} <- maps:to_list(maps:get(candidates, S))],
        timer:sleep(200),
        L()
      end,
      Loop()
    end).
    """

    tls = if conf, do: args(conf), else: []
    args = tls ++ TestNodes.code_path_args() ++ ["-eval", eval]
    TestNodes.start(Keyword.put(opts, :args, args ++ Keyword.get(opts, :args, [])))
  end

  @doc "Every line `node` printed so far; see `Tinycluster.TestNodes.lines/1`."
  defdelegate lines(node), to: TestNodes

  @doc "The log events in `lines` by kind: `%{\"NOTICE\" => 1, \"PROGRESS\" => 4, ...}`."
  def reports(lines) do
    lines
    |> Enum.flat_map(&Regex.scan(~r/^=([A-Z]+) REPORT====/, &1, capture: :all_but_first))
    |> Enum.frequencies_by(fn [kind] -> kind end)
  end

  @doc "Waits for a line of `node`'s; see `Tinycluster.TestNodes.await_line/3`."
  defdelegate await_line(node, fun, timeout \\ 30_000), to: TestNodes
end
