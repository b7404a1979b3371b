"""``app.scene``: one scene shared by every client, replayed to clients that join later; and
:class:`Fleet`, the same operations for a process that only publishes into a fleet room.

With a fleet attached (``Vuer(fleet=...)``, :meth:`SharedScene.use_fleet`), ``app.scene``
operations go to the room's Redis stream instead of being applied here; the link's consumer
thread applies every entry of the stream, from every node, in stream order, through the
same local path (the mirror, the recorders, every local client's outbox).
"""

from __future__ import annotations

import os
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Dict,
    List,
    Optional,
    Tuple,
    Union,
)

import msgpack
import numpy as np

from .. import codec
from .._threads import GroupLocal, held_group
from ..coalesce import MergeInfo, merge_info
from ..config import env_str
from ..errors import SessionClosed
from ..events import ClientEvent, GrabRender, ServerEvent, ServerRPC, Set
from ..fleet.entry import EXCLUDE, GROUP, Item
from ..fleet.link import FleetLink
from ..scene import SceneMirror
from .ops import SceneOps, encode_event, message_of

if TYPE_CHECKING:  # pragma: no cover
    from ..record import StateSerializer
    from .app import Vuer
    from .session import VuerSession

__all__ = ["Fleet", "SharedScene"]


class SharedScene(SceneOps):
    """The same operations as a session (``set/add/upsert/update/remove @ ...``), applied to
    every connected client and kept in a server-side :class:`~vuer_sync.scene.SceneMirror`.

    A client that connects later (or reloads its page) first receives the current scene as
    one ``SET``, then the live updates. The cost of a late join is proportional to the
    current scene, not to its history. Messages are encoded once and the same bytes are
    queued on every client's outbox (each client coalesces on its own if it falls behind).

    >>> from vuer_sync import Vuer
    >>> from vuer_sync.schemas import Box
    >>> app = Vuer(port=0)
    >>> app.scene.upsert @ Box(key="box", position=[0, 1, 0])   # no client needed
    >>> app.scene.graph.find("box")["position"]
    [0, 1, 0]
    """

    def __init__(self, app: Vuer, fleet: Optional[str] = None, room: Optional[str] = None):
        self._app = app
        self._lock = threading.RLock()
        self._atomic = GroupLocal()
        self._subscribers: List[VuerSession] = []
        self._recorders: List[Any] = []
        self._fleet: Optional[FleetLink] = None
        self._joined: Dict[str, float] = {}  # session id -> when it joined (fleet presence)
        self.graph = SceneMirror()
        self.join_fleet(fleet, room)

    def send(self, event: ServerEvent, exclude: Optional[VuerSession] = None) -> None:
        """Broadcast one event (scene events are also applied to the shared graph).

        ``exclude``: a session not to send it to (an event relayed from one client to
        the others is not echoed back to it).
        """
        msg = message_of(event)
        if msg["etype"] == "NOOP":
            return
        rk = getattr(event, "redundancy_key", None)
        self.send_encoded(encode_event(event, msg), msg, rk() if callable(rk) else None, exclude)

    def _send_node_message(self, msg: Dict[str, Any], payload: Any, info: MergeInfo) -> None:
        self.send_encoded(payload, msg, info=info)  # `upsert @ element`: ops.node_message

    def send_encoded(self, payload: Any, msg: Dict[str, Any], rkey: Optional[str] = None,
                     exclude: Optional[VuerSession] = None,
                     info: Optional[MergeInfo] = None) -> None:
        """Broadcast an already-encoded frame as it is (``msg``: its map), applied to the
        shared graph first (recordings played back use this; so does :meth:`send`).

        With a fleet, the frame is published to the room instead; it comes back through
        the stream, like everyone else's, and reaches every client of the room
        (``exclude`` aside)."""
        if self._fleet is not None:
            self._to_fleet(self._fleet, payload, msg, rkey, info, exclude)
            return
        decoded = codec.unpack(payload)  # the graph holds what clients got (float32, ...)
        group = self._atomic.group
        with self._lock:
            self.graph.apply(decoded)
            for rec in self._recorders:
                rec.on_outbound(payload, decoded)
            if group is not None:
                group.append((payload, exclude))
                return
            if info is None:
                info = merge_info(msg, rkey)  # once for every client's outbox
            for s in self._subscribers:
                if s is not exclude:
                    try:
                        s.core.send_encoded(payload, msg, rkey, info)
                    except SessionClosed:
                        pass  # that client is leaving; the others go on

    def atomic(self) -> ContextManager[None]:
        """Messages broadcast by this thread inside the block reach each client back to back
        (nestable; released, and what was queued still sent, if the block raises)."""
        return held_group(self._atomic, self._push_group)

    def _push_group(self, group: List[Tuple[bytes, Any]]) -> None:
        if self._fleet is not None:
            self._fleet.publish_group([p for p, _ in group])
            return
        with self._lock:
            for s in self._subscribers:
                try:
                    s.core.push_group([p for p, ex in group if ex is not s])
                except SessionClosed:
                    pass  # that client is leaving; the others go on

    def flush(self, timeout: Optional[float] = 10.0) -> None:
        """Block until every client has been written what was broadcast so far.

        With a fleet: first until Redis acknowledged it and this node applied the stream up
        to it (so :attr:`graph` shows it), then the local clients (``TimeoutError`` if
        Redis does not answer within ``timeout``)."""
        if self._fleet is not None:
            timeout = self._fleet_flush(self._fleet, timeout)
        for s in list(self._subscribers):
            try:
                s.flush(timeout)
            except SessionClosed:
                pass

    def get_render(self, *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        """A frame of the shared scene, rendered by whichever browser is connected (the
        newest one), as a ``uint8`` ``(H, W, 3)`` array; the same as ``app.get_render``.

        The request travels behind everything broadcast before the call, so the frame
        shows it (see :meth:`VuerSession.get_render
        <vuer_sync.server.session.VuerSession.get_render>` for the arguments). Waits up to
        ``timeout`` s for a browser to connect (``RPCTimeout`` naming the timeout if none
        does); if the browser leaves mid-call, asks another one within ``timeout``, and
        raises ``SessionClosed`` if none is connected by then. A capture loop therefore
        survives page reloads::

            for i in range(100):
                app.scene.upsert @ Box(key="box", position=[i / 100, 0.15, 0])
                rgb = app.scene.get_render(timeout=10)
        """
        return self._app.get_render(*args, timeout=timeout, **kwargs)

    def record(self, clock: str = "script", filter: Optional[Callable[[Dict[str, Any]], bool]]
               = None, path: Optional[Union[str, os.PathLike]] = None,
               flush_interval: float = 0.25) -> StateSerializer:
        """Start recording the shared scene: the current scene first (one ``SET``), then
        every broadcast. Returns a :class:`~vuer_sync.record.StateSerializer`.

        ``path=None`` keeps the recording in memory (``serialize()``/``save()``); with a
        ``path`` (a file that does not exist yet) it streams there as it is made, written
        by a thread at least every ``flush_interval`` seconds (at most 1), and
        ``app.stop()`` finishes it if ``stop()`` was not called."""
        from ..record import StateSerializer

        rec = StateSerializer(clock=clock, filter=filter, path=path,
                              flush_interval=flush_interval)
        with self._lock:  # snapshot and live feed under one lock: nothing lost or doubled
            if self.graph.used:
                msg = Set(self.graph.snapshot()).serialize()
                rec.on_outbound(codec.encode(msg), msg)
            self._recorders.append(rec)

        def detach() -> None:
            with self._lock:
                if rec in self._recorders:
                    self._recorders.remove(rec)

        rec.attach(detach)
        return rec

    def stop_recordings(self) -> None:
        """Finish the streamed recordings of the shared scene (``Vuer.stop()`` calls this):
        pending records and the end record written, the files closed, the writer threads
        ended. In-memory recordings go on, as before."""
        with self._lock:
            streamed = [r for r in self._recorders if r.path is not None]
        for rec in streamed:
            rec.finish()

    def snapshot(self) -> Dict[str, Any]:
        """The current shared scene as ``SET`` data."""
        with self._lock:
            return msgpack.unpackb(codec.encode(self.graph.snapshot()), raw=False,
                                   strict_map_key=False)

    # -- the fleet (docs/fleet.md) ---------------------------------------------------------

    def join_fleet(self, url: Optional[str], room: Optional[str]) -> Optional[FleetLink]:
        """``Vuer(fleet=url, room=room)``: attach a link to the room (``url``/``room``
        default to ``VUER_SYNC_FLEET``/``VUER_SYNC_ROOM``, else ``"default"``) and return
        it, or ``None`` when there is no URL. Nothing connects before ``app.start()``."""
        url = url if url is not None else env_str("VUER_SYNC_FLEET")
        room = room if room is not None else env_str("VUER_SYNC_ROOM", "default")
        link = FleetLink(url, room) if url else None
        self.use_fleet(link)
        return link

    def use_fleet(self, link: Optional[FleetLink]) -> None:
        """Publish this scene's operations to ``link``'s room, and apply the room's stream
        here (``link.sink`` is set to this scene); ``None`` detaches (the default: no
        fleet, everything applied here at once)."""
        if link is not None:
            link.sink = self
            link.session_factory = FleetSession
        self._fleet = link

    @property
    def fleet(self) -> Optional[FleetLink]:
        """The fleet link, or ``None``."""
        return self._fleet

    def _to_fleet(self, link: FleetLink, payload: Any, msg: Dict[str, Any],
                  rkey: Optional[str], info: Optional[MergeInfo],
                  exclude: Optional[VuerSession]) -> None:
        group = self._atomic.group
        if group is not None:
            group.append((payload, None))  # exclude is not kept inside atomic() here
        else:
            link.publish(payload, msg, rkey, info,
                         None if exclude is None else (link.node_id, exclude.id))

    @staticmethod
    def _fleet_flush(link: FleetLink, timeout: Optional[float]) -> Optional[float]:
        """Redis has it and this node applied it; returns what is left of ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = link.flush(timeout)
        if last is not None:
            link.wait_applied(last, None if deadline is None
                              else max(0.0, deadline - time.monotonic()))
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def fleet_apply(self, items: List[Item]) -> None:
        """Apply one stream entry (the fleet's consumer thread calls this): each message to
        the mirror and the recorders, then to every local client, as a local broadcast."""
        with self._lock:
            for it in items:
                if isinstance(it, bytes):
                    self._apply_one(it, None)
                elif it[0] == GROUP:
                    self._apply_group(it[1])
                elif it[0] == EXCLUDE:
                    mine = self._fleet is not None and it[3] == self._fleet.node_id
                    self._apply_one(it[1], it[2], it[4] if mine else None)
                else:
                    self._apply_one(it[1], it[2])

    def _apply_one(self, payload: bytes, rkey: Optional[str],
                   exclude: Optional[str] = None) -> None:
        decoded = codec.unpack(payload)
        self.graph.apply(decoded)  # the mirror keeps these nodes (and updates them later)
        for rec in self._recorders:
            rec.on_outbound(payload, decoded)
        if not self._subscribers:
            return
        msg = codec.unpack(payload)  # the clients' copy, not the mirror's
        info = merge_info(msg, rkey)
        for s in self._subscribers:
            if s.id == exclude:
                continue
            try:
                s.core.send_encoded(payload, msg, rkey, info)
            except SessionClosed:
                pass  # that client is leaving; the others go on

    def _apply_group(self, payloads: List[bytes]) -> None:
        for payload in payloads:
            decoded = codec.unpack(payload)
            self.graph.apply(decoded)
            for rec in self._recorders:
                rec.on_outbound(payload, decoded)
        for s in self._subscribers:
            try:
                s.core.push_group(payloads)
            except SessionClosed:
                pass

    def fleet_snapshot(self) -> bytes:
        """The scene as one encoded ``SET`` (the fleet's snapshots)."""
        with self._lock:
            return codec.encode(Set(self.graph.snapshot()).serialize())

    def fleet_sessions(self) -> List[Dict[str, Any]]:
        """This node's clients for the fleet's presence: ``sid``, ``init`` (the ``INIT``
        message's ``value``, once received), ``since``."""
        with self._lock:
            subs = list(self._subscribers)
            joined = dict(self._joined)
        out = []
        for s in subs:
            value = getattr(s.init, "value", None) if s.init is not None else None
            out.append({"sid": s.id, "init": value if isinstance(value, dict) else {},
                        "since": joined.get(s.id)})
        return out

    def fleet_call(self, sid: str, op: str, payload: Optional[bytes], args: Dict[str, Any],
                   timeout: float) -> Any:
        """Run a call from another process (a :class:`FleetSession`) on the local client
        ``sid``: ``send`` (an encoded frame), ``flush``, ``rpc`` (an encoded request; the
        answer's map back), ``get_render`` (``args``: its keyword arguments; the frame
        back as bytes, shape and dtype). ``send`` to ``sid="*"``: every local client;
        ``send`` returns how many clients it was queued for."""
        if op == "send" and sid == "*" and payload is not None:
            return self._send_to_all(payload)
        with self._lock:
            session = next((s for s in self._subscribers if s.id == sid), None)
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

    def _send_to_all(self, payload: bytes) -> int:
        msg = codec.unpack(payload)
        delivered = 0
        for s in list(self._subscribers):
            try:
                s.send_encoded(payload, msg)
                delivered += 1
            except SessionClosed:
                pass
        return delivered

    def fleet_relay(self, sid: str, payload: bytes, timeout: float = 10.0) -> int:
        """``POST /relay`` across the fleet: queue an encoded message on the client ``sid``
        wherever it is connected, or (``"*"``) on every client of every node; returns how
        many clients it was queued for. ``SessionClosed`` if ``sid`` is not in the room;
        ``RuntimeError`` without a fleet."""
        link = self._fleet
        if link is None:
            raise RuntimeError("fleet_relay needs a fleet")
        if sid != "*":
            return int(link.call(link.node_of(sid), sid, "send", payload, timeout=timeout))
        return sum(int(link.call(node, "*", "send", payload, timeout=timeout) or 0)
                   for node in link.nodes())

    def fleet_load(self, payload: bytes) -> None:
        """Replace the scene with a fleet snapshot (an encoded ``SET``), for the mirror and
        every local client."""
        self.fleet_apply([payload])

    # -- membership (called by the server) ------------------------------------------------

    def join(self, session: VuerSession) -> None:
        """A client connected: the current scene first (one ``SET``), then live updates."""
        with self._lock:
            if self.graph.used:
                msg = Set(self.graph.snapshot()).serialize()
                session.core.send_encoded(codec.encode_parts(msg), msg)
            self._subscribers.append(session)
            self._joined[session.id] = time.time()
        if self._fleet is not None:
            self._fleet.presence_changed()

    def leave(self, session: VuerSession) -> None:
        """A client disconnected."""
        with self._lock:
            try:
                self._subscribers.remove(session)
            except ValueError:
                pass
            self._joined.pop(session.id, None)
        if self._fleet is not None:
            self._fleet.presence_changed()


class Fleet(SceneOps):
    """A process that publishes into a fleet room and serves no HTTP (a robot, a
    simulator): the same operations as ``app.scene`` (``set/add/upsert/update/remove @
    ...``, ``atomic()``, ``flush()``), sent to the room's Redis stream, which every node of
    the room applies and forwards to its clients (``docs/fleet.md``).

    ``url``: ``redis://host:6379/0`` (``rediss://`` for TLS; ``redis://user:pass@host``),
    default ``VUER_SYNC_FLEET``; ``room``: default ``VUER_SYNC_ROOM``, else ``"default"``.
    Connects at once (``FleetUnavailable`` if Redis does not answer); ``close()`` (or the
    ``with`` block's end) publishes what is queued and stops the publisher thread::

        with Fleet("redis://127.0.0.1:6379/0", room="lab") as fleet:
            for i in range(1000):
                fleet.upsert @ Box(key="robot", position=[i / 1000, 0, 0])
            fleet.flush()   # Redis has all of it
    """

    def __init__(self, url: Optional[str] = None, room: Optional[str] = None,
                 **options: Any):
        url = url if url is not None else env_str("VUER_SYNC_FLEET")
        if not url:
            raise ValueError("Fleet needs a Redis URL (or VUER_SYNC_FLEET)")
        room = room if room is not None else env_str("VUER_SYNC_ROOM", "default")
        self._atomic = GroupLocal()
        self.link = FleetLink(url, room, **options)
        self.link.session_factory = FleetSession
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
