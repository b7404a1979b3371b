"""Rows 8a and 8b (issue 6): 1 kHz pose updates to 100 nodes with one fast and one stalled
client: call cost, delivery to the fast client, server RSS growth. 8a makes one call per
node, 8b one call per tick; each runs in a server of its own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

from common import Agent, RssSampler, connect_peer, decode_viser_frame

from .spec import row, variant

#: the metrics of 8a and 8b after their call costs
_TAIL = """
    updates_per_s      | pose updates/s achieved (producer calls) | 1/s | higher
    delivered_per_s    | updates delivered one by one to the fast client | 1/s | higher
    final_delivery_ms  | final poses at the fast client, after the end (goal <= 5) | ms | -
    delivered_pct      | updates seen one by one by the fast client | % | higher
    rss_growth_MB      | server RSS growth (end - start) | MB | lower
    rss_peak_growth_MB | server RSS growth (peak - start) | MB | lower
    cpu_pct            | server CPU | % of a core | lower
    q100_delivered_pct | Vuer at its default queue_len=100: updates seen one by one | % | -
    q100_lost          | Vuer at its default queue_len=100: updates lost (dropped) | updates | -
    q100_rss_growth_MB | Vuer at its default queue_len=100: server RSS growth | MB | -
"""

#: How long after the end the server's RSS is read for ``rss_growth_MB`` (vuer_sync's I/O
#: loops hand free heap memory back after 0.5 s without traffic)
SETTLE_S = 1.0

#: Vuer's default per-session queue length (it drops the oldest message past it)
VUER_DEFAULT_QUEUE_LEN = 100

ROW_8A = row(
    "8a", "1 kHz pose updates to 100 nodes, one call per node (issue 6)",
    measures="""
        For N s (10; smoke: 1) a producer in the server process updates 100 nodes per 1 ms tick,
        one call per node (100k calls/s target; it runs behind when a tick takes longer):
        vuer_sync `app.scene.update @ Box`, vuer `session.update @ Box` for each session, viser
        `frame.position =`. One fast peer decodes everything; one stalled peer completed the
        handshake and never reads. Call cost, achieved rate, how late the final pose of every
        node reached the fast peer, how many updates it saw one by one, server RSS growth:
        its peak during the run, and what is left 1 s after the end, once the server is
        quiet (goal <= 20 MB). Vuer runs with an unbounded queue (see the notes); it runs
        once more at its default `queue_len=100`, where its deques drop the oldest messages:
        the `queue_len=100` lines say what that run delivered and lost.
    """,
    table="""
        call_median_us     | call cost, median | µs | lower
        call_p99_us        | call cost, p99 | µs | lower
    """ + _TAIL)
ROW_8B = row(
    "8b", "1 kHz pose updates to 100 nodes, one call per tick",
    measures="""
        As 8a, but one call per tick carrying all 100 nodes (vuer_sync/vuer: `update @ [100
        Boxes]`; viser has no multi-node update: its 100 setters inside one `server.atomic()`
        block). Call cost is per tick; per pose = per tick / 100.
    """,
    table="""
        call_median_us     | call cost per tick, median | µs | lower
        call_p99_us        | call cost per tick, p99 | µs | lower
        per_pose_us        | per pose (median / 100) | µs | lower
    """ + _TAIL)
#: vuer_sync once more with its columnar call, one `app.scene.poses(keys, positions)` per
#: tick (the positions array built in the timed call), in a server of its own
COLUMNAR = "_columnar"
variant(ROW_8B, COLUMNAR, "vuer_sync `poses()`",
        ["call_median_us", "call_p99_us", "per_pose_us", "updates_per_s", "delivered_per_s",
         "delivered_pct", "rss_growth_MB", "cpu_pct"])


class PoseWatcher:
    """Decodes every message the fast peer receives; remembers each node's last x and when
    it arrived."""

    def __init__(self, impl: str):
        import msgpack

        self.impl = impl
        self.unpackb = msgpack.unpackb
        self.last: Dict[str, Any] = {}
        self.updates = 0
        self.frames = 0

    def __call__(self, payload: bytes) -> None:
        self.frames += 1
        now = time.monotonic()
        if self.impl == "viser":
            for m in decode_viser_frame(payload):
                if m.get("type") == "SetPositionMessage":
                    self.last[m["name"].lstrip("/")] = (float(m["position"][0]), now)
                    self.updates += 1
            return
        m = self.unpackb(payload, raw=False, strict_map_key=False)
        if m.get("etype") not in ("UPDATE", "UPSERT"):
            return
        for nd in m.get("data", {}).get("nodes", []):
            if isinstance(nd, dict) and "position" in nd:
                self.last[nd.get("key")] = (float(nd["position"][0]), now)
                self.updates += 1


def run(impl: str, P: Dict[str, Any], log_dir: Path, batch: bool,
        columnar: bool = False) -> Dict[str, Any]:
    """One server of ``impl`` for the row (8b's ``columnar``: vuer_sync's ``poses()``)."""
    if columnar:
        return _run(impl, P, log_dir, batch, columnar=True)
    out = _run(impl, P, log_dir, batch)
    q100 = ("q100_delivered_pct", "q100_lost", "q100_rss_growth_MB")
    if impl != "vuer":
        out["values"].update({k: "n/a" for k in q100})
        return out
    d = _run(impl, P, log_dir, batch, {"queue_len": VUER_DEFAULT_QUEUE_LEN})
    out["values"].update({"q100_delivered_pct": d["values"]["delivered_pct"],
                          "q100_lost": d["raw"]["lost"],
                          "q100_rss_growth_MB": d["values"]["rss_growth_MB"]})
    out["raw"]["queue_len_100"] = d["raw"]
    return out


def _run(impl: str, P: Dict[str, Any], log_dir: Path, batch: bool,
         options: Optional[Dict[str, Any]] = None, columnar: bool = False) -> Dict[str, Any]:
    nodes, hz, d = P["pose_nodes"], P["pose_hz"], P["pose_s"]
    tag = ("8b" if batch else "8a") + ("_q100" if options else "") + (
        "_columnar" if columnar else "")
    with Agent(impl, log_dir, tag=tag, options=options) as agent:
        watcher = PoseWatcher(impl)
        fast = connect_peer(agent, impl)
        fast.start_reader(watcher)
        stalled = connect_peer(agent, impl, rcvbuf=4096)
        try:
            got = agent.call("wait_clients", n=2, wait=30, timeout=30 + 30)
            cap = int(hz * d * (1 if batch else nodes)) + 1000
            agent.call("pose_prepare", nodes=nodes, capacity=cap, timeout=60)
            time.sleep(0.3)
            u0 = watcher.updates
            rss0 = agent.rss_mb()
            sampler = RssSampler(agent)
            cpu0 = agent.cpu_s()
            t0 = time.monotonic()
            kw = {"columnar": True} if columnar else {}
            r = agent.call("pose_run", nodes=nodes, hz=hz, duration=d, batch=batch,
                           timeout=d + 120, **kw)
            cpu1 = agent.cpu_s()
            t1 = time.monotonic()
            keys = [f"n{j}" for j in range(nodes)]
            fx = r["final_x"]

            def final_ok() -> bool:
                return all(k in watcher.last and abs(watcher.last[k][0] - fx) < 1e-3
                           for k in keys)

            deadline = time.monotonic() + 5.0
            while not final_ok() and time.monotonic() < deadline and not fast.counter.closed:
                time.sleep(0.002)
            delivered = final_ok()
            time.sleep(SETTLE_S)  # what the run left behind, once the server is quiet
            peak = sampler.stop()
            rss1 = agent.rss_mb()
            lat = (max(max(0.0, watcher.last[k][1] - r["t_end"]) for k in keys) * 1e3
                   if delivered else "not delivered within 5 s")
            seen = watcher.updates - u0
        finally:
            fast.close()
            stalled.close()
    per = r["per_call"]
    vals = {"call_median_us": per["median_us"], "call_p99_us": per["p99_us"],
            "updates_per_s": r["updates_per_s"],
            "delivered_per_s": seen / max(1e-9, r.get("elapsed_s", d)),
            "final_delivery_ms": lat,
            "delivered_pct": min(100.0, seen / max(1, r["pose_updates"]) * 100),
            "rss_growth_MB": rss1 - rss0, "rss_peak_growth_MB": peak - rss0,
            "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100}
    if batch:
        vals["per_pose_us"] = r["per_pose"]["median_us"]
    raw = {"clients": got, "run": r, "rss_start_MB": rss0, "rss_end_MB": rss1,
           "rss_peak_MB": peak, "fast_frames": watcher.frames, "fast_updates": seen,
           # what the fast client never got, and not because a later pose replaced it: a
           # coalescing server merges, a dropping one loses (Vuer's queue_len); the final
           # pose of every node arrived or final_delivery_ms says not
           "lost": max(0, r["pose_updates"] - seen) if options else None}
    return {"values": vals, "raw": raw}
