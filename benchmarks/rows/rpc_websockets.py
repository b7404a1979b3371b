"""Row 3b: the RPC round trip of row 3 with a common real client as the peer: the
``websockets`` library's sync client, answering each ``GRAB_RENDER`` with an 8x8 JPEG."""

from __future__ import annotations

import io
import threading
from typing import Any, Dict

from common import Agent, client_event, hangup

from .spec import row

ROW = row(
    "3b", "RPC round trip with the `websockets` sync client as the peer",
    measures="""
        As row 3, but the peer is `websockets.sync.client.connect` (no compression offered,
        as the raw peer), reading in a thread of the benchmark process and answering each
        request with a real 8x8 JPEG (Pillow), as a scripted client would.
    """,
    table="""
        p50_us | round trip, p50 | µs | lower
        p99_us | round trip, p99 | µs | lower
    """, without=("viser",))


def _jpeg_8x8() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
    import msgpack
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    frame = _jpeg_8x8()
    ws = connect(f"ws://127.0.0.1:{agent.port}/", compression=None, max_size=None,
                 open_timeout=30)
    ws.send(client_event("INIT", {"client": "websockets"}))

    def answer() -> None:
        try:
            for payload in ws:
                if not isinstance(payload, bytes):
                    continue
                msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
                rtype = msg.get("rtype")
                if isinstance(rtype, str):
                    ws.send(client_event(rtype, {"frame": frame, "width": 8, "height": 8,
                                                 "dpr": 1}, key=msg.get("key", "DEFAULT")))
        except ConnectionClosed:
            pass

    reader = threading.Thread(target=answer, name="bench-websockets-peer", daemon=True)
    reader.start()
    try:
        agent.call("wait_clients", n=1, wait=30, timeout=30 + 30)
        r = agent.call("rpc", n=P["rpc_n"], timeout=300)
    finally:
        ws.close()
        reader.join(10)
        hangup(agent, None)
    return {"values": {"p50_us": r["rtt"]["median_us"], "p99_us": r["rtt"]["p99_us"]},
            "raw": {**r, "jpeg_bytes": len(frame)}}
