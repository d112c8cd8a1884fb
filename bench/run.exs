# The benchmarks' entry point: `bench/run [--smoke] [--only hung,cost,...] [--runs N]
# [--out FILE]` (see bench/README.md). It compiles the node agent and the bench modules
# for the measuring nodes, runs each scenario against real `erl` nodes on a private EPMD,
# prints a Markdown report on stdout (progress on stderr), and stops every OS process it
# started, also when a scenario fails. The driver itself is not a distributed node, so it
# never joins a cluster it measures.
{opts, _, invalid} =
  OptionParser.parse(System.argv(),
    strict: [smoke: :boolean, only: :string, runs: :integer, out: :string]
  )

if invalid != [], do: Mix.raise("unknown options: #{inspect(invalid)}")

scenarios = [
  hung: Bench.Scenario.Hung,
  cost: Bench.Scenario.Cost,
  late: Bench.Scenario.Late,
  idle: Bench.Scenario.Idle,
  scale: Bench.Scenario.Scale,
  sched: Bench.Scenario.Sched,
  memory: Bench.Scenario.Memory,
  dns: Bench.Scenario.Dns,
  every: Bench.Scenario.Every,
  far: Bench.Scenario.Far,
  hosts: Bench.Scenario.Hosts,
  names: Bench.Scenario.Names,
  cluster: Bench.Scenario.Cluster,
  epmdless: Bench.Scenario.Epmdless
]

only =
  case opts[:only] do
    nil ->
      Keyword.keys(scenarios)

    list ->
      names = list |> String.split(",", trim: true) |> Enum.map(&String.to_atom/1)
      unknown = names -- Keyword.keys(scenarios)
      if unknown != [], do: Mix.raise("unknown scenarios #{inspect(unknown)}")
      names
  end

smoke = Keyword.get(opts, :smoke, false)
runs = Keyword.get(opts, :runs, if(smoke, do: 1, else: 5))

# The agent (Erlang) and the bench modules (Elixir) go to one directory that the measuring
# nodes get with -pa; compiling them here also loads them into the driver.
out = Path.join(System.tmp_dir!(), "tinycluster_bench_#{System.pid()}")
File.mkdir_p!(out)
{:ok, _} = :compile.file(~c"bench/support/bench_node.erl", [:report, outdir: ~c"#{out}"])

# The dns, far and epmdless scenarios build hosts from network namespaces with the tests'
# own helpers.
netns_helpers =
  ~w(test_nodes netns netns_agent dnsmasq delay_line far_host)
  |> Enum.map(&"test/support/#{&1}.ex")

{:ok, _, _} =
  Kernel.ParallelCompiler.compile_to_path(
    Path.wildcard("bench/{support,scenarios}/*.ex") ++ netns_helpers,
    out
  )

System.find_executable("epmd") || Mix.raise("epmd is not on the PATH")
Bench.VM.init_registry()
ctx = Bench.Driver.context(out, smoke: smoke, runs: runs)
{:ok, noise} = Bench.Noise.start(ctx, [String.to_integer(System.pid())])
ctx = %{ctx | noise: noise}
started = DateTime.utc_now()

try do
  header = Bench.Report.header(ctx, System.argv(), started)
  IO.puts(header)

  sections =
    for name <- only do
      Bench.Driver.progress("#{name} ")
      load = Bench.Proc.loadavg()
      Bench.Noise.take(noise)
      section = scenarios[name].run(ctx)
      cpu = Bench.Noise.take(noise)
      section = section <> "\n" <> Bench.Report.footer(cpu, load, Bench.Proc.loadavg()) <> "\n"
      Bench.Driver.progress(" #{round(cpu.wall)} s\n")
      IO.puts(section)
      section
    end

  if path = opts[:out], do: File.write!(path, Enum.join([header | sections], "\n"))
after
  Bench.VM.kill_all()
  File.rm_rf(out)
end
