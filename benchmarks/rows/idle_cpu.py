"""Row 7: server CPU with 10 connected, silent clients."""

from __future__ import annotations

import time
from typing import Any, Dict

from common import Agent, draining_clients, hangup

from .spec import row

ROW = row(
    "7", "Idle CPU with connected clients",
    measures="""
        N connected, silent peers (10; smoke: 3); server CPU over a few seconds. psutil's
        resolution is 10 ms of CPU, about 0.3% over 3 s: ratios count anything below 0.5% as
        0.5%.
    """,
    table="""
        cpu_pct | server CPU | % of a core | lower
    """, floor={'cpu_pct': 0.5})


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    hangup(agent, None)
    with draining_clients(agent, impl, P["idle_clients"]) as (_, got):
        time.sleep(0.5)
        cpu0 = agent.cpu_s()
        t0 = time.monotonic()
        time.sleep(P["idle_s"])
        cpu1 = agent.cpu_s()
        t1 = time.monotonic()
        rss = agent.rss_mb()
    try:
        agent.call("wait_clients", n=0, wait=15, timeout=15 + 30)
    except Exception:
        pass
    return {"values": {"cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100},
            "raw": {"clients": got, "rss_MB": rss}}
