defmodule Tinycluster.DocTest do
  # The examples in the docs that need no running nodes are run as they are written; and
  # what the docs say in more than one place is held to its one source: the options to
  # `Tinycluster.Options`'s schema, the states to `Tinycluster.Candidate`'s moduledoc.
  use ExUnit.Case, async: true

  alias Tinycluster.{Candidate, Options}

  doctest Tinycluster.Filter
  doctest Tinycluster.Candidate
  doctest Tinycluster.Options
  doctest Tinycluster.DnsSeed
  doctest Tinycluster.CLI.Format

  @readme Path.expand("../README.md", __DIR__)

  # The rows of the README's table between `<!-- name:start -->` and `<!-- name:end -->`,
  # each as its cells, the header left out.
  defp readme_table(name) do
    readme = File.read!(@readme)

    assert [_, rest] = String.split(readme, "<!-- #{name}:start -->", parts: 2),
           "the README has no <!-- #{name}:start --> marker"

    assert [table, _] = String.split(rest, "<!-- #{name}:end -->", parts: 2),
           "the README has no <!-- #{name}:end --> marker"

    rows = table |> String.split("\n", trim: true) |> Enum.map(&String.trim/1)
    assert [header, "| --- " <> _ | rows] = rows, "not a table: #{inspect(table)}"
    assert header =~ ~r/^\|/
    Enum.map(rows, &cells/1)
  end

  # A row's cells; `\|` is a pipe within a cell.
  defp cells(row) do
    row
    |> String.trim("|")
    |> String.split(~r/(?<!\\)\|/)
    |> Enum.map(&String.trim/1)
  end

  # The atoms a Markdown list of a moduledoc's `## heading` names, in order: "* `:name` ...".
  defp listed(module, heading) do
    {:docs_v1, _, _, _, %{"en" => doc}, _, _} = Code.fetch_docs(module)
    assert [_, section] = String.split(doc, "\n## #{heading}\n", parts: 2)
    [section | _] = String.split(section, "\n## ", parts: 2)
    for [_, name] <- Regex.scan(~r/^ *\* `:(\w+)`/m, section), do: String.to_atom(name)
  end

  defp code_atom(cell) do
    assert [_, name] = Regex.run(~r/^`:(\w+)`$/, cell), "not an option or state: #{cell}"
    String.to_atom(name)
  end

  describe "options" do
    test "the README's table: the schema's options, in its order, with its defaults" do
      rows = readme_table("options")
      assert Enum.map(rows, &code_atom(hd(&1))) == Keyword.keys(Options.schema())

      # The README may say more after the default ("(or `:interval`, if longer)").
      for [option, default | _] <- rows do
        shown = Options.shown_default(code_atom(option))

        assert default == shown or String.starts_with?(default, shown <> " "),
               "the README's default for #{option} is #{default}; the schema's, #{shown}"
      end
    end

    test "Tinycluster's moduledoc lists the schema's options, in its order" do
      assert listed(Tinycluster, "Options") == Keyword.keys(Options.schema())
    end
  end

  describe "states" do
    test "the README's table: Candidate's states, in its order" do
      rows = readme_table("states")
      assert Enum.map(rows, &code_atom(hd(&1))) == listed(Candidate, "States")
    end

    test "the Candidate.state type: Candidate's states, in its order" do
      {:ok, types} = Code.Typespec.fetch_types(Candidate)
      [{:type, _, :union, union}] = for {:type, {:state, spec, []}} <- types, do: spec
      assert for({:atom, _, state} <- union, do: state) == listed(Candidate, "States")
    end
  end
end
