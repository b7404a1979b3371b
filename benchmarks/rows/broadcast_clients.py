"""Row 6: 100 clients receiving a 60 Hz broadcast: server CPU, RSS, worst client's share."""

from __future__ import annotations

import time
from typing import Any, Dict

from common import Agent, draining_clients

from .spec import row

ROW = row(
    "6", "Many clients: 60 Hz broadcast",
    measures="""
        N connected peers (100; smoke: 10) all draining; the server broadcasts one pose update
        at 60 Hz for a few seconds (vuer_sync: `app.scene.update @ Box`; vuer: `session.upsert @
        Box` for every session; viser: a box's `.position =`). Server CPU over the broadcast,
        RSS with the clients connected, and the share of updates the worst client received.
    """,
    table="""
        cpu_pct           | server CPU                           | % of a core | lower
        rss_MB            | server RSS                           | MB          | lower
        rss_clients_MB    | RSS added by the clients             | MB          | lower
        delivered_min_pct | updates received by the worst client | %           | higher
    """)


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    rss0 = agent.rss_mb()
    with draining_clients(agent, impl, P["bcast_clients"]) as (peers, got):
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
    ticks = max(1, r["ticks"])
    return {"values": {"cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100, "rss_MB": rss2,
                       "rss_clients_MB": rss1 - rss0,
                       "delivered_min_pct": min(100.0, got_msgs[0] / ticks * 100)},
            "raw": {"clients": got, "broadcast": r, "rss_before_clients_MB": rss0,
                    "msgs_min": got_msgs[0], "msgs_median": got_msgs[len(got_msgs) // 2]}}
