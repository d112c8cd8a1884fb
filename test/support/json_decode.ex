defmodule Tinycluster.JSONDecode do
  @moduledoc """
  A small strict JSON decoder for the tests, which read what `mix tinycluster.scan --json`
  prints (Elixir 1.14 has no JSON module). Objects become maps with string keys. Anything
  that is not one complete JSON value raises.
  """

  @doc "Decodes one JSON value, surrounded by nothing but whitespace."
  def decode!(text) do
    case value(skip(text)) do
      {value, rest} ->
        if skip(rest) == "", do: value, else: raise(ArgumentError, "trailing: #{rest}")
    end
  end

  defp skip(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip(rest)
  defp skip(rest), do: rest

  defp value("null" <> rest), do: {nil, rest}
  defp value("true" <> rest), do: {true, rest}
  defp value("false" <> rest), do: {false, rest}
  defp value("\"" <> rest), do: string(rest, "")
  defp value("[" <> rest), do: list(skip(rest), [])
  defp value("{" <> rest), do: object(skip(rest), %{})

  defp value(text) do
    case Regex.run(~r/\A-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/, text) do
      [number | parts] ->
        rest = binary_part(text, byte_size(number), byte_size(text) - byte_size(number))

        if parts == [] or Enum.all?(parts, &(&1 == "")),
          do: {String.to_integer(number), rest},
          else: {float(number), rest}

      nil ->
        raise ArgumentError, "not JSON: #{String.slice(text, 0, 40)}"
    end
  end

  defp float(number) do
    {f, ""} = Float.parse(number)
    f
  end

  defp list("]" <> rest, []), do: {[], rest}

  defp list(text, acc) do
    {item, rest} = value(skip(text))

    case skip(rest) do
      "," <> rest -> list(skip(rest), [item | acc])
      "]" <> rest -> {Enum.reverse([item | acc]), rest}
    end
  end

  defp object("}" <> rest, acc) when acc == %{}, do: {acc, rest}

  defp object("\"" <> text, acc) do
    {key, rest} = string(text, "")
    ":" <> rest = skip(rest)
    {item, rest} = value(skip(rest))
    acc = Map.put(acc, key, item)

    case skip(rest) do
      "," <> rest -> object(skip(rest), acc)
      "}" <> rest -> {acc, rest}
    end
  end

  defp string("\"" <> rest, acc), do: {acc, rest}
  defp string("\\\"" <> rest, acc), do: string(rest, acc <> "\"")
  defp string("\\\\" <> rest, acc), do: string(rest, acc <> "\\")
  defp string("\\/" <> rest, acc), do: string(rest, acc <> "/")
  defp string("\\n" <> rest, acc), do: string(rest, acc <> "\n")
  defp string("\\r" <> rest, acc), do: string(rest, acc <> "\r")
  defp string("\\t" <> rest, acc), do: string(rest, acc <> "\t")
  defp string("\\b" <> rest, acc), do: string(rest, acc <> "\b")
  defp string("\\f" <> rest, acc), do: string(rest, acc <> "\f")

  defp string("\\u" <> <<hex::binary-size(4), rest::binary>>, acc),
    do: string(rest, acc <> <<String.to_integer(hex, 16)::utf8>>)

  defp string(<<c, _::binary>>, _acc) when c < 0x20,
    do: raise(ArgumentError, "control character in a JSON string")

  defp string(<<c::utf8, rest::binary>>, acc), do: string(rest, acc <> <<c::utf8>>)
end
