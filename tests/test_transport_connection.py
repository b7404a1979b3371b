"""Conformance tests for vuer_sync.transport.WebSocketConnection.

No mocks: the connection under test runs on one end of a real ``socket.socketpair()`` or a real
127.0.0.1 TCP connection; the other end is a hand-written peer that builds frames with
``vuer_sync.transport.frames`` (or the real websocket-client library). Every blocking call has a
timeout, every thread is joined.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import pytest

from vuer_sync import client_transport as wsc
from vuer_sync.transport import ConnectionClosed, WebSocketConnection
from vuer_sync.transport import frames as F
from vuer_sync.transport.connection import RECEIVE_POOL, BufferPool
from vuer_sync.transport.frames import (
    FrameHeader,
    apply_mask,
    encode_close_payload,
    encode_header,
    mask_bytes,
    parse_header,
)

TIMEOUT = 10.0  # upper bound for any single blocking step


# --------------------------------------------------------------------------- helpers


class Worker:
    """Run ``fn(*args)`` in a thread; ``get()`` joins with a timeout and re-raises errors."""

    def __init__(self, fn: Callable[..., Any], *args: Any, registry: Optional[list] = None) -> None:
        self.result: Any = None
        self.exc: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        if registry is not None:
            registry.append(self)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self.result = fn(*args)
        except BaseException as e:
            self.exc = e

    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout: float = TIMEOUT) -> Worker:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker thread did not finish in time"
        return self

    def get(self, timeout: float = TIMEOUT) -> Any:
        self.join(timeout)
        if self.exc is not None:
            raise self.exc
        return self.result


class RawPeer:
    """The other end of the connection, framing by hand with frames.py.

    ``client=True`` (default) behaves like a browser: masks what it sends and expects unmasked
    frames back. It never answers pings by itself.
    """

    def __init__(self, sock: socket.socket, client: bool = True) -> None:
        self.sock = sock
        self.client = client
        self.buf = bytearray()
        sock.settimeout(TIMEOUT)

    # sending
    def frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        mask: Optional[bool] = None,
        length: Optional[int] = None,
    ) -> bytes:
        mask = self.client if mask is None else mask
        n = len(payload) if length is None else length
        if mask:
            key = os.urandom(4)
            return encode_header(n, opcode, fin=fin, mask_key=key, rsv=rsv) + mask_bytes(
                payload, key
            )
        return encode_header(n, opcode, fin=fin, rsv=rsv) + bytes(payload)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: Any) -> None:
        self.sock.sendall(self.frame(opcode, payload, **kw))

    def send_close(self, code: Optional[int] = 1000, reason: str = "") -> None:
        self.send_frame(F.OP_CLOSE, encode_close_payload(code, reason))

    # receiving
    def _more(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("peer: EOF")
        self.buf += chunk

    def recv_frame(self) -> Tuple[FrameHeader, bytes]:
        while True:
            h = parse_header(self.buf)
            if not isinstance(h, int):
                break
            self._more()
        del self.buf[: h.header_length]
        n = h.payload_length
        if n <= len(self.buf):
            out = bytearray(self.buf[:n])
            del self.buf[:n]
        else:
            out = bytearray(n)
            got = len(self.buf)
            out[:got] = self.buf
            self.buf.clear()
            mv = memoryview(out)
            while got < n:
                k = self.sock.recv_into(mv[got:])
                if not k:
                    raise EOFError("peer: EOF inside a frame")
                got += k
        if h.masked:
            apply_mask(out, h.mask_key)
        return h, bytes(out)

    def recv_clean_frame(self) -> Tuple[FrameHeader, bytes]:
        """Receive a frame and check it is well-formed for a server->client stream."""
        h, payload = self.recv_frame()
        assert (h.rsv1, h.rsv2, h.rsv3) == (False, False, False), h
        assert h.masked == (not self.client), h
        assert h.opcode in F.KNOWN_OPCODES, h
        if h.is_control:
            assert h.fin and h.payload_length <= 125, h
        return h, payload

    def recv_message(self) -> Tuple[int, bytes, List[Tuple[int, bytes]]]:
        """Reassemble one data message; returns (opcode, payload, control frames seen)."""
        controls: List[Tuple[int, bytes]] = []
        parts: List[bytes] = []
        opcode = None
        while True:
            h, payload = self.recv_clean_frame()
            if h.is_control:
                controls.append((h.opcode, payload))
                continue
            if opcode is None:
                assert h.opcode in (F.OP_TEXT, F.OP_BINARY), h
                opcode = h.opcode
            else:
                assert h.opcode == F.OP_CONTINUATION, h
            parts.append(payload)
            if h.fin:
                return opcode, b"".join(parts), controls

    def expect_close(self) -> Tuple[int, str]:
        """Read frames until a close frame; data frames before it are an error."""
        while True:
            h, payload = self.recv_clean_frame()
            if h.opcode == F.OP_CLOSE:
                return F.parse_close_payload(payload)
            assert h.opcode in (F.OP_PING, F.OP_PONG), f"unexpected frame before close: {h}"

    def expect_eof(self) -> None:
        assert not self.buf, f"unexpected extra bytes: {bytes(self.buf[:20])!r}"
        assert self.sock.recv(1) == b""


@pytest.fixture
def workers():
    registry: List[Worker] = []
    yield registry
    for w in registry:
        w.thread.join(TIMEOUT)
    alive = [w for w in registry if w.thread.is_alive()]
    assert not alive, f"threads still running: {alive}"


@pytest.fixture
def make_pair(workers):
    """Factory: (WebSocketConnection on one end of a socketpair, RawPeer on the other)."""
    made: List[Tuple[WebSocketConnection, RawPeer]] = []

    def make(is_server: bool = True, **kwargs: Any) -> Tuple[WebSocketConnection, RawPeer]:
        a, b = socket.socketpair()
        conn = WebSocketConnection(a, is_server=is_server, **kwargs)
        peer = RawPeer(b, client=is_server)
        made.append((conn, peer))
        return conn, peer

    yield make
    for conn, peer in made:
        conn.abort()  # unblocks any worker stuck in receive/send before `workers` joins them
        peer.sock.close()


@pytest.fixture
def pair(make_pair):
    return make_pair()


def bg(workers: list, fn: Callable[..., Any], *args: Any) -> Worker:
    return Worker(fn, *args, registry=workers)


def receive(conn: WebSocketConnection, workers: list, timeout: float = TIMEOUT) -> Any:
    """conn.receive() bounded by a timeout (the fixture aborts the connection on failure)."""
    return bg(workers, conn.receive).get(timeout)


def expect_failure(conn, peer, workers, code: int) -> ConnectionClosed:
    """The connection must raise ConnectionClosed(code), send a close frame with that code, then
    half-close."""
    with pytest.raises(ConnectionClosed) as ei:
        receive(conn, workers)
    assert ei.value.code == code, ei.value
    assert peer.expect_close()[0] == code
    peer.expect_eof()
    assert conn.closed and conn.close_code == code
    with pytest.raises(ConnectionClosed) as again:  # sticky
        conn.receive()
    assert again.value.code == code
    with pytest.raises(ConnectionClosed):
        conn.send(b"after failure")
    return ei.value


# --------------------------------------------------------------------------- basic round trips


def test_binary_and_text_round_trips(pair, workers):
    conn, peer = pair
    peer.send_frame(F.OP_BINARY, b"\x00\x01binary\xff")
    assert receive(conn, workers) == b"\x00\x01binary\xff"
    peer.send_frame(F.OP_TEXT, "héllo ☃ 𝄞".encode())
    msg = receive(conn, workers)
    assert msg == "héllo ☃ 𝄞" and isinstance(msg, str)
    peer.send_frame(F.OP_BINARY, b"")
    assert receive(conn, workers) == b""
    peer.send_frame(F.OP_TEXT, b"")
    assert receive(conn, workers) == ""

    conn.send(b"bytes")
    assert peer.recv_message()[:2] == (F.OP_BINARY, b"bytes")
    conn.send("text ☃")
    assert peer.recv_message()[:2] == (F.OP_TEXT, "text ☃".encode())
    conn.send(b"as text", binary=False)
    assert peer.recv_message()[:2] == (F.OP_TEXT, b"as text")
    conn.send(bytearray(b"bytearray"))
    assert peer.recv_message()[:2] == (F.OP_BINARY, b"bytearray")
    conn.send(memoryview(b"0123456789")[2:5])
    assert peer.recv_message()[:2] == (F.OP_BINARY, b"234")
    arr = np.arange(5000, dtype=np.float32)
    conn.send(arr)  # any buffer, sent as its raw bytes
    assert peer.recv_message()[:2] == (F.OP_BINARY, arr.tobytes())
    conn.send(memoryview(arr).cast("B")[:10])
    assert peer.recv_message()[:2] == (F.OP_BINARY, arr.tobytes()[:10])
    with pytest.raises(TypeError):
        conn.send(memoryview(b"0123456789")[::2])  # not contiguous

    assert conn.messages_received == 4 and conn.messages_sent == 7
    assert not conn.closed and conn.close_code is None


@pytest.mark.parametrize(
    ("length", "header_len"),
    [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70001, 10), (2**20 + 3, 10)],
)
def test_length_encodings_both_ways(make_pair, workers, length, header_len):
    conn, peer = make_pair(read_size=65536)
    data = os.urandom(length)
    sender = bg(workers, peer.send_frame, F.OP_BINARY, data)
    assert receive(conn, workers) == data
    sender.get()
    assert conn.bytes_received == length + header_len + 4  # + mask key

    sender = bg(workers, conn.send, data)
    h, payload = peer.recv_clean_frame()
    sender.get()
    assert (h.opcode, h.fin, h.payload_length, h.header_length) == (2, True, length, header_len)
    assert payload == data
    assert conn.bytes_sent == length + header_len


def test_counters_and_last_received(make_pair, workers):
    conn, peer = make_pair(read_size=1024)
    t0 = conn.last_received
    # a 200 kB frame dribbled in slowly: last_received must advance before the message completes
    data = os.urandom(200_000)
    raw = peer.frame(F.OP_BINARY, data)
    w = bg(workers, conn.receive)
    peer.sock.sendall(raw[:50_000])
    deadline = time.monotonic() + TIMEOUT
    while conn.last_received == t0 and time.monotonic() < deadline:
        time.sleep(0.005)
    mid = conn.last_received
    assert mid > t0 and not w.done()
    time.sleep(0.05)
    peer.sock.sendall(raw[50_000:])
    assert w.get() == data
    assert conn.last_received >= mid + 0.04
    assert conn.bytes_received == len(raw) and conn.messages_received == 1


def test_initial_data_is_parsed_first(workers):
    a, b = socket.socketpair()
    peer = RawPeer(b)
    second = peer.frame(F.OP_TEXT, "ünïcode".encode())
    early = peer.frame(F.OP_BINARY, b"sent with the handshake") + second[:3]
    conn = WebSocketConnection(a, initial_data=early)
    try:
        assert receive(conn, workers) == b"sent with the handshake"
        w = bg(workers, conn.receive)
        time.sleep(0.05)
        assert not w.done()  # half a frame: waits for the rest
        peer.sock.sendall(second[3:])
        assert w.get() == "ünïcode"
    finally:
        conn.abort()
        b.close()


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "one-off buffer"])
def test_large_messages_on_concurrent_connections(make_pair, workers, monkeypatch, pooled):
    """Large payloads go through the shared receive pool (or a one-off buffer above its
    max_buffer): concurrent readers must never see each other's bytes."""
    if not pooled:
        monkeypatch.setattr(RECEIVE_POOL, "max_buffer", 100_000)
    pairs = [make_pair(read_size=4096) for _ in range(4)]
    sizes = [200_000, 1_500_000, 3_000_001, 70_000]
    n_msgs = 6

    def feed(peer, t):
        for i in range(n_msgs):
            size = sizes[(t + i) % len(sizes)]
            peer.send_frame(F.OP_BINARY, bytes([t * 16 + i]) * size)
        peer.send_frame(F.OP_BINARY, b"x" * 5000, fin=False)
        peer.send_frame(F.OP_CONTINUATION, bytes([t]) * 250_000, fin=True)

    def drain(conn, t):
        for i in range(n_msgs):
            m = conn.receive()
            assert type(m) is bytes
            assert len(m) == sizes[(t + i) % len(sizes)] and m == bytes([t * 16 + i]) * len(m)
        m = conn.receive()
        assert m == b"x" * 5000 + bytes([t]) * 250_000
        return True

    feeders = [bg(workers, feed, p, t) for t, (_, p) in enumerate(pairs)]
    readers = [bg(workers, drain, c, t) for t, (c, _) in enumerate(pairs)]
    for w in feeders + readers:
        assert w.get() in (None, True)


def test_buffer_pool_limits():
    pool = BufferPool(max_total=5 * 2**20, max_buffer=3 * 2**20)
    a = pool.get(100)
    assert len(a) == 2**20  # rounded up to 1 MiB
    b = pool.get(2**20 + 1)
    assert len(b) == 2 * 2**20
    pool.put(a)
    pool.put(b)
    assert pool.pooled_bytes == 3 * 2**20
    assert pool.get(1000) is a  # the smallest buffer that fits
    assert pool.get(1000) is b
    assert pool.pooled_bytes == 0
    c = pool.get(3 * 2**20)
    pool.put(c)
    pool.put(a)
    pool.put(b)  # 6 MiB > 5 MiB: the smallest buffer is dropped
    assert pool.pooled_bytes == 5 * 2**20
    assert pool.get(10) is b
    pool.put(bytearray(4 * 2**20))  # above max_buffer: not kept
    assert pool.pooled_bytes == 3 * 2**20
    pool.clear()
    assert pool.pooled_bytes == 0


# --------------------------------------------------------------------------- fragmentation


def test_fragmented_binary_with_ping_answered_mid_message(pair, workers):
    conn, peer = pair
    rng = np.random.default_rng(7)
    pieces = [os.urandom(int(n)) for n in rng.integers(0, 3000, 60)]
    pieces[5] = b""  # empty fragments are legal
    w = bg(workers, conn.receive)
    peer.send_frame(F.OP_BINARY, pieces[0], fin=False)
    for p in pieces[1:20]:
        peer.send_frame(F.OP_CONTINUATION, p, fin=False)
    peer.send_frame(F.OP_PING, b"mid-message")
    # The pong must come back while the message is still incomplete.
    h, payload = peer.recv_clean_frame()
    assert (h.opcode, payload) == (F.OP_PONG, b"mid-message")
    assert not w.done()
    peer.send_frame(F.OP_PONG, b"unsolicited")  # recorded, not an error
    for p in pieces[20:-1]:
        peer.send_frame(F.OP_CONTINUATION, p, fin=False)
    peer.send_frame(F.OP_PING, b"")
    peer.send_frame(F.OP_CONTINUATION, pieces[-1], fin=True)
    assert w.get() == b"".join(pieces)
    assert peer.recv_clean_frame()[0].opcode == F.OP_PONG
    assert conn.pongs_received == 1 and conn.last_pong is not None
    assert conn.messages_received == 1


def test_fragmented_text_with_split_characters(pair, workers):
    conn, peer = pair
    text = "aé☃𝄞" * 500
    raw = text.encode()
    cuts = list(range(0, len(raw), 7)) + [len(raw)]  # cuts fall inside multi-byte characters
    w = bg(workers, conn.receive)
    peer.send_frame(F.OP_TEXT, raw[: cuts[1]], fin=False)
    for a, b in zip(cuts[1:], cuts[2:]):
        peer.send_frame(F.OP_CONTINUATION, raw[a:b], fin=b == len(raw))
    assert w.get() == text


def test_large_message_is_sent_as_fragments(make_pair, workers):
    conn, peer = make_pair(fragment_size=1000)
    data = os.urandom(10_500)
    conn.send(data)
    sizes = []
    while True:
        h, payload = peer.recv_clean_frame()
        sizes.append((h.opcode, h.fin, len(payload)))
        if h.fin:
            break
    assert sizes[0] == (F.OP_BINARY, False, 1000)
    assert sizes[1:-1] == [(F.OP_CONTINUATION, False, 1000)] * 9
    assert sizes[-1] == (F.OP_CONTINUATION, True, 500)
    conn.send("x" * 2500)
    op, payload, _ = peer.recv_message()
    assert (op, payload) == (F.OP_TEXT, b"x" * 2500)
    assert conn.messages_sent == 2


class Gathered:
    """A payload given as several buffers (what the codec's Segments look like)."""

    def __init__(self, *parts: Any) -> None:
        self.parts = parts


@pytest.mark.parametrize("is_server", [True, False])
def test_gathered_payload_is_one_message_split_at_fragment_size(make_pair, workers, is_server):
    conn, peer = make_pair(is_server=is_server, fragment_size=1000)
    a, b, c = os.urandom(700), bytearray(os.urandom(1800)), memoryview(os.urandom(500))
    conn.send(Gathered(a, b, c))  # 3000 bytes: exactly three full fragments
    sizes, data = [], []
    while True:
        h, payload = peer.recv_clean_frame()
        sizes.append((h.opcode, h.fin, len(payload)))
        data.append(payload)
        if h.fin:
            break
    assert sizes == [(F.OP_BINARY, False, 1000), (F.OP_CONTINUATION, False, 1000),
                     (F.OP_CONTINUATION, True, 1000)]
    assert b"".join(data) == a + bytes(b) + bytes(c)
    small = [Gathered(b"x" * i, b"", np.arange(i, dtype=np.uint8)) for i in (0, 1, 5)]
    conn.send_many([b"first", *small, Gathered(os.urandom(2500)), b"last"])
    got = [peer.recv_message()[1] for _ in range(6)]
    assert got[0] == b"first" and got[-1] == b"last"
    assert got[1:4] == [b"x" * i + bytes(range(i)) for i in (0, 1, 5)]
    assert len(got[4]) == 2500
    assert conn.messages_sent == 7


@pytest.mark.parametrize("fragment_size", [64 * 2**20, 32 * 2**20, 2**20])
def test_50mb_send_with_concurrent_pings_keeps_stream_clean(make_pair, workers, fragment_size):
    """Pings from another thread while a 50 MB message is being written must never be spliced into
    a data frame (the stock simple-websocket bug). The peer parses the stream strictly."""
    conn, peer = make_pair(fragment_size=fragment_size)
    data = np.random.default_rng(3).integers(0, 256, 50 * 10**6, dtype=np.uint8)
    sending = threading.Event()
    pinged_during_send = []

    def send_big():
        sending.set()
        conn.send(data)

    def pinger():
        sending.wait(TIMEOUT)
        i = 0
        while not sender.done() and i < 2000:
            conn.ping(struct.pack("!I", i))
            pinged_during_send.append(i)
            i += 1
            time.sleep(0.0005)
        return i

    sender = bg(workers, send_big)
    pings = bg(workers, pinger)
    op, payload, controls = peer.recv_message()
    sender.get()
    n_pings = pings.get()
    assert op == F.OP_BINARY and len(payload) == data.nbytes
    assert payload == data.tobytes()
    # the rest of the pings arrive after the message; all of them, in order, intact
    seen = [c for c in controls]
    while len(seen) < n_pings:
        h, p = peer.recv_clean_frame()
        seen.append((h.opcode, p))
    assert seen == [(F.OP_PING, struct.pack("!I", i)) for i in range(n_pings)]
    assert n_pings >= 1 and pinged_during_send, "no ping was issued while the send was running"
    if fragment_size >= data.nbytes:
        assert controls == []  # one frame: nothing can come before its end
    n_frames = -(-data.nbytes // fragment_size)
    assert conn.bytes_sent == data.nbytes + 10 * n_frames + 6 * n_pings  # 64-bit length headers


# --------------------------------------------------------------------------- closing


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, "bye"), (1001, ""), (3000, "app"), (4999, "ü")]
)
def test_peer_initiated_close_is_echoed(pair, workers, code, reason):
    conn, peer = pair
    peer.send_frame(F.OP_BINARY, b"last")
    peer.send_close(code, reason)
    assert receive(conn, workers) == b"last"
    with pytest.raises(ConnectionClosed) as ei:
        receive(conn, workers)
    assert (ei.value.code, ei.value.reason) == (code, reason)
    assert peer.expect_close() == (code, "")  # the code is echoed once, without the reason
    peer.expect_eof()  # and the server half-closed the TCP stream
    assert conn.closed and (conn.close_code, conn.close_reason) == (code, reason)
    with pytest.raises(ConnectionClosed) as ei:
        conn.send(b"too late")
    assert ei.value.code == code
    with pytest.raises(ConnectionClosed):
        conn.ping()
    conn.close()  # no-op, no second close frame (expect_eof above would see it otherwise)


def test_peer_close_without_code(pair, workers):
    conn, peer = pair
    peer.send_frame(F.OP_CLOSE, b"")
    with pytest.raises(ConnectionClosed) as ei:
        receive(conn, workers)
    assert ei.value.code == F.CLOSE_NO_STATUS
    h, payload = peer.recv_clean_frame()
    assert (h.opcode, payload) == (F.OP_CLOSE, b"")  # echoed as an empty close frame
    peer.expect_eof()


def test_server_initiated_close_handshake(pair, workers):
    conn, peer = pair
    r = bg(workers, conn.receive)
    conn.close(4000, "going away now")
    conn.close(1000, "second call ignored")
    assert conn.closed and conn.close_code == 4000
    with pytest.raises(ConnectionClosed) as ei:
        conn.send(b"after close")
    assert ei.value.code == 4000
    assert peer.expect_close() == (4000, "going away now")
    # messages that were in flight still arrive, then the peer's close completes the handshake
    peer.send_frame(F.OP_TEXT, b"in flight")
    assert r.get() == "in flight"
    peer.send_frame(F.OP_PING, b"p")  # not answered: nothing may follow our close frame
    peer.send_close(4000)
    with pytest.raises(ConnectionClosed) as ei:
        receive(conn, workers)
    assert ei.value.code == 4000
    peer.expect_eof()


def test_close_validates_code_and_truncates_reason(pair):
    conn, peer = pair
    with pytest.raises(ValueError):
        conn.close(1006)
    with pytest.raises(ValueError):
        conn.close(999)
    assert not conn.closed
    conn.close(1001, "é" * 100)
    code, reason = peer.expect_close()
    assert code == 1001 and reason == "é" * 61  # 122 bytes: a 2-byte char does not fit twice


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03", 1002),  # 1-byte body
        (struct.pack("!H", 1005), 1002),  # local-only code on the wire
        (struct.pack("!H", 999), 1002),
        (struct.pack("!H", 5000), 1002),
        (struct.pack("!H", 1000) + b"\xc3\x28", 1007),  # reason not UTF-8
    ],
)
def test_invalid_close_frames(pair, workers, payload, code):
    conn, peer = pair
    peer.send_frame(F.OP_CLOSE, payload)
    expect_failure(conn, peer, workers, code)


# --------------------------------------------------------------------------- failures


def test_invalid_utf8_text_is_1007(pair, workers):
    conn, peer = pair
    peer.send_frame(F.OP_TEXT, b"valid then \xff\xfe invalid")
    expect_failure(conn, peer, workers, F.CLOSE_INVALID_PAYLOAD)


def test_invalid_utf8_fails_fast_inside_fragmented_message(pair, workers):
    conn, peer = pair
    peer.send_frame(F.OP_TEXT, b"ok \xed\xa0\x80", fin=False)  # UTF-16 surrogate: invalid
    # no final fragment is ever sent: the failure must come from the first fragment alone
    expect_failure(conn, peer, workers, F.CLOSE_INVALID_PAYLOAD)


def test_truncated_utf8_at_end_of_message_is_1007(pair, workers):
    conn, peer = pair
    peer.send_frame(F.OP_TEXT, b"abc\xe2\x82", fin=False)  # incomplete but maybe continued...
    peer.send_frame(F.OP_CONTINUATION, b"", fin=True)  # ...and then the message ends
    expect_failure(conn, peer, workers, F.CLOSE_INVALID_PAYLOAD)


def test_oversize_single_frame_is_1009_without_reading_payload(make_pair, workers):
    conn, peer = make_pair(max_message_size=1000)
    peer.send_frame(F.OP_BINARY, b"x" * 1000)
    assert receive(conn, workers) == b"x" * 1000
    # only the header of a 1 TB frame: the limit is enforced before any payload is read
    peer.sock.sendall(encode_header(2**40, F.OP_BINARY, mask_key=b"abcd"))
    exc = expect_failure(conn, peer, workers, F.CLOSE_MESSAGE_TOO_BIG)
    assert "1000" in exc.reason


def test_oversize_across_fragments_is_1009(make_pair, workers):
    conn, peer = make_pair(max_message_size=1000)
    peer.send_frame(F.OP_BINARY, b"a" * 600, fin=False)
    peer.send_frame(F.OP_PING, b"still fine")
    peer.send_frame(F.OP_CONTINUATION, b"b" * 401, fin=True)
    with pytest.raises(ConnectionClosed) as ei:
        receive(conn, workers)
    assert ei.value.code == F.CLOSE_MESSAGE_TOO_BIG
    h, payload = peer.recv_clean_frame()
    assert (h.opcode, payload) == (F.OP_PONG, b"still fine")
    assert peer.expect_close()[0] == F.CLOSE_MESSAGE_TOO_BIG


def test_oversize_text_is_1009(make_pair, workers):
    conn, peer = make_pair(max_message_size=10)
    peer.send_frame(F.OP_TEXT, b"01234567890")
    expect_failure(conn, peer, workers, F.CLOSE_MESSAGE_TOO_BIG)


PROTOCOL_VIOLATIONS = {
    "unmasked client frame": lambda p: p.send_frame(F.OP_BINARY, b"hi", mask=False),
    "reserved data opcode 3": lambda p: p.send_frame(0x3, b"hi"),
    "reserved data opcode 7": lambda p: p.send_frame(0x7, b""),
    "reserved control opcode 0xB": lambda p: p.send_frame(0xB, b"hi"),
    "reserved control opcode 0xF": lambda p: p.send_frame(0xF, b""),
    "RSV1": lambda p: p.send_frame(F.OP_BINARY, b"hi", rsv=4),
    "RSV2": lambda p: p.send_frame(F.OP_TEXT, b"hi", rsv=2),
    "RSV3 on ping": lambda p: p.send_frame(F.OP_PING, b"hi", rsv=1),
    "ping > 125": lambda p: p.send_frame(F.OP_PING, b"x" * 126),
    "close > 125": lambda p: p.send_frame(F.OP_CLOSE, struct.pack("!H", 1000) + b"x" * 124),
    "fragmented ping": lambda p: p.send_frame(F.OP_PING, b"x", fin=False),
    "continuation without start": lambda p: p.send_frame(F.OP_CONTINUATION, b"x"),
    "new message inside fragmented one": lambda p: (
        p.send_frame(F.OP_BINARY, b"start", fin=False),
        p.send_frame(F.OP_TEXT, b"new", fin=True),
    ),
    "64-bit length with MSB set": lambda p: p.sock.sendall(
        b"\x82\xff" + struct.pack("!Q", 1 << 63) + b"abcd"
    ),
}


@pytest.mark.parametrize("case", list(PROTOCOL_VIOLATIONS))
def test_protocol_violations_are_1002(pair, workers, case):
    conn, peer = pair
    peer.send_frame(F.OP_BINARY, b"fine")
    assert receive(conn, workers) == b"fine"
    PROTOCOL_VIOLATIONS[case](peer)
    expect_failure(conn, peer, workers, F.CLOSE_PROTOCOL_ERROR)


def test_client_side_rejects_masked_server_frame(make_pair, workers):
    conn, server_peer = make_pair(is_server=False)
    server_peer.send_frame(F.OP_BINARY, b"unmasked is right")
    assert receive(conn, workers) == b"unmasked is right"
    server_peer.send_frame(F.OP_BINARY, b"masked is wrong", mask=True)
    expect_failure(conn, server_peer, workers, F.CLOSE_PROTOCOL_ERROR)


def test_client_side_masks_everything_it_sends(make_pair, workers):
    conn, server_peer = make_pair(is_server=False, fragment_size=5000)
    data = os.urandom(12_000)
    conn.send(data)
    conn.send("text")
    conn.ping(b"pp")
    conn.send_many([b"a", b"bb", data[:3000]])
    frames = [server_peer.recv_clean_frame() for _ in range(3 + 1 + 1 + 3)]  # masked: asserted
    keys = {h.mask_key for h, _ in frames}
    assert len(keys) == len(frames)  # a fresh random key per frame
    assert b"".join(p for _, p in frames[:3]) == data
    assert [(h.opcode, p) for h, p in frames[3:]] == [
        (F.OP_TEXT, b"text"),
        (F.OP_PING, b"pp"),
        (F.OP_BINARY, b"a"),
        (F.OP_BINARY, b"bb"),
        (F.OP_BINARY, data[:3000]),
    ]
    # the server side answers a ping from a server
    server_peer.send_frame(F.OP_PING, b"srv")
    server_peer.send_frame(F.OP_BINARY, b"x")
    assert receive(conn, workers) == b"x"
    h, p = server_peer.recv_clean_frame()
    assert (h.opcode, p) == (F.OP_PONG, b"srv") and h.masked


@pytest.mark.parametrize("cut", ["header", "small payload", "large payload"])
def test_eof_mid_frame_is_1006(make_pair, workers, cut):
    conn, peer = make_pair(read_size=4096)
    if cut == "header":
        raw = peer.frame(F.OP_BINARY, b"x" * 300)[:3]
    elif cut == "small payload":
        raw = peer.frame(F.OP_BINARY, b"x" * 100)[:60]
    else:
        raw = peer.frame(F.OP_BINARY, os.urandom(1_000_000))[:300_000]
    w = bg(workers, conn.receive)
    peer.sock.sendall(raw)
    peer.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionClosed) as ei:
        w.get()
    assert ei.value.code == F.CLOSE_ABNORMAL
    assert conn.closed and conn.close_code == F.CLOSE_ABNORMAL
    with pytest.raises(ConnectionClosed) as ei:
        conn.send(b"x")
    assert ei.value.code == F.CLOSE_ABNORMAL


def test_abort_unblocks_reader_and_writer(make_pair, workers):
    conn, peer = make_pair()
    r = bg(workers, conn.receive)
    big = bytes(64 * 2**20)  # far more than the socket buffers: the writer blocks
    s = bg(workers, conn.send, big)
    time.sleep(0.2)
    assert not r.done() and not s.done()
    conn.abort()
    for w in (r, s):
        with pytest.raises(ConnectionClosed) as ei:
            w.get()
        assert ei.value.code == F.CLOSE_ABNORMAL
    assert conn.closed and conn.close_code == F.CLOSE_ABNORMAL
    conn.abort()  # idempotent


# --------------------------------------------------------------------------- send_many / threads


def test_send_many_10k_small_messages_in_order(pair, workers):
    conn, peer = pair
    rng = np.random.default_rng(11)
    msgs = [struct.pack("!I", i) + os.urandom(int(rng.integers(0, 200))) for i in range(10_000)]
    msgs[17] = b""
    s = bg(workers, conn.send_many, msgs)
    got = [peer.recv_message() for _ in range(len(msgs))]
    s.get()
    assert [p for _, p, _ in got] == msgs
    assert all(op == F.OP_BINARY and not c for op, _, c in got)
    assert conn.messages_sent == 10_000
    conn.send_many([])
    assert conn.messages_sent == 10_000


def test_send_many_writes_exactly_the_frames_of_send(make_pair, workers):
    """send_many's small-message fast path (header and payload straight into one buffer) puts
    the same bytes on the wire as the general path, for every length form and buffer type."""
    sizes = [0, 1, 125, 126, 127, 2047, 2048, 2049, 65535, 65536, 70000]
    payloads: List[Any] = [os.urandom(n) for n in sizes]
    payloads += [bytearray(b"ba" * 50), memoryview(b"mv" * 100)]  # not bytes: general path
    conn, peer = make_pair()
    s = bg(workers, conn.send_many, payloads)
    expected = b"".join(encode_header(len(p), F.OP_BINARY) + bytes(p) for p in payloads)
    wire = bytearray()
    while len(wire) < len(expected):
        chunk = peer.sock.recv(1 << 20)
        assert chunk, "EOF before every frame arrived"
        wire += chunk
    s.get()
    assert bytes(wire) == expected
    assert conn.messages_sent == len(payloads)


def test_buffered_small_frames_keep_every_check(make_pair, workers):
    """Many frames arriving in one read are parsed from the buffer (the server's fast path for
    small binary frames): order, 7/16-bit lengths, a ping, a fragmented message and a text frame
    in between are all handled, and a bad frame behind good ones still fails the connection."""
    conn, peer = make_pair(max_message_size=1500)
    sizes = [0, 1, 125, 126, 1024, 1025, 1500]
    msgs = [os.urandom(n) for n in sizes]
    blob = b"".join(peer.frame(F.OP_BINARY, m) for m in msgs)
    blob += peer.frame(F.OP_PING, b"p1")
    blob += peer.frame(F.OP_BINARY, b"frag-", fin=False)
    blob += peer.frame(F.OP_CONTINUATION, b"ment", fin=True)
    blob += peer.frame(F.OP_TEXT, "héllo".encode())
    blob += peer.frame(F.OP_BINARY, b"last good")
    blob += peer.frame(F.OP_BINARY, b"rsv set", rsv=4)
    peer.sock.sendall(blob)
    got = [receive(conn, workers) for _ in range(len(msgs) + 3)]
    assert got == [*msgs, b"frag-ment", "héllo", b"last good"]
    assert peer.recv_clean_frame()[1] == b"p1"  # the pong
    expect_failure(conn, peer, workers, F.CLOSE_PROTOCOL_ERROR)


def test_buffered_small_frame_over_the_limit_is_1009(make_pair, workers):
    conn, peer = make_pair(max_message_size=100)
    peer.sock.sendall(peer.frame(F.OP_BINARY, b"a" * 100) + peer.frame(F.OP_BINARY, b"b" * 101))
    assert receive(conn, workers) == b"a" * 100
    expect_failure(conn, peer, workers, F.CLOSE_MESSAGE_TOO_BIG)


def test_buffered_unmasked_client_frame_is_1002(make_pair, workers):
    conn, peer = make_pair()
    peer.sock.sendall(peer.frame(F.OP_BINARY, b"ok") + peer.frame(F.OP_BINARY, b"no", mask=False))
    assert receive(conn, workers) == b"ok"
    expect_failure(conn, peer, workers, F.CLOSE_PROTOCOL_ERROR)


class _CountingSocket(socket.socket):
    """A real socket that records how many bytes each write system call was offered."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.offered: List[int] = []

    def sendall(self, data: Any, *a: Any) -> None:
        self.offered.append(memoryview(data).nbytes)
        super().sendall(data, *a)

    def sendmsg(self, buffers: Any, *a: Any) -> int:
        buffers = list(buffers)
        self.offered.append(sum(memoryview(b).nbytes for b in buffers))
        return super().sendmsg(buffers, *a)


@pytest.mark.parametrize("write_chunk", [1000, 64 * 1024])
def test_large_writes_are_split_into_write_chunk_system_calls(workers, write_chunk):
    """No write system call is offered more than ``write_chunk`` bytes (large payloads go as
    views of themselves), and what arrives is exactly what was sent."""
    a, b = socket.socketpair()
    sock = _CountingSocket(fileno=a.detach())
    conn = WebSocketConnection(sock, is_server=True, write_chunk=write_chunk)
    peer = RawPeer(b, client=True)
    try:
        big = os.urandom(3 * 2**20 + 7)
        msgs = [big, b"small", os.urandom(5000), memoryview(big)[1:200_001]]
        s = bg(workers, conn.send_many, msgs)
        got = [peer.recv_message()[1] for _ in msgs]
        s.get()
        s = bg(workers, conn.send, big)
        got.append(peer.recv_message()[1])
        s.get()
        assert got == [bytes(m) for m in msgs] + [big]
        assert max(sock.offered) <= write_chunk
        assert sum(sock.offered) >= 2 * len(big)
    finally:
        conn.abort()
        b.close()
    with socket.socket() as unused, pytest.raises(ValueError):
        WebSocketConnection(unused, write_chunk=0)


def test_send_many_large_iovec_lists_with_partial_writes(pair, workers):
    """Thousands of iovecs (payloads above the coalescing size) with a socket timeout set, which
    makes the kernel accept partial writes: the stream must still be exact."""
    conn, peer = pair
    conn.sock.settimeout(TIMEOUT)  # internally non-blocking: sendmsg returns short counts
    msgs = [os.urandom(3000 + (i % 7) * 1000) for i in range(3000)]  # > IOV_BATCH buffers
    msgs[::100] = [b"tiny"] * len(msgs[::100])
    s = bg(workers, conn.send_many, [memoryview(m) for m in msgs])
    got = [peer.recv_message()[1] for _ in range(len(msgs))]
    s.get()
    assert got == msgs
    expected = sum(len(m) + (2 if len(m) < 126 else 4) for m in msgs)
    assert conn.bytes_sent == expected


def test_concurrent_writers_and_pings(pair, workers):
    conn, peer = pair
    n_threads, per_thread = 4, 300

    def writer(t):
        for i in range(per_thread):
            size = 10 + (i * 7919) % 20000
            conn.send(struct.pack("!HI", t, i) + bytes([t]) * size)
            if i % 50 == 0:
                conn.ping(struct.pack("!HI", t, i))
            if i % 97 == 0:
                conn.send_many([struct.pack("!HI", t, 10**6 + i)] * 3)

    ws = [bg(workers, writer, t) for t in range(n_threads)]
    per_thread_seq = {t: [] for t in range(n_threads)}
    pings = 0
    total = n_threads * (per_thread + 3 * len(range(0, per_thread, 97)))
    for _ in range(total):
        op, payload, controls = peer.recv_message()
        pings += len(controls)
        t, i = struct.unpack_from("!HI", payload)
        if i < 10**6:
            assert payload[6:] == bytes([t]) * (len(payload) - 6)
            per_thread_seq[t].append(i)
    for w in ws:
        w.get()
    for t in range(n_threads):
        assert per_thread_seq[t] == list(range(per_thread))
    while pings < n_threads * len(range(0, per_thread, 50)):
        h, _ = peer.recv_clean_frame()
        assert h.opcode == F.OP_PING
        pings += 1


def test_reader_answers_pings_while_a_large_send_is_blocked(make_pair, workers):
    """The reader queues the pong instead of blocking behind a stuck writer: it keeps delivering
    messages, and the pong goes out right after the large frame."""
    conn, peer = make_pair(fragment_size=64 * 2**20)
    big = os.urandom(16 * 2**20)
    s = bg(workers, conn.send, big)
    time.sleep(0.1)
    assert not s.done()  # the peer is not reading: the writer is stuck in sendmsg
    peer.send_frame(F.OP_PING, b"are you there")
    peer.send_frame(F.OP_BINARY, b"msg after ping")
    assert receive(conn, workers) == b"msg after ping"  # reader not blocked by the pong
    op, payload, controls = peer.recv_message()
    s.get()
    assert payload == big and controls == []
    h, p = peer.recv_clean_frame()
    assert (h.opcode, p) == (F.OP_PONG, b"are you there")


# --------------------------------------------------------------------------- interop


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def handshake_by_hand(sock: socket.socket) -> bytes:
    """Read an HTTP upgrade request, answer 101; return bytes read past the request."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("no request")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    assert headers[b"upgrade"].lower() == b"websocket"
    accept = base64.b64encode(hashlib.sha1(headers[b"sec-websocket-key"] + WS_GUID).digest())
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return rest


class _InertThread:
    """thread_class for simple_websocket.Server: no reader thread ever runs."""

    def __init__(self, target=None, **kwargs):
        self.name = "inert"

    def start(self):
        pass


def handshake_with_simple_websocket(sock: socket.socket) -> bytes:
    """The lead's plan: simple_websocket.Server does the handshake, no reader thread, no
    permessage-deflate offer."""
    import simple_websocket

    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("no request")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    environ = {"werkzeug.socket": sock}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        environ["HTTP_" + k.strip().upper().replace("-", "_")] = v.strip()
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    ws = simple_websocket.Server(environ, thread_class=_InertThread)
    assert ws.connected
    ws.connected = False  # so that a later ws.close() (flask-sock does one) writes nothing
    return rest


class EchoServer:
    """A one-connection TCP server: HTTP upgrade, then WebSocketConnection echoes messages."""

    def __init__(self, workers: list, handshake: Callable[[socket.socket], bytes]) -> None:
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.lsock.settimeout(TIMEOUT)
        self.port = self.lsock.getsockname()[1]
        self.handshake = handshake
        self.conn: Optional[WebSocketConnection] = None
        self.ready = threading.Event()
        self.worker = bg(workers, self._serve)

    def _serve(self) -> ConnectionClosed:
        try:
            sock, _ = self.lsock.accept()
        finally:
            self.lsock.close()
        sock.settimeout(TIMEOUT)
        rest = self.handshake(sock)
        self.conn = WebSocketConnection(sock, initial_data=rest)
        self.ready.set()
        try:
            while True:
                self.conn.send(self.conn.receive())
        except ConnectionClosed as e:
            return e
        finally:
            self.conn.abort()

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.abort()
        try:
            self.lsock.close()
        except OSError:
            pass


@pytest.mark.parametrize("numpy_mask", [False, True], ids=["stock-mask", "numpy-mask"])
@pytest.mark.parametrize("handshake", [handshake_by_hand, handshake_with_simple_websocket])
def test_interop_websocket_client(workers, numpy_mask, handshake):
    import websocket

    wsc.uninstall_websocket_client_mask()
    if numpy_mask:
        assert wsc.install_websocket_client_mask()
    server = EchoServer(workers, handshake)
    ws = None
    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws", timeout=TIMEOUT)
        assert server.ready.wait(TIMEOUT)
        rng = np.random.default_rng(5)
        for size in (1, 2**20, 12 * 2**20):
            data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            ws.send_binary(data)
            op, echoed = ws.recv_data()
            assert op == websocket.ABNF.OPCODE_BINARY and echoed == data
        ws.send("text ☃")
        assert ws.recv() == "text ☃"
        # a ping from our side is answered by websocket-client while it receives
        server.conn.ping(b"hello?")
        ws.send_binary(b"after ping")
        assert ws.recv() == b"after ping"
        deadline = time.monotonic() + TIMEOUT
        while server.conn.pongs_received < 1 and time.monotonic() < deadline:
            ws.send_binary(b"nudge")
            assert ws.recv() == b"nudge"
        assert server.conn.pongs_received == 1
        # websocket-client's own ping gets our pong
        ws.ping(b"from client")
        ws.send_binary(b"x")
        op, frame = ws.recv_data_frame(control_frame=True)
        assert (op, frame.data) == (websocket.ABNF.OPCODE_PONG, b"from client")
        assert ws.recv() == b"x"
        ws.close(status=1000, reason=b"done")
        closed = server.worker.get()
        assert (closed.code, closed.reason) == (1000, "done")
    finally:
        if ws is not None:
            ws.shutdown()
        server.stop()
        wsc.uninstall_websocket_client_mask()


def _make_cert(tmp_path) -> Tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
         cert, "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_pair(tmp_path, workers):
    """(server, client) WebSocketConnections over TLS on a socketpair."""
    cert, key = _make_cert(tmp_path)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    b.settimeout(TIMEOUT)
    hs = bg(workers, lambda: sctx.wrap_socket(a, server_side=True))
    cs = cctx.wrap_socket(b, server_hostname="localhost")
    ss = hs.get()
    server = WebSocketConnection(ss, is_server=True, fragment_size=4 * 2**20)
    client = WebSocketConnection(cs, is_server=False)
    yield server, client
    server.abort()
    client.abort()


def test_tls_socket_without_sendmsg(tls_pair, workers):
    """ssl.SSLSocket has no sendmsg: the write fallback, pings during a large send, and the
    close handshake must work the same."""
    server, client = tls_pair
    data = os.urandom(12 * 2**20)
    s = bg(workers, client.send, data)
    assert receive(server, workers) == data
    s.get()
    s = bg(workers, server.send, data)
    p = bg(workers, lambda: [server.ping(b"%d" % i) or time.sleep(0.001) for i in range(20)])
    assert receive(client, workers) == data
    s.get()
    p.get()
    server.send(b"marker")  # after every ping: the client has answered them all when it
    assert receive(client, workers) == b"marker"  # gets this
    client.send(b"flush")
    assert receive(server, workers) == b"flush"  # and the 20 pongs came before this
    assert server.pongs_received == 20
    client.close(1000, "tls bye")
    with pytest.raises(ConnectionClosed) as ei:
        receive(server, workers)
    assert (ei.value.code, ei.value.reason) == (1000, "tls bye")
    with pytest.raises(ConnectionClosed) as ei:
        receive(client, workers)
    assert ei.value.code == 1000


def test_tls_full_duplex_under_load(tls_pair, workers):
    """Both ends write and read at the same time over one TLS connection (reader and writer
    threads share each SSL object); every message must arrive intact and in order."""
    server, client = tls_pair
    n = 300
    sizes = [1 + (i * 7919) % 150_000 for i in range(n)]

    def writer(conn, tag):
        for i, size in enumerate(sizes):
            conn.send(struct.pack("!BI", tag, i) + bytes([(tag + i) & 0xFF]) * size)
            if i % 10 == 0:
                conn.ping(b"%d" % i)

    def reader(conn, tag):
        for i, size in enumerate(sizes):
            m = conn.receive()
            assert struct.unpack_from("!BI", m) == (tag, i)
            assert len(m) == 5 + size and m[5:] == bytes([(tag + i) & 0xFF]) * size
        return True

    ws = [bg(workers, writer, server, 1), bg(workers, writer, client, 2)]
    rs = [bg(workers, reader, client, 1), bg(workers, reader, server, 2)]
    for w in ws + rs:
        w.get(30)
    client.send(b"end")
    assert receive(server, workers) == b"end"
    server.send(b"end")
    assert receive(client, workers) == b"end"
    # pings that arrive while a pong is still waiting to be written share one pong
    # (only the latest ping needs an answer, RFC 6455 5.5.3)
    assert 0 < server.pongs_received <= n // 10 and 0 < client.pongs_received <= n // 10


def test_tls_abort_unblocks_reader_and_writer(tls_pair, workers):
    server, client = tls_pair
    r = bg(workers, server.receive)
    s = bg(workers, server.send, bytes(32 * 2**20))  # the client does not read: blocks
    time.sleep(0.2)
    assert not r.done() and not s.done()
    server.abort()
    for w in (r, s):
        with pytest.raises(ConnectionClosed) as ei:
            w.get()
        assert ei.value.code == F.CLOSE_ABNORMAL
