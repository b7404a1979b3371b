"""Raw peers for tests: a websocket-client connection that speaks our protocol by hand."""

from __future__ import annotations

import gc
import time
from typing import Any, Callable

import msgpack
import websocket

from vuer_sync import codec


def raw_client(port, init=True, client="python", **kw):
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=5, **kw)
    if init:
        ws.send_binary(codec.encode({"etype": "INIT", "ts": 1.0, "value": {"client": client}}))
    return ws


def recv_msg(ws):
    op, data = ws.recv_data()
    return msgpack.unpackb(data, raw=False)


def recv_close_code(ws):
    """Read until the server's close frame; return its code (and answer it, as a client does).

    Frames are read raw: websocket-client's ``recv_data`` sends the close reply itself and
    raises if the server has already closed the socket (a broken pipe that says nothing
    about the code the server sent)."""
    while True:
        try:
            frame = ws.recv_frame()
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return None
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data
            try:
                ws.send_close()
            except (OSError, websocket.WebSocketException):
                pass  # the server did not wait for the reply
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else None


def tracked_after(fn: Callable[[], Any]) -> int:
    """GC-tracked objects that ``fn()`` leaves behind (counted after full collections)."""
    gc.collect()
    gc.collect()
    before = len(gc.get_objects())
    fn()
    gc.collect()
    gc.collect()
    return len(gc.get_objects()) - before


def keys_until(ws, want, timeout=20.0):
    """Node keys of the scene messages ``ws`` receives, in order, until every key of
    ``want`` has come (bounded in time)."""
    got = []
    missing = set(want)
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        for n in recv_msg(ws).get("data", {}).get("nodes") or []:
            got.append(n.get("key"))
            missing.discard(n.get("key"))
    assert not missing, f"{len(missing)} keys not received, e.g. {sorted(missing)[:5]}"
    return got
