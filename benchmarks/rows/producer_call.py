"""Row 1: the cost of one producer call (``upsert @ Box``; viser: the ``.position =`` setter)."""

from __future__ import annotations

from typing import Any, Dict

from common import Agent, one_session

from .spec import row

ROW = row(
    "1", "Producer call: `upsert @ Box` (small element)",
    measures="""
        Time spent in the caller's thread by one `session.upsert @ Box(key="box", position=...)`
        with one connected client draining (vuer: the same call from a coroutine on its loop,
        which packs synchronously; viser: the `box.position = ...` setter on an existing box).
        Tight loop, first tenth unrecorded.
    """,
    table="""
        median_us | call cost, median | µs | lower
        p99_us    | call cost, p99    | µs | lower
    """)


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    with one_session(agent, impl):
        r = agent.call("producer_cost", n=P["producer_n"], timeout=300)
    c = r["cost"]
    return {"values": {"median_us": c["median_us"], "p99_us": c["p99_us"]}, "raw": r}
