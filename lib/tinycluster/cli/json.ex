defmodule Tinycluster.CLI.JSON do
  # The JSON that `mix tinycluster.scan --json` prints. Elixir 1.14 has no JSON module and
  # tinycluster has no dependencies, so this is the small encoder the task needs: maps,
  # lists, strings, numbers, booleans, nil and atoms (as strings).
  @moduledoc false

  @doc "Encodes a term as JSON; raises an `ArgumentError` on a term JSON cannot hold."
  @spec encode!(term()) :: iodata()
  def encode!(nil), do: "null"
  def encode!(true), do: "true"
  def encode!(false), do: "false"
  def encode!(atom) when is_atom(atom), do: string(Atom.to_string(atom))
  def encode!(int) when is_integer(int), do: Integer.to_string(int)
  def encode!(float) when is_float(float), do: :erlang.float_to_binary(float, [:short])
  def encode!(binary) when is_binary(binary), do: string(binary)

  def encode!(list) when is_list(list),
    do: ["[", Enum.map_intersperse(list, ",", &encode!/1), "]"]

  def encode!(%{} = map) when not is_struct(map) do
    pairs = Enum.map(map, fn {key, value} -> [key!(key), ":", encode!(value)] end)
    ["{", Enum.intersperse(pairs, ","), "}"]
  end

  def encode!(other), do: raise(ArgumentError, "cannot encode as JSON: #{inspect(other)}")

  defp key!(key) when is_binary(key), do: string(key)
  defp key!(key) when is_atom(key) and key not in [nil, true, false], do: encode!(key)
  defp key!(key), do: raise(ArgumentError, "a JSON key must be a string: #{inspect(key)}")

  # Bytes that are not UTF-8 (an EPMD's or a peer's garbage) cannot be a JSON string; they
  # are shown as Elixir shows them, which is.
  defp string(binary) do
    binary = if String.valid?(binary), do: binary, else: inspect(binary)
    [?", escape(binary, ""), ?"]
  end

  defp escape(<<>>, acc), do: acc
  defp escape(<<?", rest::binary>>, acc), do: escape(rest, acc <> "\\\"")
  defp escape(<<?\\, rest::binary>>, acc), do: escape(rest, acc <> "\\\\")
  defp escape(<<?\n, rest::binary>>, acc), do: escape(rest, acc <> "\\n")
  defp escape(<<?\r, rest::binary>>, acc), do: escape(rest, acc <> "\\r")
  defp escape(<<?\t, rest::binary>>, acc), do: escape(rest, acc <> "\\t")

  defp escape(<<c, rest::binary>>, acc) when c < 0x20 or c == 0x7F do
    hex = c |> Integer.to_string(16) |> String.pad_leading(4, "0")
    escape(rest, acc <> "\\u" <> hex)
  end

  # U+2028 and U+2029 are valid JSON but end lines in JavaScript; escaped, they are safe.
  defp escape(<<0x2028::utf8, rest::binary>>, acc), do: escape(rest, acc <> "\\u2028")
  defp escape(<<0x2029::utf8, rest::binary>>, acc), do: escape(rest, acc <> "\\u2029")
  defp escape(<<c::utf8, rest::binary>>, acc), do: escape(rest, acc <> <<c::utf8>>)
end
