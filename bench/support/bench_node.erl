%% The agent every benchmark node runs, plain `erl` nodes and measuring VMs alike.
%%
%% The bench driver starts each node as an OS process with `-s bench_node start` and talks to
%% it over stdin and stdout, one line each way:
%%   driver -> node:  "<id> <base64 of term_to_binary({M, F, A})>"
%%   node -> driver:  "BENCH ready|reply|event <base64 of term_to_binary(Term)>"
%% Anything else the node prints (its log lines) the driver counts. The node halts when its
%% stdin closes, so no node outlives the driver (a frozen node is killed by pid instead).
%%
%% Optional duties, chosen with command-line flags:
%%   -bench_mesh N       emit {mesh, OsTimeUs} once the node is connected to N visible nodes
%%   -bench_count        count what others cost this node: handshakes it accepted (by tracing
%%                       net_kernel's {accept, ...} messages) and events it logged
%%   -bench_late Name Ms start distribution Ms after boot (the node boots undistributed), then
%%                       emit {registered, BeforeUs, AfterUs} and {nodeup, Node, Us} per nodeup
-module(bench_node).

-export([start/0, stats/0, nodes_count/0, log/2]).

start() ->
    Counters = counters:new(2, [write_concurrency]),
    persistent_term:put({?MODULE, counters}, Counters),
    %% The home process runs the driver's calls one at a time and owns whatever they start
    %% (a poller linked to it lives as long as the node).
    Home = spawn(fun() -> process_flag(trap_exit, true), home() end),
    register(bench_home, Home),
    setup_counting(flag(bench_count)),
    setup_mesh(init:get_argument(bench_mesh)),
    setup_late(init:get_argument(bench_late)),
    %% If the reader dies, nobody would see stdin close: halt rather than outlive the driver.
    spawn(fun() ->
        {_, Ref} = spawn_monitor(fun() -> read_loop(Home) end),
        receive
            {'DOWN', Ref, process, _, _} -> erlang:halt()
        end
    end),
    emit(ready, #{os_pid => list_to_integer(os:getpid()), node => node()}),
    ok.

%% What this node was charged with so far, for -bench_count.
stats() ->
    C = persistent_term:get({?MODULE, counters}),
    #{
        accepts => counters:get(C, 1),
        log_events => counters:get(C, 2),
        log_samples => lists:reverse(get_samples()),
        nodes => nodes()
    }.

nodes_count() -> length(nodes()).

%% logger handler callback: count every event, keep the first few for the report.
log(#{msg := Msg, meta := Meta} = _Event, _Config) ->
    counters:add(persistent_term:get({?MODULE, counters}), 2, 1),
    case whereis(bench_samples) of
        undefined -> ok;
        Pid -> Pid ! {sample, format_msg(Msg, Meta)}
    end,
    ok.

format_msg({string, S}, _) -> iolist_to_binary(S);
format_msg({report, R}, #{report_cb := Cb}) when is_function(Cb, 1) ->
    {F, A} = Cb(R),
    iolist_to_binary(io_lib:format(F, A));
format_msg({report, R}, _) -> iolist_to_binary(io_lib:format("~0p", [R]));
format_msg({F, A}, _) -> iolist_to_binary(io_lib:format(F, A)).

get_samples() ->
    case whereis(bench_samples) of
        undefined ->
            [];
        Pid ->
            Pid ! {get, self()},
            receive
                {samples, S} -> S
            after 1000 -> []
            end
    end.

%% Internals

flag(Name) -> init:get_argument(Name) =/= error.

emit(Tag, Term) ->
    B64 = base64:encode(term_to_binary(Term)),
    io:put_chars(standard_io, [<<"BENCH ">>, atom_to_list(Tag), <<" ">>, B64, <<"\n">>]).

read_loop(Home) ->
    case io:get_line(standard_io, "") of
        eof ->
            erlang:halt();
        {error, _} ->
            erlang:halt();
        Line ->
            %% Lists until Elixir starts, binaries after (it makes standard_io binary).
            [Id, B64] = string:split(string:trim(unicode:characters_to_list(Line)), " "),
            Home ! {call, list_to_integer(Id), binary_to_term(base64:decode(B64))},
            read_loop(Home)
    end.

home() ->
    receive
        {call, Id, {M, F, A}} ->
            Reply =
                try
                    {ok, apply(M, F, A)}
                catch
                    Class:Reason:Stack -> {error, {Class, Reason, Stack}}
                end,
            emit(reply, {Id, Reply}),
            home();
        _Other ->
            home()
    end.

setup_counting(false) ->
    ok;
setup_counting(true) ->
    C = persistent_term:get({?MODULE, counters}),
    register(bench_samples, spawn(fun() -> samples([]) end)),
    ok = logger:add_handler(bench_count, ?MODULE, #{level => all}),
    %% Every connection net_kernel's acceptor takes is announced to net_kernel as
    %% {accept, AcceptorPid, Socket, Family, Proto}: one per handshake started on this node.
    Tracer = spawn(fun() -> accept_tracer(C) end),
    case whereis(net_kernel) of
        undefined -> ok;
        NetKernel -> erlang:trace(NetKernel, true, ['receive', {tracer, Tracer}])
    end,
    ok.

samples(Acc) ->
    receive
        {sample, S} when length(Acc) < 5 -> samples([S | Acc]);
        {sample, _} -> samples(Acc);
        {get, From} -> From ! {samples, Acc}, samples(Acc)
    end.

accept_tracer(C) ->
    receive
        {trace, _, 'receive', {accept, _, _, _, _}} -> counters:add(C, 1, 1);
        _ -> ok
    end,
    accept_tracer(C).

setup_mesh({ok, [[N]]}) ->
    Target = list_to_integer(N),
    Self = self(),
    Pid = spawn(fun() ->
        ok = net_kernel:monitor_nodes(true),
        Self ! subscribed,
        mesh_wait(Target)
    end),
    receive
        subscribed -> Pid
    end;
setup_mesh(error) ->
    ok.

mesh_wait(Target) ->
    case length(nodes()) >= Target of
        true ->
            emit(event, {mesh, os:system_time(microsecond), length(nodes())});
        false ->
            receive
                {nodeup, _} -> mesh_wait(Target)
            end
    end.

setup_late({ok, [[Name, Ms]]}) ->
    spawn(fun() ->
        timer:sleep(list_to_integer(Ms)),
        Before = os:system_time(microsecond),
        {ok, _} = net_kernel:start([list_to_atom(Name), shortnames]),
        Registered = os:system_time(microsecond),
        ok = net_kernel:monitor_nodes(true),
        Now = os:system_time(microsecond),
        emit(event, {registered, Before, Registered}),
        [emit(event, {nodeup, Node, Now}) || Node <- nodes()],
        late_loop()
    end);
setup_late(error) ->
    ok.

late_loop() ->
    receive
        {nodeup, Node} -> emit(event, {nodeup, Node, os:system_time(microsecond)})
    end,
    late_loop().
