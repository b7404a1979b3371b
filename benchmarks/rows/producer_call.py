"""Row 1: the cost of one producer call (``upsert @ Box``; viser: the ``.position =`` setter),
with one key (coalescible) and with a new key per call (nothing coalescible), and the frames
that actually reached the client in each case."""

from __future__ import annotations

import time
from typing import Any, Dict

from common import Agent, RawPeer, one_session

from .spec import row

ROW = row(
    "1", "Producer call: `upsert @ Box` (small element)",
    measures="""
        Time spent in the caller's thread by one `session.upsert @ Box(key=..., position=...)`
        with one connected client draining (vuer: the same call from a coroutine on its loop,
        which packs synchronously; viser: the `box.position = ...` setter on an existing box).
        Tight loop, first tenth unrecorded. Twice: every call on the same key (vuer_sync
        coalesces queued updates of one node when its sender is behind, so it may send far
        fewer frames), then a new key per call (nothing can coalesce: every call is a frame;
        viser: one handle per call, made before the loop). The frames the client received
        are counted beside each.
    """,
    table="""
        median_us           | call cost, same key, median | µs | lower
        p99_us              | call cost, same key, p99    | µs | lower
        frames              | frames received, same key   | frames | -
        distinct_median_us  | call cost, distinct keys, median | µs | lower
        distinct_p99_us     | call cost, distinct keys, p99    | µs | lower
        distinct_frames     | frames received, distinct keys   | frames | -
    """)


def _settled(peer: RawPeer, quiet: float = 0.2, limit: float = 10.0) -> int:
    """The client's frame count once nothing new arrived for ``quiet`` s (at most
    ``limit`` s)."""
    deadline = time.monotonic() + limit
    last = peer.counter.messages
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = peer.counter.messages
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            break
    return last


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    raw: Dict[str, Any] = {}
    for distinct, prefix in ((False, ""), (True, "distinct_")):
        with one_session(agent, impl) as peer:
            before = _settled(peer, quiet=0.1, limit=2.0)  # the initial scene, if any
            r = agent.call("producer_cost", n=P["producer_n"], distinct=distinct, timeout=300)
            frames = _settled(peer) - before
        c = r["cost"]
        values[prefix + "median_us"] = c["median_us"]
        values[prefix + "p99_us"] = c["p99_us"]
        values[prefix + "frames"] = frames
        raw[prefix + "run"] = {**r, "frames_received": frames,
                               "calls": P["producer_n"] + P["producer_n"] // 10}
    return {"values": values, "raw": raw}
