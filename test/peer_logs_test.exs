defmodule Tinycluster.PeerLogsTest do
  # The cases where a probed node logs anyway, as the README's "How the probe works" says,
  # on peers of every OTP release found. (A node whose allow list does not name the probe
  # is in faults_test.exs; TLS listeners in tls_test.exs.)
  use ExUnit.Case, async: false

  alias Tinycluster.{OTPReleases, TestEpmd, WatchedNode}

  @moduletag timeout: 120_000

  # Probes `node` (registered with `epmd`) `count` times and returns what it printed.
  defp noise_of_probes(node, epmd, count) do
    WatchedNode.settled_atoms(node)

    for _ <- 1..count do
      assert {:ok, [%{state: :live}]} =
               Tinycluster.scan(hosts: [{"127.0.0.1", epmd.port}], name: :peer_logs_scan)
    end

    WatchedNode.settled_atoms(node)
    WatchedNode.noise(node)
  end

  for %{release: release, erl: erl} <- OTPReleases.all() do
    describe "peers of OTP #{release}" do
      @erl erl
      @release release

      test "-kernel check_ip true: silent for a probe from its own network" do
        epmd = TestEpmd.start()
        node = WatchedNode.start(erl: @erl, epmd_port: epmd.port, args: ~w(-kernel check_ip true))
        assert noise_of_probes(node, epmd, 10) == []
      end

      test "net_kernel:verbose/1: what a verbose node logs per probe" do
        epmd = TestEpmd.start()

        node =
          WatchedNode.start(
            erl: @erl,
            epmd_port: epmd.port,
            args: ["-eval", "net_kernel:verbose(1), io:format(\"verbose~n\")."],
            await: "verbose"
          )

        noise = noise_of_probes(node, epmd, 5)
        reports = Enum.filter(noise, &(&1 =~ "recv_challenge_reply_failed"))
        printed = "OTP #{@release} verbose node printed:\n#{Enum.join(noise, "\n")}"

        # OTP 25 logs one info report per probe, the handshake process's exit; 27 and 29 log
        # nothing. Releases in between are not run here: at most one per probe.
        case String.to_integer(@release) do
          25 -> assert length(reports) == 5 and length(noise) == 10, printed
          release when release >= 27 -> assert noise == [], printed
          _ -> assert length(reports) <= 5, printed
        end
      end
    end
  end
end
