defmodule Tinycluster.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    case Tinycluster.Native.load_error() do
      nil ->
        Supervisor.start_link(autostart(), strategy: :one_for_one, name: Tinycluster.Supervisor)

      {path, reason} ->
        {:error,
         {:nif_not_loaded,
          "tinycluster could not load its NIF from #{path}.so: #{inspect(reason)}. " <>
            "Run `mix compile` (it needs cargo) and check that the library matches this OTP."}}
    end
  end

  # `config :tinycluster, autostart: true` (or a keyword list of options) starts one poller.
  defp autostart do
    case Application.get_env(:tinycluster, :autostart, false) do
      false -> []
      true -> [{Tinycluster, []}]
      opts when is_list(opts) -> [{Tinycluster, opts}]
    end
  end
end
