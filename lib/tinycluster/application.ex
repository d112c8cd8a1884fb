defmodule Tinycluster.Application do
  # Loads nothing but checks the NIF, and starts the poller `config :tinycluster, autostart:`
  # asks for, if any. Also where a poller's start says, when its name is the autostart's,
  # that the two are exclusive.
  @moduledoc false
  use Application

  require Logger

  @impl true
  def start(_type, _args) do
    case Tinycluster.Native.load_error() do
      nil ->
        with {:ok, children} <- autostart(Application.get_env(:tinycluster, :autostart, false)) do
          Supervisor.start_link(children, strategy: :one_for_one, name: Tinycluster.Supervisor)
        end

      {path, reason} ->
        {:error,
         {:nif_not_loaded,
          "tinycluster could not load its NIF from #{path}.so: #{inspect(reason)}. " <>
            "Run `mix compile` (it needs cargo) and check that the library matches this OTP."}}
    end
  end

  # `config :tinycluster, autostart: true` (or a keyword list of options) starts one poller.
  # Validated here, like the options: a bad value fails the start with words, not a crash.
  defp autostart(false), do: {:ok, []}
  defp autostart(true), do: autostart([])

  defp autostart(opts) when is_list(opts) do
    if Keyword.keyword?(opts), do: child(opts), else: invalid(opts)
  end

  defp autostart(value), do: invalid(value)

  defp child(opts) do
    {:ok, [Tinycluster.child_spec(opts)]}
  rescue
    e in ArgumentError ->
      {:error,
       {:invalid_autostart,
        "invalid config :tinycluster, autostart: #{inspect(opts)}: #{Exception.message(e)}"}}
  end

  defp invalid(value) do
    {:error,
     {:invalid_autostart,
      "invalid value for config :tinycluster, :autostart: #{inspect(value)} (expected true, " <>
        "false or a keyword list of Tinycluster's options)"}}
  end

  @doc false
  # Starts a poller (see `Tinycluster.child_spec/1` and `start_link/1`). When the name is
  # taken by the poller the autostart runs, the error is the usual one, and a line says why:
  # the autostart and a `{Tinycluster, ...}` child of the same name are exclusive.
  @spec start_poller(Tinycluster.Options.t()) :: GenServer.on_start()
  def start_poller(opts) do
    case Tinycluster.Poller.start_link(opts) do
      {:error, {:already_started, pid}} = error ->
        if autostarted?(pid) do
          Logger.error(
            "tinycluster: a poller named #{inspect(opts.name)} already runs, started by " <>
              "config :tinycluster, autostart; the autostart and a {Tinycluster, ...} " <>
              "child (or Tinycluster.start_link/1) of the same name are exclusive: remove " <>
              "one, or give this poller another :name"
          )
        end

        error

      other ->
        other
    end
  end

  # The autostarted poller is a child of this application's supervisor. Its ancestors are
  # read, not asked of the supervisor, which may be the caller.
  defp autostarted?(pid) do
    case Process.info(pid, :dictionary) do
      {:dictionary, dictionary} ->
        Tinycluster.Supervisor in Keyword.get(dictionary, :"$ancestors", [])

      nil ->
        false
    end
  end
end
