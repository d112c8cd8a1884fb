defmodule Tinycluster.OTPReleases do
  @moduledoc """
  The OTP releases the tests start peers of: the `erl` on the PATH, the system's `erl`
  when another release's is first on the PATH (`.ci/otp/with` names it in
  `TINYCLUSTER_SYSTEM_ERL`), and each release that `.ci/otp/install` unpacked into its
  cache (`TINYCLUSTER_OTP_CACHE`, default `/var/cache/tinycluster-otp`, one
  `otp-<release>/bin/erl` each).

  A release is listed only once its `erl` has started and told its release, so a broken
  unpack shows up as a missing release in the printed list rather than as failing peers.
  """

  @default_cache "/var/cache/tinycluster-otp"

  @typedoc "A release as the tests use it: its number (\"25\") and its `erl`."
  @type release :: %{release: String.t(), erl: String.t()}

  @doc "Every release found, by release number; each at most once."
  @spec all() :: [release()]
  def all do
    case :persistent_term.get({__MODULE__, :all}, nil) do
      nil ->
        releases = find()
        :persistent_term.put({__MODULE__, :all}, releases)
        releases

      releases ->
        releases
    end
  end

  @doc "The cache `.ci/otp/install` fills."
  @spec cache() :: String.t()
  def cache, do: System.get_env("TINYCLUSTER_OTP_CACHE") || @default_cache

  defp find do
    cached = Path.wildcard(Path.join(cache(), "otp-*/bin/erl"))

    [System.find_executable("erl"), System.get_env("TINYCLUSTER_SYSTEM_ERL") | cached]
    |> Enum.reject(&(&1 in [nil, ""]))
    |> Enum.flat_map(fn erl ->
      case release_of(erl) do
        {:ok, release} -> [%{release: release, erl: erl}]
        _ -> []
      end
    end)
    |> Enum.uniq_by(& &1.release)
    |> Enum.sort_by(&String.to_integer(&1.release))
  end

  defp release_of(erl) do
    eval = ~s|io:format("~s~n", [erlang:system_info(otp_release)]), halt().|

    case System.cmd(erl, ["-noshell", "-eval", eval], stderr_to_stdout: true) do
      {out, 0} ->
        case Regex.run(~r/^(\d+)\s*$/m, out) do
          [_, release] -> {:ok, release}
          nil -> {:error, out}
        end

      {out, _} ->
        {:error, out}
    end
  rescue
    e in ErlangError -> {:error, e}
  end
end
