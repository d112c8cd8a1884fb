# The report's header: when, how, and on what machine the figures were taken.
defmodule Bench.Report do
  def header(ctx, argv, started) do
    {cores, _} = System.cmd("nproc", [])
    [_, mem_kb] = Regex.run(~r/MemTotal:\s+(\d+)/, File.read!("/proc/meminfo"))
    cpu = Regex.run(~r/model name\s*:\s*(.+)/, File.read!("/proc/cpuinfo"))
    {rustc, _} = System.cmd("rustc", ["--version"])
    otp = :erlang.system_info(:otp_release)
    erts = :erlang.system_info(:version)
    {kernel, _} = System.cmd("uname", ["-r"])
    {commit, _} = System.cmd("git", ["rev-parse", "--short", "HEAD"], stderr_to_stdout: true)
    {dirty, _} = System.cmd("git", ["status", "--porcelain", "--", "lib", "native", "mix.exs"])
    dirty = if dirty == "", do: "", else: " plus uncommitted changes in lib/ or native/"

    """
    # tinycluster benchmarks

    - Date: #{Calendar.strftime(started, "%Y-%m-%d %H:%M UTC")}
    - Command: `bench/run#{Enum.map_join(argv, &(" " <> &1))}`#{if ctx.smoke, do: " (smoke: tiny sizes, figures not meaningful)", else: ""}
    - Machine: #{String.trim(cores)} cores#{if cpu, do: " (#{Enum.at(cpu, 1)})", else: ""}, #{div(String.to_integer(mem_kb), 1024)} MB memory, Linux #{String.trim(kernel)}
    - tinycluster: commit #{String.trim(commit)}#{dirty} (the working tree as built)
    - Erlang/OTP #{otp} (erts #{erts}), Elixir #{System.version()}, #{String.trim(rustc)}
    - Runs per scenario: #{ctx.runs}; every node is an `erl` OS process on a private EPMD
    """
  end

  @doc "How long a scenario took, and how busy the machine was meanwhile, by whom."
  def footer(cpu, load_before, load_after) do
    cores = :erlang.system_info(:logical_processors_available)
    cores = if is_integer(cores), do: cores, else: :erlang.system_info(:logical_processors)
    share = fn s -> "#{round(s / (cpu.wall * cores) * 100)}%" end

    "_#{round(cpu.wall)} s. Machine busy: this run's processes #{share.(cpu.ours)}, " <>
      "other processes #{share.(cpu.others)} of #{cores} cores; load average #{load_before} " <>
      "before, #{load_after} after._"
  end
end
