defmodule Tinycluster.Native do
  # The NIF's stubs. Each is replaced by the Rust implementation when the library loads;
  # until then each raises `:nif_not_loaded`.
  @moduledoc false

  @on_load :load_nif

  @doc false
  def load_nif do
    path =
      case :code.priv_dir(:tinycluster) do
        {:error, _} -> ~c"priv/native/libtinycluster_nif"
        dir -> :filename.join(dir, ~c"native/libtinycluster_nif")
      end

    # Returning :ok even on failure keeps the module (and its clear error) loadable; the
    # application refuses to start with the reason kept here.
    case :erlang.load_nif(path, 0) do
      :ok -> :persistent_term.erase({__MODULE__, :load_error})
      {:error, reason} -> :persistent_term.put({__MODULE__, :load_error}, {path, reason})
    end

    :ok
  end

  @doc false
  def load_error, do: :persistent_term.get({__MODULE__, :load_error}, nil)

  @doc false
  def start_scan(_opts), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  def cancel(_handle), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  def plan(_scan_id, _plans), do: :erlang.nif_error(:nif_not_loaded)

  @doc false
  def limits, do: :erlang.nif_error(:nif_not_loaded)
end
