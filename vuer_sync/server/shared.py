"""``app.scene``: one scene shared by every client, replayed to clients that join later.

With a fleet attached (``Vuer(fleet=...)``, :meth:`SharedScene.use_fleet`), ``app.scene``
operations go to the room's Redis stream instead of being applied here; the link's consumer
thread applies every entry of the stream, from every node, in stream order, through the
same local path (the mirror, the recorders, every local client's outbox).
:class:`~vuer_sync.server.fleet_api.Fleet` (a publisher-only process) and
:class:`~vuer_sync.server.fleet_api.FleetSession` live in :mod:`vuer_sync.server.fleet_api`
(also importable from here).
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

from .. import codec
from .._threads import GroupLocal, held_group
from ..coalesce import MergeInfo, merge_info
from ..config import env_str
from ..errors import SessionClosed
from ..events import ServerEvent, Set
from ..fleet.entry import EXCLUDE, GROUP, Item
from ..fleet.link import FleetLink
from ..io_loop import IoLoop, LoopChannel
from ..outbox import OutMessage
from ..poses import Poses
from ..scene import SceneMirror
from .fleet_api import Fleet, FleetSession, run_call
from .ops import SceneOps, encode_event, message_of

if TYPE_CHECKING:  # pragma: no cover
    from ..record import StateSerializer
    from .app import Vuer
    from .session import VuerSession

__all__ = ["Fleet", "FleetSession", "SharedScene"]


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
        self._broadcast(payload, msg, rkey, exclude, info, None)

    def _send_poses(self, poses: Poses) -> None:
        """``poses(...)``: the graph takes the rows directly, nothing is decoded."""
        if self._fleet is not None:
            super()._send_poses(poses)
            return
        self._broadcast(poses.payload, None, None, None, poses.info,
                        lambda graph: graph.update_poses(poses.keys, poses.values))

    def _broadcast(self, payload: Any, msg: Optional[Dict[str, Any]], rkey: Optional[str],
                   exclude: Optional[VuerSession], info: Optional[MergeInfo],
                   apply: Optional[Callable[[SceneMirror], None]]) -> None:
        """Apply to the shared graph (``apply``, or the decoded frame), then queue for every
        client (``exclude`` aside)."""
        decoded: Any = None
        if apply is None:
            decoded = codec.unpack(payload)  # the graph holds what clients got (float32, ...)
        group = self._atomic.group
        with self._lock:
            if apply is not None:
                apply(self.graph)
            else:
                self.graph.apply(decoded)
            for rec in self._recorders:
                rec.on_outbound(payload, decoded)
            if group is not None:
                group.append((payload, exclude))
                return
            if info is None:
                info = merge_info(msg or decoded or {}, rkey)  # once for every client's outbox
            self._fan_out(payload, msg, rkey, info, exclude)

    def _fan_out(self, payload: bytes, msg: Any, rkey: Optional[str], info: MergeInfo,
                 exclude: Optional[VuerSession] = None, exclude_id: Optional[str] = None,
                 here: int = 0) -> int:
        """(Under the lock.) ``payload`` to every client but ``exclude`` (or the one with id
        ``exclude_id``). Idle clients on an I/O loop are written by their loop in one pass
        (one wake-up per loop, not per client), or the first ``here`` of them from this
        thread; the others queue it (and coalesce when behind). Returns how many were
        written from this thread."""
        written = 0
        loops: Optional[Dict[IoLoop, List[Tuple[LoopChannel, OutMessage]]]] = None
        for s in self._subscribers:
            if s is exclude or (exclude_id is not None and s.id == exclude_id):
                continue
            try:
                taken = s.core.send_broadcast(payload, msg, rkey, info)
            except SessionClosed:
                continue  # that client is leaving; the others go on
            if taken is None:
                continue  # queued (the client is behind, or not on an I/O loop)
            ch, m = taken
            if written < here:  # idle: written from this thread, the loop stays asleep
                written += 1
                ch.write_taken_here(ch.conn.protocol.encode_many([payload])[0], m)
            elif loops is None:
                loops = {ch.loop: [taken]}
            else:
                loops.setdefault(ch.loop, []).append(taken)
        if loops is not None:
            for loop, items in loops.items():
                loop.broadcast(payload, items)
        return written

    def atomic(self) -> ContextManager[None]:
        """Messages broadcast by this thread inside the block reach each client back to back
        (nestable; released, and what was queued still sent, if the block raises)."""
        return held_group(self._atomic, self._push_group)

    def _push_group(self, group: List[Tuple[bytes, Any]]) -> None:
        link = self._fleet
        if link is not None:
            link.publish_group([p for p, _ in group],
                               [None if ex is None else (link.node_id, ex.id)
                                for _, ex in group])
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
            link.room_token.source = self._app_token
            link.room_token.on_token = self._adopt_token
        self._fleet = link

    def _app_token(self) -> Optional[str]:
        return getattr(self._app, "token", None)

    def _adopt_token(self, token: str) -> None:
        """The room's token (``docs/fleet.md``): this node's websocket upgrades and
        ``/relay`` require it from now on."""
        self._app.token = token

    @property
    def fleet(self) -> Optional[FleetLink]:
        """The fleet link, or ``None``."""
        return self._fleet

    def _to_fleet(self, link: FleetLink, payload: Any, msg: Dict[str, Any],
                  rkey: Optional[str], info: Optional[MergeInfo],
                  exclude: Optional[VuerSession]) -> None:
        group = self._atomic.group
        if group is not None:
            group.append((payload, exclude))
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

    #: Idle local clients the fleet's consumer thread writes a message to itself, when the
    #: link says so (``fleet_apply(direct=True)``: this node is not behind); further idle
    #: clients get it from their I/O loop (one wake-up per loop), busy ones queue it.
    FLEET_WRITES_HERE = 8

    def fleet_apply(self, items: List[Item], direct: bool = False) -> int:
        """Apply one stream entry (the fleet's consumer thread calls this): each message to
        the mirror and the recorders, then to every local client, as a local broadcast.

        ``direct``: write to idle clients from this thread (no hand-over to the I/O loop's
        thread: one cross-thread wake-up less per delivery); a client with anything queued
        or being written queues the message as usual, so order and coalescing hold.
        Returns how many messages were written from this thread."""
        here = self.FLEET_WRITES_HERE if direct else 0
        written = 0
        with self._lock:
            for it in items:
                if isinstance(it, bytes):
                    written += self._apply_one(it, None, None, here)
                elif it[0] == GROUP:
                    self._apply_group(it[1], it[2] if len(it) > 2 else None)
                elif it[0] == EXCLUDE:
                    mine = self._fleet is not None and it[3] == self._fleet.node_id
                    written += self._apply_one(it[1], it[2], it[4] if mine else None, here)
                else:
                    written += self._apply_one(it[1], it[2], None, here)
        return written

    def _apply_one(self, payload: bytes, rkey: Optional[str],
                   exclude: Optional[str] = None, here: int = 0) -> int:
        """One message to the mirror, the recorders and the local clients, up to ``here``
        idle ones written from this thread; returns how many were."""
        decoded = codec.unpack(payload)
        self.graph.apply(decoded)  # the mirror keeps these nodes (and updates them later)
        for rec in self._recorders:
            rec.on_outbound(payload, decoded)
        if not self._subscribers:
            return 0
        msg = codec.unpack(payload)  # the clients' copy, not the mirror's
        return self._fan_out(payload, msg, rkey, merge_info(msg, rkey), exclude_id=exclude,
                             here=here)

    def _apply_group(self, payloads: List[bytes],
                     excludes: Optional[List[Any]] = None) -> None:
        for payload in payloads:
            decoded = codec.unpack(payload)
            self.graph.apply(decoded)
            for rec in self._recorders:
                rec.on_outbound(payload, decoded)
        node = self._fleet.node_id if self._fleet is not None else None
        skip = {ex[1] for ex in excludes or () if ex is not None and ex[0] == node}
        for s in self._subscribers:
            mine = payloads
            if s.id in skip:
                mine = [p for p, ex in zip(payloads, excludes or ())
                        if ex is None or ex[0] != node or ex[1] != s.id]
            try:
                s.core.push_group(mine)
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
        """Run a call from another process (a :class:`~vuer_sync.server.fleet_api.FleetSession`)
        on the local client ``sid`` (see :func:`~vuer_sync.server.fleet_api.run_call`)."""
        with self._lock:
            sessions = list(self._subscribers)
        return run_call(sessions, sid, op, payload, args, timeout)

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
