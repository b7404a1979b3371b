"""Row 3: the RPC (``grab_render``) round trip, the Python peer answering at once."""

from __future__ import annotations

from typing import Any, Dict

from common import Agent, RawPeer, client_event, connect_peer, hangup

from .spec import row

ROW = row(
    "3", "RPC round trip (`grab_render`, Python client answers at once)",
    measures="""
        The server calls `session.grab_render()` N times in a row; the peer answers each request
        with `etype = rtype` as soon as it is parsed. Measured in the server around the blocking
        (vuer_sync) / awaited (vuer) call.
    """,
    table="""
        p50_us | round trip, p50 | µs | lower
        p99_us | round trip, p99 | µs | lower
    """, without=("viser",))


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
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

    peer = connect_peer(agent, impl)
    holder["peer"] = peer
    peer.start_reader(answer)
    try:
        agent.call("wait_clients", n=1, wait=30, timeout=30 + 30)
        r = agent.call("rpc", n=P["rpc_n"], timeout=300)
    finally:
        hangup(agent, peer)
    return {"values": {"p50_us": r["rtt"]["median_us"], "p99_us": r["rtt"]["p99_us"]},
            "raw": r}
