defmodule Tinycluster.Hosts.ErlangHosts do
  @moduledoc """
  `.hosts.erlang`, the file `:net_adm.world/0` reads, for the `:erlang_hosts` entry of
  `:hosts`: where it is looked for and how it is read. See `Tinycluster.Hosts`.
  """

  alias Tinycluster.Hosts

  @hosts_file ".hosts.erlang"

  @doc """
  The directories searched for `.hosts.erlang`, in order: the current directory, the home
  directory (`-home`, as `:net_adm` reads it, else `$HOME`) and `:code.root_dir/0`.
  """
  @spec search_path() :: [Path.t()]
  def search_path do
    home =
      case Tinycluster.LocalNode.arg(:home) do
        {:ok, [[home | _] | _]} -> [List.to_string(home)]
        _ -> List.wrap(System.user_home())
      end

    Enum.uniq([File.cwd!()] ++ home ++ [List.to_string(:code.root_dir())])
  end

  @doc """
  Finds `.hosts.erlang` in `dirs` (default `search_path/0`) and reads it: the first file
  found is the one read, as `:net_adm` does.
  """
  @spec erlang_hosts([Path.t()]) :: {:ok, Path.t(), [String.t()]} | {:error, String.t()}
  def erlang_hosts(dirs \\ search_path()) do
    case Enum.find(dirs, &File.exists?(Path.join(&1, @hosts_file))) do
      nil ->
        {:error, "no #{@hosts_file} in #{Enum.join(dirs, ", ")}"}

      dir ->
        path = Path.join(dir, @hosts_file)

        with {:ok, hosts} <- read_hosts_file(path), do: {:ok, path, hosts}
    end
  end

  @doc """
  Reads a `.hosts.erlang` file: Erlang terms, each a host name or address as an atom or a
  string. Returns the hosts as strings, or an error that names the file and what is wrong.

      # .hosts.erlang
      'b.example.com'.
      "198.18.0.2".
  """
  @spec read_hosts_file(Path.t()) :: {:ok, [String.t()]} | {:error, String.t()}
  def read_hosts_file(path) do
    case :file.consult(path) do
      {:ok, terms} ->
        Enum.reduce_while(terms, {:ok, []}, fn term, {:ok, acc} ->
          case hosts_file_entry(term) do
            {:ok, host} ->
              {:cont, {:ok, [host | acc]}}

            :error ->
              {:halt,
               {:error,
                "#{path}: #{inspect(term)} is not a host name or address " <>
                  "(expected an atom or a string, as in 'b.example.com'. or \"198.18.0.2\".)"}}
          end
        end)
        |> case do
          {:ok, hosts} -> {:ok, hosts |> Enum.reverse() |> Enum.uniq()}
          error -> error
        end

      {:error, reason} ->
        {:error, "#{path}: #{:file.format_error(reason)}"}
    end
  end

  defp hosts_file_entry(atom) when is_atom(atom), do: Hosts.host(Atom.to_string(atom))

  defp hosts_file_entry(chars) when is_list(chars) do
    if List.ascii_printable?(chars), do: Hosts.host(List.to_string(chars)), else: :error
  end

  defp hosts_file_entry(_), do: :error

  @doc """
  The hosts of `.hosts.erlang`, as `:hosts`' `:erlang_hosts` takes them, or an
  `ArgumentError` that names the file and what is wrong with it.
  """
  @spec hosts!() :: [String.t()]
  def hosts! do
    case erlang_hosts() do
      {:ok, _path, hosts} ->
        hosts

      {:error, why} ->
        raise ArgumentError,
              "tinycluster option :hosts has :erlang_hosts, but the hosts file cannot be " <>
                "used: #{why}"
    end
  end
end
