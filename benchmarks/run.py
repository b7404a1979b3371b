"""The benchmark suite: vuer_sync side by side with Vuer 0.1.6 (aiohttp) and viser 1.1.

    python benchmarks/run.py                 # full run (about 5 minutes on 2 cores)
    python benchmarks/run.py --smoke         # tiny sizes, well under a minute (CI)
    python benchmarks/run.py --only 3,8      # some rows only
    python benchmarks/run.py --out DIR       # write results.json and RESULTS.md to DIR

Every row runs for every server in the same run. Each server runs in its own subprocess
(``bench_agent.py``) so that its CPU time and RSS can be read from /proc apart from the
clients'. The clients are one minimal raw-socket websocket peer (``common.RawPeer``) for all
three servers, so the server is what differs. Loopback only; every loop is bounded.

Writes ``results.json`` (default ``benchmarks/out/``) and ``RESULTS.md`` (default
``benchmarks/RESULTS.md``). Numbers are never pass/fail: these 2-core machines are noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HERE,
    IMPLS,
    Agent,
    MultiReader,
    RawPeer,
    RssSampler,
    client_event,
    client_frame,
    connect_many,
    decode_viser_frame,
    machine_info,
)

logger = logging.getLogger("benchmarks.run")

FULL = {
    "producer_n": 20000,
    "small_n": 50000,
    "rpc_n": 2000,
    "big_size": 12_000_000,
    "big_k": 40,
    "mid_size": 3 * 2**20,
    "mid_k": 40,
    "late_s": 3.0,
    "bcast_clients": 100,
    "bcast_s": 5.0,
    "idle_clients": 10,
    "idle_s": 3.0,
    "pose_nodes": 100,
    "pose_hz": 1000.0,
    "pose_s": 10.0,
    "browser_k": 5,
}
SMOKE = {
    "producer_n": 1000,
    "small_n": 2000,
    "rpc_n": 50,
    "big_size": 1_000_000,
    "big_k": 2,
    "mid_size": 500_000,
    "mid_k": 2,
    "late_s": 0.3,
    "bcast_clients": 10,
    "bcast_s": 0.5,
    "idle_clients": 3,
    "idle_s": 0.3,
    "pose_nodes": 100,
    "pose_hz": 1000.0,
    "pose_s": 1.0,
    "browser_k": 2,
}

EXTERNAL = ("bench_client_upload.py", "bench_rtc.py", "bench_render.py", "bench_transport.py",
            "bench_record.py", "bench_lateness_floor.py", "bench_validation.py")

NA = "n/a"


def _viser_subprotocol() -> str:
    try:
        from importlib.metadata import version

        return f"viser-v{version('viser')}"
    except Exception:
        return "viser-v?"


def peer_kw(impl: str) -> Dict[str, Any]:
    if impl == "viser":
        return {"subprotocol": _viser_subprotocol(), "init": False}
    return {}


def installed(impl: str) -> bool:
    return importlib.util.find_spec(impl) is not None


# -- results ---------------------------------------------------------------------------------


class Results:
    """rows -> metrics -> values per server, plus raw replies and notes."""

    def __init__(self, params: Dict[str, Any], mode: str):
        self.data: Dict[str, Any] = {
            "mode": mode,
            "params": params,
            "machine": machine_info(),
            "rows": {},
            "external": {},
            "notes": [],
        }

    def row(self, rid: str, title: str, measures: str, supported: Dict[str, bool]) -> Dict:
        r = self.data["rows"].setdefault(rid, {"title": title, "measures": measures,
                                               "supported": supported, "metrics": {},
                                               "raw": {}, "notes": []})
        return r

    def metric(self, rid: str, name: str, label: str, unit: str, better: Optional[str]) -> Dict:
        m = self.data["rows"][rid]["metrics"].setdefault(
            name, {"label": label, "unit": unit, "better": better, "values": {}})
        return m

    def put(self, rid: str, name: str, impl: str, value: Any) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            value = "nan"
        self.data["rows"][rid]["metrics"][name]["values"][impl] = value


def ratio(ours: Any, other: Any, better: Optional[str], floor: float = 0.0
          ) -> Optional[float]:
    """vuer_sync against another server, stated so that > 1 means vuer_sync is better.
    Values below ``floor`` (the measurement's resolution) count as ``floor``."""
    if better is None or not _num(ours) or not _num(other):
        return None
    ours, other = max(ours, floor), max(other, floor)
    if better == "lower":
        if ours <= 0:
            return None if other <= 0 else math.inf
        return other / ours
    if other <= 0:
        return None if ours <= 0 else math.inf
    return ours / other


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# -- row definitions -------------------------------------------------------------------------

# (id, title, what it measures, servers that have the feature, metrics)
# metric: (name, label, unit, better)
ROWS: List[Dict[str, Any]] = [
    {
        "id": "1", "title": "Producer call: `upsert @ Box` (small element)",
        "measures": "Time spent in the caller's thread by one `session.upsert @ Box(key=\"box\", "
                    "position=...)` with one connected client draining (vuer: the same call from "
                    "a coroutine on its loop, which packs synchronously; viser: the "
                    "`box.position = ...` setter on an existing box). Tight loop, first tenth "
                    "unrecorded.",
        "supported": {"vuer_sync": True, "vuer": True, "viser": True},
        "metrics": [("median_us", "call cost, median", "µs", "lower"),
                    ("p99_us", "call cost, p99", "µs", "lower")],
    },
    {
        "id": "2", "title": "Small messages per second",
        "measures": "Server->client: the server enqueues N distinct `upsert @ Box(key=f\"b{i}\")` "
                    "as fast as it can; rate = N / (time from the first call to the client "
                    "receiving the last frame). Client->server: the peer writes N pre-framed "
                    "~50-byte events back to back; rate = N / (time until a server handler has "
                    "counted all N). Server CPU from /proc of the server process. viser has no "
                    "comparable per-message API (it batches 60 windows/s and coalesces).",
        "supported": {"vuer_sync": True, "vuer": True, "viser": False},
        "metrics": [("s2c_msgs_per_s", "server->client", "msg/s", "higher"),
                    ("s2c_cpu_us_per_msg", "server->client, server CPU", "µs/msg", "lower"),
                    ("c2s_msgs_per_s", "client->server", "msg/s", "higher"),
                    ("c2s_cpu_us_per_msg", "client->server, server CPU", "µs/msg", "lower")],
    },
    {
        "id": "3", "title": "RPC round trip (`grab_render`, Python client answers at once)",
        "measures": "The server calls `session.grab_render()` N times in a row; the peer "
                    "answers each request with `etype = rtype` as soon as it is parsed. Measured "
                    "in the server around the blocking (vuer_sync) / awaited (vuer) call.",
        "supported": {"vuer_sync": True, "vuer": True, "viser": False},
        "metrics": [("p50_us", "round trip, p50", "µs", "lower"),
                    ("p99_us", "round trip, p99", "µs", "lower")],
    },
    {
        "id": "4", "title": "Large messages (point clouds / uploads)",
        "measures": "Server->client: K point clouds of `big_size` bytes (float16 xyz + uint8 "
                    "rgb, distinct keys, enqueued back to back); MB/s from the first call to the "
                    "last byte at the peer. Client->server: K pre-framed uploads of `big_size` "
                    "bytes (and of 3 MiB, which Vuer's 4 MiB aiohttp limit accepts) until a "
                    "server handler has them all. CPU per MB = server process CPU / MB moved "
                    "(MB = 10^6 bytes).",
        "supported": {"vuer_sync": True, "vuer": True, "viser": True},
        "metrics": [("s2c_MB_per_s", "server->client (big)", "MB/s", "higher"),
                    ("s2c_cpu_ms_per_MB", "server->client (big), server CPU", "ms/MB", "lower"),
                    ("c2s_MB_per_s", "client->server (big)", "MB/s", "higher"),
                    ("c2s_cpu_ms_per_MB", "client->server (big), server CPU", "ms/MB", "lower"),
                    ("c2s_mid_MB_per_s", "client->server (3 MiB)", "MB/s", "higher"),
                    ("c2s_mid_cpu_ms_per_MB", "client->server (3 MiB), server CPU", "ms/MB",
                     "lower")],
    },
    {
        "id": "5", "title": "1 kHz control loop lateness while streaming large messages",
        "measures": "A `time.sleep`-paced 1 kHz loop in the server's process (a plain thread; "
                    "for vuer its aiohttp loop runs in another thread) records how late each "
                    "wake-up is, while point clouds of `big_size` bytes stream to a client back "
                    "to back (viser: one offered every 10 ms, it coalesces). Default GIL switch "
                    "interval (5 ms); `sys.setswitchinterval(0.0005)` and no-streaming baselines "
                    "alongside.",
        "supported": {"vuer_sync": True, "vuer": True, "viser": True},
        "metrics": [("p50_ms", "lateness p50, streaming", "ms", "lower"),
                    ("p99_ms", "lateness p99, streaming", "ms", "lower"),
                    ("max_ms", "lateness max, streaming", "ms", "lower"),
                    ("stream_MB_per_s", "MB/s streamed meanwhile", "MB/s", None),
                    ("switch_p99_ms", "p99, streaming, switch interval 0.5 ms", "ms", "lower"),
                    ("idle_p99_ms", "p99, not streaming", "ms", "lower")],
    },
    {
        "id": "6", "title": "Many clients: 60 Hz broadcast",
        "measures": "N connected peers (100; smoke: 10) all draining; the server broadcasts one "
                    "pose update at 60 Hz for a few seconds (vuer_sync: `app.scene.update @ "
                    "Box`; vuer: `session.upsert @ Box` for every session; viser: a box's "
                    "`.position =`). Server CPU over the broadcast, RSS with the clients "
                    "connected, and the share of updates the worst client received.",
        "supported": {"vuer_sync": True, "vuer": True, "viser": True},
        "metrics": [("cpu_pct", "server CPU", "% of a core", "lower"),
                    ("rss_MB", "server RSS", "MB", "lower"),
                    ("rss_clients_MB", "RSS added by the clients", "MB", "lower"),
                    ("delivered_min_pct", "updates received by the worst client", "%",
                     "higher")],
    },
    {
        "id": "7", "title": "Idle CPU with connected clients",
        "measures": "N connected, silent peers (10; smoke: 3); server CPU over a few seconds. "
                    "psutil's resolution is 10 ms of CPU, about 0.3% over 3 s: ratios count "
                    "anything below 0.5% as 0.5%.",
        "supported": {"vuer_sync": True, "vuer": True, "viser": True},
        "metrics": [("cpu_pct", "server CPU", "% of a core", "lower")],
        "floor": {"cpu_pct": 0.5},
    },
    {
        "id": "8a", "title": "1 kHz pose updates to 100 nodes, one call per node (issue 6)",
        "measures": "For N s (10; smoke: 1) a producer in the server process updates 100 nodes "
                    "per 1 ms tick, one call per node (100k calls/s target; it runs behind when a "
                    "tick takes longer): vuer_sync `app.scene.update @ Box`, vuer "
                    "`session.update @ Box` for each session, viser `frame.position =`. One fast "
                    "peer decodes everything; one stalled peer completed the handshake and never "
                    "reads. Call cost, achieved rate, how late the final pose of every node "
                    "reached the fast peer, how many updates it saw one by one, server RSS growth "
                    "over the run (goal <= 20 MB).",
        "supported": {"vuer_sync": True, "vuer": True, "viser": True},
        "metrics": [("call_median_us", "call cost, median", "µs", "lower"),
                    ("call_p99_us", "call cost, p99", "µs", "lower"),
                    ("updates_per_s", "pose updates/s achieved", "1/s", "higher"),
                    ("final_delivery_ms", "final poses at the fast client, after the end "
                     "(goal <= 5)", "ms", None),
                    ("delivered_pct", "updates seen one by one by the fast client", "%", None),
                    ("rss_growth_MB", "server RSS growth (end - start)", "MB", "lower"),
                    ("rss_peak_growth_MB", "server RSS growth (peak - start)", "MB", "lower"),
                    ("cpu_pct", "server CPU", "% of a core", "lower")],
    },
    {
        "id": "8b", "title": "1 kHz pose updates to 100 nodes, one call per tick",
        "measures": "As 8a, but one call per tick carrying all 100 nodes (vuer_sync/vuer: "
                    "`update @ [100 Boxes]`; viser has no multi-node update: its 100 setters "
                    "inside one `server.atomic()` block). Call cost is per tick; per pose = "
                    "per tick / 100.",
        "supported": {"vuer_sync": True, "vuer": True, "viser": True},
        "metrics": [("call_median_us", "call cost per tick, median", "µs", "lower"),
                    ("call_p99_us", "call cost per tick, p99", "µs", "lower"),
                    ("per_pose_us", "per pose (median / 100)", "µs", "lower"),
                    ("updates_per_s", "pose updates/s achieved", "1/s", "higher"),
                    ("final_delivery_ms", "final poses at the fast client, after the end "
                     "(goal <= 5)", "ms", None),
                    ("delivered_pct", "updates seen one by one by the fast client", "%", None),
                    ("rss_growth_MB", "server RSS growth (end - start)", "MB", "lower"),
                    ("rss_peak_growth_MB", "server RSS growth (peak - start)", "MB", "lower"),
                    ("cpu_pct", "server CPU", "% of a core", "lower")],
    },
]
ROW_BY_ID = {r["id"]: r for r in ROWS}


# -- the rows --------------------------------------------------------------------------------


def _connect(agent: Agent, impl: str, **kw: Any) -> RawPeer:
    peer = RawPeer(agent.port, **{**peer_kw(impl), **kw})
    return peer


def _one_client(agent: Agent, impl: str, on_message: Optional[Callable[[bytes], None]] = None
                ) -> RawPeer:
    peer = _connect(agent, impl)
    peer.start_reader(on_message)
    got = agent.call("wait_clients", n=1, wait=30, timeout=30 + 30)
    if got["clients"] not in (1, -1):
        peer.close()
        raise RuntimeError(f"expected 1 session, server has {got['clients']}")
    return peer


def _hangup(agent: Agent, peer: Optional[RawPeer]) -> None:
    if peer is not None:
        peer.close()
    try:
        agent.call("wait_clients", n=0, wait=15, timeout=15 + 30)
        agent.call("reset", timeout=30)  # viser: drop the scene so the next row starts empty
    except Exception as e:
        logger.warning("%s: sessions did not end: %r", agent.impl, e)


def row1(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    peer = _one_client(agent, impl)
    try:
        r = agent.call("producer_cost", n=P["producer_n"], timeout=300)
    finally:
        _hangup(agent, peer)
    c = r["cost"]
    return {"values": {"median_us": c["median_us"], "p99_us": c["p99_us"]}, "raw": r}


def row2(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    n = P["small_n"]
    out: Dict[str, Any] = {"values": {}, "raw": {}}
    peer = _one_client(agent, impl)
    try:
        base = peer.counter.messages
        cpu0 = agent.cpu_s()
        r = agent.call("send_small", n=n, timeout=300)
        ok = peer.wait_for(lambda c: c.messages >= base + n, 120)
        cpu1 = agent.cpu_s()
        if not ok:
            raise RuntimeError(f"server->client: only {peer.counter.messages - base} of {n}")
        dt = peer.counter.last_rx - r["t0"]
        out["values"]["s2c_msgs_per_s"] = n / dt
        out["values"]["s2c_cpu_us_per_msg"] = (cpu1 - cpu0) / n * 1e6
        out["raw"]["s2c"] = r

        blob = b"".join(client_frame(client_event("BENCH", i)) for i in range(n))
        agent.call("arm", etype="BENCH", n=n)
        cpu0 = agent.cpu_s()
        t0 = time.monotonic()
        peer.send_raw(blob)
        w = agent.call("wait_armed", wait=120.0, timeout=150.0)
        cpu1 = agent.cpu_s()
        if not w["ok"]:
            raise RuntimeError(f"client->server: server counted {w['count']} of {n}")
        out["values"]["c2s_msgs_per_s"] = n / (w["t_done"] - t0)
        out["values"]["c2s_cpu_us_per_msg"] = (cpu1 - cpu0) / n * 1e6
        out["raw"]["c2s"] = w
    finally:
        _hangup(agent, peer)
    return out


def row3(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    import msgpack

    holder: Dict[str, RawPeer] = {}
    frame = b"\xff\xd8\xff\xe0" + bytes(96)  # a stand-in JPEG: the server does not decode it

    def answer(payload: bytes) -> None:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        rtype = msg.get("rtype")
        if isinstance(rtype, str):
            holder["peer"].send(client_event(
                rtype, {"frame": frame, "width": 8, "height": 8, "dpr": 1},
                key=msg.get("key", "DEFAULT")))

    peer = _connect(agent, impl)
    holder["peer"] = peer
    peer.start_reader(answer)
    try:
        agent.call("wait_clients", n=1, wait=30, timeout=30 + 30)
        r = agent.call("rpc", n=P["rpc_n"], timeout=300)
    finally:
        _hangup(agent, peer)
    return {"values": {"p50_us": r["rtt"]["median_us"], "p99_us": r["rtt"]["p99_us"]},
            "raw": r}


def _s2c_big(agent: Agent, impl: str, size: int, k: int) -> Dict[str, Any]:
    prep = agent.call("prepare_big", size=size, timeout=120)
    payload = prep["payload"]
    peer = _one_client(agent, impl)
    try:
        base = peer.counter.payload_bytes
        cpu0 = agent.cpu_s()
        r = agent.call("send_big", k=k, timeout=600)
        ok = peer.wait_for(lambda c: c.payload_bytes >= base + k * payload, 300)
        cpu1 = agent.cpu_s()
        if not ok:
            raise RuntimeError(f"received {peer.counter.payload_bytes - base} of {k * payload} B")
        mb = k * payload / 1e6
        return {"MB_per_s": mb / (peer.counter.last_rx - r["t0"]),
                "cpu_ms_per_MB": (cpu1 - cpu0) * 1e3 / mb, "raw": r}
    finally:
        _hangup(agent, peer)


def _c2s_big(agent: Agent, impl: str, size: int, k: int, last: bool = False
             ) -> Dict[str, Any]:
    blob = client_frame(client_event("UPLOAD", os.urandom(size)))
    peer = _one_client(agent, impl)
    try:
        agent.call("arm", etype="UPLOAD", n=k)
        cpu0 = agent.cpu_s()
        t0 = time.monotonic()
        err = None
        try:
            for _ in range(k):
                peer.send_raw(blob)
        except OSError as e:
            err = e
        w = agent.call("wait_armed", wait=5.0 if err else 300.0, timeout=330.0)
        cpu1 = agent.cpu_s()
        if not w["ok"]:
            peer.wait_for(lambda c: c.closed, 2.0)
            code = peer.counter.close_code
            return {"rejected": f"rejected (close {code})" if code else
                    f"rejected ({type(err).__name__ if err else 'no delivery'})",
                    "raw": w}
        mb = w["bytes"] / 1e6
        return {"MB_per_s": mb / (w["t_done"] - t0), "cpu_ms_per_MB": (cpu1 - cpu0) * 1e3 / mb,
                "raw": w}
    finally:
        if last:  # this server is not used again (and Vuer never ends a 1009 session)
            peer.close()
        else:
            _hangup(agent, peer)


def row4(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"values": {}, "raw": {}}
    s = _s2c_big(agent, impl, P["big_size"], P["big_k"])
    out["values"]["s2c_MB_per_s"] = s["MB_per_s"]
    out["values"]["s2c_cpu_ms_per_MB"] = s["cpu_ms_per_MB"]
    out["raw"]["s2c"] = s["raw"]
    if impl == "viser":
        for m in ("c2s_MB_per_s", "c2s_cpu_ms_per_MB", "c2s_mid_MB_per_s",
                  "c2s_mid_cpu_ms_per_MB"):
            out["values"][m] = NA
        return out
    # uploads in a server of their own, the 3 MiB one first: Vuer 0.1.6 leaks a session whose
    # uplink task spins forever after it closes a connection with 1009 (see the notes)
    with Agent(impl, agent.log_path.parent, tag="4up") as up:
        ups = [(tag, _c2s_big(up, impl, size, k, last)) for tag, size, k, last in (
            ("c2s_mid", P["mid_size"], P["mid_k"], False),
            ("c2s", P["big_size"], P["big_k"], True))]
    for tag, c in ups:
        out["raw"][tag] = c["raw"]
        if "rejected" in c:
            out["values"][f"{tag}_MB_per_s"] = c["rejected"]
            out["values"][f"{tag}_cpu_ms_per_MB"] = c["rejected"]
        else:
            out["values"][f"{tag}_MB_per_s"] = c["MB_per_s"]
            out["values"][f"{tag}_cpu_ms_per_MB"] = c["cpu_ms_per_MB"]
    return out


def row5(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    agent.call("prepare_big", size=P["big_size"], timeout=120)
    d = P["late_s"]
    peer = _one_client(agent, impl)
    try:
        idle = agent.call("lateness", duration=d, stream=False, timeout=d + 60)
        b0 = peer.counter.payload_bytes
        t0 = time.monotonic()
        r = agent.call("lateness", duration=d, stream=True, timeout=d + 120)
        rate = (peer.counter.payload_bytes - b0) / 1e6 / (time.monotonic() - t0)
        sw = agent.call("lateness", duration=d, stream=True, switch=5e-4, timeout=d + 120)
    finally:
        _hangup(agent, peer)
    return {"values": {"p50_ms": r["late"]["p50_ms"], "p99_ms": r["late"]["p99_ms"],
                       "max_ms": r["late"]["max_ms"], "stream_MB_per_s": rate,
                       "switch_p99_ms": sw["late"]["p99_ms"],
                       "idle_p99_ms": idle["late"]["p99_ms"]},
            "raw": {"idle": idle, "streaming": r, "switch": sw}}


def row6(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    n = P["bcast_clients"]
    rss0 = agent.rss_mb()
    peers = connect_many(agent.port, n, **peer_kw(impl))
    mr = None
    try:
        got = agent.call("wait_clients", n=n, wait=60, timeout=60 + 30)
        mr = MultiReader(peers)
        time.sleep(0.3)
        rss1 = agent.rss_mb()
        base = [p.counter.messages for p in peers]
        cpu0 = agent.cpu_s()
        t0 = time.monotonic()
        r = agent.call("broadcast", hz=60.0, duration=P["bcast_s"], timeout=P["bcast_s"] + 120)
        t1 = time.monotonic()
        cpu1 = agent.cpu_s()
        time.sleep(0.3)
        rss2 = agent.rss_mb()
        got_msgs = sorted(p.counter.messages - b for p, b in zip(peers, base))
    finally:
        if mr is not None:
            mr.stop()
        for p in peers:
            p.close()
    ticks = max(1, r["ticks"])
    return {"values": {"cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100, "rss_MB": rss2,
                       "rss_clients_MB": rss1 - rss0,
                       "delivered_min_pct": min(100.0, got_msgs[0] / ticks * 100)},
            "raw": {"clients": got, "broadcast": r, "rss_before_clients_MB": rss0,
                    "msgs_min": got_msgs[0], "msgs_median": got_msgs[len(got_msgs) // 2]}}


def row7(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    n = P["idle_clients"]
    _hangup(agent, None)
    peers = connect_many(agent.port, n, **peer_kw(impl))
    mr = None
    try:
        got = agent.call("wait_clients", n=n, wait=60, timeout=60 + 30)
        mr = MultiReader(peers)
        time.sleep(0.5)
        cpu0 = agent.cpu_s()
        t0 = time.monotonic()
        time.sleep(P["idle_s"])
        cpu1 = agent.cpu_s()
        t1 = time.monotonic()
        rss = agent.rss_mb()
    finally:
        if mr is not None:
            mr.stop()
        for p in peers:
            p.close()
    try:
        agent.call("wait_clients", n=0, wait=15, timeout=15 + 30)
    except Exception:
        pass
    return {"values": {"cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100},
            "raw": {"clients": got, "rss_MB": rss}}


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


def row8(impl: str, P: Dict[str, Any], log_dir: Path, batch: bool) -> Dict[str, Any]:
    nodes, hz, d = P["pose_nodes"], P["pose_hz"], P["pose_s"]
    tag = "8b" if batch else "8a"
    with Agent(impl, log_dir, tag=tag) as agent:
        watcher = PoseWatcher(impl)
        fast = RawPeer(agent.port, **peer_kw(impl))
        fast.start_reader(watcher)
        stalled = RawPeer(agent.port, rcvbuf=4096, **peer_kw(impl))
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


# -- optional: headless Chromium as the server->client peer ----------------------------------


CHROMIUM = "/usr/bin/chromium"

_PAGE = """<!doctype html><title>bench</title><script>
const q = new URLSearchParams(location.search);
const target = Number(q.get("target"));
const proto = q.get("proto");
const init = Uint8Array.from(atob(q.get("init")), (c) => c.charCodeAt(0));
const ws = proto ? new WebSocket(q.get("ws"), [proto]) : new WebSocket(q.get("ws"));
ws.binaryType = "arraybuffer";
let got = 0, reported = false;
const report = (what) => fetch("/report?" + what, {cache: "no-store"});
ws.onopen = () => { if (!proto) ws.send(init); report("event=open"); };
ws.onerror = () => report("event=error");
ws.onmessage = (e) => {
  if (reported) return;
  got += e.data.byteLength;
  if (got >= target) {
    reported = true;
    report("event=done&b=" + got + "&t=" + (performance.timeOrigin + performance.now()));
    ws.close();
  }
};
</script>"""


def browser_available() -> bool:
    return os.path.exists(CHROMIUM)


class _PageServer:
    """Serves the counting page and collects its reports (127.0.0.1, a thread)."""

    def __init__(self) -> None:
        import http.server
        import threading
        from urllib.parse import parse_qs, urlsplit

        reports: Dict[str, Dict[str, str]] = {}
        cv = threading.Condition()
        self.reports, self.cv = reports, cv

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                u = urlsplit(self.path)
                if u.path == "/report":
                    q = {k: v[0] for k, v in parse_qs(u.query).items()}
                    with cv:
                        reports[q.get("event", "?")] = q
                        cv.notify_all()
                    body, ctype = b"ok", "text/plain"
                else:
                    body, ctype = _PAGE.encode(), "text/html"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={
            "poll_interval": 0.05}, name="bench-page", daemon=True)
        self.thread.start()

    def wait(self, event: str, timeout: float) -> Optional[Dict[str, str]]:
        with self.cv:
            self.cv.wait_for(lambda: event in self.reports or "error" in self.reports, timeout)
            return self.reports.get(event)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def browser_s2c(agent: Agent, impl: str, P: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Big server->client messages into headless Chromium: a page on a loopback origin counts
    bytes in ``onmessage`` and reports back over HTTP. Chromium is started directly (no
    Playwright: its CDP session receives a copy of every websocket frame, which would make
    Playwright, not the browser, the bottleneck)."""
    import base64
    import shutil
    import tempfile
    from urllib.parse import urlencode

    prep = agent.call("prepare_big", size=P["big_size"], timeout=120)
    k = P["browser_k"]
    target = k * prep["payload"]
    ps = _PageServer()
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    proc = None
    try:
        query = {"ws": f"ws://127.0.0.1:{agent.port}/", "target": str(target),
                 "init": base64.b64encode(client_event("INIT", {"client": "browser"})).decode()}
        if impl == "viser":
            query["proto"] = _viser_subprotocol()
        url = f"http://127.0.0.1:{ps.port}/page?{urlencode(query)}"
        proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
             "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessChecks", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if ps.wait("open", 60) is None:
            raise RuntimeError(f"the page did not connect: {ps.reports}")
        agent.call("wait_clients", n=1, wait=30, timeout=60)
        time.sleep(0.3)  # let viser's initial replay through
        cpu0 = agent.cpu_s()
        t0 = time.time()
        agent.call("send_big", k=k, timeout=600)
        done = ps.wait("done", 300)
        cpu1 = agent.cpu_s()
        if done is None:
            raise RuntimeError(f"the page did not receive {target} B: {ps.reports}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        ps.close()
        shutil.rmtree(profile, ignore_errors=True)
        _hangup(agent, None)
    mb = target / 1e6
    return {"MB_per_s": mb / max(1e-9, float(done["t"]) / 1e3 - t0),
            "cpu_ms_per_MB": (cpu1 - cpu0) * 1e3 / mb}


# -- external benchmarks (owned by others) ---------------------------------------------------


def run_external(smoke: bool, out_dir: Path) -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    bench_out = HERE / "out"
    for name in EXTERNAL:
        path = HERE / name
        if not path.exists():
            results[name] = {"status": "missing", "note": f"{name} is not in the tree"}
            print(f"  {name}: missing, skipped")
            continue
        if smoke and "--smoke" not in path.read_text(encoding="utf-8", errors="replace"):
            results[name] = {"status": "skipped", "note": f"{name} has no --smoke flag, so "
                             "the smoke run skips it (the full run includes it)"}
            print(f"  {name}: no --smoke flag, skipped in smoke mode")
            continue
        cmd = [sys.executable, str(path)] + (["--smoke"] if smoke else [])
        before = {f.name: f.stat().st_mtime for f in bench_out.glob("*.json")}
        start = time.time()
        timeout = 120 if smoke else 1800
        print(f"  {name} {'--smoke' if smoke else ''} ...", flush=True)
        try:
            env = dict(os.environ)  # this tree's vuer_sync, whatever is pip-installed
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(HERE.parent), env.get("PYTHONPATH", "")) if p)
            proc = subprocess.run(cmd, cwd=str(HERE.parent), capture_output=True, text=True,
                                  timeout=timeout, check=False, env=env)
            rc: Any = proc.returncode
            tail = (proc.stdout + proc.stderr)[-2000:]
        except subprocess.TimeoutExpired as e:
            rc = f"timed out after {timeout} s"
            tail = str(e)[-2000:]
        entry: Dict[str, Any] = {"status": "ok" if rc == 0 else "failed", "returncode": rc,
                                 "elapsed_s": time.time() - start, "output_tail": tail,
                                 "json": {}}
        if bench_out.is_dir():
            for f in sorted(bench_out.glob("*.json")):
                if f.name == "results.json" or f.stat().st_mtime == before.get(f.name):
                    continue
                try:
                    entry["json"][f.name] = json.loads(f.read_text())
                except ValueError:
                    entry["json"][f.name] = "unreadable JSON"
        results[name] = entry
        print(f"  {name}: {entry['status']} ({entry['elapsed_s']:.1f} s, "
              f"{len(entry['json'])} JSON file(s))")
    return results


# -- report ----------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v).strip().splitlines()[0].replace("|", "/") if str(v).strip() else "—"
    if math.isinf(v):
        return "∞"
    a = abs(v)
    if a >= 1e5:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return ""
    if math.isinf(r):
        return "∞"
    return f"**{r:.2f}x**" if r >= 1 else f"{r:.2f}x"


def goals(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = res["rows"]

    def v(rid: str, m: str, impl: str) -> Any:
        return rows.get(rid, {}).get("metrics", {}).get(m, {}).get("values", {}).get(impl)

    out = []

    def add(goal: str, ok: Optional[bool], evidence: str) -> None:
        out.append({"goal": goal, "met": ok, "evidence": evidence})

    def both(a: Any, b: Any, pred: Callable[[float, float], bool]) -> Optional[bool]:
        return pred(a, b) if _num(a) and _num(b) else None

    s, o = v("4", "s2c_cpu_ms_per_MB", "vuer_sync"), v("4", "s2c_cpu_ms_per_MB", "vuer")
    c, oc = v("4", "c2s_mid_cpu_ms_per_MB", "vuer_sync"), v("4", "c2s_mid_cpu_ms_per_MB", "vuer")
    ok1, ok2 = both(s, o, lambda a, b: a <= b), both(c, oc, lambda a, b: a <= b)
    add("server CPU per MB <= Vuer's, both directions",
        None if ok1 is None or ok2 is None else ok1 and ok2,
        f"server->client {fmt(s)} vs {fmt(o)} ms/MB (row 4, big); client->server "
        f"{fmt(c)} vs {fmt(oc)} ms/MB (3 MiB; Vuer rejects the big upload: "
        f"{v('4', 'c2s_cpu_ms_per_MB', 'vuer')})")
    a, b = v("2", "s2c_msgs_per_s", "vuer_sync"), v("2", "s2c_msgs_per_s", "vuer")
    a2, b2 = v("2", "c2s_msgs_per_s", "vuer_sync"), v("2", "c2s_msgs_per_s", "vuer")
    r1, r2 = ratio(a, b, "higher"), ratio(a2, b2, "higher")
    add("small-message throughput >= 2x Vuer's",
        None if r1 is None or r2 is None else r1 >= 2 and r2 >= 2,
        f"server->client {fmt(r1)}x, client->server {fmt(r2)}x (row 2)")
    p, q = v("1", "median_us", "vuer_sync"), v("1", "median_us", "viser")
    p8, q8 = v("8a", "call_median_us", "vuer_sync"), v("8a", "call_median_us", "viser")
    add("producer call cost <= 1/3 of viser's",
        both(p, q, lambda x, y: x <= y / 3),
        f"row 1 median {fmt(p)} vs {fmt(q)} µs ({fmt(ratio(p, q, 'lower'))}x); row 8a median "
        f"{fmt(p8)} vs {fmt(q8)} µs ({fmt(ratio(p8, q8, 'lower'))}x)")
    r = v("3", "p50_us", "vuer_sync")
    add("RPC round trip p50 <= 150 µs", r <= 150 if _num(r) else None, f"{fmt(r)} µs (row 3)")
    lp = v("5", "p99_ms", "vuer_sync")
    floor = res.get("external", {}).get("bench_lateness_floor.py", {}).get("json", {})
    floor = floor.get("lateness_floor.json") or floor.get("lateness_floor-smoke.json") or {}
    floor_note = ""
    if isinstance(floor, dict) and "thread" in floor:
        chunked = floor.get("thread_chunked", {}).get("p99_ms")
        floor_note = (f"; with no server at all (`bench_lateness_floor.py`: plain `sendall` of"
                      f" 12 MB blobs to a draining process): "
                      f"{fmt(floor['thread']['p99_ms'])} ms from a thread of the loop's process"
                      f" writing each blob in one call, {fmt(chunked)} ms writing 512 KiB per "
                      f"call as our transport does, {fmt(floor['process']['p99_ms'])} ms from "
                      f"another process, {fmt(floor['none']['p99_ms'])} ms with nothing "
                      f"streaming")
    add("1 kHz loop lateness p99 <= 0.5 ms while streaming", lp <= 0.5 if _num(lp) else None,
        f"{fmt(lp)} ms at the default switch interval; {fmt(v('5', 'switch_p99_ms', 'vuer_sync'))}"
        f" ms with setswitchinterval(0.0005) (row 5){floor_note}")
    ic = v("7", "cpu_pct", "vuer_sync")
    add("idle CPU ~ 0 (< 1% of a core)", ic < 1.0 if _num(ic) else None,
        f"{fmt(ic)}% with {res['params']['idle_clients']} clients (row 7; Vuer "
        f"{fmt(v('7', 'cpu_pct', 'vuer'))}%)")
    g = v("8a", "rss_growth_MB", "vuer_sync")
    gp = v("8a", "rss_peak_growth_MB", "vuer_sync")
    add("RSS growth <= 20 MB with a stalled client (issue 6)",
        (g <= 20 and gp <= 20) if _num(g) and _num(gp) else None,
        f"row 8a end {fmt(g)} MB, peak {fmt(gp)} MB; row 8b end "
        f"{fmt(v('8b', 'rss_growth_MB', 'vuer_sync'))} MB")
    return out


def write_markdown(res: Dict[str, Any], path: Path) -> None:
    m = res["machine"]
    pk = m["packages"]
    L: List[str] = []
    L.append("# Benchmark results: vuer_sync vs Vuer 0.1.6 vs viser")
    L.append("")
    flag = " --smoke" if res["mode"] == "smoke" else ""
    L.append(f"Generated by `python benchmarks/run.py{flag}`"
             f" on {m['date']} in {res.get('elapsed_s', 0):.0f} s ({res['mode']} run). "
             "One run on a noisy machine: read the ratios, not the absolute numbers, and "
             "expect them to move by up to 2x between runs. Numbers are never pass/fail.")
    L.append("")
    L.append(f"**Machine:** {m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
             f"{m['platform']}; {m['implementation']} {m['python']}; load average at start "
             f"{m.get('load_average_at_start')} (other work shares these cores).  ")
    L.append("**Packages:** " + ", ".join(f"{k} {v}" for k, v in pk.items() if v) +
             (f".  \n**Commit:** {m['git_commit']} (plus uncommitted work in the tree)"
              if m.get("git_commit") else "."))
    L.append("")
    L.append("Ratios are vuer_sync against the other server, stated so that **> 1 means "
             "vuer_sync is better** (faster, or less CPU/memory). `n/a`: that server has no "
             "such feature. Details of each row are below the table; raw replies are in "
             "`results.json`.")
    L.append("")
    L.append("| row | metric | vuer_sync | vuer 0.1.6 | viser 1.1 | vs vuer | vs viser |")
    L.append("|---|---|---:|---:|---:|---:|---:|")
    for row in ROWS:
        r = res["rows"].get(row["id"])
        if r is None:
            continue
        first = True
        floors = row.get("floor", {})
        defs = {m[0]: m for m in row["metrics"]}
        for name, mt in r["metrics"].items():
            fl = floors.get(name, 0.0)
            if name in defs:  # the definitions in this file win over the JSON's copy
                mt = {**mt, "label": defs[name][1], "unit": defs[name][2]}
            vals = mt["values"]
            ours = vals.get("vuer_sync")
            cells = [fmt(vals.get(i)) for i in IMPLS]
            unit = f" ({mt['unit']})" if mt["unit"] else ""
            rc = f"{row['id']}. {row['title']}" if first else ""
            first = False
            L.append(f"| {rc} | {mt['label']}{unit} | " + " | ".join(cells) + " | "
                     f"{fmt_ratio(ratio(ours, vals.get('vuer'), mt['better'], fl))} | "
                     f"{fmt_ratio(ratio(ours, vals.get('viser'), mt['better'], fl))} |")
    L.append("")
    L.append("## Goals")
    L.append("")
    L.append("| goal | met? | evidence (this run) |")
    L.append("|---|---|---|")
    for g in res.get("goals", []):
        met = {True: "met", False: "**not met**", None: "unknown"}[g["met"]]
        L.append(f"| {g['goal']} | {met} | {g['evidence']} |")
    L.append("")
    L.append("## What each row measures")
    L.append("")
    for row in ROWS:
        r = res["rows"].get(row["id"])
        if r is None:
            continue
        L.append(f"- **{row['id']}. {row['title']}** {row['measures']}")
        for note in r.get("notes", []):
            L.append(f"  - {note}")
    L.append("")
    L.append("## Notes")
    L.append("")
    for note in res.get("notes", []):
        L.append(f"- {note}")
    L.append("")
    L.append("## Other benchmarks in this directory (run by run.py, JSON merged)")
    L.append("")
    ext = res.get("external", {})
    if not ext:
        L.append("- not run in this invocation (`--only`).")
    for name, e in ext.items():
        if e["status"] == "missing":
            L.append(f"- `{name}`: **missing** from the tree, so it was skipped.")
            continue
        if e["status"] == "skipped":
            L.append(f"- `{name}`: skipped: {e['note']}.")
            continue
        L.append(f"- `{name}`: {e['status']} (return code {e['returncode']}, "
                 f"{e['elapsed_s']:.1f} s).")
        for fname, data in e.get("json", {}).items():
            flat = _flatten(data)
            shown = flat[:24]
            L.append(f"  - `{fname}`: " + ("; ".join(f"{k} = {fmt(v)}" for k, v in shown) or
                                             "(no numbers)") +
                     (f"; … ({len(flat) - len(shown)} more in results.json)"
                      if len(flat) > len(shown) else ""))
        if e["status"] != "ok":
            tail = e.get("output_tail", "").strip().splitlines()[-3:]
            L.append("  - last output: `" + " / ".join(tail).replace("`", "'") + "`")
        elif not e.get("json"):
            tail = e.get("output_tail", "").strip().splitlines()[-25:]
            L.append("  - no JSON written; its printed output (tail):")
            L.append("")
            L.append("    ```")
            L.extend("    " + line for line in tail)
            L.append("    ```")
    L.append("")
    L.append("## Reproduce")
    L.append("")
    L.append("```bash\npip install -e '.[bench]'          # vuer 0.1.6, viser, psutil, playwright\n"
             "python benchmarks/run.py              # full run, writes this file\n"
             "python benchmarks/run.py --smoke      # CI-sized, < 1 minute\n"
             "python benchmarks/run.py --only 2,8a  # some rows\n```")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")


def _flatten(x: Any, prefix: str = "") -> List[Any]:
    out: List[Any] = []
    if isinstance(x, dict):
        for k, v in x.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(x, list) and len(x) <= 20:
        for i, v in enumerate(x):
            out.extend(_flatten(v, f"{prefix}[{i}]"))
    elif _num(x):
        out.append((prefix, x))
    elif isinstance(x, str) and len(x) < 40 and prefix:
        out.append((prefix, x))
    return out


# -- main ------------------------------------------------------------------------------------

LIGHT_ROWS = {"1": row1, "2": row2, "3": row3, "4": row4, "5": row5, "7": row7}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, well under a minute")
    ap.add_argument("--only", default="", help="comma-separated row ids (1..7, 8a, 8b, "
                    "8 = both, ext = the other benchmarks, browser)")
    ap.add_argument("--out", type=Path, default=None,
                    help="directory for results.json and RESULTS.md (default: benchmarks/out "
                         "and benchmarks/RESULTS.md)")
    ap.add_argument("--no-browser", action="store_true", help="skip the headless Chromium row")
    ap.add_argument("--browser", action="store_true",
                    help="include the headless Chromium row in a --smoke run")
    ap.add_argument("--no-external", action="store_true", help="skip the other bench_*.py")
    ap.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                    help="only rewrite RESULTS.md (or --out DIR/RESULTS.md) from a results.json")
    args = ap.parse_args(argv)
    if args.render is not None:
        data = json.loads(args.render.read_text())
        data["goals"] = goals(data)
        md = (args.out / "RESULTS.md") if args.out else (HERE / "RESULTS.md")
        write_markdown(data, md)
        print(f"wrote {md}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    P = dict(SMOKE if args.smoke else FULL)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if "8" in only:
        only |= {"8a", "8b"}
    out_dir = args.out or (HERE / "out")
    md_path = (args.out / "RESULTS.md") if args.out else (HERE / "RESULTS.md")
    log_dir = out_dir / "logs"
    out_dir.mkdir(parents=True, exist_ok=True)

    def want(rid: str) -> bool:
        return not only or rid in only

    res = Results(P, "smoke" if args.smoke else "full")
    t_start = time.monotonic()
    impls = [i for i in IMPLS if installed(i)]
    for i in IMPLS:
        if i not in impls:
            res.data["notes"].append(f"{i} is not installed: its column is empty.")
    res.data["notes"] += [
        f"Vuer 0.1.6 runs with `queue_len={10_000_000:,}` instead of its default 100: with 100, "
        "its per-session deque silently drops the oldest messages once 100 are queued (both the "
        "send and the receive deque use this length), so the rows would count lost messages as "
        "sent. With the raised length it drops nothing but its queues are unbounded.",
        "Vuer 0.1.6 accepts at most 4 MiB per client message (aiohttp's default; its "
        "`WEBSOCKET_MAX_SIZE` setting is not applied to the websocket): larger uploads are closed "
        "with 1009 and reported as such; the 3 MiB client->server metric is the like-for-like one.",
        "Vuer 0.1.6's uplink task busy-polls (`await sleep(0)`) whenever a connected session has "
        "nothing to send, so its CPU numbers include that spinning whenever a client is connected "
        "(that is its real cost, and why row 7 is what it is).",
        "Servers: vuer_sync `Vuer(port=0)` with defaults; Vuer `Vuer(host=\"127.0.0.1\", "
        "queue_len=...)` in a thread with its own event loop; viser "
        "`ViserServer(host=\"127.0.0.1\", port=0)`. Each in its own process; CPU = "
        "user+system time of that whole process (psutil), RSS likewise.",
        "Client: one raw-socket websocket peer (`benchmarks/common.py`) for all three servers, "
        "no compression offered, masked frames; it skips payloads it does not need, so it is much "
        "cheaper than the servers. Client and server share the 2 cores.",
    ]
    print(f"benchmarks ({res.data['mode']}): servers {', '.join(impls)}; output {out_dir}",
          flush=True)

    for row in ROWS:
        res.row(row["id"], row["title"], row["measures"], row["supported"])
        for name, label, unit, better in row["metrics"]:
            res.metric(row["id"], name, label, unit, better)

    def record(rid: str, impl: str, fn: Callable[[], Dict[str, Any]]) -> None:
        row = ROW_BY_ID[rid]
        if not row["supported"].get(impl):
            for name, *_ in row["metrics"]:
                res.put(rid, name, impl, NA)
            return
        t = time.monotonic()
        try:
            out = fn()
        except Exception as e:
            logger.warning("row %s %s failed: %r", rid, impl, e)
            msg = f"error: {type(e).__name__}: {str(e)[:120]}"
            for name, *_ in row["metrics"]:
                res.put(rid, name, impl, msg)
            res.data["rows"][rid]["raw"][impl] = {"error": repr(e)}
            print(f"  row {rid:>2} {impl:<9} FAILED: {e!r}", flush=True)
            return
        for name, val in out["values"].items():
            res.put(rid, name, impl, val)
        res.data["rows"][rid]["raw"][impl] = out.get("raw")
        summary = ", ".join(f"{k}={fmt(v)}" for k, v in list(out["values"].items())[:4])
        print(f"  row {rid:>2} {impl:<9} {time.monotonic() - t:5.1f} s  {summary}", flush=True)

    # rows 1-5 and 7: one long-lived server per implementation, rows interleaved by server
    light = [rid for rid in ("1", "2", "3", "4", "5", "7") if want(rid)]
    do_browser = "browser" in only or (not only and not args.no_browser
                                       and (args.browser or not args.smoke))
    if light or do_browser:
        agents: Dict[str, Agent] = {}
        try:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(impls) or 1) as pool:  # start them side by side
                started = {impl: pool.submit(Agent, impl, log_dir, "light") for impl in impls}
                failed = None
                for impl, fut in started.items():
                    try:
                        agents[impl] = fut.result()
                    except Exception as e:
                        failed = failed or e
                if failed is not None:
                    raise failed
            for impl in impls:
                res.data["machine"].setdefault("modules", {})[impl] = agents[impl].info.get(
                    "module")
            for rid in light:
                for impl in impls:
                    ag = agents[impl]
                    if ag.proc.poll() is not None:  # a crashed server: start a new one
                        ag.close()
                        ag = agents[impl] = Agent(impl, log_dir, tag=f"light{rid}")
                    record(rid, impl, lambda ag=ag, impl=impl, rid=rid:
                           LIGHT_ROWS[rid](ag, impl, P))
            if do_browser and not browser_available():
                res.data["rows"]["4"]["notes"].append(
                    "headless Chromium part skipped: playwright or /usr/bin/chromium missing")
            elif do_browser:
                res.metric("4", "browser_s2c_MB_per_s",
                           "server->client (big) into headless Chromium", "MB/s", "higher")
                res.metric("4", "browser_s2c_cpu_ms_per_MB",
                           "server->client (big) into Chromium, server CPU", "ms/MB", "lower")
                for impl in impls:
                    try:
                        b = browser_s2c(agents[impl], impl, P) or {}
                    except Exception as e:
                        b = {"error": f"error: {type(e).__name__}: {str(e)[:100]}"}
                    for src, dst in (("MB_per_s", "browser_s2c_MB_per_s"),
                                     ("cpu_ms_per_MB", "browser_s2c_cpu_ms_per_MB")):
                        res.put("4", dst, impl, b.get(src, b.get("error")))
                    print(f"  row  4 {impl:<9} browser: {b}", flush=True)
        finally:
            for ag in agents.values():
                ag.close()

    if want("6"):
        for impl in impls:
            def go6(impl: str = impl) -> Dict[str, Any]:
                with Agent(impl, log_dir, tag="6") as ag:
                    return row6(ag, impl, P)
            record("6", impl, go6)
    for rid, batch in (("8a", False), ("8b", True)):
        if want(rid):
            for impl in impls:
                record(rid, impl, lambda impl=impl, batch=batch: row8(impl, P, log_dir, batch))

    if (not only or "ext" in only) and not args.no_external:
        print("other benchmarks:", flush=True)
        res.data["external"] = run_external(args.smoke, out_dir)

    res.data["elapsed_s"] = time.monotonic() - t_start
    res.data["goals"] = goals(res.data)
    if only:
        res.data["rows"] = {k: v for k, v in res.data["rows"].items()
                            if k in only or (k == "4" and "browser" in only)}
    (out_dir / "results.json").write_text(json.dumps(res.data, indent=1, default=str))
    write_markdown(res.data, md_path)
    print(f"\nwrote {out_dir / 'results.json'} and {md_path} "
          f"({res.data['elapsed_s']:.0f} s)")
    print(md_path.read_text().split("\n## Goals")[0].split("\n\n", 4)[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
