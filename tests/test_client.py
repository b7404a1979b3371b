from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import subprocess
import threading
import time

import msgpack
import pytest

from vuer_sync import SessionClosed, Vuer, VuerClient, codec
from vuer_sync.client import client_info
from vuer_sync.events import ClientEvent
from vuer_sync.transport.frames import encode_header

from conftest import wait_until


class Hello(ClientEvent):
    etype = "HELLO"


class SetPosition(ClientEvent):
    etype = "SET_POSITION"
    value = [0, 0, 0]


def test_construction_spellings_and_env(monkeypatch):
    assert VuerClient(URI="ws://h:1").uri == "ws://h:1"
    assert VuerClient("ws://h:2").uri == "ws://h:2"
    monkeypatch.setenv("VUER_CLIENT_URI", "ws://envhost:3")
    monkeypatch.setenv("WEBSOCKET_MAX_SIZE", "1024")
    monkeypatch.setenv("VUER_SSL_VERIFY", "false")
    c = VuerClient()
    assert (c.uri, c.max_size, c.ssl_verify) == ("ws://envhost:3", 1024, False)
    for off in ("0", "no", "False"):
        monkeypatch.setenv("VUER_SSL_VERIFY", off)
        assert VuerClient().ssl_verify is False
    monkeypatch.setenv("VUER_SSL_VERIFY", "1")
    assert VuerClient().ssl_verify is True


def test_init_fields(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        info = client_info()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert info["client"] == "python" and info["timezoneOffset"] == 0
    assert set(info) == {"client", "clientVersion", "timezone", "timezoneOffset",
                         "pythonVersion", "platform", "platformVersion", "machine"}


def test_send_forms_default_value_order_and_init(app):
    got = []
    inits = []
    app.add_handler("SET_POSITION", lambda ev, s: got.append(ev.value))
    app.add_handler("INIT", lambda ev, s: inits.append(ev.value))
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as c:
        assert c.connected
        c.send @ SetPosition()
        for i in range(500):
            c.send @ SetPosition(value=[i, 0, 0])
        c.send(SetPosition(value="last"), timeout=5)
        assert wait_until(lambda: len(got) == 502)
    assert got[0] == [0, 0, 0] and got[1:501] == [[i, 0, 0] for i in range(500)]
    assert inits and inits[0]["client"] == "python"
    assert not c.connected
    with pytest.raises(ConnectionError):
        c.send(Hello())
    with pytest.raises(TypeError):
        c.send @ {"etype": "not an event"}


def test_recv_timeout_vs_closed_and_iteration(app):
    @app.spawn
    def main(session):
        for i in range(3):
            session.upsert @ {"key": str(i)}
        # returning closes the session (1000) after the queue is written

    app.start(block=False)
    c = VuerClient(f"ws://127.0.0.1:{app.port}").connect()
    events = list(c)  # ends when the server closes
    assert [e.data["nodes"][0]["key"] for e in events] == ["0", "1", "2"]
    assert events[0].etype == "UPSERT" and isinstance(events[0].ts, float)
    with pytest.raises(SessionClosed):
        c.recv(timeout=0.1)
    c.close()
    c2 = VuerClient(f"ws://127.0.0.1:{app.port}")
    c2.respond("NEVER", lambda r: None)
    with Vuer(port=0) as quiet:
        c2.uri = f"ws://127.0.0.1:{quiet.port}"
        c2.connect()
        assert c2.recv(timeout=0.05) is None  # a timeout is not a close
        assert c2.connected
        c2.close()


def test_reconnect_by_calling_connect_again(app):
    inits = []
    app.add_handler("INIT", lambda ev, s: inits.append(s.id))
    app.start(block=False)
    c = VuerClient(f"ws://127.0.0.1:{app.port}")
    c.connect()
    c.close()
    c.connect()
    c.send(Hello(value=1))
    c.close()
    assert wait_until(lambda: len(set(inits)) == 2)


def test_auto_reconnect_across_server_restart(no_thread_leak):
    got = []
    app = Vuer(port=0)
    app.add_handler("HELLO", lambda ev, s: got.append(ev.value))
    app.start(block=False)
    port = app.port
    c = VuerClient(f"ws://127.0.0.1:{port}", auto_reconnect=True, reconnect_delay=0.05)
    c.connect()
    c.send(Hello(value="before"))
    assert wait_until(lambda: got == ["before"])
    app.stop()
    assert wait_until(lambda: not c.connected, 5)
    app2 = Vuer(port=port)
    app2.add_handler("HELLO", lambda ev, s: got.append(ev.value))
    app2.start(block=False)
    try:
        assert wait_until(lambda: c.connected, 10)
        for i in range(20):
            c.send(Hello(value=i), timeout=5)
        assert wait_until(lambda: got[-20:] == list(range(20)), 5)
        assert c.stats["reconnects"] == 1
    finally:
        c.close()
        app2.stop()


def make_cert(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_self_signed(tmp_path, no_thread_leak):
    cert, key = make_cert(tmp_path)
    got = []
    with Vuer(port=0, cert=cert, key=key) as app:
        app.add_handler("HELLO", lambda ev, s: got.append(ev.value))
        assert app.get_url().startswith("https://vuer.ai?ws=wss://")
        with VuerClient(f"wss://localhost:{app.port}", ssl_verify=False) as c:
            c.send(Hello(value="insecure-ok"))
        with pytest.raises(ssl.SSLError):
            VuerClient(f"wss://localhost:{app.port}").connect()  # verification fails
        ctx = ssl.create_default_context(cafile=cert)
        with VuerClient(f"wss://localhost:{app.port}", ssl=ctx) as c:  # verified with our CA
            c.send(Hello(value="verified-ok"))
        assert wait_until(lambda: got == ["insecure-ok", "verified-ok"])
        # a silent TCP client does not block TLS handshakes of others
        silent = socket.create_connection(("127.0.0.1", app.port))
        t0 = time.monotonic()
        with VuerClient(f"wss://localhost:{app.port}", ssl_verify=False):
            pass
        assert time.monotonic() - t0 < 2.0
        silent.close()


class BadServer:
    """A websocket server that misbehaves on purpose (handshake by hand, raw frames)."""

    def __init__(self, frames_then):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.frames_then = frames_then
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        conn, _ = self.sock.accept()
        req = b""
        while b"\r\n\r\n" not in req:
            req += conn.recv(4096)
        key = [line.split(b":", 1)[1].strip() for line in req.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key")][0]
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.frames_then(conn)
        conn.close()
        self.sock.close()


def frame(payload, opcode=0x2):
    return bytes(encode_header(len(payload), opcode)) + payload


def test_garbage_from_server_is_skipped_and_counted(no_thread_leak):
    def misbehave(conn):
        conn.sendall(frame(b"text!", opcode=0x1))
        conn.sendall(frame(msgpack.packb([1, 2])))
        conn.sendall(frame(b"\xc1\xc1"))
        conn.sendall(frame(codec.encode({"etype": "OK", "data": 1})))
        conn.sendall(frame(b"\x03\xe8", opcode=0x8))  # close 1000
        time.sleep(0.2)

    srv = BadServer(misbehave)
    c = VuerClient(f"ws://127.0.0.1:{srv.port}").connect()
    events = list(c)
    assert [e.etype for e in events] == ["OK"]
    assert c.stats["bad_messages"] == 3
    c.close()


def test_server_dying_mid_message_ends_cleanly(no_thread_leak):
    def die(conn):
        conn.sendall(frame(codec.encode({"etype": "OK"})))
        conn.sendall(bytes(encode_header(100_000, 0x2)) + b"\x00" * 10)  # then EOF

    srv = BadServer(die)
    c = VuerClient(f"ws://127.0.0.1:{srv.port}").connect()
    t0 = time.monotonic()
    events = list(c)  # must end, not hang
    assert [e.etype for e in events] == ["OK"] and time.monotonic() - t0 < 5
    assert c.last_error is not None
    c.close()


def test_client_certificate_tls(tmp_path, no_thread_leak):
    cert, key = make_cert(tmp_path)
    got = []
    with Vuer(port=0, cert=cert, key=key, ca_cert=cert) as app:  # client certs required
        app.add_handler("HELLO", lambda ev, s: got.append(ev.value))
        no_cert = VuerClient(f"wss://localhost:{app.port}", ssl_verify=False, connect_timeout=3)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            no_cert.connect()  # the server refuses the TLS handshake (or the upgrade after it)
            no_cert.send(Hello(value="no-cert"), timeout=2)
        no_cert.close()
        with VuerClient(f"wss://localhost:{app.port}", ssl_verify=False,
                        sslopt={"certfile": cert, "keyfile": key}) as c:
            c.send(Hello(value="with-cert"))
        assert wait_until(lambda: "with-cert" in got)
    assert "no-cert" not in got
