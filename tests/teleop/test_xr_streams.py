"""session.hands / session.controllers / app.hands over real sockets: a Python client sends
the recorded HAND_MOVE frames (the web client's bytes) at 90 Hz with lost-tracking gaps,
and CONTROLLER_MOVE, while a 50 Hz loop reads."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import msgpack
import numpy as np
import pytest

from vuer_sync.server.xr import XrStream
from vuer_sync.xr import parse_hands

from .wire import controller_move, controller_state, pack, wrist_pose
from conftest import wait_until
from helpers import raw_client

RECORDING = Path(__file__).resolve().parent / "hand_move.msgpack"
RIGHT_LOST = set(range(39, 45))  # frames of the recording without the right hand
LEFT_LOST_FROM = 24


def recorded_frames():
    data = RECORDING.read_bytes()
    u = msgpack.Unpacker(raw=False)
    u.feed(data)
    ends = []
    for _ in u:
        ends.append(u.tell())
    return [data[a:b] for a, b in zip([0, *ends[:-1]], ends)]


FRAMES = recorded_frames()


def send_at(ws, frames, hz, stop=None):
    """Send ``frames`` at ``hz`` on a schedule (no drift); returns the send times."""
    times = []
    t0 = time.perf_counter()
    for i, fr in enumerate(frames):
        delay = t0 + i / hz - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        times.append(time.time())
        ws.send_binary(fr)
    return times


def test_90hz_stream_read_by_a_50hz_loop(app):
    app.start(block=False)
    ws = raw_client(app.port, client="headset")
    s = app.wait_for_session(5)
    n = 120  # 1.33 s at 90 Hz: the recording twice over, gaps included
    frames = [FRAMES[i % len(FRAMES)] for i in range(n)]
    reads, app_reads, streamed = [], [], []
    done = threading.Event()

    def loop():  # a plain 50 Hz control loop: latest-value reads, never blocking
        while not done.is_set():
            r = s.hands.latest
            if r is not None:
                reads.append((r.seq, r.left is None, r.right is None, r.right))
            a = app.hands.latest
            if a is not None:
                app_reads.append(a.seq)
            time.sleep(0.02)

    def record():
        for sample in s.hands.stream(timeout=5):
            streamed.append(sample.seq)

    threads = [threading.Thread(target=loop), threading.Thread(target=record)]
    for t in threads:
        t.start()
    assert wait_until(lambda: s.hands.stats is not None and len(s.hands._queues) == 1)
    send_at(ws, frames, 90)
    ws.send_binary(pack(controller_move(time.time(), None, wrist_pose(0.2),
                                        right_state=controller_state(trigger=1.0))))
    assert wait_until(lambda: s.hands.seq == n and s.controllers.seq == 1, 5)
    done.set()
    ws.close()
    for t in threads:
        t.join(10)
        assert not t.is_alive()

    st = s.hands.stats
    assert st["received"] == n and st["malformed"] == 0
    assert st["right_missing"] == sum(1 for i in range(n) if i % 60 in RIGHT_LOST)
    assert st["left_missing"] == sum(1 for i in range(n) if i % 60 >= LEFT_LOST_FROM)
    # the loop read about 50 of 90 per second: the rest were replaced unread, and counted
    distinct = {r[0] for r in reads}
    assert st["replaced_unread"] > n // 4
    assert n - len(distinct) - 1 <= st["replaced_unread"] <= n - len(distinct)
    # "not tracked" is explicit: a read during a gap is None, never the last pose seen
    for seq, left_none, right_none, right in reads:
        i = (seq - 1) % 60
        assert right_none == (i in RIGHT_LOST) and left_none == (i >= LEFT_LOST_FROM)
        if right is not None:
            assert right.shape == (25, 4, 4) and right.dtype == np.float32
    assert any(r[2] for r in reads), "the loop never saw the right hand's gap"
    assert [r[0] for r in reads] == sorted(r[0] for r in reads)
    assert streamed == list(range(1, n + 1))  # stream(): every sample, in order
    assert app.hands.stats["received"] == n and app_reads == sorted(app_reads)
    c = s.controllers.latest
    assert c.left is None and c.right.shape == (4, 4) and c.right_state.trigger
    assert app.controllers.latest.right_state.trigger_value == 1.0


def test_wait_update_wakes_on_the_next_sample_and_on_disconnect(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    assert s.hands.latest is None and s.hands.wait_update(timeout=0.01) is None
    timer = threading.Timer(0.05, ws.send_binary, args=(FRAMES[0],))
    t0 = time.monotonic()
    timer.start()
    got = s.hands.wait_update(timeout=10)
    waited = time.monotonic() - t0
    timer.join()
    assert got is not None and got.seq == 1 and got.right is not None
    assert waited < 5, waited  # woken by the sample, not by the 10 s timeout
    assert s.hands.wait_update(timeout=0.01) is None  # nothing newer
    assert s.hands.wait_update(timeout=0.01, after=0) is got  # newer than seq 0: at once
    assert app.hands.latest.seq == 1

    ended = []

    def waiter():
        t = time.monotonic()
        ended.append((s.hands.wait_update(timeout=20), time.monotonic() - t))

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    ws.close()
    t.join(10)
    assert ended and ended[0][0] is None and ended[0][1] < 10  # the disconnect woke it
    assert s.hands.closed and list(s.hands.stream(timeout=5)) == []


def test_memory_does_not_grow_with_an_unread_stream(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    unread = s.hands.stream(maxlen=16)  # a recorder that stopped reading
    next_sample = []
    t = threading.Thread(target=lambda: next_sample.append(next(unread)))
    t.start()
    assert wait_until(lambda: len(s.hands._queues) == 1)

    def burst(count, start):
        for i in range(count):
            ws.send_binary(FRAMES[(start + i) % 60])
        assert wait_until(lambda: s.hands.seq == start + count, 10)

    burst(300, 0)  # warm up: the session's event buffer (queue_len) is full from here on
    tracemalloc.start()
    try:
        burst(300, 300)
        mid = tracemalloc.get_traced_memory()[0]
        burst(600, 600)
        end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    t.join(5)
    ws.close()
    # one HAND_MOVE is ~30 KB of Python objects: keeping 600 more would be ~18 MB
    assert end - mid < 1_000_000, (mid, end)
    st = s.hands.stats
    assert st["received"] == 1200
    assert st["replaced_unread"] >= 1150  # nobody read latest: replaced, counted, freed
    assert st["stream_dropped"] >= 1200 - 16 - 1 - 1  # the stopped recorder's queue: 16
    unread.close()


def test_publish_is_keep_latest():
    hands = XrStream("HAND_MOVE", parse_hands)
    for _ in range(1000):
        hands.publish(parse_hands({"right": [1.0] * 400}, seq=0, ts=0.0))
    assert hands.seq == 1000 and hands.stats["replaced_unread"] == 999
    assert hands.latest.seq == 1000  # (the read's cost: benchmarks/bench_teleop.py)
    hands.publish(parse_hands({"left": [1.0] * 400}, seq=0, ts=0.0))
    assert hands.stats["replaced_unread"] == 999  # the one read is not counted
    # a sample that came while the loop was busy: wait_update returns it at once
    assert hands.wait_update(timeout=0).seq == 1001
    assert hands.wait_update(timeout=0.01) is None  # read: now it waits for the next
    hands.close()
    assert hands.wait_update(timeout=5) is None  # closed: at once, not after 5 s


@pytest.mark.parametrize("value", [{"right": [0.0] * 16}, "nope"])
def test_malformed_messages_are_counted_not_published(app, value):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    ws.send_binary(pack({"ts": 1.0, "etype": "HAND_MOVE", "key": "hands", "value": value}))
    ws.send_binary(FRAMES[0])
    assert wait_until(lambda: s.hands.seq == 1)
    assert s.hands.stats["malformed"] == 1 and s.hands.latest.right is not None
    ws.close()
