"""Attacks a hostile web page or a hostile client can try on a server on loopback, one test
each (the bounded load versions, measured in a separate process, are in test_attacks.py)."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import struct
import threading
import time

import msgpack
import pytest
import websocket

from vuer_sync import Vuer, VuerClient
from vuer_sync.events import ClientEvent
from vuer_sync.logsafe import TracebackLimiter, redact_secrets
from vuer_sync.server.http import host_allowed, origin_allowed, parse_origin
from vuer_sync.transport import ConnectionClosed, WebSocketConnection
from vuer_sync.transport.budget import InboundBudget

from conftest import wait_until
from helpers import raw_client, recv_close_code

EVIL = "attacker.example"
KEY = base64.b64encode(b"0123456789abcdef").decode()


def request(port, path, *, method="GET", host=None, headers=None, body=None):
    """One raw HTTP request with the Host header as given; (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    hdrs = {"Host": host or f"localhost:{port}", **(headers or {})}
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def upgrade_headers(origin=None):
    h = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
         "Sec-WebSocket-Key": KEY}
    if origin:
        h["Origin"] = origin
    return h


# -- DNS rebinding: the Host allow-list --------------------------------------------------

def test_dns_rebinding_host_is_refused_on_every_route(tmp_path, no_thread_leak):
    (tmp_path / "secret.txt").write_text("secret")
    with Vuer(port=0, workspace=str(tmp_path)) as app:
        port = app.port
        evil_host, evil_origin = f"{EVIL}:{port}", f"http://{EVIL}:{port}"
        # the rebinding page: its Host and Origin are the attacker's name
        status, _, _ = request(port, "/", host=evil_host, headers=upgrade_headers(evil_origin))
        assert status == 403
        status, headers, _ = request(port, "/relay?sid=*", method="POST", host=evil_host,
                                     headers={"Origin": evil_origin},
                                     body=msgpack.packb({"etype": "X"}))
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
        assert request(port, "/workspace/secret.txt", host=evil_host)[0] == 403
        assert request(port, "/", host=evil_host)[0] == 403
        assert request(port, "/no/such/route", host=evil_host)[0] == 403
        assert not app.sessions
        # what a user's own browser and programs send is served
        for host in [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}",
                     f"viewer.localhost:{port}", "localhost", "192.168.1.20:8012"]:
            assert request(port, "/workspace/secret.txt", host=host)[:3:2] == (200, b"secret")
        status, _, _ = request(port, "/", host=f"localhost:{port}",
                               headers=upgrade_headers(f"http://localhost:{port}"))
        assert status == 101


def test_allowed_hosts_option_env_and_star_needs_a_token(tmp_path, monkeypatch,
                                                         no_thread_leak):
    with Vuer(port=0, allowed_hosts=["robot.example", ".lab.example"]) as app:
        for host, status in [("robot.example", 101), ("cam.lab.example", 101),
                             ("lab.example", 101), ("robot.example.evil", 403),
                             ("xlab.example", 403)]:
            got = request(app.port, "/", host=f"{host}:{app.port}",
                          headers=upgrade_headers(f"http://{host}:{app.port}"))[0]
            assert got == status, host
    monkeypatch.setenv("VUER_SYNC_ALLOWED_HOSTS", "robot.example, other.example")
    app = Vuer(port=0)
    assert app.allowed_hosts == ["robot.example", "other.example"]
    with pytest.raises(ValueError, match="token"):
        Vuer(port=0, allowed_hosts=["*"])
    with Vuer(port=0, allowed_hosts=["*"], token="t") as app:
        assert request(app.port, "/?token=t", host=f"{EVIL}:{app.port}")[0] == 200


def test_host_and_origin_parsing_is_strict():
    assert host_allowed(None, "127.0.0.1", [])  # HTTP/1.0 programs
    assert not host_allowed("localhost.attacker.example", "127.0.0.1", [])
    assert not host_allowed("local host", "127.0.0.1", [])
    assert host_allowed("robot:8012", "robot", [])  # the bound name
    assert parse_origin("http://evil.com@localhost") is None
    assert parse_origin("http://localhost/path") is None
    assert parse_origin("http://localhost:8012") == ("http", "localhost", 8012)
    for bad in ["http://evil.com@localhost", "http://evil.com@localhost:8012",
                "http://localhost:8012/x", "http://localhost#x", "null",
                "http://localhost.evil.com", "file://", "http://evil.com%40localhost"]:
        assert not origin_allowed(bad, "localhost:8012", []), bad
    assert origin_allowed("http://localhost:3000", "localhost:8012", [])
    assert origin_allowed("http://robot:8012", "robot:8012", [])
    assert not origin_allowed("http://robot:8013", "robot:8012", [])
    assert origin_allowed("https://robot", "robot:443", [])


def test_origin_with_userinfo_cannot_open_the_websocket(app):
    app.start(block=False)
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(f"ws://127.0.0.1:{app.port}/", timeout=5,
                                    origin="http://evil.com@localhost")
    assert e.value.status_code == 403


# -- smaller holes -------------------------------------------------------------------------

def test_nul_in_a_workspace_path_is_a_404(app, tmp_path):
    app.workspace = str(tmp_path)
    (tmp_path / "x.png").write_bytes(b"png")
    app.start(block=False)
    assert request(app.port, "/workspace/x%00.png")[0] == 404
    assert request(app.port, "/workspace/x.png%00")[0] == 404
    assert request(app.port, "/workspace/x.png")[0] == 200


def test_head_does_not_use_up_a_one_time_download(app):
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as _client:
        session = app.wait_for_session(5)
        url = session.send_file_download("notes.txt", b"hello")
        path = url.split(str(app.port), 1)[1]
        status, headers, body = request(app.port, path, method="HEAD")
        assert (status, headers["Content-Length"], body) == (200, "5", b"")
        assert request(app.port, path, method="HEAD")[0] == 200
        assert request(app.port, path)[::2] == (200, b"hello")
        assert request(app.port, path)[0] == 404  # still one-time for GET


def test_token_is_redacted_from_logged_urls(tmp_path, caplog, no_thread_leak):
    caplog.set_level(logging.DEBUG, logger="vuer_sync")
    with Vuer(port=0, token="s3cretvalue", workspace=str(tmp_path)) as app:
        request(app.port, "/workspace/none?token=s3cretvalue")
        client = VuerClient(f"ws://127.0.0.1:{app.port}/?token=s3cretvalue")
        with client:
            assert "s3cretvalue" not in repr(client)
        with pytest.raises(ConnectionError) as e:
            VuerClient(f"ws://127.0.0.1:{app.port}/?token=wrongvalue").connect()
        assert "wrongvalue" not in str(e.value)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/workspace/none?token=***" in logged
    assert "s3cretvalue" not in logged
    assert redact_secrets("/?ws=ws://h:1/%3Ftoken%3Dabc&x=1") == "/?ws=ws://h:1/%3Ftoken%3D***&x=1"


def test_a_raising_handler_logs_its_traceback_once_with_a_count(app, caplog):
    from vuer_sync._threads import handler_errors

    caplog.set_level(logging.ERROR, logger="vuer_sync.handlers")
    calls = []

    def broken(event, session):
        calls.append(event.value)
        raise RuntimeError(f"bad value {event.value}")

    app.add_handler("BROKEN", broken)
    app.start(block=False)
    before = handler_errors.suppressed
    with VuerClient(f"ws://127.0.0.1:{app.port}") as client:
        for i in range(999):
            client.send @ ClientEvent(etype="BROKEN", value=i)
        client.send(ClientEvent(etype="BROKEN", value=999))  # blocks until written
        assert wait_until(lambda: len(calls) == 1000, 20)
    tracebacks = [r for r in caplog.records if r.exc_info and "broken" in r.getMessage()]
    assert len(tracebacks) == 1
    assert handler_errors.suppressed - before == 999
    # after the window the next one is logged again, with the count of those folded in
    limiter = TracebackLimiter(logging.getLogger("vuer_sync.handlers"), window=0.2)

    def attempt():  # the same code path each time, as a handler called by its worker
        try:
            raise ValueError("x")
        except ValueError as e:
            return limiter.log("f raised", e, source="f")

    logged = [attempt() for _ in range(3)]
    time.sleep(0.25)
    logged.append(attempt())
    assert logged == [True, False, False, True]
    assert "2 more times" in caplog.records[-1].getMessage()


# -- timeouts and caps -----------------------------------------------------------------------

def test_a_trickling_request_head_is_cut_at_the_header_timeout(no_thread_leak):
    with Vuer(port=0, header_timeout=1.0) as app:
        s = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        t0 = time.monotonic()
        closed_after = None
        for i in range(40):  # one header byte every 0.1 s: every recv is quick
            try:
                s.sendall(b"X-Drip-%d: 1\r\n" % i)
            except OSError:
                closed_after = time.monotonic() - t0
                break
            s.settimeout(0.1)
            try:
                if s.recv(1) == b"":
                    closed_after = time.monotonic() - t0
                    break
            except socket.timeout:
                pass
        s.close()
        assert closed_after is not None and closed_after < 2.5, closed_after


def test_an_idle_keepalive_connection_is_closed_after_the_header_timeout(no_thread_leak):
    with Vuer(port=0, header_timeout=0.5) as app:
        s = socket.create_connection(("127.0.0.1", app.port), timeout=5)
        t0 = time.monotonic()
        assert s.recv(100) == b""  # nothing sent: closed by the server
        assert time.monotonic() - t0 < 2.0
        s.close()


def test_a_head_cut_off_by_eof_is_not_served(app, tmp_path):
    (tmp_path / "f.txt").write_text("file")
    app.workspace = str(tmp_path)
    app.start(block=False)
    for head in [b"GET /workspace/f.txt HTTP/1.1\r\nHost: localhost\r\n",
                 b"GET /workspace/f.txt HTTP/1.1\r\nHost: localhost",
                 b"GET /workspace/f.txt HTTP/1.1"]:
        s = socket.create_connection(("127.0.0.1", app.port), timeout=5)
        s.sendall(head)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < 100000:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        s.close()
        assert not reply.startswith(b"HTTP/1.1 200"), head
        assert reply.startswith(b"HTTP/1.1 400") or reply == b"", reply[:60]
    s = socket.create_connection(("127.0.0.1", app.port), timeout=5)
    s.sendall(b"GET /workspace/f.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
    s.shutdown(socket.SHUT_WR)  # complete head, then EOF: served
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.close()


def test_connections_over_the_cap_get_503_at_once(caplog, no_thread_leak):
    caplog.set_level(logging.WARNING, logger="vuer_sync.server")
    with Vuer(port=0, max_connections=8, header_timeout=30) as app:
        idle = [socket.create_connection(("127.0.0.1", app.port), timeout=5) for _ in range(8)]
        time.sleep(0.2)  # let the server accept all eight
        replies = []
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", app.port), timeout=5)
            t0 = time.monotonic()
            replies.append((s.recv(200), time.monotonic() - t0))
            s.close()
        for data, took in replies:
            assert data.startswith(b"HTTP/1.1 503"), data
            assert took < 1.0
        warnings = [r for r in caplog.records if "max_connections" in r.getMessage()]
        assert len(warnings) == 1  # logged once, not once per refused connection
        for s in idle:
            s.close()
        # room again: served
        assert wait_until(lambda: request(app.port, "/workspace/none")[0] == 404, 5)


def test_a_websocket_without_init_is_closed_after_init_timeout(no_thread_leak):
    with Vuer(port=0, init_timeout=0.5) as app:
        silent = raw_client(app.port, init=False)
        good = VuerClient(f"ws://127.0.0.1:{app.port}").connect()
        t0 = time.monotonic()
        assert recv_close_code(silent) == 1008
        assert time.monotonic() - t0 < 3.0
        silent.close()
        time.sleep(0.6)
        assert good.connected and len(app.sessions) == 1
        good.close()


# -- frames: declared lengths, budgets, pongs ----------------------------------------------------

def _masked_header(opcode, length, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    if length < 126:
        head = struct.pack("!BB", b0, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, length)
    return head + b"\x00\x00\x00\x00"  # a zero mask key: payload bytes go as they are


def _receive_in_thread(conn):
    out = {}

    def run():
        try:
            out["msg"] = conn.receive()
        except ConnectionClosed as e:
            out["closed"] = e.code

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_declared_200mib_frame_holds_only_what_arrived():
    budget = InboundBudget(1 << 30)
    a, b = socket.socketpair()
    conn = WebSocketConnection(a, is_server=True, inbound_budget=budget)
    t, out = _receive_in_thread(conn)
    b.sendall(_masked_header(0x2, 200 << 20) + b"0123456789")
    assert wait_until(lambda: budget.held > 0, 5)
    time.sleep(0.1)
    assert budget.held <= 1 << 20  # one growth step, not 200 MiB
    b.close()
    t.join(5)
    assert out["closed"] == 1006 and budget.held == 0
    conn.abort()


def test_large_messages_arrive_intact_in_growing_steps():
    budget = InboundBudget(1 << 30)
    a, b = socket.socketpair()
    conn = WebSocketConnection(a, is_server=True, inbound_budget=budget)
    payload = os.urandom(3 << 20) + bytes(range(256)) * 4097  # not a multiple of any step
    key = b"\x12\x34\x56\x78"
    masked = bytes(x ^ key[i % 4] for i, x in enumerate(payload[:64]))  # spot check below
    from vuer_sync.transport import mask_bytes

    frame = _masked_header(0x2, len(payload))[:-4] + key + mask_bytes(payload, key)
    assert mask_bytes(payload, key)[:64] == masked
    t, out = _receive_in_thread(conn)
    sender = threading.Thread(target=b.sendall, args=(frame,))
    sender.start()
    t.join(20)
    sender.join(5)
    assert out["msg"] == payload
    assert budget.held == 0 and budget.peak >= 1 << 20
    conn.abort()
    b.close()


def test_a_connection_over_the_inbound_budget_is_closed_1013_and_others_go_on(caplog):
    caplog.set_level(logging.WARNING, logger="vuer_sync.transport")
    budget = InboundBudget(4 << 20)
    a, b = socket.socketpair()
    conn = WebSocketConnection(a, is_server=True, inbound_budget=budget)
    t, out = _receive_in_thread(conn)
    b.sendall(_masked_header(0x2, 10 << 20))
    b.settimeout(2)  # the server stops reading once it fails the connection
    try:
        for _ in range(10):
            b.sendall(b"\x00" * (1 << 20))
    except OSError:
        pass
    t.join(10)
    assert out["closed"] == 1013
    assert budget.held == 0 and budget.refused == 1
    assert sum("budget" in r.getMessage() for r in caplog.records) == 1
    conn.abort()
    b.close()
    # fragments held until the message completes count too
    a, b = socket.socketpair()
    conn = WebSocketConnection(a, is_server=True, inbound_budget=budget)
    t, out = _receive_in_thread(conn)
    b.sendall(_masked_header(0x2, 60000, fin=False) + b"\x00" * 60000)
    assert wait_until(lambda: budget.held == 60000, 5)
    b.sendall(_masked_header(0x0, 10, fin=True) + b"\x01" * 10)
    t.join(5)
    assert out["msg"] == b"\x00" * 60000 + b"\x01" * 10 and budget.held == 0
    conn.abort()
    b.close()


def test_a_peer_that_pings_without_reading_gets_one_pong_not_one_per_ping():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    conn = WebSocketConnection(a, is_server=True)
    reader = threading.Thread(target=_receive_in_thread(conn)[0].join)
    big = bytes(8 << 20)
    writer = threading.Thread(target=lambda: conn.send(big))  # blocks: b does not read
    writer.start()
    time.sleep(0.2)
    reader.start()
    pings = (_masked_header(0x9, 2) + b"hi") * 20000
    b.sendall(pings)  # the server reads them all while its writer is stuck
    time.sleep(0.3)
    # now read everything: the 8 MiB message, then the pongs
    b.settimeout(2)
    got = bytearray()
    try:
        while True:
            chunk = b.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        pass
    pong = b"\x8a\x02hi"
    assert got.count(pong) <= 2, got.count(pong)  # was 20000
    assert got.count(pong) >= 1
    conn.abort()
    b.close()
    writer.join(5)
    reader.join(5)
