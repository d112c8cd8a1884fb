# Summaries of repeated measurements: median and spread, percentiles, and formatting.
defmodule Bench.Stats do
  @doc "Percentile `p` (0..100) of `values`, interpolated linearly between ranks."
  def percentile([], _p), do: nil

  def percentile(values, p) do
    sorted = Enum.sort(values)
    rank = p / 100 * (length(sorted) - 1)
    low = floor(rank)
    high = min(low + 1, length(sorted) - 1)
    a = Enum.at(sorted, low)
    b = Enum.at(sorted, high)
    a + (b - a) * (rank - low)
  end

  def median(values), do: percentile(values, 50)

  @doc "n, median, min, max, p25 and p75 of `values`."
  def summary([]), do: %{n: 0, median: nil, min: nil, max: nil, p25: nil, p75: nil}

  def summary(values) do
    %{
      n: length(values),
      median: median(values),
      min: Enum.min(values),
      max: Enum.max(values),
      p25: percentile(values, 25),
      p75: percentile(values, 75)
    }
  end

  @doc "Microseconds as milliseconds, with precision that suits the size."
  def ms(nil), do: "-"
  def ms(us) when us >= 100_000, do: "#{round(us / 1000)} ms"
  def ms(us) when us >= 10_000, do: "#{:erlang.float_to_binary(us / 1000, decimals: 1)} ms"
  def ms(us), do: "#{:erlang.float_to_binary(us / 1000, decimals: 2)} ms"

  @doc "Microseconds as microseconds."
  def us(nil), do: "-"
  def us(us) when us >= 100, do: "#{round(us)} µs"
  def us(us), do: "#{:erlang.float_to_binary(us / 1, decimals: 1)} µs"

  @doc "\"median (min–max)\" of values formatted with `fmt`."
  def spread(values, fmt \\ &ms/1)
  def spread([], _fmt), do: "-"

  def spread(values, fmt) do
    s = summary(values)
    "#{fmt.(s.median)} (#{fmt.(s.min)}–#{fmt.(s.max)}, n=#{s.n})"
  end

  @doc "A ratio `a / b` printed as `12.3x`."
  def ratio(_a, b) when b in [nil, 0], do: "-"
  def ratio(nil, _b), do: "-"

  def ratio(a, b) do
    r = a / b
    if r >= 10, do: "#{round(r)}x", else: "#{:erlang.float_to_binary(r, decimals: 2)}x"
  end

  @doc "Kibibytes as megabytes."
  def mb(nil), do: "-"
  def mb(kb), do: "#{:erlang.float_to_binary(kb / 1024, decimals: 2)} MB"
end
