defmodule Tinycluster.VmArgs do
  # The VM's command-line flags (`-proto_dist`, `-epmd_port`, `-home`), read from `init`
  # once per VM. They never change while the VM runs, and each `:init.get_argument/1` is a
  # message round trip to the `init` process: four per poll were a good part of an idle
  # poll's work on the scheduler side (traced on the poller's mailbox).
  @moduledoc false

  @doc "`:init.get_argument(flag)`, asked once and then remembered (`:persistent_term`)."
  @spec get(atom()) :: {:ok, [[charlist()]]} | :error
  def get(flag) when is_atom(flag) do
    key = {__MODULE__, flag}

    case :persistent_term.get(key, nil) do
      nil ->
        value = :init.get_argument(flag)
        :persistent_term.put(key, value)
        value

      value ->
        value
    end
  end
end
