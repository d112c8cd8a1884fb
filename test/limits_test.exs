defmodule Tinycluster.LimitsTest do
  # The bounds the docs promise, pinned as literals: changing one in the code without the
  # README or the security guide (and this test) fails here. The NIF's bounds come through
  # `limits/0` (native/tinycluster_nif/src/limits.rs, pinned in Rust too by tests/limits.rs);
  # the ones only this side enforces come from the modules that enforce them. Each is also
  # looked for in the doc's own words, and the frame caps are probed at their exact limits.
  use ExUnit.Case, async: false

  alias Tinycluster.{FakeServer, Limits}
  alias Tinycluster.Poller.{AtomBudget, Candidates}
  alias Tinycluster.FakeServer.{Epmd, Peer}

  @docs for file <- ["README.md", "guides/security.md", "guides/containers.md"],
            into: %{},
            do:
              {file,
               __DIR__ |> Path.join("../#{file}") |> File.read!() |> String.replace(~r/\s+/, " ")}

  defp says!(file, text),
    do: assert(@docs[file] =~ text, "#{file} no longer says: #{text}")

  defp readme_says!(text), do: says!("README.md", text)
  defp guide_says!(text), do: says!("guides/security.md", text)

  test "the NIF's bounds are the docs'" do
    assert Limits.all() == %{
             max_timeout_ms: 60_000,
             max_dist_ports: 64,
             max_probes_in_flight: 256,
             min_host_probes_in_flight: 8,
             rtt_factor: 3,
             max_host_probe_timeout_ms: 10_000,
             max_name_bytes: 255,
             max_parked: 64,
             max_parked_per_address: 16,
             park_for_ms: 60_000,
             max_reply_bytes: 262_144,
             max_names: 1_024,
             max_status_len: 512,
             max_challenge_len: 530
           }

    readme_says!("at most 60000")
    says!("guides/containers.md", "It probes the first 64 ports of the range")
    guide_says!("at most 256 probes in flight and 1,024 in all per scan")
    readme_says!("up to 3 of its EPMD round trips, at most 10 s")
    guide_says!("a name over 255 bytes is `:bad_reply`")
    guide_says!("parked, at most 64 per VM and 16 per address for at most 60 s")
    guide_says!("It cannot send more than 262,144 bytes or 1,024 names")
    guide_says!("one status frame of 512 bytes and one challenge of 530")
  end

  test "the public docs state the NIF's bounds as the README does" do
    {:docs_v1, _, _, _, %{"en" => doc}, _, _} = Code.fetch_docs(Tinycluster)

    for text <- [
          "(at most 60000)",
          "at most 10 s",
          "at most 256 KiB and 1024 names",
          "{:reply_too_large, 262_144}",
          "{:too_many_names, 1024}"
        ] do
      assert String.contains?(doc, text), "Tinycluster's moduledoc no longer says: #{text}"
    end
  end

  test "the atom budget: 64 a minute, 4,096 lost for good" do
    assert AtomBudget.per_window() == 64
    assert AtomBudget.max_wasted() == 4_096

    budget =
      Enum.reduce(1..64, AtomBudget.new(), fn i, budget ->
        {:ok, budget} = AtomBudget.take(budget, "h", "n#{i}", 0)
        budget
      end)

    assert {:over, _, :window, true} = AtomBudget.take(budget, "h", "late", 59_999)
    assert {:ok, _} = AtomBudget.take(budget, "h", "late", 60_000)

    guide_says!("at most 64 atoms a minute")
    guide_says!("at most 4,096 atoms of names that never connected")
  end

  test "a scan probes at most 1,024 candidates, shared between its hosts" do
    assert Tinycluster.Poller.Plan.budget() == 1_024
    guide_says!("at most 256 probes in flight and 1,024 in all per scan")
    readme_says!("at most 256 probes are in flight at once, and a scan probes at most 1,024")
  end

  test "gone candidates: forgotten after an hour, 4,096 kept" do
    assert Candidates.limits() == %{forget_gone_after_ms: 3_600_000, max_gone: 4_096}

    readme_says!("forgotten after an hour")
    guide_says!("the `:gone` ones kept are capped at 4,096")
  end

  describe "the frame caps, through a scan" do
    # Over a cap, only the length is sent: the probe refuses it on that alone.
    test "a status of 512 bytes is read, one of 513 refused" do
      assert reason_of(Peer.status(String.duplicate("x", 511))) ==
               {:bad_reply, {:unknown_status, String.duplicate("x", 64)}}

      assert reason_of(<<513::16>>) == {:bad_reply, {:frame_too_large, 513}}
    end

    test "a challenge of 530 bytes is read, one of 531 refused" do
      assert reason_of(Peer.status("ok") <> challenge_of(530, "other@vm")) ==
               {:name_mismatch, {:claimed, "other@vm"}}

      assert reason_of(Peer.status("ok") <> <<531::16>>) == {:bad_reply, {:frame_too_large, 531}}
    end
  end

  # A challenge frame of exactly `len` payload bytes naming `name`: what follows the name is
  # what a later release may append, which a probe reads and ignores.
  defp challenge_of(len, name) do
    <<_::16, payload::binary>> = Peer.challenge(name)
    padding = :binary.copy(<<0>>, len - byte_size(payload))
    <<len::16, payload::binary, padding::binary>>
  end

  # The state and reason a scan gives a node whose listener answers `bytes` to the probe.
  defp reason_of(bytes) do
    peer = FakeServer.start(Peer.respond(bytes))
    alive = "capped#{System.unique_integer([:positive])}"
    epmd = FakeServer.start(Epmd.reply(Epmd.names_reply([{alive, peer.port}])))
    assert {:ok, [candidate]} = Tinycluster.scan(hosts: [{"127.0.0.1", epmd.port}])
    assert candidate.alive == alive
    {candidate.state, candidate.reason}
  end
end
