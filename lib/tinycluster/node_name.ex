defmodule Tinycluster.NodeName do
  # The one place where a node's name becomes an atom. Atoms are never freed and hold a
  # bounded number of characters: `String.to_atom/1` of a longer name raises
  # `SystemLimitError`, which in the poller would crash it, restart it and crash it again
  # until its application, and in a release the VM, stopped. The NIF already reports such
  # names as `:bad_reply` (native/tinycluster_nif/src/naming.rs, whose bound this check
  # reads); this check keeps every caller safe on its own.
  #
  # Names are ASCII by the time they get here (the NIF admits no other byte), so the bound's
  # bytes are as many characters; counting bytes keeps a margin for anything else.
  @moduledoc false

  alias Tinycluster.Limits

  @doc """
  Checks a full node name and makes its atom: `{:error, {:name_too_long, bytes}}` past
  the longest name an atom holds, `{:error, {:malformed, what}}` for a name that is not UTF-8.
  Callers make an atom only of a name that a probe proved live (or of the user's own input).
  """
  @spec to_atom(String.t()) ::
          {:ok, node()} | {:error, {:name_too_long, pos_integer()} | {:malformed, String.t()}}
  def to_atom(name) when is_binary(name) do
    case check(name) do
      :ok -> {:ok, String.to_atom(name)}
      error -> error
    end
  end

  @doc """
  Makes the atoms of the names `Tinycluster.Poller.Candidates.probed/4` chose to connect
  (`{key, name}`, each validated, proven live and counted by the poller's atom budget), as
  `{key, node}`: the only atoms of names that hosts report.
  """
  @spec to_atoms([{term(), String.t()}]) :: [{term(), node()}]
  def to_atoms(connects) do
    for {key, name} <- connects do
      {:ok, node} = to_atom(name)
      {key, node}
    end
  end

  @doc "`to_atom/1`'s checks, without making the atom."
  @spec check(String.t()) ::
          :ok | {:error, {:name_too_long, pos_integer()} | {:malformed, String.t()}}
  def check(name) when is_binary(name) do
    cond do
      byte_size(name) > Limits.get(:max_name_bytes) -> {:error, {:name_too_long, byte_size(name)}}
      not String.valid?(name) -> {:error, {:malformed, "node name is not UTF-8"}}
      true -> :ok
    end
  end

  @doc "The atom of `name` if one exists already, else `nil`: never makes one."
  @spec existing(String.t()) :: node() | nil
  def existing(name) when is_binary(name) do
    String.to_existing_atom(name)
  rescue
    ArgumentError -> nil
  end
end
