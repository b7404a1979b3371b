"""``app.scene``: one scene shared by every client, replayed to clients that join later."""

from __future__ import annotations

import os
import threading
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
from ..errors import SessionClosed
from ..events import ServerEvent, Set
from ..scene import SceneMirror
from .ops import SceneOps, encode_event, message_of

if TYPE_CHECKING:  # pragma: no cover
    from ..record import StateSerializer
    from .app import Vuer
    from .session import VuerSession

__all__ = ["SharedScene"]


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

    def __init__(self, app: Vuer):
        self._app = app
        self._lock = threading.RLock()
        self._atomic = GroupLocal()
        self._subscribers: List[VuerSession] = []
        self._recorders: List[Any] = []
        self.graph = SceneMirror()

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
        shared graph first (recordings played back use this; so does :meth:`send`)."""
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
        with self._lock:
            for s in self._subscribers:
                try:
                    s.core.push_group([p for p, ex in group if ex is not s])
                except SessionClosed:
                    pass  # that client is leaving; the others go on

    def flush(self, timeout: Optional[float] = 10.0) -> None:
        """Block until every client has been written what was broadcast so far."""
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

    # -- membership (called by the server) ------------------------------------------------

    def join(self, session: VuerSession) -> None:
        """A client connected: the current scene first (one ``SET``), then live updates."""
        with self._lock:
            if self.graph.used:
                msg = Set(self.graph.snapshot()).serialize()
                session.core.send_encoded(codec.encode_parts(msg), msg)
            self._subscribers.append(session)

    def leave(self, session: VuerSession) -> None:
        """A client disconnected."""
        with self._lock:
            try:
                self._subscribers.remove(session)
            except ValueError:
                pass
