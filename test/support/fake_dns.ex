defmodule Tinycluster.FakeDns do
  @moduledoc """
  A DNS server for the answers no real server gives: a UDP responder in the test VM on
  `127.0.0.1:0`, whose answer section is whatever the test's function returns for the
  question, encoded by OTP's own `:inet_dns`. For bad input only; everything else is asked
  of a real dnsmasq (`Tinycluster.Dnsmasq`).

  `answer.(name, type)` gets the question's name (a string, as asked) and type (`:a`,
  `:srv`, ...) and returns the answer records as `{owner, type, data}`, with `data` as
  `:inet_dns` takes it (`{10, 0, 0, 1}` for A, `~c"target.test"` for CNAME, `{prio,
  weight, port, ~c"target.test"}` for SRV), or `{:rcode, :nxdomain | :servfail}` for an
  error answer with no records.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  @type record :: {String.t(), atom(), term()}

  # The header's RCODE of each error answer (RFC 1035, 4.1.1).
  @rcodes %{servfail: 2, nxdomain: 3}

  @doc "Starts the responder, stopped on test exit; returns it as `:nameservers` takes it."
  @spec start((String.t(), atom() -> [record()] | {:rcode, atom()})) ::
          {String.t(), :inet.port_number()}
  def start(answer) when is_function(answer, 2) do
    test = self()

    pid =
      spawn(fn ->
        {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: false])
        {:ok, port} = :inet.port(socket)
        send(test, {__MODULE__, self(), port})
        serve(socket, answer)
      end)

    receive do
      {__MODULE__, ^pid, port} ->
        on_exit(fn -> Process.exit(pid, :kill) end)
        {"127.0.0.1", port}
    after
      5_000 -> raise "the fake DNS server did not start"
    end
  end

  defp serve(socket, answer) do
    {:ok, {address, port, packet}} = :gen_udp.recv(socket, 0)

    with {:ok, query} <- :inet_dns.decode(packet),
         [question | _] <- :inet_dns.msg(query, :qdlist) do
      name = question |> :inet_dns.dns_query(:domain) |> List.to_string()
      type = :inet_dns.dns_query(question, :type)
      :gen_udp.send(socket, address, port, reply(query, answer.(name, type)))
    end

    serve(socket, answer)
  end

  defp reply(query, {:rcode, rcode}) do
    header = :inet_dns.msg(query, :header)
    header = :inet_dns.make_header(header, qr: true, aa: true, ra: true, rcode: @rcodes[rcode])
    :inet_dns.encode(:inet_dns.make_msg(query, header: header))
  end

  defp reply(query, records) do
    header = :inet_dns.make_header(:inet_dns.msg(query, :header), qr: true, aa: true, ra: true)

    anlist =
      for {owner, type, data} <- records do
        :inet_dns.make_rr(
          domain: String.to_charlist(owner),
          type: type,
          class: :in,
          ttl: 0,
          data: data
        )
      end

    :inet_dns.encode(:inet_dns.make_msg(query, header: header, anlist: anlist))
  end
end
