"""Faults, load and bad input: each bounded in time; nothing lost, nobody else harmed."""

from __future__ import annotations

import gc
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import msgpack
import pytest
import websocket

from vuer_sync import Vuer, VuerClient, codec
from vuer_sync.events import ClientEvent, ServerEvent, ServerRPC
from vuer_sync.transport.frames import encode_header, mask_bytes

from conftest import IN_CI, our_threads, wait_until
from helpers import raw_client, recv_msg


class Hello(ClientEvent):
    etype = "HELLO"


class Ping(ServerRPC):
    etype = "PING"


@pytest.fixture
def excepthook():
    """Collect exceptions that escape any thread during the test."""
    seen = []
    old = threading.excepthook
    threading.excepthook = seen.append
    yield seen
    threading.excepthook = old


def healthy(app):
    """A fresh client can still connect, send and be answered."""
    got = []
    remove = app.add_handler("HELLO", lambda ev, s: got.append(ev.value))
    with VuerClient(f"ws://127.0.0.1:{app.port}") as c:
        c.send(Hello(value="ping"), timeout=5)
        ok = wait_until(lambda: "ping" in got, 5)
    remove()
    return ok


KILLED_UPLOADER = textwrap.dedent('''
    import os, socket, sys, time, base64
    sys.path.insert(0, sys.argv[2])
    from vuer_sync.transport.frames import encode_header, mask_bytes
    import websocket
    ws = websocket.create_connection("ws://127.0.0.1:%s/" % sys.argv[1])
    ws.send_binary(b"\\x82\\xa5etype\\xa4INIT\\xa5value\\x80")
    key = os.urandom(4)
    payload = os.urandom(12 << 20)
    ws.sock.sendall(bytes(encode_header(len(payload), 2, mask_key=key)))
    ws.sock.sendall(mask_bytes(payload[: 6 << 20], key))
    print("half-sent", flush=True)
    time.sleep(60)
''')


def test_client_killed_in_the_middle_of_a_12mb_upload(app, excepthook):
    app.start(block=False)
    other = raw_client(app.port)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_UPLOADER, str(app.port), os.getcwd()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"half-sent"
        assert wait_until(lambda: len(app.sessions) == 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: len(app.sessions) == 1, 5)
        app.scene.upsert @ {"key": "still", "tag": "Box"}
        assert recv_msg(other)["data"]["nodes"][0]["key"] == "still"
        assert healthy(app) and not excepthook
    finally:
        proc.kill()
        other.close()


KILLED_READER = textwrap.dedent('''
    import sys, websocket
    ws = websocket.create_connection("ws://127.0.0.1:%s/" % sys.argv[1])
    ws.send_binary(b"\\x82\\xa5etype\\xa4INIT\\xa5value\\x80")
    ws.sock.recv(65536)   # the first bytes of the 12 MB message, then wait to be killed
    print("reading", flush=True)
    import time; time.sleep(60)
''')


def test_client_killed_while_receiving_12mb(app, excepthook):
    @app.spawn
    def main(session):
        session.send(ServerEvent(b"\x00" * (12 << 20), etype="BIG"))
        session.forever()

    app.start(block=False)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_READER, str(app.port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"reading"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not app.sessions, 5)
        assert healthy(app) and not excepthook
        assert app.stats["dropped"]  # the unsent frame is accounted for, not lost silently
    finally:
        proc.kill()


def test_half_open_connection_is_closed_by_keepalive(excepthook, no_thread_leak):
    with Vuer(port=0, ping_interval=0.2) as app:
        silent = websocket.create_connection(f"ws://127.0.0.1:{app.port}/")  # never reads
        assert wait_until(lambda: len(app.sessions) == 1)
        t0 = time.monotonic()
        assert wait_until(lambda: not app.sessions, 5)
        assert time.monotonic() - t0 < 2.0
        with VuerClient(f"ws://127.0.0.1:{app.port}", ping_interval=0.2) as c:  # answers pings
            time.sleep(1.0)
            assert c.connected and len(app.sessions) == 1
        silent.close()
    assert not excepthook


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_churn_200_clients_five_rounds_no_growth(app):
    app.spawn(lambda s: s.forever())
    app.start(block=False)
    samples = []
    for _ in range(5):
        clients = [raw_client(app.port) for _ in range(200)]
        assert wait_until(lambda: len(app.sessions) == 200, 20)
        for c in clients:
            c.close()
        assert wait_until(lambda: not app.sessions, 20)
        wait_until(lambda: len([t for t in our_threads() if t.name.startswith(
            ("vuer-sender", "vuer-spawn", "vuer-handlers"))]) == 0, 10)
        gc.collect()
        samples.append((threading.active_count(), _fds(), _rss_mb()))
    threads, fds, rss = zip(*samples)
    assert max(threads) - min(threads) <= 2, samples
    assert max(fds) - min(fds) <= 4, samples
    # the first round warms the allocator up (thread stacks, malloc arenas); after it, RSS
    # must stay flat (measured here: +1 MB per round, flattening out)
    assert rss[-1] - rss[1] < 10, samples
    assert app.stats["sessions_ended"] == 1000


def test_soak_updates_rpcs_and_large_messages(app, excepthook):
    seconds = float(os.environ.get("VUER_SYNC_SOAK_SECONDS") or (60 if IN_CI else 8))
    app.start(block=False)
    c = VuerClient(f"ws://127.0.0.1:{app.port}")
    c.respond("PING", lambda req: req.data)
    c.connect()
    s = app.wait_for_session(5)
    received = []
    done = threading.Event()

    def reader():
        for ev in c:
            received.append(ev)
            if ev.etype == "END":
                break
        done.set()

    r = threading.Thread(target=reader)
    r.start()
    t_end = time.monotonic() + seconds
    n = rpcs = bigs = 0
    next_big = time.monotonic() + 1
    while time.monotonic() < t_end:
        tick = time.monotonic()
        s.update @ {"key": "arm", "q": [n, n + 1, n + 2]}
        n += 1
        if n % 100 == 0:
            assert s.rpc(Ping({"n": n}), ttl=5).value == {"n": n}
            rpcs += 1
        if tick >= next_big:
            s.send(ServerEvent({"seq": bigs, "blob": b"\x01" * (2 << 20)}, etype="BIG"))
            bigs += 1
            next_big += 1
        wait = 0.001 - (time.monotonic() - tick)
        if wait > 0:
            time.sleep(wait)
    s.send(ServerEvent(None, etype="END"))
    assert done.wait(30)
    c.close()
    r.join(5)
    big_seqs = [ev.data["seq"] for ev in received if ev.etype == "BIG"]
    assert big_seqs == list(range(bigs))  # every non-coalescible message, in order
    qs = [ev.data["nodes"][0]["q"][0] for ev in received if ev.etype == "UPDATE"]
    assert qs == sorted(qs) and qs[-1] == n - 1  # updates in order, the latest delivered
    st = s.stats
    assert st["queued"] == n + bigs + rpcs + 1
    assert st["sent"] + st["coalesced"] == st["queued"] and not st["dropped"]
    assert rpcs >= seconds * 5 and not excepthook


def _fuzz_frames(rng, count):
    valid = [codec.encode({"etype": e, "value": v, "key": k}) for e, v, k in [
        ("HELLO", 1, "a"), ("CAMERA_MOVE", {"camera": {"position": [0, 1, 2]}}, "defaultCamera"),
        ("CLICK", None, "b"), ("INIT", {"client": "x"}, None), ("UPLOAD", "x" * 40, None)]]
    for _ in range(count):
        kind = rng.random()
        if kind < 0.3:
            yield rng.randbytes(rng.randint(0, 64))
        elif kind < 0.8:
            b = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                if not b:
                    break
                op = rng.random()
                i = rng.randrange(len(b))
                if op < 0.5:
                    b[i] = rng.randrange(256)
                elif op < 0.75:
                    del b[i:]
                else:
                    b[i:i] = rng.randbytes(rng.randint(1, 8))
            yield bytes(b)
        else:
            v = rng.choice([[1, 2], {"etype": rng.randint(0, 5)}, {"etype": "X", "ts": "bad"},
                            {"etype": "HELLO", "ts": float("nan"), "value": {"n": None}},
                            {"etype": "CAMERA_MOVE", "value": [1, 2]},
                            {"etype": "CAMERA_MOVE", "value": {"camera": {"position": "x"}}},
                            {"etype": "GRAB_RENDER_RESPONSE@none", "value": b"\x00"},
                            {"etype": "", "value": 1}, "str", 5, None])
            yield msgpack.packb(v)


def test_fuzz_100k_inbound_frames(excepthook, no_thread_leak):
    count = int(os.environ.get("VUER_SYNC_FUZZ_COUNT") or 100_000)
    rng = random.Random(1234)
    handled = []
    with Vuer(port=0) as app:
        app.add_handler("HELLO", lambda ev, s: handled.append(ev.value))
        app.add_handler("CAMERA_MOVE", lambda ev, s: s.camera.position)
        bystander = raw_client(app.port)
        fuzzer = raw_client(app.port)
        wait_until(lambda: len(app.sessions) == 2)
        sent = 0
        for frame in _fuzz_frames(rng, count):
            fuzzer.send_binary(frame)
            sent += 1
        fuzzer.send_binary(codec.encode({"etype": "HELLO", "value": "after-fuzz"}))
        assert wait_until(lambda: "after-fuzz" in handled, 30)
        fs = [s for s in app.sessions if s.stats["received"] > 100][0]
        assert fs.stats["received"] == sent + 2  # INIT + the fuzz + the final HELLO
        assert fs.stats["bad_messages"] > count // 4
        app.scene.upsert @ {"key": "ok"}
        assert recv_msg(bystander)["data"]["nodes"][0]["key"] == "ok"  # unharmed
        assert healthy(app)
        fuzzer.close()
        bystander.close()
    assert not excepthook


def _handshake(port, key=b"dGhlIHNhbXBsZSBub25jZQ=="):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
              b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def _close_code(s):
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        i = data.find(b"\x88")
        if i >= 0 and len(data) >= i + 4:
            return int.from_bytes(data[i + 2:i + 4], "big")
    return None


@pytest.mark.parametrize("name,frame,code", [
    ("unmasked client frame", bytes(encode_header(3, 2)) + b"abc", 1002),
    ("reserved opcode", bytes(encode_header(3, 3, mask_key=b"abcd")) + mask_bytes(b"abc",
                                                                                  b"abcd"), 1002),
    ("rsv bits", bytes([0xF2, 0x83]) + b"abcd" + mask_bytes(b"abc", b"abcd"), 1002),
    ("long control frame", bytes(encode_header(200, 9, mask_key=b"abcd")) + b"\0" * 200, 1002),
    ("continuation first", bytes(encode_header(3, 0, mask_key=b"abcd")) + b"\0" * 3, 1002),
    ("bad utf-8 text", bytes(encode_header(2, 1, mask_key=b"abcd")) + mask_bytes(b"\xff\xfe",
                                                                                 b"abcd"), 1007),
])
def test_garbage_below_the_websocket_layer(app, name, frame, code):
    app.start(block=False)
    s, head = _handshake(app.port)
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(frame)
    assert _close_code(s) == code, name
    s.close()
    assert wait_until(lambda: not app.sessions, 5)
    assert healthy(app)


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: !!\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,   # TLS hello to plain HTTP
    b"GARBAGE\r\n\r\n",
    b"\x00" * 5000,
], ids=["no-key", "bad-key", "tls-hello", "garbage-line", "zeros"])
def test_bad_handshakes_do_not_hurt_the_server(app, request_bytes):
    app.start(block=False)
    s = socket.create_connection(("127.0.0.1", app.port), timeout=1)
    s.sendall(request_bytes)
    try:
        reply = s.recv(4096)
    except OSError:
        reply = b""
    s.close()
    assert not reply.startswith(b"HTTP/1.1 101")
    if request_bytes.startswith(b"GET"):
        assert reply.startswith(b"HTTP/1.1 400")  # a clear refusal, not a server error
    assert healthy(app)


def test_over_budget_client_is_cut_at_once_and_logged_once(caplog, excepthook):
    import logging

    caplog.set_level(logging.WARNING, logger="vuer_sync")
    with Vuer(port=0, outbox_bytes=4 << 20, outbox_timeout=0.2) as app:
        stalled = raw_client(app.port, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        assert wait_until(lambda: len(app.sessions) == 1)
        s = app.sessions[0]
        from vuer_sync import SessionClosed

        with pytest.raises(SessionClosed):
            for _ in range(200):
                s.send(ServerEvent(b"\x00" * (1 << 20), etype="BIG"))
        for i in range(1000):
            app.scene.update @ {"key": "n", "i": i}
        assert wait_until(lambda: not app.sessions, 3)  # not after the 60 s send timeout
        drops = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drops) == 1
        stalled.close()
        assert healthy(app)
    assert not excepthook


def test_handler_replying_after_its_client_left_is_not_an_error(app, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="vuer_sync")
    done = threading.Event()

    @app.add_handler("HELLO")
    def slow_reply(ev, session):
        session.wait_closed(5)  # the client is gone by now
        try:
            session.upsert @ {"key": "reply"}
        finally:
            done.set()

    app.start(block=False)
    ws = raw_client(app.port)
    ws.send_binary(codec.encode({"etype": "HELLO", "value": 1}))
    ws.close()
    assert done.wait(5)
    time.sleep(0.05)  # let the worker finish logging
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
