"""The channel loop both ends share (vuer_sync/channel.py), and VuerClient on our transport."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time

import pytest

from vuer_sync import VuerClient, codec
from vuer_sync.channel import Channel
from vuer_sync.outbox import Outbox
from vuer_sync.transport import ConnectionClosed, WebSocketConnection
from vuer_sync.transport.frames import encode_header, mask_bytes, parse_header

from conftest import wait_until


def outbox():
    return Outbox(encode=bytes, decode=lambda p: {})


def test_sender_writes_in_order_and_closes_with_the_set_code(no_thread_leak):
    a, b = socket.socketpair()
    server = WebSocketConnection(a, is_server=True)
    client = WebSocketConnection(b, is_server=False)
    box = outbox()
    ch = Channel(client, box, name="t")
    sender = ch.start()
    for i in range(100):
        box.push(b"m%d" % i)
    assert [server.receive() for _ in range(100)] == [b"m%d" % i for i in range(100)]
    assert wait_until(lambda: ch.last_write > 0)
    ch.set_close(4000, "bye")
    box.close("done", drain=True)
    got = []
    reader = threading.Thread(target=lambda: got.append(Channel(server, outbox()).read_loop(
        lambda data: None)))
    reader.start()
    reader.join(5)
    sender.join(5)
    assert isinstance(got[0], ConnectionClosed) and (got[0].code, got[0].reason) == (4000, "bye")
    a.close()
    b.close()


def test_keepalive_timeout_calls_the_hook(no_thread_leak):
    a, b = socket.socketpair()  # `a` never answers the pings
    conn = WebSocketConnection(b, is_server=False)
    fired = threading.Event()
    ch = Channel(conn, outbox(), ping_interval=0.05, on_keepalive_timeout=fired.set)
    t0 = time.monotonic()
    sender = ch.start()
    assert fired.wait(2) and time.monotonic() - t0 < 1.0
    sender.join(3)  # then the close frame, and the socket dropped (no reader here)
    assert not sender.is_alive() and conn.closed
    a.close()


def test_stop_hands_what_comes_next_back_to_the_outbox(no_thread_leak):
    a, b = socket.socketpair()
    conn = WebSocketConnection(b, is_server=False)
    box = outbox()
    ch = Channel(conn, box)
    sender = ch.start()
    ch.stop()
    sender.join(2)
    box.push(b"later")
    assert not sender.is_alive() and box.depth == 1 and not conn.closed
    conn.abort()
    a.close()


class RawServer:
    """The server half of a handshake by hand; then ``script(conn, read_frame)``."""

    def __init__(self, script, after_101=b""):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.after_101 = after_101
        self.result = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        conn, _ = self.sock.accept()
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += conn.recv(4096)
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf = bytearray(rest)
        key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key")][0]
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                     + self.after_101)  # one write: the frame right behind the response

        def read_frame():
            while True:
                h = parse_header(buf, 0)
                if not isinstance(h, int) and len(buf) >= h.header_length + h.payload_length:
                    start = h.header_length
                    body = bytes(buf[start:start + h.payload_length])
                    del buf[:start + h.payload_length]
                    return h.opcode, mask_bytes(body, h.mask_key) if h.mask_key else body
                data = conn.recv(65536)
                if not data:
                    return None, b""
                buf.extend(data)

        try:
            self.result = self.script(conn, read_frame)
        finally:
            conn.close()
            self.sock.close()


def frame(payload, opcode=0x2):
    return bytes(encode_header(len(payload), opcode)) + payload


def test_client_keeps_bytes_sent_right_behind_the_101(no_thread_leak):
    def script(conn, read_frame):
        assert codec.decode(read_frame()[1])["etype"] == "INIT"
        conn.sendall(frame(b"\x03\xe8", opcode=0x8))
        return read_frame()

    srv = RawServer(script, after_101=frame(codec.encode({"etype": "EARLY", "data": 1})))
    c = VuerClient(f"ws://127.0.0.1:{srv.port}").connect()
    assert [e.etype for e in c] == ["EARLY"]
    c.close()
    srv.thread.join(5)
    assert srv.result == (0x8, b"\x03\xe8")


@pytest.mark.parametrize("code", [1000, 1001, 4321])
def test_client_echoes_the_servers_close_code(code, no_thread_leak):
    def script(conn, read_frame):
        read_frame()  # INIT
        conn.sendall(frame(code.to_bytes(2, "big") + b"bye", opcode=0x8))
        return read_frame()

    srv = RawServer(script)
    c = VuerClient(f"ws://127.0.0.1:{srv.port}").connect()
    assert list(c) == []
    assert c.last_error is None  # the server's close is a clean end
    srv.thread.join(5)
    assert srv.result == (0x8, code.to_bytes(2, "big"))
    c.close()


def test_client_closes_invalid_utf8_text_with_1007(no_thread_leak):
    def script(conn, read_frame):
        read_frame()  # INIT
        conn.sendall(frame(b"\xff\xfe", opcode=0x1))
        return read_frame()

    srv = RawServer(script)
    c = VuerClient(f"ws://127.0.0.1:{srv.port}").connect()
    assert list(c) == []
    srv.thread.join(5)
    assert srv.result[0] == 0x8 and int.from_bytes(srv.result[1][:2], "big") == 1007
    assert isinstance(c.last_error, ConnectionClosed) and c.last_error.code == 1007
    c.close()


def test_client_drops_a_server_that_stops_answering_pings(no_thread_leak):
    def script(conn, read_frame):
        read_frame()  # INIT; then read (and never answer) pings until the client leaves
        t0 = time.monotonic()
        while read_frame()[0] is not None:
            pass
        return time.monotonic() - t0

    srv = RawServer(script)
    c = VuerClient(f"ws://127.0.0.1:{srv.port}", ping_interval=0.1).connect()
    assert wait_until(lambda: not c.connected, 3)
    srv.thread.join(5)
    assert srv.result is not None and srv.result < 2.0
    c.close()
