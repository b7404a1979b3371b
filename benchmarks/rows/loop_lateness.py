"""Row 5: how late a 1 kHz ``time.sleep`` loop in the server process wakes up while 12 MB
messages stream (default and 0.5 ms GIL switch interval, and not streaming)."""

from __future__ import annotations

import time
from typing import Any, Dict

from common import Agent, one_session

from .spec import row

ROW = row(
    "5", "1 kHz control loop lateness while streaming large messages",
    measures="""
        A `time.sleep`-paced 1 kHz loop in the server's process (a plain thread; for vuer its
        aiohttp loop runs in another thread) records how late each wake-up is, while point
        clouds of `big_size` bytes stream to a client back to back (viser: one offered every 10
        ms, it coalesces). Default GIL switch interval (5 ms); `sys.setswitchinterval(0.0005)`
        and no-streaming baselines alongside.
    """,
    table="""
        p50_ms          | lateness p50, streaming                | ms   | lower
        p99_ms          | lateness p99, streaming                | ms   | lower
        max_ms          | lateness max, streaming                | ms   | lower
        stream_MB_per_s | MB/s streamed meanwhile                | MB/s | -
        switch_p99_ms   | p99, streaming, switch interval 0.5 ms | ms   | lower
        idle_p99_ms     | p99, not streaming                     | ms   | lower
    """)


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    agent.call("prepare_big", size=P["big_size"], timeout=120)
    d = P["late_s"]
    with one_session(agent, impl) as peer:
        idle = agent.call("lateness", duration=d, stream=False, timeout=d + 60)
        b0 = peer.counter.payload_bytes
        t0 = time.monotonic()
        r = agent.call("lateness", duration=d, stream=True, timeout=d + 120)
        rate = (peer.counter.payload_bytes - b0) / 1e6 / (time.monotonic() - t0)
        sw = agent.call("lateness", duration=d, stream=True, switch=5e-4, timeout=d + 120)
    return {"values": {"p50_ms": r["late"]["p50_ms"], "p99_ms": r["late"]["p99_ms"],
                       "max_ms": r["late"]["max_ms"], "stream_MB_per_s": rate,
                       "switch_p99_ms": sw["late"]["p99_ms"],
                       "idle_p99_ms": idle["late"]["p99_ms"]},
            "raw": {"idle": idle, "streaming": r, "switch": sw}}
