"""Row 2: small messages per second, both directions, and server CPU per message."""

from __future__ import annotations

import time
from typing import Any, Dict

from common import Agent, client_event, client_frame, one_session

from .spec import row

ROW = row(
    "2", "Small messages per second",
    measures="""
        Server->client: the server enqueues N distinct `upsert @ Box(key=f"b{i}")` as fast as it
        can; rate = N / (time from the first call to the client receiving the last frame).
        Client->server: the peer writes N pre-framed ~50-byte events back to back; rate = N /
        (time until a server handler has counted all N). Server CPU from /proc of the server
        process. viser has no comparable per-message API (it batches 60 windows/s and
        coalesces).
    """,
    table="""
        s2c_msgs_per_s     | server->client             | msg/s  | higher
        s2c_cpu_us_per_msg | server->client, server CPU | µs/msg | lower
        c2s_msgs_per_s     | client->server             | msg/s  | higher
        c2s_cpu_us_per_msg | client->server, server CPU | µs/msg | lower
    """, without=("viser",))


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    n = P["small_n"]
    out: Dict[str, Any] = {"values": {}, "raw": {}}
    with one_session(agent, impl) as peer:
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
    return out
