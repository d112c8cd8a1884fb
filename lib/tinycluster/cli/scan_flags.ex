defmodule Tinycluster.CLI.ScanFlags do
  # `mix tinycluster.scan`'s command line: its flags, read into the task's own flags and
  # the scan's `Tinycluster.Options`, or a usage error in words (exit status 2) that points
  # to `mix help tinycluster.scan`. Pure but for the `Mix.Error` it raises.
  @moduledoc false

  alias Tinycluster.Options

  @switches [
    host: :keep,
    dns: :keep,
    nameserver: :keep,
    only: :keep,
    except: :keep,
    sname: :string,
    name: :string,
    probe_timeout: :integer,
    epmd_timeout: :integer,
    json: :boolean
  ]

  @doc "The flags of `argv` and the options they make, or a usage error."
  @spec parse!([String.t()]) :: {keyword(), Options.t()}
  def parse!(argv) do
    {flags, rest, invalid} = OptionParser.parse(argv, strict: @switches)
    if invalid != [], do: usage!(Enum.map_join(invalid, " ", &invalid_flag/1))
    if rest != [], do: usage!("unexpected arguments: #{Enum.join(rest, " ")}")
    {flags, options!(flags)}
  end

  # What each flag's value is, for the usage errors.
  @values %{
    host: "HOST[:PORT]",
    dns: "NAME",
    nameserver: "ADDRESS:PORT",
    only: "PATTERN",
    except: "PATTERN",
    sname: "NAME",
    name: "NAME",
    probe_timeout: "MS",
    epmd_timeout: "MS"
  }

  # OptionParser's `{flag, value}` for a flag it could not take, in words. The flag is
  # matched against the known ones as a string: no atom is made of what the user typed.
  defp invalid_flag({flag, value}) do
    case Enum.find(@switches, fn {key, _} -> flag == "--" <> dashed(key) end) do
      nil -> "unknown flag #{flag}."
      {key, _} when value == nil -> "#{flag} needs a value (#{flag} #{@values[key]})."
      {_, :integer} -> "#{flag} takes a whole number of milliseconds, got #{inspect(value)}."
      {_, :boolean} -> "#{flag} takes no value, got #{inspect(value)}."
      {key, _} -> "#{flag} takes #{@values[key]}, got #{inspect(value)}."
    end
  end

  defp dashed(key), do: key |> Atom.to_string() |> String.replace("_", "-")

  defp options!(flags) do
    hosts = Enum.map(Keyword.get_values(flags, :host), &host!/1)
    nameservers = Enum.map(Keyword.get_values(flags, :nameserver), &nameserver!/1)

    dns =
      for name <- Keyword.get_values(flags, :dns) do
        if nameservers == [], do: {:dns, name}, else: {:dns, name, nameservers: nameservers}
      end

    opts =
      [
        name: Tinycluster.Scan,
        connect: false,
        hosts: if(hosts == [] and dns == [], do: [:local], else: hosts ++ dns),
        only: patterns!(Keyword.get_values(flags, :only)),
        except: patterns!(Keyword.get_values(flags, :except)) || [],
        probe_timeout: flags[:probe_timeout],
        epmd_timeout: flags[:epmd_timeout]
      ]
      |> Enum.reject(fn {_, value} -> value == nil end)

    try do
      Options.new!(opts)
    rescue
      e in ArgumentError -> usage!(e.message)
    end
  end

  defp nameserver!(given) do
    case host!(given) do
      {address, port} -> {address, port}
      _ -> usage!("--nameserver takes ADDRESS:PORT, got: #{given}")
    end
  end

  defp host!("local"), do: :local

  defp host!("[" <> rest = given) do
    case String.split(rest, "]", parts: 2) do
      [ip, ""] -> ip
      [ip, ":" <> port] -> {ip, port!(port, given)}
      _ -> usage!("--host #{given}: expected [ADDRESS] or [ADDRESS]:PORT")
    end
  end

  defp host!(given) do
    case String.split(given, ":") do
      [host] -> host
      [host, port] -> {host, port!(port, given)}
      # More than one colon: an IPv6 address without a port.
      _ -> given
    end
  end

  defp port!(text, given) do
    case Integer.parse(text) do
      {port, ""} when port in 1..65_535 -> port
      _ -> usage!("--host #{given}: #{inspect(text)} is not a port number")
    end
  end

  defp patterns!([]), do: nil
  defp patterns!(list), do: Enum.map(list, &pattern!/1)

  defp pattern!("/" <> _ = text) when byte_size(text) > 2 do
    if String.ends_with?(text, "/") do
      case Regex.compile(binary_part(text, 1, byte_size(text) - 2)) do
        {:ok, regex} -> regex
        {:error, {why, at}} -> usage!("bad regex #{text}: #{why} at #{at}")
      end
    else
      text
    end
  end

  defp pattern!(prefix), do: prefix

  defp usage!(message) do
    message = if String.ends_with?(message, "."), do: message, else: message <> "."

    Mix.raise(
      "tinycluster.scan: #{message} See `mix help tinycluster.scan` for the flags.",
      exit_status: 2
    )
  end
end
