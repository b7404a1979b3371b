"""Row 4: large messages, 12 MB point clouds server->client and 12 MB / 3 MiB uploads
client->server (MB/s and server CPU per MB). Its headless-Chromium part is
``large_messages_browser.py``."""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from common import NA, Agent, client_event, client_frame, hangup, one_client, one_session

from .spec import row

ROW = row(
    "4", "Large messages (point clouds / uploads)",
    measures="""
        Server->client: K point clouds of `big_size` bytes (float16 xyz + uint8 rgb, distinct
        keys, enqueued back to back); MB/s from the first call to the last byte at the peer.
        Client->server: K pre-framed uploads of `big_size` bytes (and of 3 MiB, which Vuer's 4
        MiB aiohttp limit accepts) until a server handler has them all. CPU per MB = server
        process CPU / MB moved (MB = 10^6 bytes). Each server also keeps what a session
        received for its buffer of received events (`session.popleft()`): vuer_sync the
        newest events up to 16 MiB together (`downlink_bytes`), Vuer its last `queue_len`,
        so every upload of the run.
    """,
    table="""
        s2c_MB_per_s          | server->client (big)               | MB/s  | higher
        s2c_cpu_ms_per_MB     | server->client (big), server CPU   | ms/MB | lower
        c2s_MB_per_s          | client->server (big)               | MB/s  | higher
        c2s_cpu_ms_per_MB     | client->server (big), server CPU   | ms/MB | lower
        c2s_mid_MB_per_s      | client->server (3 MiB)             | MB/s  | higher
        c2s_mid_cpu_ms_per_MB | client->server (3 MiB), server CPU | ms/MB | lower
    """)


def _s2c_big(agent: Agent, impl: str, size: int, k: int) -> Dict[str, Any]:
    prep = agent.call("prepare_big", size=size, timeout=120)
    payload = prep["payload"]
    with one_session(agent, impl) as peer:
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


def _c2s_big(agent: Agent, impl: str, size: int, k: int, last: bool = False
             ) -> Dict[str, Any]:
    blob = client_frame(client_event("UPLOAD", os.urandom(size)))
    peer = one_client(agent, impl)
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
            hangup(agent, peer)


def run(agent: Agent, impl: str, P: Dict[str, Any]) -> Dict[str, Any]:
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
