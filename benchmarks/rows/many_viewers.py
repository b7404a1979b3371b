"""Rows 9-11 (issue 20): many viewers on one server process.

9. idle viewers (1000): threads and RSS they add, idle CPU, and what is left after they leave;
10. a 30 Hz broadcast to 1000 viewers: the worst viewer's share, server CPU;
11. 5000 connected viewers: how long a new client waits for its first message.

The viewers are raw peers (``common.open_peers``: handshakes side by side on one selectors
loop; ``common.MultiReader``: one thread drains them all), so the client side stays cheap.
``run.py`` runs these rows on one server per implementation, in this order, and once more on
vuer_sync with ``io_threads=0`` (two threads per connection, the model before issue 20): its
numbers are the metrics marked ``[io_threads=0]``.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Dict, List, Tuple

from common import (
    Agent,
    FrameCounter,
    MultiReader,
    RawPeer,
    close_all,
    open_peers,
    peer_kw,
    percentile,
    raise_nofile,
    row_logger,
)

from .spec import row, variant

#: the vuer_sync variant these rows run too: options of ``Vuer(...)``, suffix, label
IO0 = ({"io_threads": 0}, "_io0", "io_threads=0")
_CPU_FLOOR = {"idle_cpu_pct": 0.5}

ROW_9 = variant(row(
    "9", "Many idle viewers",
    measures="""
        N viewers (1000; smoke: 50) connect (raw peers that send INIT; viser: its subprotocol,
        no INIT) and stay idle, drained by one client thread; once the server counts them all:
        the server process's threads and RSS added (psutil, against the same process before
        they connected), its CPU over a few seconds idle (psutil's resolution is 10 ms of CPU:
        ratios count anything below 0.5% as 0.5%), then, once all have disconnected and the
        server has ended their sessions and its threads are back to the baseline (at most 8 s
        more: vuer_sync's handler pool ends idle threads after 5 s), the RSS still held above
        the baseline and the threads left. `[io_threads=0]`: vuer_sync with two threads per
        connection (before issue 20), same run.
    """,
    table="""
        viewers           | viewers the server counted      | -           | -
        threads_added     | threads added                   | threads     | lower
        rss_per_viewer_KB | RSS per viewer                  | KB          | lower
        idle_cpu_pct      | idle CPU                        | % of a core | lower
        rss_held_MB       | RSS still held after they left  | MB          | lower
        threads_left      | threads left after they left    | threads     | lower
    """, floor=dict(_CPU_FLOOR, rss_held_MB=1.0, threads_added=1, threads_left=1)), IO0[1], IO0[2],
    names=("threads_added", "rss_per_viewer_KB", "idle_cpu_pct", "rss_held_MB",
           "threads_left"))

ROW_10 = variant(row(
    "10", "Broadcast 30 Hz to many viewers",
    measures="""
        N draining viewers (1000; smoke: 50); the server broadcasts one pose update at 30 Hz
        for a few seconds (as row 6: vuer_sync `app.scene.update @ Box`; vuer `session.upsert
        @ Box` for every session; viser a box's `.position =`). The share of the updates the
        worst viewer received, of the 30 per second asked for (counted up to 3 s after the
        last tick, until every viewer has them all or none gets more for 0.3 s); the ticks the
        producer managed (its calls can block: a server that cannot keep up slows it down);
        server CPU over the broadcast.
    """,
    table="""
        viewers           | viewers the server counted           | -           | -
        delivered_min_pct | updates received by the worst viewer | %           | higher
        ticks_pct         | producer ticks made, of 30 Hz        | %           | higher
        cpu_pct           | server CPU                           | % of a core | lower
    """), IO0[1], IO0[2], names=("delivered_min_pct", "ticks_pct", "cpu_pct"))

ROW_11 = variant(row(
    "11", "Many connected viewers: a new client's wait",
    measures="""
        N idle, drained viewers (5000; smoke: 100; both processes raise their open-file limit
        with `setrlimit`; vuer_sync gets `max_connections` above N), then up to 30 new clients
        one after another: each connects, upgrades, sends INIT (viser: no INIT), and the time
        from the start of its TCP connect to its first data message from the server is
        recorded (so it bounds INIT -> first message from above; a client that gets nothing
        within 5 s counts as 5 s). What the server sends: vuer_sync its non-empty shared scene
        (`app.scene`, one `SET` on connect); Vuer 0.1.6 a `session.upsert @ Box` from its
        spawned handler, which it starts on INIT; viser its scene state (one box and its
        defaults), replayed to each client on connect. Also the time to connect the N.
    """,
    table="""
        viewers    | viewers the server counted       | -  | -
        connect_s  | time to connect them all         | s  | lower
        p50_ms     | new client: first message, p50   | ms | lower
        p99_ms     | new client: first message, p99   | ms | lower
    """), IO0[1], IO0[2], names=("connect_s", "p50_ms", "p99_ms"))

ROWS = (ROW_9, ROW_10, ROW_11)


# -- helpers ---------------------------------------------------------------------------------


def _connect(agent: Agent, impl: str, n: int, timeout: float
             ) -> Tuple[List[RawPeer], Dict[str, Any], int]:
    """``n`` viewers, and the number the server counts once it has them (bounded waits)."""
    peers, info = open_peers(agent.port, n, timeout=timeout, **peer_kw(impl))
    try:
        got = agent.call("wait_clients", n=len(peers), wait=60, timeout=60 + 30)
    except Exception:
        close_all(peers)
        raise
    info["clients"] = got.get("clients")
    counted = got["clients"] if isinstance(got.get("clients"), int) and got["clients"] >= 0 \
        else len(peers)
    if len(peers) < n:
        row_logger.warning("%s: %d of %d viewers connected (%s)", impl, len(peers), n, info)
    return peers, info, counted


def _hang_up(agent: Agent, peers: List[RawPeer], mr: Any) -> Dict[str, Any]:
    """Stop draining, close every viewer, wait (bounded) until the server has none."""
    if mr is not None:
        mr.stop()
    close_all(peers)
    try:
        return agent.call("wait_clients", n=0, wait=60, timeout=60 + 30)
    except Exception as e:
        row_logger.warning("%s: sessions did not end: %r", agent.impl, e)
        return {"error": repr(e)}


def _threads(agent: Agent) -> int:
    return agent.ps.num_threads()


def first_message(port: int, impl: str, timeout: float) -> Tuple[float, float]:
    """One new client: connect, upgrade, INIT (not for viser), read until its first data
    message. Returns (connect -> first message, INIT sent -> first message) in seconds;
    ``timeout`` for both if nothing came (or the handshake failed) within ``timeout``."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    try:
        peer = RawPeer(port, timeout=timeout, **peer_kw(impl))
    except (OSError, ConnectionError):
        return timeout, timeout
    t_init = time.perf_counter()
    try:
        c = FrameCounter()
        if peer.leftover:
            c.feed(memoryview(peer.leftover))
        buf = bytearray(1 << 16)
        while not c.messages and not c.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return timeout, timeout
            peer.sock.settimeout(left)
            try:
                n = peer.sock.recv_into(buf)
            except socket.timeout:
                continue
            if not n:
                return timeout, timeout
            c.feed(memoryview(buf)[:n])
        if not c.messages:
            return timeout, timeout
        t1 = time.perf_counter()
        return t1 - t0, max(0.0, t1 - t_init)
    except OSError:
        return timeout, timeout
    finally:
        peer.close()


# -- the rows --------------------------------------------------------------------------------


def run_idle(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    """Row 9 (on a server no viewer has connected to yet)."""
    n, settle = P["many_idle"], P["many_settle_s"]
    raise_nofile(n + 1024)
    time.sleep(settle)
    th0, rss0 = _threads(agent), agent.rss_mb()
    peers, info, counted = _connect(agent, impl, n, P["many_connect_s"])
    mr = None
    try:
        mr = MultiReader(peers)
        time.sleep(settle)
        th1, rss1 = _threads(agent), agent.rss_mb()
        cpu0, t0 = agent.cpu_s(), time.monotonic()
        time.sleep(P["idle_s"])
        cpu1, t1 = agent.cpu_s(), time.monotonic()
        th1 = max(th1, _threads(agent))
    finally:
        gone = _hang_up(agent, peers, mr)
    # threads that end when idle (vuer_sync's handler pool: after 5 s) get the time to end
    time.sleep(settle)
    t_rel = time.monotonic()
    while _threads(agent) > th0 and time.monotonic() - t_rel < P["many_release_s"]:
        time.sleep(0.1)
    th2, rss2 = _threads(agent), agent.rss_mb()
    return {"values": {"viewers": counted, "threads_added": th1 - th0,
                       "rss_per_viewer_KB": (rss1 - rss0) * 1024 / max(1, len(peers)),
                       "idle_cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
                       "rss_held_MB": rss2 - rss0, "threads_left": th2 - th0},
            "raw": {"connect": info, "after": gone, "threads": [th0, th1, th2],
                    "released_after_s": settle + time.monotonic() - t_rel,
                    "rss_MB": [rss0, rss1, rss2]}}


def run_broadcast(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    """Row 10."""
    n, hz, dur = P["many_bcast"], 30.0, P["many_bcast_s"]
    raise_nofile(n + 1024)
    peers, info, counted = _connect(agent, impl, n, P["many_connect_s"])
    mr = None
    try:
        mr = MultiReader(peers)
        time.sleep(P["many_settle_s"])
        base = [p.counter.messages for p in peers]
        th = _threads(agent)
        cpu0, t0, me0 = agent.cpu_s(), time.monotonic(), time.process_time()
        r = agent.call("broadcast", hz=hz, duration=dur, timeout=dur + 120)
        cpu1, t1, me1 = agent.cpu_s(), time.monotonic(), time.process_time()
        asked = round(hz * dur)
        ticks = max(1, r["ticks"], asked)  # per viewer: every tick asked for
        # the last updates still in flight: until the worst viewer has them all, or nothing
        # moves for 0.3 s (at most 3 s)
        end = time.monotonic() + 3.0
        last, still = -1, time.monotonic()
        while time.monotonic() < end:
            got = [p.counter.messages - b for p, b in zip(peers, base)]
            total = sum(got)
            if min(got) >= ticks:
                break
            if total != last:
                last, still = total, time.monotonic()
            elif time.monotonic() - still > 0.3:
                break
            time.sleep(0.05)
        got = sorted(p.counter.messages - b for p, b in zip(peers, base))
    finally:
        gone = _hang_up(agent, peers, mr)
    return {"values": {"viewers": counted,
                       "delivered_min_pct": min(100.0, got[0] / ticks * 100),
                       "ticks_pct": min(100.0, r["ticks"] / asked * 100),
                       "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100},
            "raw": {"connect": info, "broadcast": r, "ticks_asked": asked,
                    "client_cpu_pct": (me1 - me0) / (t1 - t0) * 100, "msgs_min": got[0],
                    "msgs_median": got[len(got) // 2], "threads": th, "after": gone}}


def run_connected(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    """Row 11."""
    n, probes, wait = P["many_conn"], P["many_probes"], 5.0
    raise_nofile(n + 1024)
    agent.call("greet")
    peers, info, counted = _connect(agent, impl, n, P["many_connect_s"])
    mr = None
    total: List[float] = []
    after_init: List[float] = []
    try:
        mr = MultiReader(peers)
        time.sleep(P["many_settle_s"])
        th, rss = _threads(agent), agent.rss_mb()
        end = time.monotonic() + P["many_probe_budget_s"]
        for _ in range(probes):
            if time.monotonic() > end:
                break
            a, b = first_message(agent.port, impl, wait)
            total.append(a)
            after_init.append(b)
            time.sleep(0.02)
    finally:
        gone = _hang_up(agent, peers, mr)
    v = sorted(total)
    w = sorted(after_init)
    return {"values": {"viewers": counted, "connect_s": info["s"],
                       "p50_ms": percentile(v, 50) * 1e3, "p99_ms": percentile(v, 99) * 1e3},
            "raw": {"connect": info, "probes": len(v),
                    "no_message_within_s": {"s": wait, "n": sum(x >= wait for x in v)},
                    "max_ms": v[-1] * 1e3 if v else None,
                    "init_to_first_p50_ms": percentile(w, 50) * 1e3,
                    "init_to_first_p99_ms": percentile(w, 99) * 1e3,
                    "threads": th, "rss_MB": rss, "after": gone}}


RUNS = {"9": run_idle, "10": run_broadcast, "11": run_connected}
