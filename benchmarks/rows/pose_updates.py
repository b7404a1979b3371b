"""Rows 8a and 8b (issue 6): 1 kHz pose updates to 100 nodes with one fast and one stalled
client: call cost, delivery to the fast client, server RSS growth. 8a makes one call per
node, 8b one call per tick; each runs in a server of its own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict

from common import Agent, RssSampler, connect_peer, decode_viser_frame

from .spec import row

#: the metrics of 8a and 8b after their call costs
_TAIL = """
    updates_per_s      | pose updates/s achieved | 1/s | higher
    final_delivery_ms  | final poses at the fast client, after the end (goal <= 5) | ms | -
    delivered_pct      | updates seen one by one by the fast client | % | -
    rss_growth_MB      | server RSS growth (end - start) | MB | lower
    rss_peak_growth_MB | server RSS growth (peak - start) | MB | lower
    cpu_pct            | server CPU | % of a core | lower
"""

ROW_8A = row(
    "8a", "1 kHz pose updates to 100 nodes, one call per node (issue 6)",
    measures="""
        For N s (10; smoke: 1) a producer in the server process updates 100 nodes per 1 ms tick,
        one call per node (100k calls/s target; it runs behind when a tick takes longer):
        vuer_sync `app.scene.update @ Box`, vuer `session.update @ Box` for each session, viser
        `frame.position =`. One fast peer decodes everything; one stalled peer completed the
        handshake and never reads. Call cost, achieved rate, how late the final pose of every
        node reached the fast peer, how many updates it saw one by one, server RSS growth over
        the run (goal <= 20 MB).
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


def run(impl: str, P: Dict[str, Any], log_dir: Path, batch: bool) -> Dict[str, Any]:
    nodes, hz, d = P["pose_nodes"], P["pose_hz"], P["pose_s"]
    tag = "8b" if batch else "8a"
    with Agent(impl, log_dir, tag=tag) as agent:
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
            r = agent.call("pose_run", nodes=nodes, hz=hz, duration=d, batch=batch,
                           timeout=d + 120)
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
            "updates_per_s": r["updates_per_s"], "final_delivery_ms": lat,
            "delivered_pct": min(100.0, seen / max(1, r["pose_updates"]) * 100),
            "rss_growth_MB": rss1 - rss0, "rss_peak_growth_MB": peak - rss0,
            "cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100}
    if batch:
        vals["per_pose_us"] = r["per_pose"]["median_us"]
    raw = {"clients": got, "run": r, "rss_start_MB": rss0, "rss_end_MB": rss1,
           "rss_peak_MB": peak, "fast_frames": watcher.frames, "fast_updates": seen}
    return {"values": vals, "raw": raw}
