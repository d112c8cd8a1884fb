defmodule Tinycluster.DocTest do
  # The examples in the docs that need no running nodes are run as they are written.
  use ExUnit.Case, async: true

  doctest Tinycluster.Filter
  doctest Tinycluster.Candidate
  doctest Tinycluster.Options
  doctest Tinycluster.DnsSeed
end
