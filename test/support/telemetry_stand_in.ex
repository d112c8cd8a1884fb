defmodule :telemetry do
  # A stand-in for the :telemetry library, compiled in the test environment only, so that
  # the tests see tinycluster's events without a hex dependency. Same calls as the real one:
  # attach/4, detach/1, execute/3. Handlers live in :persistent_term.
  @moduledoc false

  def attach(id, event, fun, config), do: attach_many(id, [event], fun, config)

  def attach_many(id, events, fun, config) do
    :persistent_term.put({__MODULE__, id}, {events, fun, config})
    :ok
  end

  def detach(id) do
    :persistent_term.erase({__MODULE__, id})
    :ok
  end

  def execute(event, measurements, metadata) do
    for {{__MODULE__, _id}, {events, fun, config}} <- :persistent_term.get(),
        event in events do
      fun.(event, measurements, metadata, config)
    end

    :ok
  end
end
