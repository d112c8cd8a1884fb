import Config

# In this repository, `iex --sname a -S mix` in two terminals clusters them. As a dependency,
# tinycluster starts no poller unless the application sets `autostart` or adds the child spec.
# The tests and the demo start their own pollers.
config :tinycluster, autostart: config_env() == :dev
