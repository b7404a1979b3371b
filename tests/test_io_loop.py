"""Many viewers per process: connections served by shared I/O threads (``io_threads``), handlers
on a bounded worker pool, nothing per idle client."""

from __future__ import annotations

import base64
import gc
import os
import resource
import socket
import threading
import time

import msgpack
import pytest

from vuer_sync import Vuer, VuerClient, codec
from vuer_sync.events import ClientEvent, ServerEvent
from vuer_sync.transport import encode_header, mask_bytes

from conftest import our_threads, wait_until
from helpers import raw_client, recv_close_code, recv_msg

psutil = pytest.importorskip("psutil") if not os.environ.get("CI") else __import__("psutil")


def handshake(port: int, init: bool = True) -> socket.socket:
    """A cheap raw websocket client: the upgrade by hand, then (optionally) an INIT frame."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "no upgrade response"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    if init:
        payload = codec.encode({"etype": "INIT", "ts": 1.0, "value": {"client": "raw"}})
        k = os.urandom(4)
        s.sendall(encode_header(len(payload), 2, mask_key=k) + mask_bytes(payload, k))
    return s


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_idle_viewers_cost_no_thread(no_thread_leak):
    with Vuer(port=0) as app:
        app.start(block=False)
        base = len(threading.enumerate())
        socks = [handshake(app.port) for _ in range(200)]
        assert wait_until(lambda: len(app.sessions) == 200, 10)
        # the HTTP threads of the handshakes end; nothing per connection remains
        assert wait_until(lambda: len(threading.enumerate()) - base <= 2, 10), \
            [t.name for t in threading.enumerate()]
        assert not [t for t in our_threads() if t.name.startswith("vuer-sender")]
        app.scene.upsert @ {"tag": "Box", "key": "b"}  # a broadcast reaches every one
        app.scene.flush(10)
        for s in socks:
            s.close()
        assert wait_until(lambda: not app.sessions, 10)


def test_threaded_mode_is_still_there(no_thread_leak):
    with Vuer(port=0, io_threads=0) as app:
        app.start(block=False)
        c = raw_client(app.port)
        assert wait_until(lambda: len(app.sessions) == 1)
        assert [t for t in our_threads() if t.name.startswith("vuer-sender")]
        app.sessions[0].upsert @ {"tag": "Box", "key": "b"}
        assert recv_msg(c)["etype"] == "UPSERT"
        c.close()


def test_order_per_session_under_concurrent_producers_and_handlers(app):
    """Three threads send numbered messages to each of two sessions while the clients send
    numbered events to handlers: each producer's order holds, and handlers see events in
    the order their client sent them."""
    seen = {}
    lock = threading.Lock()

    @app.add_handler("SEQ")
    def on_seq(ev, session):
        with lock:
            seen.setdefault(session.id, []).append(ev.value)

    app.start(block=False)
    clients = [VuerClient(f"ws://127.0.0.1:{app.port}").connect() for _ in range(2)]
    assert wait_until(lambda: len(app.sessions) == 2)
    sessions = app.sessions
    n = 300

    def produce(pid):
        for i in range(n):
            for s in sessions:
                s.send(ServerEvent(etype="P", data=[pid, i]))

    producers = [threading.Thread(target=produce, args=(p,)) for p in range(3)]
    for t in producers:
        t.start()
    for c in clients:
        for i in range(n):
            c.send(ClientEvent(etype="SEQ", value=i))
    for t in producers:
        t.join(20)
    for c in clients:
        got = {p: [] for p in range(3)}
        deadline = time.monotonic() + 20
        while sum(map(len, got.values())) < 3 * n and time.monotonic() < deadline:
            ev = c.recv(timeout=max(0.0, deadline - time.monotonic()))
            if ev is not None and ev.etype == "P":
                got[ev.data[0]].append(ev.data[1])
        assert got == {p: list(range(n)) for p in range(3)}
    assert wait_until(lambda: sum(map(len, seen.values())) == 2 * n, 20)
    assert all(v == list(range(n)) for v in seen.values())
    for c in clients:
        c.close()


def test_a_slow_handler_does_not_delay_other_sessions(app):
    slow_started = threading.Event()
    release = threading.Event()
    fast_at = []

    @app.add_handler("WORK")
    def on_work(ev, session):
        if ev.value == "slow":
            slow_started.set()
            release.wait(10)
        else:
            fast_at.append(time.monotonic())

    app.start(block=False)
    a = VuerClient(f"ws://127.0.0.1:{app.port}").connect()
    b = VuerClient(f"ws://127.0.0.1:{app.port}").connect()
    try:
        a.send(ClientEvent(etype="WORK", value="slow"))
        assert slow_started.wait(5)
        t0 = time.monotonic()
        for _ in range(5):
            b.send(ClientEvent(etype="WORK", value="fast"))
        assert wait_until(lambda: len(fast_at) == 5, 5)
        assert fast_at[-1] - t0 < 1.0, fast_at[-1] - t0
        assert not release.is_set()  # the slow one was still running meanwhile
    finally:
        release.set()
        a.close()
        b.close()


def test_a_stalled_client_slows_no_one(app):
    """A client that stops reading next to one that reads: a broadcast of 40 MB reaches the
    reader in full while the stalled one's socket is full, with no thread for either."""
    app.start(block=False)
    stalled = handshake(app.port)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    fast = VuerClient(f"ws://127.0.0.1:{app.port}").connect()
    assert wait_until(lambda: len(app.sessions) == 2)
    blob = b"x" * 400_000
    n = 100
    t0 = time.monotonic()
    for i in range(n):
        app.scene.send(ServerEvent(etype="BLOB", data={"i": i, "b": blob}))
    got = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        ev = fast.recv(timeout=max(0.0, deadline - time.monotonic()))
        if ev is not None and ev.etype == "BLOB":
            got.append(ev.data["i"])
    took = time.monotonic() - t0
    assert got == list(range(n)), f"{len(got)} of {n}"
    # the stalled one: still there, still behind (the fast one's last write may be marked
    # written a moment after the client read it: the loop thread marks it)
    assert wait_until(lambda: len([s for s in app.sessions if s.stats["pending_bytes"] > 0]) == 1)
    lag = [s for s in app.sessions if s.stats["pending_bytes"] > 0]
    assert len(lag) == 1 and lag[0].connected
    assert took < 20, took
    assert not [t for t in our_threads() if t.name.startswith("vuer-sender")]
    fast.close()
    stalled.close()


def test_connection_churn_returns_threads_fds_and_memory(no_thread_leak):
    """1000 connections opened and closed in rounds of 250: threads and fds come back to
    their baseline, RSS to within 20 MB of it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    proc = psutil.Process()
    with Vuer(port=0) as app:
        app.start(block=False)
        warm = [handshake(app.port) for _ in range(50)]  # pools, buffers, first allocations
        for s in warm:
            s.close()
        assert wait_until(lambda: not app.sessions, 10)
        gc.collect()
        threads0, fds0, rss0 = len(threading.enumerate()), fds(), proc.memory_info().rss
        for _ in range(4):
            socks = [handshake(app.port) for _ in range(250)]
            assert wait_until(lambda: len(app.sessions) == 250, 20), len(app.sessions)
            for s in socks:
                s.close()
            assert wait_until(lambda: not app.sessions, 20), len(app.sessions)
        gc.collect()
        assert wait_until(lambda: len(threading.enumerate()) <= threads0, 10), \
            [t.name for t in threading.enumerate()]
        assert wait_until(lambda: fds() <= fds0, 5), (fds(), fds0)
        grew = proc.memory_info().rss - rss0
        assert grew < 20 << 20, f"RSS grew {grew / 2**20:.1f} MB"
        assert app.stats["sessions_ended"] >= 1050


def test_large_messages_both_ways_on_the_loop(app):
    """12 MB each way: zero-copy writes in 512 KiB pieces out, reads assembled in."""
    got = []

    @app.add_handler("UP")
    def on_up(ev, session):
        got.append(len(ev.value))
        session.send(ServerEvent(etype="DOWN", data=b"y" * 12_000_000))

    app.start(block=False)
    ws = raw_client(app.port)
    ws.settimeout(20)
    from websocket import ABNF

    ws.send(codec.encode({"etype": "UP", "ts": 0, "value": b"z" * 12_000_000}),
            opcode=ABNF.OPCODE_BINARY)
    while True:
        op, data = ws.recv_data()
        msg = msgpack.unpackb(data, raw=False)
        if msg["etype"] == "DOWN":
            break
    assert got == [12_000_000] and len(msg["data"]) == 12_000_000
    ws.close()


def test_keepalive_and_close_handshake_on_the_loop(no_thread_leak):
    """The loop pings: a client that answers stays, one that never reads is closed with
    1011 after a missed ping; ``session.close`` sends its close frame."""
    with Vuer(port=0, ping_interval=0.3) as app:
        app.start(block=False)
        good = VuerClient(f"ws://127.0.0.1:{app.port}").connect()
        mute = handshake(app.port)  # never reads, never answers a ping
        assert wait_until(lambda: len(app.sessions) == 2)
        assert wait_until(lambda: len(app.sessions) == 1, 5), "the mute client is still there"
        time.sleep(0.7)  # two more ping intervals
        assert len(app.sessions) == 1 and app.sessions[0].connected
        code = None
        mute.settimeout(5)
        data = mute.recv(65536)
        if len(data) >= 4 and data[0] == 0x88:
            code = int.from_bytes(data[2:4], "big")
        elif data:  # pings first, then the close frame
            i = data.find(b"\x88")
            code = int.from_bytes(data[i + 2:i + 4], "big") if i >= 0 else None
        assert code == 1011, data[:40]
        mute.close()
        ws = raw_client(app.port)
        assert wait_until(lambda: len(app.sessions) == 2)
        newest = app.sessions[-1]
        newest.close(1000, "bye")
        assert recv_close_code(ws) == 1000
        assert wait_until(lambda: len(app.sessions) == 1, 5)
        ws.close()
        good.close()


def test_a_client_that_takes_nothing_for_send_timeout_is_dropped(no_thread_leak):
    with Vuer(port=0, send_timeout=1.0, ping_interval=None) as app:
        app.start(block=False)
        stalled = handshake(app.port)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert wait_until(lambda: len(app.sessions) == 1)
        session = app.sessions[0]
        blob = b"x" * 1_000_000
        for _ in range(20):  # far more than the socket buffers hold
            session.send(ServerEvent(etype="BLOB", data=blob))
        t0 = time.monotonic()
        assert wait_until(lambda: not session.connected, 10)
        took = time.monotonic() - t0
        assert 0.5 < took < 5, took
        dropped = app.stats["dropped"]
        assert sum(dropped.values()) > 0, dropped
        stalled.close()


def test_a_wake_up_keeps_the_gil():
    """The loop's wake-up write keeps the caller's GIL (``wake_writer``): a thread that
    wants the GIL does not get it during the write, as it would during ``socket.send``
    (the producer then waited for the woken loop's Python work on every broadcast)."""
    import socket
    import sys

    from vuer_sync._threads import wake_writer

    a, b = socket.socketpair()
    b.setblocking(False)
    wake = wake_writer(b)
    count = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin, daemon=True)
    interval = sys.getswitchinterval()
    t.start()
    try:
        while count[0] == 0:
            time.sleep(0.001)
        sys.setswitchinterval(0.5)  # from here this thread keeps the GIL unless it lets go
        before = count[0]
        wakes = 0
        while wakes < 200 and count[0] == before:  # with a send, the other thread takes
            wake()                                  # the GIL at one of the releases
            wakes += 1
        during = count[0] - before
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        t.join(5)
        got = a.recv(4096)
        a.close()
        b.close()
    assert got == b"\0" * wakes
    assert during == 0


def test_a_quiet_loop_trims_the_heap_once_after_traffic(monkeypatch):
    """After traffic, an I/O loop with nothing to do for ``IDLE_TRIM_AFTER`` hands the C
    heap's free memory back (glibc keeps a burst's buffers otherwise: row 8a's RSS stayed at
    its peak); once per quiet spell, and never while traffic keeps coming."""
    from vuer_sync import io_loop
    from vuer_sync.outbox import Outbox
    from vuer_sync.transport import WebSocketConnection
    from vuer_sync.transport.nonblocking import NonBlockingConnection

    monkeypatch.setattr(io_loop, "IDLE_TRIM_AFTER", 0.2)
    loop = io_loop.IoLoop("trim-test")
    a, b = socket.socketpair()
    box = Outbox(encode=bytes, decode=lambda p: {})
    ch = io_loop.LoopChannel(loop, NonBlockingConnection(a), box, on_message=lambda m: None)
    peer = WebSocketConnection(b, is_server=False)
    try:
        ch.start()
        assert wait_until(lambda: loop.trims == 1, 5)  # registering was traffic too
        for _ in range(50):
            box.push(b"x" * 1000)
        for _ in range(50):
            assert peer.receive() == b"x" * 1000
        assert wait_until(lambda: loop.trims == 2, 5)
        time.sleep(0.6)
        assert loop.trims == 2  # quiet since: no trim every 0.2 s
        for _ in range(10):  # a message every 50 ms for 0.5 s: never quiet for 0.2 s
            box.push(b"y")
            assert peer.receive() == b"y"
            time.sleep(0.05)
        assert loop.trims == 2
        assert wait_until(lambda: loop.trims == 3, 5)
    finally:
        box.close("test over")
        peer.close()
        ch.join(5)
        loop.stop()
        a.close()
        b.close()
