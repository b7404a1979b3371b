"""An ``rpc()`` caller reads its own answer from the socket (``LoopChannel.read_until``): the
answer wakes the caller's thread rather than the I/O loop's and then the caller's. Order,
pings, the connection's end and concurrent callers must all still work."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import msgpack

from vuer_sync import Vuer, codec
from vuer_sync.events import ServerEvent, ServerRPC
from vuer_sync.io_loop import IoLoop, LoopChannel
from vuer_sync.outbox import Outbox
from vuer_sync.rpc import Reply
from vuer_sync.transport import WebSocketConnection
from vuer_sync.transport.nonblocking import NonBlockingConnection

from conftest import wait_until
from helpers import raw_client


class Echo(ServerRPC):
    etype = "ECHO"


def _channel(got, reply, answer=b"answer"):
    """A loop channel over a socket pair whose ``on_message`` records (message, thread) and
    finishes ``reply`` at ``answer``; the peer is a blocking client connection."""
    loop = IoLoop("own-read")
    a, b = socket.socketpair()
    ended = []

    def on_message(data):
        got.append((data, threading.current_thread().name))
        if data == answer:
            reply.set_result(data)

    ch = LoopChannel(loop, NonBlockingConnection(a), Outbox(encode=bytes, decode=lambda p: {}),
                     on_message=on_message, on_end=ended.append)
    ch.start()
    return loop, ch, WebSocketConnection(b, is_server=False), ended


def test_the_caller_reads_its_answer_and_what_came_before_it_in_order(no_thread_leak):
    got = []
    reply = Reply()
    loop, ch, peer, _ = _channel(got, reply)
    try:
        me = threading.current_thread().name
        ch.read_until(reply, 5.0, lambda: peer.send_many([b"one", b"two", b"answer"]))
        assert reply.done() and reply.result(0) == b"answer"
        # everything up to the answer was read and dispatched here, in order
        assert got == [(b"one", me), (b"two", me), (b"answer", me)]
        # reading is the loop's again at once
        peer.send(b"later")
        assert wait_until(lambda: len(got) == 4, 5)
        assert got[3][0] == b"later" and got[3][1].startswith("vuer-io:"), got
    finally:
        peer.close()
        assert ch.join(5)
        loop.stop()
        peer.sock.close()


def test_a_close_read_by_the_caller_ends_the_connection(no_thread_leak):
    got = []
    reply = Reply()
    loop, ch, peer, ended = _channel(got, reply, answer=b"never")
    try:
        def send_then_close():
            peer.send(b"x")
            peer.close(1000, "bye")

        t0 = time.monotonic()
        ch.read_until(reply, 5.0, send_then_close)
        assert time.monotonic() - t0 < 3  # ended by the close, not by the timeout
        assert [g[0] for g in got] == [b"x"]
        # the caller read the close frame: the loop ends the connection with its code
        assert ch.join(5) and ended and getattr(ended[0], "code", None) == 1000, ended
    finally:
        loop.stop()
        peer.sock.close()


def test_a_ping_read_by_the_caller_is_answered_while_it_waits(no_thread_leak):
    got = []
    reply = Reply()
    loop, ch, peer, _ = _channel(got, reply)
    received = []

    def reader():  # the client's reader: it records the pong (and ends at the close)
        try:
            received.append(peer.receive())
        except Exception as e:
            received.append(e)

    def pinger():
        peer.ping(b"p")
        wait_until(lambda: peer.pongs_received == 1, 5)
        peer.send(b"answer")

    r = threading.Thread(target=reader)
    r.start()
    p = threading.Thread(target=pinger)
    try:
        ch.read_until(reply, 5.0, p.start)
        p.join(5)
        assert reply.done() and peer.pongs_received == 1
        assert [g[0] for g in got] == [b"answer"]
    finally:
        peer.close()
        r.join(5)
        assert ch.join(5)
        loop.stop()
        peer.sock.close()


@contextlib.contextmanager
def answering_client(app):
    """A raw client thread on ``app`` that answers every request, sending a numbered SEQ
    event before each answer and whenever the server sends ``SAY``; yields ``(its session,
    counts)``: ``counts`` gets how many SEQ events it sent once it stopped."""
    ws = raw_client(app.port)
    ws.settimeout(0.2)
    stop = threading.Event()
    counts = []

    def run():
        n = 0
        while not stop.is_set():
            try:
                op, data = ws.recv_data()
            except Exception:
                continue
            if op != 2:
                continue
            msg = msgpack.unpackb(data, raw=False)
            rtype = msg.get("rtype")
            if msg.get("etype") == "SAY":  # an event the server asks for, not an answer
                ws.send_binary(codec.encode({"etype": "SEQ", "ts": 0, "value": n}))
                n += 1
            elif isinstance(rtype, str):
                ws.send_binary(codec.encode({"etype": "SEQ", "ts": 0, "value": n}))
                n += 1
                ws.send_binary(codec.encode({"etype": rtype, "ts": 0, "value": msg["data"]}))
        counts.append(n)
        ws.close()

    t = threading.Thread(target=run)
    t.start()
    try:
        yield app.wait_for_session(timeout=5), counts
    finally:
        stop.set()
        t.join(5)


def test_rpcs_from_two_threads_with_events_between_keep_order(app):
    """Two threads call ``rpc()`` on one session at once (one reads, the other's answer is
    read for it), while the client sends an event before each answer: every call gets its
    own answer and the handler sees the events in the client's order."""
    seen = []
    app.add_handler("SEQ", lambda ev, session: seen.append(ev.value))
    app.start(block=False)
    with answering_client(app) as (s, counts):
        errors = []

        def caller(tag):
            try:
                for i in range(150):
                    ev = s.rpc(Echo({"tag": tag, "i": i}), ttl=5)
                    assert ev.value == {"tag": tag, "i": i}, ev.value
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        callers = [threading.Thread(target=caller, args=(k,)) for k in "ab"]
        for c in callers:
            c.start()
        for c in callers:
            c.join(60)
        assert not errors, errors
        assert wait_until(lambda: len(seen) == 300, 10)
        assert seen == list(range(300))
    assert counts == [300]


def test_events_after_an_rpc_reach_handlers_without_another_rpc(app):
    seen = []
    app.add_handler("SEQ", lambda ev, session: seen.append(ev.value))
    app.start(block=False)
    with answering_client(app) as (s, _):
        assert s.rpc(Echo({"k": 1}), ttl=5).value == {"k": 1}
        # the loop reads again after the call: an event with no call waiting arrives
        s.send(ServerEvent(etype="SAY"))
        assert wait_until(lambda: seen == [0, 1], 5), seen
    with Vuer(port=0, io_threads=0) as threaded:  # the thread-per-connection mode as well
        threaded.start(block=False)
        with answering_client(threaded) as (s2, _):
            assert s2.rpc(Echo({"k": 2}), ttl=5).value == {"k": 2}


def test_a_caller_polls_without_sleeping_only_while_answers_come_fast(no_thread_leak):
    """``RPC_SPIN_S``: a caller whose previous answer came within ``RPC_SPIN_WORTH_S`` polls
    its socket without sleeping for a moment first (a sleeping thread's wake-up is what a
    fast round trip mostly costs on a VM); after a slow answer it sleeps in ``poll`` at
    once, and it spins again once answers are fast again."""
    from vuer_sync import io_loop

    got = []
    reply = Reply()
    loop, ch, peer, _ = _channel(got, reply)
    try:
        ch.read_until(reply, 5.0, lambda: peer.send(b"answer"))  # fast: here at once
        assert (ch.spins, ch.spin_answers) == (1, 1)

        reply = Reply()
        slow = threading.Timer(0.05, lambda: peer.send(b"answer"))
        ch.on_message = lambda data: reply.set_result(data)  # noqa: PLW0108 - the current one
        ch.read_until(reply, 5.0, slow.start)  # spins, in vain, then sleeps until it comes
        assert reply.result(0) == b"answer"
        assert (ch.spins, ch.spin_answers) == (2, 1)
        assert io_loop.RPC_SPIN_S < 0.05 < 1.0

        reply = Reply()
        ch.read_until(reply, 5.0, lambda: peer.send(b"answer"))  # after a slow one: no spin
        assert reply.result(0) == b"answer" and (ch.spins, ch.spin_answers) == (2, 1)

        reply = Reply()
        ch.read_until(reply, 5.0, lambda: peer.send(b"answer"))  # fast again: spins again
        assert reply.result(0) == b"answer" and (ch.spins, ch.spin_answers) == (3, 2)
        slow.join(5)
    finally:
        peer.close()
        ch.join(5)
        loop.stop()
