"""The transport conformance cases, on the new core: a server-side
:class:`~vuer_sync.transport.nonblocking.NonBlockingConnection` served by an
:class:`~vuer_sync.io_loop.IoLoop` (as every websocket of a ``Vuer`` server is), against a peer
that frames by hand (``test_transport_connection.RawPeer``)."""

from __future__ import annotations

import queue
import socket
import struct
import time
from typing import Any, List

import pytest
from test_transport_connection import PROTOCOL_VIOLATIONS, TIMEOUT, RawPeer

from vuer_sync.io_loop import IoLoop, LoopChannel
from vuer_sync.outbox import Outbox
from vuer_sync.transport import ConnectionClosed
from vuer_sync.transport import frames as F
from vuer_sync.transport.frames import encode_header
from vuer_sync.transport.nonblocking import NonBlockingConnection

from conftest import wait_until


class LoopConn:
    """One server-side connection on the loop: ``receive()`` what ``on_message`` got (or the
    ``ConnectionClosed`` that ended it), ``send()`` through an outbox, ``close()``."""

    def __init__(self, loop: IoLoop, sock: socket.socket, **kw: Any) -> None:
        self.got: queue.Queue[Any] = queue.Queue()
        self.outbox = Outbox(encode=bytes, decode=lambda p: {})
        self.conn = NonBlockingConnection(sock, is_server=True, **kw)
        self.channel = LoopChannel(loop, self.conn, self.outbox, on_message=self.got.put,
                                   on_end=self.got.put, name="test")
        self.channel.start()

    def receive(self, timeout: float = TIMEOUT) -> Any:
        item = self.got.get(timeout=timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    def send(self, payload: Any) -> None:
        self.outbox.push(payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.channel.set_close(code, reason)
        self.outbox.close("closing", drain=True)


@pytest.fixture
def loop():
    lp = IoLoop("test")
    yield lp
    lp.stop(5)


@pytest.fixture
def make_pair(loop):
    made: List[Any] = []

    def make(**kw: Any):
        a, b = socket.socketpair()
        made.extend([a, b])
        return LoopConn(loop, a, **kw), RawPeer(b)

    yield make
    for s in made:
        s.close()


@pytest.fixture
def pair(make_pair):
    return make_pair()


def expect_failure(conn: LoopConn, peer: RawPeer, code: int) -> ConnectionClosed:
    """The connection ends with ``code``, its close frame (with that code) reaches the peer,
    and then the end of the stream."""
    with pytest.raises(ConnectionClosed) as ei:
        while True:
            conn.receive()
    assert ei.value.code == code, ei.value
    assert peer.expect_close()[0] == code
    peer.expect_eof()
    assert conn.channel.reader_done.is_set()
    return ei.value


def test_round_trips_both_ways(pair):
    conn, peer = pair
    peer.send_frame(F.OP_BINARY, b"\x00\x01binary\xff")
    peer.send_frame(F.OP_TEXT, "héllo ☃ 𝄞".encode())
    assert conn.receive() == b"\x00\x01binary\xff"
    assert conn.receive() == "héllo ☃ 𝄞"
    conn.send(b"back")
    assert peer.recv_message()[1] == b"back"


@pytest.mark.parametrize("case", list(PROTOCOL_VIOLATIONS))
def test_protocol_violations_are_1002(pair, case):
    conn, peer = pair
    peer.send_frame(F.OP_BINARY, b"fine")
    assert conn.receive() == b"fine"
    PROTOCOL_VIOLATIONS[case](peer)
    expect_failure(conn, peer, F.CLOSE_PROTOCOL_ERROR)


@pytest.mark.parametrize(("payload", "code"), [
    (b"\x03", 1002), (struct.pack("!H", 1005), 1002), (struct.pack("!H", 5000), 1002),
    (struct.pack("!H", 1000) + b"\xc3\x28", 1007)])
def test_invalid_close_frames(pair, payload, code):
    conn, peer = pair
    peer.send_frame(F.OP_CLOSE, payload)
    expect_failure(conn, peer, code)


def test_invalid_utf8_fails_fast_inside_a_fragmented_message(pair):
    conn, peer = pair
    peer.send_frame(F.OP_TEXT, b"ok \xed\xa0\x80", fin=False)
    expect_failure(conn, peer, F.CLOSE_INVALID_PAYLOAD)


def test_oversize_header_is_1009_before_any_payload(make_pair):
    conn, peer = make_pair(max_message_size=1000)
    peer.send_frame(F.OP_BINARY, b"x" * 1000)
    assert conn.receive() == b"x" * 1000
    peer.sock.sendall(encode_header(2**40, F.OP_BINARY, mask_key=b"abcd"))
    assert "1000" in expect_failure(conn, peer, F.CLOSE_MESSAGE_TOO_BIG).reason


def test_fragments_with_a_ping_answered_mid_message(pair):
    conn, peer = pair
    peer.send_frame(F.OP_BINARY, b"a" * 70_000, fin=False)
    peer.send_frame(F.OP_PING, b"mid")
    h, payload = peer.recv_clean_frame()  # answered before the message is complete
    assert (h.opcode, payload) == (F.OP_PONG, b"mid")
    peer.send_frame(F.OP_CONTINUATION, b"b" * 70_000, fin=True)
    assert conn.receive() == b"a" * 70_000 + b"b" * 70_000


def test_a_run_of_pings_is_answered_by_its_last_and_what_follows_is_parsed(pair):
    """A flood of masked pings (each its own mask, empty or not) is counted, not parsed
    frame by frame: a pong answers the latest ping of a run (RFC 6455 5.5.3), and the
    fragments and data around the runs arrive intact and in order."""
    conn, peer = pair
    empty = b"".join(peer.frame(F.OP_PING) for _ in range(5000))
    tagged = b"".join(peer.frame(F.OP_PING, b"p%d" % i) for i in range(5000))
    peer.sock.sendall(peer.frame(F.OP_BINARY, b"first") + empty
                      + peer.frame(F.OP_BINARY, b"a" * 300, fin=False) + tagged
                      + peer.frame(F.OP_CONTINUATION, b"b", fin=True)
                      + peer.frame(F.OP_PING, b"last") + peer.frame(F.OP_BINARY, b"end"))
    assert conn.receive() == b"first"
    assert conn.receive() == b"a" * 300 + b"b"
    assert conn.receive() == b"end"
    pongs = []
    while not pongs or pongs[-1] != b"last":
        h, payload = peer.recv_clean_frame()
        assert h.opcode == F.OP_PONG
        pongs.append(payload)
    order = [b""] + [b"p%d" % i for i in range(5000)] + [b"last"]
    seen = [order.index(p) for p in pongs]  # each pong echoes a ping that was sent...
    assert seen == sorted(seen) and len(pongs) <= 10_001  # ...in order, at most one each
    assert conn.conn.pings_skipped > 9000  # the runs were counted, not parsed


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "going away"), (4000, "app")])
def test_peer_initiated_close_is_echoed(pair, code, reason):
    conn, peer = pair
    peer.send_close(code, reason)
    with pytest.raises(ConnectionClosed) as ei:
        conn.receive()
    assert (ei.value.code, ei.value.reason) == (code, reason)
    assert peer.expect_close()[0] == code  # the echo carries the code
    peer.expect_eof()


def test_server_initiated_close_after_what_was_queued(pair):
    conn, peer = pair
    for i in range(100):
        conn.send(b"m%d" % i)
    conn.close(4001, "done")
    assert [peer.recv_message()[1] for _ in range(100)] == [b"m%d" % i for i in range(100)]
    assert peer.expect_close() == (4001, "done")
    peer.send_close(4001, "done")
    with pytest.raises(ConnectionClosed) as ei:
        conn.receive()
    assert ei.value.code == 4001


def test_a_peer_that_never_answers_the_close_is_cut_after_a_second(pair):
    conn, peer = pair
    conn.close(1000, "")
    assert peer.expect_close()[0] == 1000
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosed):
        conn.receive(5)
    assert 0.8 < time.monotonic() - t0 < 3
    assert peer.sock.recv(1) == b""


@pytest.mark.parametrize("cut", ["header", "small payload", "large payload"])
def test_eof_mid_frame_is_1006(pair, cut):
    conn, peer = pair
    frame = peer.frame(F.OP_BINARY, b"x" * (200_000 if cut == "large payload" else 50))
    peer.sock.sendall(frame[:1] if cut == "header" else frame[: len(frame) // 2])
    peer.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionClosed) as ei:
        conn.receive()
    assert ei.value.code == 1006


def test_10k_small_messages_in_order(pair):
    conn, peer = pair
    for i in range(10_000):
        conn.send(i.to_bytes(4, "big"))
    got = [int.from_bytes(peer.recv_message()[1], "big") for _ in range(10_000)]
    assert got == list(range(10_000))


def test_50mb_with_concurrent_pings_keeps_the_stream_clean(make_pair):
    """A 50 MB message in 1 MiB fragments through a small socket buffer (many partial writes
    of views of the caller's memory): a ping sent after the first fragment arrived is
    answered between fragments, before the message ends, and every frame comes whole."""
    conn, peer = make_pair(fragment_size=2**20)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    big = bytes(range(256)) * (50 * 4096)
    conn.send(big)
    h, first = peer.recv_clean_frame()
    assert h.opcode == F.OP_BINARY and not h.fin and len(first) == 2**20
    peer.send_frame(F.OP_PING, b"mid-message")
    parts, pong_before_end = [first], False
    while True:
        h, payload = peer.recv_clean_frame()
        if h.opcode == F.OP_PONG:
            assert payload == b"mid-message"
            pong_before_end = True
            continue
        assert h.opcode == F.OP_CONTINUATION
        parts.append(payload)
        if h.fin:
            break
    assert pong_before_end
    assert b"".join(parts) == big


class _CountingSocket(socket.socket):
    sizes: List[int]

    def sendmsg(self, buffers, *args):  # type: ignore[override]
        n = super().sendmsg(buffers, *args)
        self.sizes.append(n)
        return n


@pytest.mark.parametrize("write_chunk", [1000, 64 * 1024])
def test_large_writes_are_split_into_write_chunk_system_calls(loop, write_chunk):
    a, b = socket.socketpair()
    s = _CountingSocket(a.family, a.type, a.proto, fileno=a.detach())
    s.sizes = []
    conn = LoopConn(loop, s, write_chunk=write_chunk)
    peer = RawPeer(b)
    try:
        payload = b"z" * 300_000
        conn.send(payload)
        assert peer.recv_message()[1] == payload
        # the loop thread records the last size just after the peer may have read it
        assert wait_until(lambda: sum(s.sizes) >= len(payload), 5), sum(s.sizes)
        assert max(s.sizes) <= write_chunk
    finally:
        s.close()
        b.close()


def test_a_direct_write_keeps_order_with_the_loop(pair):
    """``write_now`` (an RPC request written by its caller) goes between queued batches,
    never inside one, and what was queued after it follows it."""
    conn, peer = pair
    conn.send(b"first")
    assert peer.recv_message()[1] == b"first"
    conn.outbox.wait_written(timeout=5)  # the loop has reported it: nothing in flight
    m = conn.outbox.take_direct(b"direct")
    assert m is not None
    conn.channel.write_now(m)
    conn.send(b"after")
    assert [peer.recv_message()[1] for _ in range(2)] == [b"direct", b"after"]
    conn.outbox.wait_written(timeout=5)


@pytest.mark.parametrize("n", [0, 1, 125, 126, 1024, 1025, 70_000])
def test_small_frame_fast_path_and_the_general_path_agree(make_pair, n):
    """Small masked binary frames take a shortcut; its edges (7- and 16-bit lengths, the
    1 KiB limit, frames cut across reads) give the same messages as the general path."""
    conn, peer = make_pair()
    payloads = [bytes([i % 251]) * n for i in range(3)]
    data = b"".join(peer.frame(F.OP_BINARY, p) for p in payloads)
    for i in range(0, len(data), 7):  # in 7-byte pieces: every frame is cut somewhere
        peer.sock.sendall(data[i:i + 7])
    assert [conn.receive() for _ in payloads] == payloads


def test_the_fast_path_keeps_the_size_limit(make_pair):
    conn, peer = make_pair(max_message_size=10)
    peer.send_frame(F.OP_BINARY, b"x" * 10)
    assert conn.receive() == b"x" * 10
    peer.send_frame(F.OP_BINARY, b"x" * 11)
    expect_failure(conn, peer, F.CLOSE_MESSAGE_TOO_BIG)
