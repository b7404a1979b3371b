"""``VuerSession``: one connected client, as blocking calls.

Scene operations enqueue on the connection's ordered outbox and return at once; ``rpc``,
``grab_render``, ``till`` and friends block on futures that resolve with the answer, raise
:class:`~vuer_sync.errors.RPCTimeout` (a ``TimeoutError``), or raise
:class:`~vuer_sync.errors.SessionClosed` as soon as the client disconnects.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterator,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from .._threads import held_group, start_thread
from ..coalesce import MergeInfo
from ..errors import SessionClosed
from ..events import INIT, ClientEvent, GetWebXRMesh, GrabRender, ServerEvent, ServerRPC
from ..poses import Poses
from ..rpc import Waiter, wait
from . import render
from .core import SessionCore
from .handles import CameraHandle, NotificationHandle, file_download_js, run_javascript
from .ops import SceneOps, encode_event, message_of
from .xr import controller_stream, hand_stream

if TYPE_CHECKING:  # pragma: no cover
    from ..record import StateSerializer
    from ..transport import WebSocketConnection
    from ..transport.nonblocking import NonBlockingConnection
    from .app import Vuer
    from .core import ServerSide

logger = logging.getLogger("vuer_sync.session")

__all__ = ["VuerSession"]


class VuerSession(SceneOps):
    """One connected client (a browser tab or a Python ``VuerClient``).

    Created by the server; your ``spawn`` function receives it::

        @app.spawn(start=True)
        def main(session: VuerSession):
            session.set @ DefaultScene(Box(key="box"))
            event = session.till("CLICK", timeout=10)
            session.upsert @ Box(key="box", position=[0, 1, 0])
            session.forever()
    """

    def __init__(self, app: Vuer, ws: Union[WebSocketConnection, NonBlockingConnection],
                 sid: str, environ: Dict[str, Any],
                 server: ServerSide):
        self.app = app
        self.id = sid
        self.init: Optional[ClientEvent] = None
        self.remote_addr: Optional[str] = environ.get("REMOTE_ADDR")
        self.origin: Optional[str] = environ.get("HTTP_ORIGIN")
        host = environ.get("HTTP_HOST") or f"localhost:{app.port}"
        self.base_url = f"{environ.get('wsgi.url_scheme', 'http')}://{host}"
        self.camera = CameraHandle(self)
        #: the headset's hands and controllers (``docs/teleop.md``), latest-value reads
        self.hands = hand_stream(app.hands)
        self.controllers = controller_stream(app.controllers)
        #: the inner interface (:class:`~vuer_sync.server.core.SessionCore`) the server's
        #: own modules use; not part of the API
        self.core = SessionCore(self, app, ws, sid, server)

    # -- scene operations (SceneOps provides set/add/upsert/update/remove) ------------------

    def send(self, event: ServerEvent) -> None:
        """Enqueue one server event and return at once (ordered with everything else).

        Serialisation errors raise here, in the caller; after the client left this raises
        :class:`~vuer_sync.errors.SessionClosed`.
        """
        msg = message_of(event)
        etype = msg["etype"]
        if etype == "NOOP":
            return
        core = self.core
        if etype == "SET":  # e.g. get_render keeps its off-screen cameras mounted across it
            for hook in core.set_hooks:
                hook(msg)
        rk = getattr(event, "redundancy_key", None)
        core.send_encoded(encode_event(event, msg), msg, rk() if callable(rk) else None)

    def _send_node_message(self, msg: Dict[str, Any], payload: Any, info: MergeInfo) -> None:
        self.core.send_encoded(payload, msg, None, info)  # `upsert @ element`: ops.node_message

    def _send_poses(self, poses: Poses) -> None:
        self.core.send_encoded(poses.payload, None, None, poses.info)  # no map needed

    def send_encoded(self, payload: Any, msg: Dict[str, Any]) -> None:
        """Queue an already-encoded frame as it is (``msg``: its map), in order with
        everything else: recordings played back, messages relayed by ``/relay``."""
        self.core.send_encoded(payload, msg)

    def atomic(self) -> ContextManager[None]:
        """Messages sent by this thread inside the block reach the client back to back.

        Nestable; other threads' messages go before or after the group, never inside it.
        What was queued is still sent if the block raises. Blocking calls (``rpc``,
        ``flush``...) are not allowed inside.
        """
        return held_group(self.core.atomic, self.core.push_group)

    def flush(self, timeout: Optional[float] = 10.0) -> None:
        """Block until everything sent so far is written to the socket."""
        self.core.no_atomic("flush()")
        self.core.outbox.wait_written(timeout=timeout)

    # -- blocking calls -------------------------------------------------------------------

    def rpc(self, event: ServerRPC, ttl: Optional[float] = 2.0) -> ClientEvent:
        """Send a request and block for the client's answer (an event with ``etype ==
        event.rtype``). The request travels behind every message sent before it."""
        if not isinstance(event, ServerRPC):
            raise TypeError(f"rpc() takes a ServerRPC, got {type(event).__name__}")
        core = self.core
        core.no_atomic("rpc()")
        fut = core.rpc.register(event.rtype)
        try:
            return core.request(event, fut, ttl, f"{event.etype} request to session {self.id}")
        finally:
            core.rpc.discard(event.rtype, fut)

    def grab_render(self, ttl: Optional[float] = 2.0, **kwargs: Any) -> ClientEvent:
        """Vuer's ``grab_render``: returns the response event; ``value["frame"]`` is JPEG bytes.

        ``key`` selects the responder (``"DEFAULT"`` = the ``GrabRender`` element); other
        arguments (``quality``, ``downsample``, alias ``subsample``) go in the request data.
        The scene needs a ``GrabRender`` element (see :meth:`get_render`, which adds it).
        """
        return self.rpc(GrabRender(**kwargs), ttl=ttl)

    def get_render(self, width: Optional[int] = None, height: Optional[int] = None, *,
                   position: Optional[Sequence[float]] = None,
                   wxyz: Optional[Sequence[float]] = None,
                   look_at: Optional[Sequence[float]] = None, fov: Optional[float] = None,
                   quality: float = 0.9, downsample: int = 1, depth: bool = False,
                   near: float = 0.1, far: float = 100.0, timeout: float = 10.0,
                   settle: float = 0.05) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Block until the browser renders a frame; return it as ``uint8`` ``(H, W, 3)``.

        Without a camera pose the frame is the main canvas, exactly what the user sees
        (``downsample`` divides its size; ``width``/``height`` rescale it). A ``GrabRender``
        element is added to the scene if this session has none yet.

        With ``position`` (and ``wxyz`` as ``(w, x, y, z)``, or ``look_at`` a point), ``fov``
        (vertical, degrees) and ``width``/``height``, an off-screen ``CameraView`` renders
        from that pose: **the user's own view does not move** (the helper camera shows no
        gizmo, frustum or preview in the canvas). ``depth=True`` also returns the depth frame
        the web client sends, as ``(rgb, depth)``: ``(H, W)`` ``uint8`` from a JPEG,
        ``255 * (1 - (z - near) / (far - near))`` for a point ``z`` in front of the camera
        (0 where nothing was drawn), so pass a tight ``near``/``far``. There is one helper
        camera per ``(width, height, fov, near, far, depth)`` combination, at most
        :data:`~vuer_sync.server.render.MAX_RENDER_CAMERAS` per session (``RuntimeError``
        beyond): the browser spends a WebGL context on each.

        The frame reflects every scene message sent before the call: the request travels
        behind them, and the call waits ``settle`` s after the last one was written so the
        browser has drawn it (skipped when nothing was written since the previous frame).
        Raises :class:`~vuer_sync.errors.RPCTimeout` if no frame comes within ``timeout`` s,
        :class:`~vuer_sync.errors.SessionClosed` if the browser leaves, ``ValueError`` naming
        what arrived if it is not a JPEG.

        Example (needs a browser on the session)::

            rgb = session.get_render()                                   # the user's view
            rgb = session.get_render(640, 480, position=[2, 1, 2], look_at=[0, 0, 0], fov=60)
        """
        return render.get_render(self, width, height, position=position, wxyz=wxyz,
                                 look_at=look_at, fov=fov, quality=quality,
                                 downsample=downsample, depth=depth, near=near, far=far,
                                 timeout=timeout, settle=settle)

    def get_webxr_mesh(self, key: str = "webxr-mesh", ttl: Optional[float] = 2.0) -> ClientEvent:
        """Ask the client's ``WebXRMesh`` component for the meshes detected in AR."""
        return self.rpc(GetWebXRMesh(key=key), ttl=ttl)

    def till(self, etype: str, timeout: Optional[float] = None) -> ClientEvent:
        """Block until this session's next event of type ``etype`` (``INIT``: its own INIT)."""
        if etype == INIT and self.init is not None:
            return self.init
        till = self.core.till
        self.core.no_atomic("till()")
        fut = till.register(etype)
        try:
            return wait(fut, timeout, f"till({etype!r}) on session {self.id}")
        finally:
            till.discard(etype, fut)

    def expect(self, etype: str) -> Waiter:
        """Start waiting for this session's next ``etype`` event *now*; ``.wait(timeout)`` later.

        :meth:`till` only sees events that arrive after it is called; when the event is the
        answer to something you send, register first so a fast client cannot beat you::

            done = session.expect("DONE")
            session.send(Command(...))
            event = done.wait(timeout=5)     # RPCTimeout / SessionClosed as till()
        """
        return Waiter(self.core.till, etype, f"till({etype!r}) on session {self.id}")

    def forever(self) -> None:
        """Block until the client disconnects (or the server stops)."""
        self.core.closed.wait()

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        return self.core.closed.wait(timeout)

    # -- client handles -------------------------------------------------------------------

    def add_notification(self, title: str, body: str, loading: bool = False,
                         with_close_button: bool = True, auto_close: Any = False,
                         color: Optional[str] = None) -> NotificationHandle:
        """Show a notification in the client's HTML overlay; returns a handle whose fields
        update it live (``handle.body = "done"``) and whose ``remove()`` takes it away.
        ``auto_close`` is in milliseconds (``False``: stays until closed)."""
        return NotificationHandle(self, title, body, loading=loading,
                                  with_close_button=with_close_button, auto_close=auto_close,
                                  color=color)

    def send_file_download(self, filename: str, content: bytes,
                           chunk_size: int = 1 << 20) -> str:
        """Make the browser save ``content`` as ``filename``.

        The bytes are served once over HTTP by this server (an unguessable one-time URL,
        streamed in ``chunk_size`` pieces, never through the websocket) and the page is told
        to download it. Returns the URL.
        """
        url = self.base_url + self.app.downloads.offer(filename, bytes(content), chunk_size)
        run_javascript(self, file_download_js(url, filename))
        return url

    def run_javascript(self, code: str, delay_ms: int = 0) -> None:
        """Run JavaScript in the web client (Vuer's ``TIMEOUT`` event)."""
        run_javascript(self, code, delay_ms)

    def record(self, clock: str = "script", filter: Optional[Callable[[Dict[str, Any]], bool]]
               = None, path: Optional[Union[str, os.PathLike]] = None,
               flush_interval: float = 0.25) -> StateSerializer:
        """Start recording what is sent to this session; returns a
        :class:`~vuer_sync.record.StateSerializer` (``serialize()``, ``insert_sleep()``,
        ``stop()``).

        ``path=None`` keeps the recording in memory; with a ``path`` (a file that does not
        exist yet) it streams there as it is made, written by a thread at least every
        ``flush_interval`` seconds (at most 1), and is finished when the session ends if
        ``stop()`` was not called."""
        from ..record import StateSerializer

        rec = StateSerializer(clock=clock, filter=filter, path=path,
                              flush_interval=flush_interval)
        core = self.core
        # copy on write: a sender iterating the list meanwhile is not disturbed
        core.recorders = [*core.recorders, rec]

        def detach() -> None:
            core.recorders = [r for r in core.recorders if r is not rec]

        rec.attach(detach)
        if self.closed:  # the session ended already: nothing more will be recorded
            core.stop_recordings()
        return rec

    # -- background work ------------------------------------------------------------------

    def spawn_task(self, fn: Callable[..., Any], *args: Any, name: Optional[str] = None
                   ) -> threading.Thread:
        """Run ``fn(*args)`` on a thread tied to this session: it can watch
        ``session.closed`` and is joined when the session ends (a warning names a task
        still running a second later)."""

        def run() -> None:
            try:
                fn(*args)
            except SessionClosed:
                logger.debug("task %s ended: session closed", name or fn)
            except Exception:
                logger.exception("task %s of session %s raised", name or fn, self.id)

        t = start_thread(run, name or f"vuer-task:{self.id[:8]}")
        self.core.add_thread(t, task=True)
        return t

    # -- received events (Vuer's downlink queue) ------------------------------------------

    def popleft(self) -> ClientEvent:
        return self.core.downlink.popleft()

    def pop(self) -> ClientEvent:
        return self.core.downlink.pop()

    def clear(self) -> None:
        self.core.downlink.clear()

    def stream(self) -> Iterator[ClientEvent]:
        """Yield and remove the buffered received events, oldest first."""
        downlink = self.core.downlink
        while downlink:
            yield downlink.popleft()

    # -- state ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the client left or the session is closing."""
        return self.core.closed.is_set()

    @property
    def connected(self) -> bool:
        return not self.core.closed.is_set()

    @property
    def stats(self) -> Dict[str, Any]:
        """Counters: sent, coalesced, bytes_sent, depth, pending_bytes, dropped (by reason),
        received, bad_messages, downlink_dropped; and ``socket_full``: the client's socket
        takes no more bytes right now (it is behind; ``None`` with ``io_threads=0``)."""
        s = self.core.outbox.snapshot_stats()
        s.update(self.core.inbound)
        s["downlink_dropped"] = self.core.downlink.dropped
        return s

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection after what is queued has been written."""
        self.core.begin_close(code, reason, drain=True)

    def __repr__(self) -> str:
        client = (self.init.value or {}).get("client") if self.init is not None and isinstance(
            self.init.value, dict) else None
        return f"<VuerSession {self.id[:8]} client={client} {'closed' if self.closed else 'open'}>"
