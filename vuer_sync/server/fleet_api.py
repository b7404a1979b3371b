"""The fleet's objects outside ``app.scene`` (``docs/fleet.md``): :class:`Fleet`, a process
that only publishes into a room (a robot); :class:`FleetSession`, a client of the room on
whichever node it is connected to; and :func:`run_call`, a node's side of those calls.

``app.scene``'s fleet mode (publishing to the room, applying its stream) is in
:mod:`vuer_sync.server.shared`, which hands :class:`FleetSession` to the link.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ContextManager, Dict, List, Optional, Sequence

import numpy as np

from .. import codec
from .._threads import GroupLocal, held_group
from ..coalesce import MergeInfo
from ..config import env_str
from ..errors import SessionClosed
from ..events import ClientEvent, GrabRender, ServerEvent, ServerRPC, Set
from ..fleet.entry import GROUP, Item
from ..fleet.link import FleetLink
from ..scene import SceneMirror
from .ops import SceneOps, encode_event, message_of

__all__ = ["Fleet", "FleetSession", "MirrorSink", "run_call"]


class Fleet(SceneOps):
    """A process that publishes into a fleet room and serves no HTTP (a robot, a
    simulator): the same operations as ``app.scene`` (``set/add/upsert/update/remove @
    ...``, ``atomic()``, ``flush()``), sent to the room's Redis stream, which every node of
    the room applies and forwards to its clients (``docs/fleet.md``).

    ``url``: ``redis://host:6379/0`` (``rediss://`` for TLS; ``redis://user:pass@host``),
    default ``VUER_SYNC_FLEET``; ``room``: default ``VUER_SYNC_ROOM``, else ``"default"``.
    Connects at once (``FleetUnavailable`` if Redis does not answer); ``close()`` (or the
    ``with`` block's end) publishes what is queued and stops the link's threads.

    ``snapshots=True`` (the default): the process also follows the room's stream into a
    scene of its own (:attr:`mirror`, no clients) and takes its turn at writing the room's
    snapshots and trimming its stream, so a room of publishers only stays bounded in Redis
    before any node joins. ``snapshots=False``: publish only (less CPU: for rooms where a
    node always runs). ``token``: write this browser-facing token to the room if it has
    none (its nodes then require it; ``docs/fleet.md``). ``options``: the
    :class:`~vuer_sync.fleet.link.FleetLink` settings (``snapshot_every``, ...)::

        with Fleet("redis://127.0.0.1:6379/0", room="lab") as fleet:
            for i in range(1000):
                fleet.upsert @ Box(key="robot", position=[i / 1000, 0, 0])
            fleet.flush()   # Redis has all of it
    """

    def __init__(self, url: Optional[str] = None, room: Optional[str] = None, *,
                 snapshots: bool = True, token: Optional[str] = None, **options: Any):
        url = url if url is not None else env_str("VUER_SYNC_FLEET")
        if not url:
            raise ValueError("Fleet needs a Redis URL (or VUER_SYNC_FLEET)")
        room = room if room is not None else env_str("VUER_SYNC_ROOM", "default")
        self._atomic = GroupLocal()
        self.link = FleetLink(url, room, **options)
        self.link.session_factory = FleetSession
        self.link.room_token.token = token
        #: the room's scene as this process follows it (``snapshots=True``), else ``None``
        self.mirror: Optional[MirrorSink] = None
        if snapshots:
            self.mirror = MirrorSink()
            self.link.sink = self.mirror
            self.link.presence = False  # it serves no clients: not a node of the room
        self.link.start()

    @property
    def room(self) -> str:
        return self.link.room

    def send(self, event: ServerEvent) -> None:
        """Publish one event to the room (scene events change every node's scene)."""
        msg = message_of(event)
        if msg["etype"] == "NOOP":
            return
        rk = getattr(event, "redundancy_key", None)
        self.send_encoded(encode_event(event, msg), msg, rk() if callable(rk) else None)

    def _send_node_message(self, msg: Dict[str, Any], payload: Any, info: MergeInfo) -> None:
        self.send_encoded(payload, msg, info=info)

    def send_encoded(self, payload: Any, msg: Optional[Dict[str, Any]],
                     rkey: Optional[str] = None, info: Optional[MergeInfo] = None) -> None:
        """Publish an already-encoded message (``msg``: its map)."""
        group = self._atomic.group
        if group is not None:
            group.append(payload)
        else:
            self.link.publish(payload, msg, rkey, info)

    def atomic(self) -> ContextManager[None]:
        """Messages published by this thread inside the block reach every client of the
        room back to back (one stream item; nestable)."""
        return held_group(self._atomic, self.link.publish_group)

    def flush(self, timeout: Optional[float] = 10.0) -> None:
        """Block until Redis acknowledged everything published so far (``TimeoutError``)."""
        self.link.flush(timeout)

    @property
    def stats(self) -> Dict[str, Any]:
        """The link's counters (``ops``, ``coalesced``, ``published``, ``entries``, ...)."""
        return self.link.stats

    def sessions(self) -> List[Dict[str, Any]]:
        """Every client of the room, on every node (``sid``, ``node``, ``init``, ``since``)."""
        return self.link.sessions()

    def session(self, sid: str) -> FleetSession:
        """A proxy on the client ``sid``, whichever node it is connected to."""
        return FleetSession(self.link, sid)

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (up to ``timeout`` s), stop the publisher thread."""
        self.link.close(timeout)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class MirrorSink:
    """The room's scene kept by a publisher-only process (:class:`Fleet` with
    ``snapshots=True``): the stream applied to a :class:`~vuer_sync.scene.SceneMirror`, no
    clients, so the process can write the room's snapshots.

    >>> sink = MirrorSink()
    >>> sink.fleet_apply([codec.encode({"etype": "UPSERT", "data": {"nodes": [
    ...     {"key": "arm", "tag": "Box", "position": [1, 0, 0]}]}})])  # none written: no clients
    0
    >>> sink.graph.find("arm")["position"]
    [1, 0, 0]
    """

    def __init__(self) -> None:
        self.graph = SceneMirror()
        self._lock = threading.Lock()

    def fleet_apply(self, items: List[Item], direct: bool = False) -> int:
        with self._lock:
            for it in items:
                if isinstance(it, bytes):
                    self.graph.apply(codec.unpack(it))
                elif it[0] == GROUP:
                    for p in it[1]:
                        self.graph.apply(codec.unpack(p))
                else:
                    self.graph.apply(codec.unpack(it[1]))
        return 0

    def fleet_snapshot(self) -> bytes:
        with self._lock:
            return codec.encode(Set(self.graph.snapshot()).serialize())

    def fleet_load(self, payload: bytes) -> None:
        self.fleet_apply([payload])

    def fleet_sessions(self) -> List[Dict[str, Any]]:
        return []

    def fleet_call(self, sid: str, op: str, payload: Optional[bytes], args: Dict[str, Any],
                   timeout: float) -> Any:
        raise SessionClosed(f"session {sid} is not connected to this process")


class FleetSession(SceneOps):
    """A client of the fleet's room, on whichever node it is connected to, from any process
    of the room: ``app.fleet.session(sid)`` or ``Fleet.session(sid)`` (``sid`` from
    ``app.fleet.sessions()``).

    ``send``/``@`` operations queue at once (in order; to a client that left they are
    dropped); :meth:`flush`, :meth:`rpc`, :meth:`grab_render` and :meth:`get_render` block
    and take the same timeouts as on a :class:`~vuer_sync.server.session.VuerSession`, plus
    the hop through Redis. They raise ``SessionClosed`` when the client left, or as soon as
    its node stops heartbeating (killed, cut off)::

        sid = app.fleet.sessions()[0]["sid"]
        tab = app.fleet.session(sid)
        tab.upsert @ Box(key="only-for-you")
        frame = tab.get_render(timeout=10)   # rendered by that browser, wherever it is
    """

    def __init__(self, link: FleetLink, sid: str):
        self.link = link
        self.id = sid
        self.node = link.node_of(sid)  # SessionClosed if it is not in the room

    def __repr__(self) -> str:
        return f"<FleetSession {self.id[:8]} on {self.node}>"

    def send(self, event: ServerEvent) -> None:
        """Queue one server event for the client (returns at once)."""
        msg = message_of(event)
        if msg["etype"] == "NOOP":
            return
        self._send_payload(encode_event(event, msg))

    def _send_node_message(self, msg: Dict[str, Any], payload: Any, info: MergeInfo) -> None:
        self._send_payload(payload)

    def _send_payload(self, payload: Any) -> None:
        self.link.call(self.node, self.id, "send", bytes(payload), wait=False)

    def flush(self, timeout: Optional[float] = 10.0) -> None:
        """Block until the client has been written everything sent so far."""
        self.link.call(self.node, self.id, "flush", timeout=10.0 if timeout is None
                       else timeout)

    def rpc(self, event: ServerRPC, ttl: Optional[float] = 2.0) -> ClientEvent:
        """Send a request and block for the client's answer, as ``VuerSession.rpc``."""
        if not isinstance(event, ServerRPC):
            raise TypeError(f"rpc() takes a ServerRPC, got {type(event).__name__}")
        answer = self.link.call(self.node, self.id, "rpc", codec.encode(message_of(event)),
                                timeout=3600.0 if ttl is None else ttl)
        return ClientEvent.from_dict(answer)

    def grab_render(self, ttl: Optional[float] = 2.0, **kwargs: Any) -> ClientEvent:
        """Vuer's ``grab_render`` on that client (``value["frame"]``: JPEG bytes)."""
        return self.rpc(GrabRender(**kwargs), ttl=ttl)

    def get_render(self, width: Optional[int] = None, height: Optional[int] = None, *,
                   timeout: float = 10.0, **kwargs: Any) -> Any:
        """``VuerSession.get_render`` on that client's browser: a ``uint8`` ``(H, W, 3)``
        array (with ``depth=True``, also the depth)."""
        args = dict(kwargs, width=width, height=height)
        return _unpack_frames(self.link.call(self.node, self.id, "get_render", args=args,
                                             timeout=timeout))


class _RemoteRPC(ServerRPC):
    """An RPC request made on another node (its wire map), sent on as it is."""

    def __init__(self, msg: Dict[str, Any]):
        self._msg = {k: v for k, v in msg.items() if k != "ts"}
        self.etype = msg["etype"]
        self.uuid = msg.get("uuid") or ""
        self.rtype = msg["rtype"]
        self.ts = time.time()

    def serialize(self) -> Dict[str, Any]:
        return {**self._msg, "ts": self.ts}


def _pack_frames(frames: Any) -> Any:
    """``get_render``'s arrays as msgpack-able maps (one, or a list for ``depth=True``)."""
    if isinstance(frames, tuple):
        return [_pack_frames(f) for f in frames]
    arr = np.ascontiguousarray(frames)
    return {"nd": arr.tobytes(), "shape": list(arr.shape), "dtype": arr.dtype.str}


def _unpack_frames(packed: Any) -> Any:
    if isinstance(packed, list):
        return tuple(_unpack_frames(p) for p in packed)
    return np.frombuffer(packed["nd"], dtype=np.dtype(packed["dtype"])).reshape(
        packed["shape"])


def run_call(sessions: Sequence[Any], sid: str, op: str, payload: Optional[bytes],
             args: Dict[str, Any], timeout: float) -> Any:
    """Run a call from another process (a :class:`FleetSession`) on the local client
    ``sid`` among ``sessions``: ``send`` (an encoded frame), ``flush``, ``rpc`` (an encoded
    request; the answer's map back), ``get_render`` (``args``: its keyword arguments; the
    frame back as bytes, shape and dtype). ``send`` to ``sid="*"``: every local client;
    ``send`` returns how many clients it was queued for. ``SessionClosed`` if ``sid`` is
    not among them.

    >>> run_call([], "*", "send", codec.encode({"etype": "NOTE", "ts": 1.0}), {}, 1.0)
    0
    """
    if op == "send" and sid == "*" and payload is not None:
        msg = codec.unpack(payload)
        delivered = 0
        for s in sessions:
            try:
                s.send_encoded(payload, msg)
                delivered += 1
            except SessionClosed:
                pass
        return delivered
    session = next((s for s in sessions if s.id == sid), None)
    if session is None:
        raise SessionClosed(f"session {sid} is not connected to this node")
    if op == "send" and payload is not None:
        msg = codec.unpack(payload)
        if msg.get("etype") == "SET":  # through send(): its SET hooks run
            session.send(Set(msg.get("data")))
        else:
            session.send_encoded(payload, msg)
        return 1
    if op == "flush":
        session.flush(timeout)
        return None
    if op == "rpc" and payload is not None:
        return session.rpc(_RemoteRPC(codec.unpack(payload)), ttl=timeout).serialize()
    if op == "get_render":
        return _pack_frames(session.get_render(timeout=timeout, **args))
    raise ValueError(f"unknown fleet call {op!r}")
