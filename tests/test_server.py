from __future__ import annotations

import http.client
import os
import socket
import threading
import time

import msgpack
import pytest
import websocket

from vuer_sync import RPCTimeout, SessionClosed, Vuer, VuerClient, codec
from vuer_sync.events import ClientEvent, ServerRPC

from conftest import our_threads, wait_until
from helpers import raw_client, recv_close_code, recv_msg


class Hello(ClientEvent):
    etype = "HELLO"


class Ping(ServerRPC):
    etype = "PING"


def test_start_nonblocking_port0_stop_frees_port(no_thread_leak):
    app = Vuer(port=0)
    app.start(block=False)
    port = app.port
    assert port > 0
    with socket.create_connection(("127.0.0.1", port)):
        pass
    t0 = time.monotonic()
    app.stop()
    assert time.monotonic() - t0 < 1.0
    s = socket.socket()
    s.bind(("127.0.0.1", port))  # the port is free again
    s.close()


def test_stop_ends_connections_that_never_sent_a_request(no_thread_leak):
    app = Vuer(port=0).start(block=False)
    port = app.port
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    assert wait_until(lambda: len(app._server._open) == 3)  # each has a handler thread
    t0 = time.monotonic()
    app.stop()
    assert time.monotonic() - t0 < 1.5
    for s in silent:
        s.settimeout(2)
        assert s.recv(1) == b""  # ended by the server, not left hanging
        s.close()
    handlers = [t for t in threading.enumerate()
                if t.name.startswith("vuer-http") or "process_request" in t.name]
    assert not handlers  # joined by stop()
    with Vuer(port=port) as again:  # the same port at once (as Werkzeug: SO_REUSEADDR)
        assert again.port == port


def test_busy_port_is_a_clear_oserror():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        with pytest.raises(OSError, match="in use"):
            Vuer(port=s.getsockname()[1]).start(block=False)
    finally:
        s.close()


def test_default_host_is_loopback_and_env_is_parsed(monkeypatch):
    monkeypatch.setenv("VUER_PORT", "9123")
    monkeypatch.setenv("WEBSOCKET_MAX_SIZE", "1048576")
    monkeypatch.setenv("VUER_WORKSPACE", "/tmp")
    app = Vuer()
    assert (app.host, app.port, app.WEBSOCKET_MAX_SIZE, app.workspace) == \
        ("127.0.0.1", 9123, 1048576, "/tmp")
    monkeypatch.setenv("VUER_PORT", "not-a-port")
    with pytest.raises(ValueError, match="VUER_PORT"):
        Vuer()


def test_context_manager_and_urls(no_thread_leak):
    with Vuer(port=0) as app:
        assert app.running
        assert app.get_url() == f"https://vuer.ai?ws=ws://localhost:{app.port}"
        assert app.local_url == f"http://localhost:{app.port}/"
    assert not app.running


def test_run_is_a_deprecated_alias():
    app = Vuer(port=0)
    with pytest.warns(DeprecationWarning):
        app.run(block=False)
    app.stop()


def http_get(port, path, method="GET", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data, r


def test_index_and_assets_from_the_vuer_wheel(app):
    from conftest import require

    require("vuer")
    app.start(block=False)
    status, body, _ = http_get(app.port, "/")
    assert status == 200 and b"<html" in body.lower()
    assets = sorted((app.client_root / "assets").rglob("*.js"))
    rel = assets[0].relative_to(app.client_root).as_posix()
    status, body, r = http_get(app.port, "/" + rel)
    assert status == 200 and body == assets[0].read_bytes()
    assert "javascript" in r.getheader("Content-Type")


@pytest.mark.parametrize("path", [
    "/assets/../../../../../../etc/passwd",
    "/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/workspace/../../../../../etc/passwd",
    "/workspace/%2e%2e%2f%2e%2e%2fetc/passwd",
    "/workspace//etc/passwd",
    "/workspace/link/passwd",
])
def test_static_routes_refuse_traversal(tmp_path, path, no_thread_leak):
    (tmp_path / "ok.txt").write_text("fine")
    os.symlink("/etc", tmp_path / "link")
    with Vuer(port=0, workspace=str(tmp_path)) as app:
        assert http_get(app.port, "/workspace/ok.txt")[:2] == (200, b"fine")
        status, body, _ = http_get(app.port, path)
        assert status in (404, 308) and b"root:" not in body  # 308: merged slashes


def test_add_route_and_relay(app):
    app.add_route("/hello", lambda: {"ok": True}, content_type="application/json")
    app.start(block=False)
    assert http_get(app.port, "/hello")[:2] == (200, b'{"ok": true}')
    ws1, ws2 = raw_client(app.port), raw_client(app.port)
    wait_until(lambda: len(app.sessions) == 2)
    sid = app.sessions[0].id
    body = msgpack.packb({"etype": "CUSTOM", "data": {"n": 1}})
    status, resp, _ = http_get(app.port, f"/relay?sid={sid}", "POST", body)
    assert status == 200 and b'"delivered": 1' in resp
    status, resp, _ = http_get(app.port, "/relay?sid=*", "POST", body)
    assert b'"delivered": 2' in resp
    assert http_get(app.port, "/relay?sid=*", "POST", b"\x93\x01\x02\x03")[0] == 400
    assert http_get(app.port, "/relay?sid=nope", "POST", body)[0] == 404
    got = [recv_msg(ws1)["etype"], recv_msg(ws2)["etype"]]
    assert got == ["CUSTOM", "CUSTOM"]
    ws1.close()
    ws2.close()


def test_spawn_filters_select_by_init(app):
    ran = []
    app.spawn(lambda s: ran.append(("browser", s.init.value["client"])), client="browser")

    @app.spawn(client="pyth*")
    def py(session):
        ran.append(("python", session.till("INIT").value["client"]))

    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}"):
        wait_until(lambda: ran)
    assert ran == [("python", "python")]


def test_handlers_and_till_are_per_session(app):
    seen = []
    app.add_handler("HELLO", lambda ev, s: seen.append((s.id, ev.value)))
    results = {}

    @app.spawn
    def main(session):
        results[session.id] = session.till("HELLO", timeout=5).value
        session.forever()

    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as a, \
            VuerClient(f"ws://127.0.0.1:{app.port}") as b:
        # both spawn functions are waiting in till() before anything is sent
        assert wait_until(lambda: len(app.sessions) == 2
                          and all(s.core.till.wants("HELLO") for s in app.sessions))
        a.send(Hello(value="from-a"))
        b.send(Hello(value="from-b"))
        assert wait_until(lambda: len(results) == 2 and len(seen) == 2)
    by_session = dict(seen)
    assert sorted(results.values()) == ["from-a", "from-b"]
    assert results == by_session  # each session's till saw its own client's event


def test_handler_runs_off_the_reader_thread_in_order_and_survives_errors(app):
    calls = []

    @app.add_handler("HELLO")
    def on(ev, session):
        calls.append((ev.value, threading.current_thread().name))
        if ev.value == 1:
            raise RuntimeError("boom")

    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as c:
        for i in range(50):
            c.send @ Hello(value=i)
        assert wait_until(lambda: len(calls) == 50)
    assert [v for v, _ in calls] == list(range(50))
    assert all(name.startswith("vuer-handlers") for _, name in calls)


def test_once_handler_and_cleanup(app):
    seen = []
    app.add_handler("HELLO", lambda ev, s: seen.append(("once", ev.value)), once=True)
    remove = app.add_handler("HELLO", lambda ev, s: seen.append(("all", ev.value)))
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as c:
        c.send(Hello(value=1))
        c.send(Hello(value=2))
        wait_until(lambda: len(seen) == 3)
        remove()
        c.send(Hello(value=3))
        app.wait_for_session(2).flush()
        time.sleep(0.1)
    assert seen == [("once", 1), ("all", 1), ("all", 2)]


def test_registry_handlers_added_and_removed_between_events():
    """The lock-free view of an event type's handlers follows every change: a ``once``
    handler added after a permanent one fires exactly once, a removed one never again."""
    from vuer_sync.server.registry import Registry

    reg = Registry()

    def a(ev, s):
        pass

    def b(ev, s):
        pass

    drop_a = reg.add_handler("E", a, once=False)
    assert list(reg.take_handlers("E")) == [a]
    reg.add_handler("E", b, once=True)
    assert list(reg.take_handlers("E")) == [a, b]
    assert list(reg.take_handlers("E")) == [a]
    drop_a()
    assert list(reg.take_handlers("E")) == []
    assert list(reg.take_handlers("OTHER")) == []


def test_rpc_answered_timeout_and_close(app):
    app.start(block=False)
    c = VuerClient(f"ws://127.0.0.1:{app.port}")
    c.respond("PING", lambda req: {"echo": req.data["n"]})
    c.connect()
    try:
        s = app.wait_for_session(5)
        assert s.rpc(Ping({"n": 7}), ttl=2).value == {"echo": 7}
        with pytest.raises(TimeoutError):
            s.rpc(ServerRPC({"x": 1}), ttl=0.1)  # nobody answers plain RPC
        err = []

        def pending():
            t0 = time.monotonic()
            try:
                s.rpc(ServerRPC({}), ttl=10)
            except SessionClosed:
                err.append(time.monotonic() - t0)

        t = threading.Thread(target=pending)
        t.start()
        time.sleep(0.1)
        t_close = time.monotonic()
        c.close()
        t.join(5)
        assert err and time.monotonic() - t_close < 1.0
    finally:
        c.close()


def test_rpc_request_never_overtakes_earlier_scene_messages(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    box = {}

    def call():
        box["r"] = s.rpc(Ping({}), ttl=5)

    t = threading.Thread(target=call)
    for i in range(200):
        s.upsert @ {"key": f"k{i}", "i": i}
    t.start()
    order = []
    while True:
        m = recv_msg(ws)
        order.append(m["etype"])
        if m["etype"] == "PING":
            ws.send_binary(codec.encode({"etype": m["rtype"], "value": "pong"}))
            break
    t.join(5)
    assert order == ["UPSERT"] * 200 + ["PING"] and box["r"].value == "pong"
    ws.close()


def test_spawn_return_closes_1000_and_exception_closes_1011(app):
    @app.spawn(client="ok")
    def ok(session):
        session.upsert @ {"key": "last"}

    @app.spawn(client="bad")
    def bad(session):
        raise ValueError("user bug")

    app.start(block=False)
    ws = raw_client(app.port, client="ok")
    assert recv_msg(ws)["data"]["nodes"] == [{"key": "last"}]  # queued before return: sent
    assert recv_close_code(ws) == 1000
    ws = raw_client(app.port, client="bad")
    assert recv_close_code(ws) == 1011


def test_session_after_close_raises_and_forever_returns(app):
    done = threading.Event()
    errors = []

    @app.spawn
    def main(session):
        session.forever()
        try:
            session.upsert @ {"key": "x"}
        except SessionClosed as e:
            errors.append(e)
        done.set()

    app.start(block=False)
    ws = raw_client(app.port)
    wait_until(lambda: app.sessions)
    ws.close()
    assert done.wait(5) and errors


def test_bind_mode_keeps_handlers_and_rpc(app):
    from vuer_sync.events import Frame, Noop, Set

    handled = []
    app.add_handler("HELLO", lambda ev, s: handled.append(ev.value))

    @app.bind
    def gen(session):
        ev = yield Set({"tag": "Scene"})
        while True:
            if ev == "HELLO":
                ev = yield Frame(ServerEventLike(ev.value), frame_rate=100)
            else:
                ev = yield Noop()

    from vuer_sync.events import ServerEvent

    def ServerEventLike(v):  # noqa: N802
        return ServerEvent({"echo": v}, etype="ECHO")

    app.start(block=False)
    ws = raw_client(app.port)
    assert recv_msg(ws)["etype"] == "SET"  # first yield goes out on connect
    ws.send_binary(codec.encode({"etype": "HELLO", "value": 5}))
    assert recv_msg(ws)["data"] == {"echo": 5}
    s = app.wait_for_session(5)
    box = {}
    t = threading.Thread(target=lambda: box.update(r=s.rpc(Ping({}), ttl=5)))
    t.start()
    m = recv_msg(ws)
    ws.send_binary(codec.encode({"etype": m["rtype"], "value": "ok"}))
    t.join(5)
    assert box["r"].value == "ok" and wait_until(lambda: handled == [5])
    ws.close()


def test_bad_input_is_counted_and_harms_nobody(no_thread_leak):
    with Vuer(port=0, WEBSOCKET_MAX_SIZE=100_000) as app:
        good = VuerClient(f"ws://127.0.0.1:{app.port}")
        got = []
        app.add_handler("HELLO", lambda ev, s: got.append(ev.value))
        good.connect()
        bad = raw_client(app.port)
        bad.send("a text frame")
        bad.send_binary(msgpack.packb([1, 2, 3]))
        bad.send_binary(msgpack.packb({"value": 1}))
        bad.send_binary(msgpack.packb({1: 2}))
        bad.send_binary(msgpack.packb({"etype": "X", "value": "y" * 50})[:-5])
        bad.send_binary(codec.encode({"etype": "HELLO", "value": "still-works"}))
        assert wait_until(lambda: "still-works" in got)
        bs = [s for s in app.sessions if s.stats["bad_messages"]][0]
        assert bs.stats["bad_messages"] == 5
        bad.send_binary(b"\x00" * 200_000)  # over WEBSOCKET_MAX_SIZE
        assert recv_close_code(bad) == 1009
        good.send(Hello(value="good-after"))
        assert wait_until(lambda: "good-after" in got)
        good.close()


def test_idle_connections_cost_no_cpu(no_thread_leak):
    with Vuer(port=0) as app:
        clients = [raw_client(app.port) for _ in range(5)]
        wait_until(lambda: len(app.sessions) == 5)
        time.sleep(0.2)
        t0, c0 = time.monotonic(), time.process_time()
        time.sleep(2.0)
        cpu = time.process_time() - c0
        wall = time.monotonic() - t0
        for c in clients:
            c.close()
    assert cpu / wall < 0.05, f"idle server used {cpu:.3f} s CPU in {wall:.1f} s"


def test_stop_with_ten_clients_is_fast_and_leaves_no_threads():
    before = our_threads()
    app = Vuer(port=0)
    app.spawn(lambda s: s.forever())
    app.start(block=False)
    clients = [raw_client(app.port) for _ in range(10)]
    wait_until(lambda: len(app.sessions) == 10)
    t0 = time.monotonic()
    app.stop()
    assert time.monotonic() - t0 < 1.0
    assert wait_until(lambda: not (our_threads() - before), 1.0), our_threads() - before
    codes = [recv_close_code(c) for c in clients]
    assert codes.count(1001) >= 8, codes  # a close frame, unless the socket was cut first


def test_atomic_groups_arrive_contiguous_under_competing_producers(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    n_groups, size = 50, 5

    def producer(tag):
        for g in range(n_groups):
            with s.atomic():
                for i in range(size):
                    s.send(ServerEventLike(tag, g, i))

    from vuer_sync.events import ServerEvent

    def ServerEventLike(tag, g, i):  # noqa: N802
        return ServerEvent([tag, g, i], etype="PART")

    ts = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    msgs = [recv_msg(ws)["data"] for _ in range(4 * n_groups * size)]
    for k in range(0, len(msgs), size):
        chunk = msgs[k:k + size]
        assert len({(m[0], m[1]) for m in chunk}) == 1, chunk  # one group, back to back
        assert [m[2] for m in chunk] == list(range(size))
    ws.close()


def test_flush_and_stats(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    for i in range(100):
        s.update @ {"key": "a", "i": i}
    s.flush(5)
    st = s.stats
    assert st["depth"] == 0 and st["queued"] == 100
    assert st["sent"] + st["coalesced"] == 100
    got = []
    while True:
        m = recv_msg(ws)
        got.append(m["data"]["nodes"][0]["i"])
        if got[-1] == 99:
            break
    assert got == sorted(got) and len(got) == st["sent"]
    ws.close()


def test_set_sends_explicit_empty_lists(app):
    from vuer_sync.schemas import Scene

    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    s.set @ Scene()
    data = recv_msg(ws)["data"]
    assert data["tag"] == "Scene" and data["children"] == [] and data["bgChildren"] == []
    ws.close()


def test_origin_check_and_token(tmp_path, no_thread_leak):
    (tmp_path / "secret.txt").write_text("s")
    with Vuer(port=0, token="s3cret", workspace=str(tmp_path)) as app:
        assert http_get(app.port, "/workspace/secret.txt")[0] == 403
        assert http_get(app.port, "/workspace/secret.txt?token=s3cret")[:2] == (200, b"s")
        with pytest.raises(websocket.WebSocketBadStatusException) as e:
            websocket.create_connection(f"ws://127.0.0.1:{app.port}/", timeout=5)
        assert e.value.status_code == 403
        ok = websocket.create_connection(f"ws://127.0.0.1:{app.port}/?token=s3cret", timeout=5)
        ok.close()
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(f"ws://127.0.0.1:{app.port}/?token=s3cret", timeout=5,
                                        origin="http://evil.example")
        ok = websocket.create_connection(f"ws://127.0.0.1:{app.port}/?token=s3cret", timeout=5,
                                         origin=f"http://localhost:{app.port}")
        ok.close()
        assert http_get(app.port, "/relay?sid=*", "POST", msgpack.packb({"etype": "X"}))[0] \
            == 403


def test_rpc_written_directly_when_idle_keeps_order_under_load(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    log = []

    def peer():
        while True:
            try:
                op, data = ws.recv_data()
            except Exception:
                return
            if op != websocket.ABNF.OPCODE_BINARY:
                continue
            m = msgpack.unpackb(data, raw=False)
            if m["etype"] == "PING":
                log.append(("rpc", m["data"]["i"]))
                ws.send_binary(codec.encode({"etype": m["rtype"], "value": m["data"]}))
            elif m["etype"] == "UPSERT":
                log.append(("up", m["data"]["nodes"][0]["i"]))

    reader = threading.Thread(target=peer)
    reader.start()
    errors = []

    def noise():
        for i in range(3000):
            s.upsert @ {"key": "noise", "i": -1, "pad": "x" * (i % 40)}

    def caller():
        try:
            for i in range(300):
                s.upsert @ {"key": "k", "i": i}
                assert s.rpc(Ping({"i": i}), ttl=5).value == {"i": i}
        except Exception as e:
            errors.append(e)

    ts = [threading.Thread(target=noise), threading.Thread(target=caller)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ws.close()
    reader.join(5)
    assert not errors
    last_up = None
    for kind, i in log:
        if kind == "up" and i >= 0:
            last_up = i
        elif kind == "rpc":
            assert last_up == i  # the upsert sent before each request arrived before it
    assert s.stats["queued"] >= 3600


def test_request_size_limit_and_verbose_banner(capsys, no_thread_leak):
    with Vuer(port=0, REQUEST_MAX_SIZE=1000, verbose=True) as app:
        out = capsys.readouterr().out
        assert "REQUEST_MAX_SIZE = 1000" in out and "token = None" in out
        big = msgpack.packb({"etype": "X", "data": b"x" * 5000})
        assert http_get(app.port, "/relay?sid=*", "POST", big)[0] == 413


def test_received_events_buffer_popleft_pop_stream_clear(no_thread_leak):
    with Vuer(port=0, queue_len=3) as app:
        ws = raw_client(app.port)
        s = app.wait_for_session(5)
        last = s.expect("LAST")  # registered before sending: a fast reader cannot beat it
        for i in range(5):
            ws.send_binary(codec.encode({"etype": "E", "value": i}))
        ws.send_binary(codec.encode({"etype": "LAST", "value": 5}))
        assert last.wait(timeout=5).value == 5
        assert [e.value for e in s.stream()] == [3, 4, 5]  # queue_len kept, oldest counted
        assert s.stats["downlink_dropped"] == 4  # INIT + E0..E2: counted, not silent
        with s.expect("LAST") as last:
            ws.send_binary(codec.encode({"etype": "E", "value": 6}))
            ws.send_binary(codec.encode({"etype": "LAST", "value": 7}))
            assert last.wait(timeout=5).value == 7
        assert s.pop().value == 7 and s.popleft().value == 6
        s.clear()
        assert list(s.stream()) == []
        ws.close()


def test_received_events_buffer_holds_at_most_downlink_bytes(no_thread_leak):
    """Large uploads to a session that never reads its buffer: it keeps the newest ones up
    to ``downlink_bytes`` (not ``queue_len`` of them), counts the rest, and every upload
    still reaches the handler."""
    sizes = []
    with Vuer(port=0, queue_len=100, downlink_bytes=3 << 20) as app:
        app.add_handler("UP", lambda ev, s: sizes.append(len(ev.value)))
        ws = raw_client(app.port)
        s = app.wait_for_session(5)
        with s.expect("LAST") as last:
            for i in range(12):
                ws.send_binary(codec.encode({"etype": "UP", "value": bytes([i]) * (1 << 20)}))
            ws.send_binary(codec.encode({"etype": "LAST"}))
            assert last.wait(timeout=20).etype == "LAST"
        kept = list(s.stream())
        assert [e.etype for e in kept] == ["UP", "UP", "LAST"]  # 2 MiB + the newest
        assert [e.value[0] for e in kept[:2]] == [10, 11]  # the newest uploads, in order
        assert s.stats["downlink_dropped"] == 11  # INIT + 10 uploads: counted, not silent
        assert wait_until(lambda: len(sizes) == 12, 10) and set(sizes) == {1 << 20}
        # a single event larger than the budget is still kept: the newest always is
        ws.send_binary(codec.encode({"etype": "UP", "value": b"x" * (4 << 20)}))
        assert wait_until(lambda: len(sizes) == 13, 10)
        assert len(s.pop().value) == 4 << 20
        ws.close()
    with pytest.raises(ValueError, match="downlink_bytes"):
        Vuer(port=0, downlink_bytes=-1)


def test_expect_registers_before_the_action_and_cleans_up(no_thread_leak):
    with Vuer(port=0) as app:
        ws = raw_client(app.port)
        s = app.wait_for_session(5)
        ws.send_binary(codec.encode({"etype": "DONE", "value": "early"}))
        assert wait_until(lambda: any(e.etype == "DONE" for e in s.stream()))
        done = s.expect("DONE")  # an event that came before expect() is not its answer
        with pytest.raises(RPCTimeout):
            done.wait(timeout=0.2)
        assert len(s.core.till) == 0  # a timed-out waiter is forgotten
        done = s.expect("DONE")
        ws.send_binary(codec.encode({"etype": "DONE", "value": "late"}))
        # the answer arrives before anyone waits: still delivered
        assert wait_until(lambda: any(e.value == "late" for e in s.stream()))
        assert done.wait(timeout=5).value == "late"
        pending = s.expect("NEVER")
        ws.close()
        with pytest.raises(SessionClosed):
            pending.wait(timeout=5)


def test_spawn_tasks_see_closed_and_are_joined_when_the_session_ends(app):
    ended = []

    @app.spawn
    def main(session):
        def ticker():
            while not session.wait_closed(0.01):
                pass
            ended.append(time.monotonic())

        session.spawn_task(ticker, name="vuer-test-ticker")
        session.forever()

    app.start(block=False)
    ws = raw_client(app.port)
    assert wait_until(lambda: app.sessions and app.sessions[0].core.tasks)
    task = app.sessions[0].core.tasks[0]
    ws.close()
    assert wait_until(lambda: not app.sessions, 5)
    assert ended and not task.is_alive()  # joined before the session was let go


@pytest.mark.parametrize("etype", ["UPSERT", "UPDATE"])
def test_at_fast_path_builds_what_the_event_builds(etype):
    """`upsert @ element` / `update @ element` skip the event object (ops.node_message): the
    map, the frame bytes (large values by reference) and the coalescing info must be exactly
    those of Upsert(element) / Update(element) sent through send()."""
    import numpy as np

    from vuer_sync.coalesce import merge_info
    from vuer_sync.events import Update, Upsert
    from vuer_sync.schemas import Box, Group, PointCloud
    from vuer_sync.server.ops import encode_event, message_of, node_message

    elements = [
        Box(key="b", position=np.array([0.5, 1.0, 2.0]), rotation=(0, 0, 1)),
        Box(args=[1, 2, 3]),  # auto key
        Group(Box(key="child"), key="g"),  # children: not coalescible
        PointCloud(key="pc", vertices=bytes(range(256)) * 1024, size=0.01),  # large bytes
    ]
    for el in elements:
        msg, payload, info = node_message(etype, el)
        ev = (Upsert if etype == "UPSERT" else Update)(el)
        ev.ts = msg["ts"]
        ref = message_of(ev)
        assert msg == ref
        assert list(msg) == list(ref) and list(msg["data"]) == list(ref["data"])
        ref_payload = encode_event(ev, ref)
        assert type(payload) is type(ref_payload)
        assert bytes(payload) == bytes(ref_payload)
        assert info == merge_info(ref)
        if el.key == "pc":  # sent by reference, not copied
            assert codec.unpack(payload)["data"]["nodes"][0]["vertices"] is el.vertices
