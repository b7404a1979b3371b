"""Broadcasts on the shared I/O threads (``app.scene`` to many viewers) and what a session
leaves behind once its client is gone (issue 20: worst viewer's share, churn memory)."""

from __future__ import annotations

import gc
import resource
import socket
import threading
import time
import weakref

from vuer_sync import Vuer

from conftest import wait_until
from helpers import raw_client, recv_msg


def _loops(app: Vuer):
    return app.connections.io.loops


def _clients(app: Vuer, n: int):
    socks = [raw_client(app.port) for _ in range(n)]
    assert wait_until(lambda: len([s for s in app.sessions if s.init is not None]) == n, 10)
    return socks


def _clients_with_a_box(app: Vuer, n: int):
    """``n`` clients that all received the box ``b`` at the origin (``app.scene``)."""
    app.start(block=False)
    socks = _clients(app, n)
    app.scene.upsert @ {"tag": "Box", "key": "b", "position": [0, 0, 0]}
    app.scene.flush(10)
    for s in socks:
        assert recv_msg(s)["etype"] == "UPSERT"
    return socks


def test_a_broadcast_reaches_idle_sessions_in_one_loop_pass(app):
    """An update of ``app.scene`` to idle clients is written by their I/O loop in one pass:
    no session is put on the loop's ready list (one schedule and one wake-up each, before),
    and every client gets it."""
    socks = _clients_with_a_box(app, 40)
    try:
        (loop,) = _loops(app)
        calls = []
        plain = loop.schedule
        loop.schedule = lambda ch: (calls.append(ch), plain(ch))  # counted, then as usual
        try:
            for i in range(3):
                app.scene.update @ {"tag": "Box", "key": "b", "position": [i, 0, 0]}
                app.scene.flush(10)
        finally:
            del loop.schedule
        assert calls == []
        for s in socks:
            got = [recv_msg(s)["data"]["nodes"][0]["position"] for _ in range(3)]
            assert got == [[0, 0, 0], [1, 0, 0], [2, 0, 0]]
        assert app.stats["coalesced"] == 0
    finally:
        for s in socks:
            s.close()


def _held_loop_updates(app: Vuer, xs, n_clients: int = 3, pace: float = 0.0):
    """Each of 3 clients' messages after the loop was held busy while ``app.scene`` sent
    ``[1, 0, 0]``, then each session its own ``own`` node, then ``[x, 0, 0]`` for ``xs``
    (``pace`` seconds apart)."""
    socks = _clients_with_a_box(app, n_clients)
    try:
        (loop,) = _loops(app)
        busy, release = threading.Event(), threading.Event()
        loop.call_soon(lambda: (busy.set(), release.wait(10)))  # the loop is held here
        assert busy.wait(5)
        try:
            app.scene.update @ {"tag": "Box", "key": "b", "position": [1, 0, 0]}
            for session in app.sessions:
                session.upsert @ {"tag": "Sphere", "key": "own"}
            for x in xs:
                time.sleep(pace)
                app.scene.update @ {"tag": "Box", "key": "b", "position": [x, 0, 0]}
        finally:
            release.set()
        app.scene.flush(10)
        out = []
        for s in socks:
            got = []
            while len(got) < 2 or got[-1] != [xs[-1], 0, 0]:
                node = recv_msg(s)["data"]["nodes"][0]
                got.append(node.get("position", node["key"]))
            out.append(got)
        return out
    finally:
        for s in socks:
            s.close()


def test_a_short_backlog_loses_no_update_and_keeps_order(app):
    """While the loop is busy, a broadcast already handed to it is not merged with the next
    one (it is being written, as a batch taken by the loop); a session's own message between
    two broadcasts stays between them; a backlog of up to ``coalesce_after`` (3) frames is
    sent as it is: a pause of the loop (the garbage collector, a burst) costs no update."""
    for got in _held_loop_updates(app, (2, 3, 4)):
        assert got == [[1, 0, 0], "own", [2, 0, 0], [3, 0, 0], [4, 0, 0]]
    assert app.stats["coalesced"] == 0


def test_a_late_loop_loses_no_update_while_its_clients_keep_reading():
    """Updates at a viewer's pace (10 ms apart here, 30 Hz in row 10) that wait because the
    I/O loop was late (held busy here; a GC pause or a busy core in real life) while the
    clients' sockets take bytes are all sent, past ``coalesce_after`` too, with either
    setting: the client is not behind, the server is."""
    for after in (3, 0):
        app = Vuer(port=0, coalesce_after=after)
        try:
            got = _held_loop_updates(app, range(2, 10), pace=0.01)
            for g in got:
                assert g == [[1, 0, 0], "own", *([x, 0, 0] for x in range(2, 10))], after
            assert app.stats["coalesced"] == 0, after
            assert all(s.stats["socket_full"] is False for s in app.sessions)
        finally:
            app.stop()


def test_a_burst_behind_a_late_loop_gets_the_newest_values():
    """A tight loop of updates (faster than one per 5 ms) while the loop is late: past
    ``coalesce_after`` queued frames they merge into the newest queued one (latest value
    wins; with ``coalesce_after=0`` at once), free sockets or not: no display could show
    them, and the loop writes a few frames instead of every one."""
    for after, want, merged in ((3, [2, 3, 9], 5), (0, [9], 7)):
        app = Vuer(port=0, coalesce_after=after)
        try:
            got = _held_loop_updates(app, range(2, 10))
            for g in got:
                assert g == [[1, 0, 0], "own", *([x, 0, 0] for x in want)], after
            assert app.stats["coalesced"] == merged * len(got), after
        finally:
            app.stop()


def test_a_client_that_stays_behind_gets_the_newest_values():
    """A client whose socket is full (it does not read) is behind: newer updates merge into
    the newest queued one (latest value wins; at once here with either ``coalesce_after``,
    since the 8 MB still being written are past the 64 KiB slack; the frame count alone is
    tested in test_outbox.py), while a reading client next to it receives every update; once
    the slow one reads again its socket is reported free."""
    for after in (3, 0):
        app = Vuer(port=0, coalesce_after=after)
        try:
            _one_fast_one_stalled(app)
        finally:
            app.stop()


def _one_fast_one_stalled(app: Vuer) -> None:
    small = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
    fast = slow = None
    try:
        app.start(block=False)
        fast = raw_client(app.port)
        assert wait_until(lambda: len([s for s in app.sessions if s.init]) == 1, 10)
        (s_fast,) = app.sessions
        slow = raw_client(app.port, sockopt=small)
        assert wait_until(lambda: len([s for s in app.sessions if s.init]) == 2, 10)
        (s_slow,) = [s for s in app.sessions if s is not s_fast]
        s_slow.upsert @ {"tag": "Box", "key": "big", "blob": "x" * (8 << 20)}
        assert wait_until(lambda: s_slow.stats["socket_full"] is True, 10), s_slow.stats
        assert s_fast.stats["socket_full"] is False
        for x in range(2, 10):  # at a viewer's pace: the fast client gets each one
            time.sleep(0.01)
            app.scene.update @ {"tag": "Box", "key": "b", "position": [x, 0, 0]}
        assert [recv_msg(fast)["data"]["nodes"][0]["position"][0] for _ in range(8)] \
            == list(range(2, 10))
        assert s_fast.stats["coalesced"] == 0
        assert s_slow.stats["coalesced"] == 7
        slow.settimeout(30)
        assert recv_msg(slow)["data"]["nodes"][0]["key"] == "big"
        assert recv_msg(slow)["data"]["nodes"][0]["position"][0] == 9
        assert wait_until(lambda: s_slow.stats["socket_full"] is False, 10)
    finally:
        for ws in (fast, slow):
            if ws is not None:
                ws.close()


def test_sessions_are_freed_as_soon_as_their_clients_leave(app):
    """Once clients have gone and the server ended their sessions, nothing holds them: not
    the I/O loop's last round (its locals, while it sleeps) nor its timer heap (until the
    next keepalive ping is due). Counted with weak references, not RSS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    app.start(block=False)
    socks = _clients(app, 150)
    alive = weakref.WeakSet(app.sessions)
    channels = weakref.WeakSet(s.core.channel for s in app.sessions)
    assert len(alive) == 150
    for s in socks:
        s.sock.close()  # all at once: one round of the loop sees them all end
    assert wait_until(lambda: app.stats.get("sessions_ended") == 150, 10), app.stats

    def freed() -> bool:
        gc.collect()
        return not alive and not channels

    assert wait_until(freed, 5, interval=0.1), (len(alive), len(channels))


def test_release_memory_drops_names_held_by_the_type_cache():
    """Each handshake looks up a new string (``http.server``: ``"do_" + command``); CPython's
    type attribute cache keeps a reference to it, which pinned allocator arenas after a
    burst of connections. ``release_memory`` (run after bursts of closes) clears that cache."""
    import sys

    from vuer_sync._threads import release_memory

    class Handler:
        def do_GET(self) -> None:
            pass

    name = "".join(["do_", "GET"])  # a new string each time, as per request
    before = sys.getrefcount(name)
    assert getattr(Handler, name) is not None
    held = sys.getrefcount(name) - before
    assert held >= 1, "the type cache no longer keeps looked-up names: this test is moot"
    release_memory()
    assert sys.getrefcount(name) - before < held
