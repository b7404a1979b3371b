"""The browser-facing token shared through the room: a node with a token writes it, a node
without one adopts it (and its checks require it), a node with another token is refused.
The Origin check stays per node."""

from __future__ import annotations

import pytest
import websocket

from vuer_sync import Fleet, Vuer
from vuer_sync.fleet import RoomKeys
from vuer_sync.schemas import Box

from conftest import wait_until
from helpers import raw_client, recv_msg


def refused(port, **kw):
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        raw_client(port, **kw)
    return e.value.status_code


def test_nodes_share_the_rooms_token(redis_server, no_thread_leak, monkeypatch):
    monkeypatch.delenv("VUER_TOKEN", raising=False)
    r = redis_server.client()
    with Vuer(port=0, fleet=redis_server.url, room="lab") as open_node:
        ws = raw_client(open_node.port)  # no token in the room yet: open, as configured
        ws.close()
        with Vuer(port=0, fleet=redis_server.url, room="lab", token="s3cret") as a, \
                Vuer(port=0, fleet=redis_server.url, room="lab") as b:
            assert r.get(RoomKeys("lab").token) == b"s3cret"
            assert b.token == "s3cret" and "s3cret" in b.local_url
            assert refused(b.port) == 403  # b requires the room's token
            ws = raw_client(b.port, header=["Authorization: Bearer s3cret"])
            ws.close()
            assert refused(b.port, header=["Authorization: Bearer s3cret"],
                           origin="http://evil.example") == 403  # Origin: still per node
            assert refused(a.port) == 403
            # the node that was open adopts the room's token at its next heartbeat
            assert wait_until(lambda: open_node.token == "s3cret", 5)
            assert refused(open_node.port) == 403
            with pytest.raises(ValueError, match="token differs"):
                Vuer(port=0, fleet=redis_server.url, room="lab", token="other").start(
                    block=False)
            with pytest.raises(ValueError, match="token differs"):
                Fleet(redis_server.url, room="lab", token="other")
            with Fleet(redis_server.url, room="lab", token="s3cret") as robot:
                robot.upsert @ Box(key="x")
                robot.flush(5)
            ws = raw_client(b.port, header=["Authorization: Bearer s3cret"])
            try:
                assert wait_until(lambda: b.scene.graph.find("x"), 5)
                assert recv_msg(ws)["etype"] == "SET"
            finally:
                ws.close()
    r.close()
