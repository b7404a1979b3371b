"""Who is in a room: every node's heartbeat, with the clients connected to it.

Each node writes one key, ``vuer_sync:{room}:node:<node id>``, holding its description and
its sessions (sid, ``INIT`` fields, since when), with a time to live of a few heartbeats,
and adds its id to the set ``vuer_sync:{room}:nodes``. A node that stops heartbeating (killed
with ``-9``, cut off) disappears with its sessions when its key expires; whoever lists the
room then drops its id from the set. Expiry runs on Redis's clock, so the nodes' clocks
need not agree.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable, Dict, List

import msgpack

from .entry import RoomKeys

__all__ = ["Presence"]


class Presence:
    """One node's presence in a room, and the room's as seen from Redis.

    ``sessions``: called at each heartbeat, returns this node's sessions as dicts (``sid``,
    ``init``, ``since``); ``ttl_ms``: how long a heartbeat counts.
    """

    def __init__(self, keys: RoomKeys, node_id: str, ttl_ms: int,
                 sessions: Callable[[], List[Dict[str, Any]]], inbox_ttl_ms: int = 60_000):
        self.keys = keys
        self.node_id = node_id
        self.ttl_ms = int(ttl_ms)
        self._sessions = sessions
        self.inbox_ttl_ms = inbox_ttl_ms  # this node's inbox lives on while it heartbeats
        self._lock = threading.Lock()  # one write at a time: a newer list is never undone
        self.info = {"node": node_id, "host": socket.gethostname(), "pid": os.getpid(),
                     "since": time.time()}

    def write(self, r: Any) -> None:
        """Heartbeat: this node and its sessions, valid for ``ttl_ms``."""
        with self._lock:
            doc = dict(self.info, t=time.time(), sessions=self._sessions())
            pipe = r.pipeline(transaction=False)
            pipe.set(self.keys.node(self.node_id), msgpack.packb(doc, use_bin_type=True,
                                                                 default=str),
                     px=self.ttl_ms)
            pipe.sadd(self.keys.nodes, self.node_id)
            pipe.pexpire(self.keys.inbox(self.node_id), self.inbox_ttl_ms)
            pipe.execute()

    def leave(self, r: Any) -> None:
        """This node leaves the room (a clean stop)."""
        with self._lock:
            pipe = r.pipeline(transaction=False)
            pipe.delete(self.keys.node(self.node_id))
            pipe.srem(self.keys.nodes, self.node_id)
            pipe.execute()

    def nodes(self, r: Any) -> Dict[str, Dict[str, Any]]:
        """The live nodes of the room: node id -> its last heartbeat (dead ones pruned)."""
        ids = sorted(m.decode() if isinstance(m, bytes) else m
                     for m in r.smembers(self.keys.nodes))
        if not ids:
            return {}
        docs = r.mget([self.keys.node(i) for i in ids])
        dead = [i for i, d in zip(ids, docs) if d is None]
        if dead:
            r.srem(self.keys.nodes, *dead)
        return {i: msgpack.unpackb(d, raw=False) for i, d in zip(ids, docs) if d is not None}
