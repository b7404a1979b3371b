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
import time
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Deque,
    Dict,
    Iterator,
    List,
    Optional,
    Union,
)

from .. import codec
from .._threads import GroupLocal, SerialWorker, held_group, start_thread
from ..errors import ProtocolError, SessionClosed
from ..events import INIT, ClientEvent, GetWebXRMesh, GrabRender, ServerEvent, ServerRPC
from ..outbox import MergeInfo, Outbox
from ..rpc import PendingTable, Waiter, wait
from . import render
from .handles import CameraHandle, NotificationHandle, file_download_js, run_javascript
from .ops import SceneOps, encode_event, message_of

if TYPE_CHECKING:  # pragma: no cover
    from ..record import StateSerializer
    from ..transport import WebSocketConnection
    from .app import Vuer

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

    def __init__(self, app: Vuer, ws: WebSocketConnection, sid: str, environ: Dict[str, Any]):
        self.app = app
        self.id = sid
        self.init: Optional[ClientEvent] = None
        self.remote_addr: Optional[str] = environ.get("REMOTE_ADDR")
        self.origin: Optional[str] = environ.get("HTTP_ORIGIN")
        self._ws = ws
        self._outbox = Outbox(
            encode=codec.encode_parts,
            decode=codec.unpack,
            max_bytes=app.outbox_bytes,
            policy=app.outbox_policy,
            block_timeout=app.outbox_timeout,
        )
        self._rpc = PendingTable()
        self._till = PendingTable()
        self._handlers = SerialWorker(f"vuer-handlers:{sid[:8]}")
        self._downlink: Deque[ClientEvent] = deque(maxlen=app.queue_len)
        self._closed = threading.Event()
        self._state_lock = threading.Lock()
        self._closing = False
        self._close_frame = (1000, "")
        self._atomic = GroupLocal()
        self._threads: List[threading.Thread] = []
        self._tasks: List[threading.Thread] = []
        self._bind_queue: Any = None  # bind() mode: received events for the generator
        self._dismiss_installed = False  # notifications' close-button script sent
        self._reader_done = threading.Event()
        self._inbound = {"received": 0, "bad_messages": 0, "downlink_dropped": 0}
        self._scene_epoch = 0  # bumped by every SET: responders added earlier are gone
        self._grab_render_epoch = -1
        self._render_state = render.RenderState()
        self._last_write = 0.0  # monotonic time the sender last wrote a batch
        self._key_handlers: Dict[Any, Callable[[ClientEvent], Any]] = {}
        self._recorders: List[Any] = []
        host = environ.get("HTTP_HOST") or f"localhost:{app.port}"
        self.base_url = f"{environ.get('wsgi.url_scheme', 'http')}://{host}"
        self.camera = CameraHandle(self)
        self._sender = start_thread(self._send_loop, f"vuer-sender:{sid[:8]}")

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
        if etype == "SET":  # keep get_render's off-screen cameras mounted across it
            render.keep_render_cameras(self, msg)
        rk = getattr(event, "redundancy_key", None)
        self._send_encoded(encode_event(event, msg), msg, rk() if callable(rk) else None)

    def _send_node_message(self, msg: Dict[str, Any], payload: Any, info: MergeInfo) -> None:
        self._send_encoded(payload, msg, None, info)  # `upsert @ element`: ops.node_message

    def _send_encoded(self, payload: bytes, msg: Optional[Dict[str, Any]],
                      redundancy_key: Optional[str] = None,
                      info: Optional[MergeInfo] = None) -> None:
        if msg is not None and msg.get("etype") == "SET":
            self._scene_epoch += 1  # from any source: session, app.scene, relay, playback
        for rec in self._recorders:
            rec._on_message(payload, msg)
        group = self._atomic.group
        if group is not None:
            if self._outbox.closed is not None:
                raise SessionClosed(f"connection closed: {self._outbox.closed}")
            group.append(payload)
            return
        try:
            self._outbox.push(payload, msg, redundancy_key, info)
        except SessionClosed:
            self._drop_if_over_budget()
            raise

    def _drop_if_over_budget(self) -> None:
        reason = self._outbox.closed or ""
        if not reason.startswith("send queue over budget") or self._closing:
            return
        logger.warning("session %s dropped: %s", self.id, reason)
        self._begin_close(1013, "send queue over budget", drain=False)
        # the client is not reading: cut the socket rather than wait for a blocked write
        self._ws.abort()

    def atomic(self) -> ContextManager[None]:
        """Messages sent by this thread inside the block reach the client back to back.

        Nestable; other threads' messages go before or after the group, never inside it.
        What was queued is still sent if the block raises. Blocking calls (``rpc``,
        ``flush``...) are not allowed inside.
        """
        return held_group(self._atomic, self._push_group)

    def _push_group(self, group: List[bytes]) -> None:
        try:
            self._outbox.push_group(group)
        except SessionClosed:
            self._drop_if_over_budget()
            raise

    def _no_atomic(self, what: str) -> None:
        if self._atomic.group is not None:
            raise RuntimeError(f"{what} would wait for messages held back by atomic()")

    def flush(self, timeout: Optional[float] = 10.0) -> None:
        """Block until everything sent so far is written to the socket."""
        self._no_atomic("flush()")
        self._outbox.wait_written(timeout=timeout)

    # -- blocking calls -------------------------------------------------------------------

    def rpc(self, event: ServerRPC, ttl: Optional[float] = 2.0) -> ClientEvent:
        """Send a request and block for the client's answer (an event with ``etype ==
        event.rtype``). The request travels behind every message sent before it."""
        if not isinstance(event, ServerRPC):
            raise TypeError(f"rpc() takes a ServerRPC, got {type(event).__name__}")
        self._no_atomic("rpc()")
        fut = self._rpc.register(event.rtype)
        try:
            self._send_request(event)
            return wait(fut, ttl, f"{event.etype} request to session {self.id}")
        finally:
            self._rpc.discard(event.rtype, fut)

    def _send_request(self, event: ServerRPC) -> None:
        """Send an RPC request; when nothing is queued, write it from this thread (the
        caller waits anyway), saving the hop to the sender thread."""
        msg = message_of(event)
        payload = codec.encode(msg)
        if self._recorders or self._atomic.group is not None:
            self._send_encoded(payload, msg)
            return
        m = self._outbox.take_direct(payload)
        if m is None:
            self._send_encoded(payload, msg)
            return
        try:
            self._ws.send_many([payload])
        except Exception as e:
            self._outbox.abandon([m], "send failed")
            self._on_disconnect(f"send failed: {e}")
            raise SessionClosed(f"session {self.id}: send failed: {e}") from None
        self._last_write = time.monotonic()
        self._outbox.mark_written([m])

    def grab_render(self, ttl: Optional[float] = 2.0, **kwargs: Any) -> ClientEvent:
        """Vuer's ``grab_render``: returns the response event; ``value["frame"]`` is JPEG bytes.

        ``key`` selects the responder (``"DEFAULT"`` = the ``GrabRender`` element); other
        arguments (``quality``, ``downsample``, alias ``subsample``) go in the request data.
        The scene needs a ``GrabRender`` element (see :meth:`get_render`, which adds it).
        """
        return self.rpc(GrabRender(**kwargs), ttl=ttl)

    get_render = render.get_render

    def get_webxr_mesh(self, key: str = "webxr-mesh", ttl: Optional[float] = 2.0) -> ClientEvent:
        """Ask the client's ``WebXRMesh`` component for the meshes detected in AR."""
        return self.rpc(GetWebXRMesh(key=key), ttl=ttl)

    def till(self, etype: str, timeout: Optional[float] = None) -> ClientEvent:
        """Block until this session's next event of type ``etype`` (``INIT``: its own INIT)."""
        if etype == INIT and self.init is not None:
            return self.init
        self._no_atomic("till()")
        fut = self._till.register(etype)
        try:
            return wait(fut, timeout, f"till({etype!r}) on session {self.id}")
        finally:
            self._till.discard(etype, fut)

    def expect(self, etype: str) -> Waiter:
        """Start waiting for this session's next ``etype`` event *now*; ``.wait(timeout)`` later.

        :meth:`till` only sees events that arrive after it is called; when the event is the
        answer to something you send, register first so a fast client cannot beat you::

            done = session.expect("DONE")
            session.send(Command(...))
            event = done.wait(timeout=5)     # RPCTimeout / SessionClosed as till()
        """
        return Waiter(self._till, etype, f"till({etype!r}) on session {self.id}")

    def forever(self) -> None:
        """Block until the client disconnects (or the server stops)."""
        self._closed.wait()

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        return self._closed.wait(timeout)

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
        url = self.base_url + self.app._offer_download(filename, bytes(content), chunk_size)
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
        # copy on write: a sender iterating the list meanwhile is not disturbed
        self._recorders = [*self._recorders, rec]

        def detach() -> None:
            self._recorders = [r for r in self._recorders if r is not rec]

        rec._detach = detach
        if self.closed:  # the session ended already: nothing more will be recorded
            self._stop_recordings()
        return rec

    def _stop_recordings(self) -> None:
        """Finish this session's streamed recordings (called when the session ends): pending
        records and the end record written, the files closed, the writer threads ended."""
        for rec in [r for r in self._recorders if r.path is not None]:
            rec._finish()

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
        self._threads.append(t)
        self._tasks.append(t)
        return t

    def _join_tasks(self, timeout: float) -> None:
        """Join this session's ``spawn_task`` threads (they see ``closed`` and should end)."""
        deadline = time.monotonic() + timeout
        for t in self._tasks:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                logger.warning("task %s of session %s still running after it closed",
                               t.name, self.id)

    # -- received events (Vuer's downlink queue) ------------------------------------------

    def popleft(self) -> ClientEvent:
        return self._downlink.popleft()

    def pop(self) -> ClientEvent:
        return self._downlink.pop()

    def clear(self) -> None:
        self._downlink.clear()

    def stream(self) -> Iterator[ClientEvent]:
        """Yield and remove the buffered received events, oldest first."""
        while self._downlink:
            yield self._downlink.popleft()

    # -- state ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the client left or the session is closing."""
        return self._closed.is_set()

    @property
    def connected(self) -> bool:
        return not self._closed.is_set()

    @property
    def stats(self) -> Dict[str, Any]:
        """Counters: sent, coalesced, bytes_sent, depth, pending_bytes, dropped (by reason),
        received, bad_messages, downlink_dropped."""
        s = self._outbox.snapshot_stats()
        s.update(self._inbound)
        return s

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection after what is queued has been written."""
        self._begin_close(code, reason, drain=True)

    def __repr__(self) -> str:
        client = (self.init.value or {}).get("client") if self.init is not None and isinstance(
            self.init.value, dict) else None
        return f"<VuerSession {self.id[:8]} client={client} {'closed' if self.closed else 'open'}>"

    # -- internals: lifecycle -------------------------------------------------------------

    def _begin_close(self, code: int, reason: str, drain: bool) -> None:
        with self._state_lock:
            if self._closing:
                if not drain:
                    self._outbox.close(reason or "closed", drain=False)
                return
            self._closing = True
            self._close_frame = (code, reason)
        self._outbox.close(reason or f"closed by server ({code})", drain=drain)
        self._closed.set()
        exc = SessionClosed(f"session {self.id} closed by the server ({code} {reason})".strip())
        self._rpc.close(exc)
        self._till.close(exc)

    def _on_disconnect(self, why: str) -> None:
        """The reader saw the connection end (peer close, error or EOF)."""
        self._reader_done.set()
        with self._state_lock:
            self._closing = True
        self._outbox.close(why, drain=False)
        self._closed.set()
        exc = SessionClosed(f"session {self.id}: {why}")
        self._rpc.close(exc)
        self._till.close(exc)
        self._stop_recordings()  # streamed recordings of this session end with it

    def _threads_to_join(self) -> List[threading.Thread]:
        ts = [self._sender, *self._threads]
        h = self._handlers.stop()
        if h is not None:
            ts.append(h)
        return ts

    # -- internals: sender thread ---------------------------------------------------------

    def _send_loop(self) -> None:
        ws = self._ws
        interval = self.app.ping_interval
        ping_sent_at: Optional[float] = None
        next_ping = time.monotonic() + interval if interval else None
        init_timeout = self.app.init_timeout
        init_by = None if not init_timeout else time.monotonic() + init_timeout
        batch: Any = None
        try:
            while True:
                if init_by is not None and self.init is not None:
                    init_by = None
                wake = next_ping if init_by is None else \
                    init_by if next_ping is None else min(next_ping, init_by)
                timeout = None if wake is None else max(0.0, wake - time.monotonic())
                batch = self._outbox.pop_batch(timeout=timeout)
                if batch is None:
                    break
                if batch:
                    ws.send_many([m.payload for m in batch])
                    self._last_write = time.monotonic()
                    self._outbox.mark_written(batch)
                    batch = None
                    continue
                now = time.monotonic()
                if init_by is not None and now >= init_by and self.init is None:
                    logger.info("session %s: no INIT within %.0f s (init_timeout): closing",
                                self.id, init_timeout)
                    self._begin_close(1008, "no INIT received in time", drain=False)
                    break
                if next_ping is not None and now >= next_ping:
                    if ping_sent_at is not None and ws.last_received < ping_sent_at:
                        logger.warning("session %s: no answer to keepalive ping for %.0f s",
                                       self.id, now - ping_sent_at)
                        self._begin_close(1011, "keepalive timeout", drain=False)
                        break
                    ws.ping(b"vs")
                    ping_sent_at = now
                    next_ping = now + interval
        except OSError as e:
            logger.info("session %s: send failed: %s", self.id, e)
            self._outbox.abandon(batch, "send failed")
            self._on_disconnect(f"send failed: {e}")
        except Exception as e:  # ConnectionClosed from the transport
            logger.debug("session %s: sender stopped: %r", self.id, e)
            self._outbox.abandon(batch, "connection closed")
            self._on_disconnect(f"connection closed: {e}")
        finally:
            code, reason = self._close_frame
            if not self._reader_done.is_set():
                try:
                    ws.close(code, reason)
                except Exception:
                    pass
                if not self._reader_done.wait(1.0):
                    ws.abort()

    # -- internals: inbound ---------------------------------------------------------------

    def _on_message(self, data: Any) -> None:
        """Reader thread: decode one frame and hand it to the app's dispatcher."""
        self._inbound["received"] += 1
        try:
            msg = codec.decode(data)
        except ProtocolError as e:
            self._inbound["bad_messages"] += 1
            n = self._inbound["bad_messages"]
            if n <= 10 or n % 1000 == 0:
                logger.warning("session %s: ignored bad message #%d: %s", self.id, n, e)
            return
        ev = ClientEvent.from_dict(msg)
        try:
            self.app._dispatch(self, ev)
        except Exception:  # a bug of ours must not end the connection
            self._inbound["bad_messages"] += 1
            logger.exception("session %s: failed to dispatch %s", self.id, ev.etype)

    def _remember(self, ev: ClientEvent) -> None:
        if len(self._downlink) == self._downlink.maxlen:
            self._inbound["downlink_dropped"] += 1
        self._downlink.append(ev)
