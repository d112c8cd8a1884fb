defmodule Tinycluster.ArchitectureTest do
  # The architecture guide's walk through one poll names every module of `lib/` and every
  # file of the crate's `src/`, and nothing that is gone: a module added, moved or deleted
  # without the guide fails here.
  use ExUnit.Case, async: true

  @root Path.expand("..", __DIR__)

  defp section do
    guide = File.read!(Path.join(@root, "guides/architecture.md"))
    [_, rest] = String.split(guide, "\n## One poll, through the modules\n", parts: 2)
    [section | _] = String.split(rest, "\n## ", parts: 2)
    section
  end

  # Elixir's own modules the section mentions (`Node.connect/1`).
  @elixir ~w(Node)

  defp named(section) do
    for [_, name] <- Regex.scan(~r/`([A-Z][A-Za-z]*(?:\.[A-Z][A-Za-z]*)*)[.`]/, section),
        name not in @elixir,
        into: MapSet.new(),
        do: if(name == "Tinycluster", do: name, else: "Tinycluster." <> name)
  end

  defp missing(these, from), do: these |> MapSet.difference(from) |> Enum.sort()

  test "every module of lib/ is named, and every name is a module" do
    modules =
      for file <- [
            Path.join(@root, "lib/tinycluster.ex")
            | Path.wildcard(Path.join(@root, "lib/tinycluster/**/*.ex"))
          ],
          [_, module] <- Regex.scan(~r/^defmodule ([\w.]+) do/m, File.read!(file)),
          into: MapSet.new(),
          do: module

    named = named(section())
    assert missing(modules, named) == [], "not in guides/architecture.md"
    assert missing(named, modules) == [], "in guides/architecture.md, not in lib/"
  end

  test "every file of the crate's src/ is named" do
    files =
      for file <- Path.wildcard(Path.join(@root, "native/tinycluster_nif/src/*.rs")),
          into: MapSet.new(),
          do: Path.basename(file)

    named = for [_, f] <- Regex.scan(~r/`(\w+\.rs)`/, section()), into: MapSet.new(), do: f
    assert missing(files, named) == [], "not in guides/architecture.md"
    assert missing(named, files) == [], "in guides/architecture.md, not in src/"
  end
end
