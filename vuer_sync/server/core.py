"""``SessionCore``: the machinery of one connection, behind
:class:`~vuer_sync.server.session.VuerSession`.

:class:`VuerSession` is the user's API; this is the inner interface the server's own modules use
(``render``, ``handles``, ``shared``, ``viewer``, the serving loop): the outbox and the sender
thread, the RPC and ``till`` tables, the handler thread, the inbound path (decode, then
dispatch to waiters, handlers, spawn and bind), and the close/disconnect lifecycle.

Outbound: ``send_encoded(payload, msg)`` queues an encoded frame on the ordered outbox; the
sender thread (the session's :class:`~vuer_sync.channel.Channel`) writes batches and keeps
the connection alive.
Inbound: the serving loop hands every frame to :meth:`SessionCore.on_inbound`, which decodes it
and :meth:`SessionCore.dispatch`es it (reader thread: user code goes to the handler thread).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

from .. import codec
from .._threads import GroupLocal, SerialQueue, SerialWorker, WorkerPool, start_thread
from ..channel import Channel
from ..coalesce import MergeInfo
from ..errors import ProtocolError, SessionClosed
from ..events import INIT, ClientEvent, ReceivedEvents, ServerRPC
from ..io_loop import IoLoop, LoopChannel, reading_here
from ..outbox import Outbox, OutMessage
from ..rpc import PendingTable, Reply, wait
from ..transport.nonblocking import NonBlockingConnection
from .ops import message_of
from .registry import Registry
from .render import RenderState

if TYPE_CHECKING:  # pragma: no cover
    from typing import Protocol

    from ..transport import WebSocketConnection
    from .app import Vuer
    from .session import VuerSession

    class ServerSide(Protocol):
        """What a session's dispatcher needs of the server that accepted it."""

        registry: Registry
        workers: Optional[WorkerPool]

        def pick_loop(self) -> Optional[IoLoop]:
            """The I/O loop for a connection served without threads of its own."""

        def connection_ended(self, session: VuerSession, exc: BaseException) -> None:
            """A connection on an I/O loop ended (called on the loop thread)."""

        def session_ready(self, session: VuerSession) -> None:
            """The session's INIT arrived (wake ``wait_for_session``, start its spawn)."""

        def rtc_event(self, session: VuerSession, ev: ClientEvent) -> None:
            """An ``RTC`` event for the collaborative room."""

logger = logging.getLogger("vuer_sync.session")

__all__ = ["SessionCore", "hand_over_gil"]


def hand_over_gil() -> None:
    """Let a thread just woken by an answer (an ``rpc()`` or ``till()`` caller) take the GIL
    now, rather than after this reader thread's way back into ``recv``.

    ``time.sleep(0)`` releases the GIL for a moment; the woken caller, already waiting for
    it, takes it. Measured on the RPC round trip benchmark (2 cores, loopback): p50 from
    ~150 to ~110 µs. Called only when a waiter was woken, never per message.
    """
    time.sleep(0)


class SessionCore:
    """The inner interface of one connection (see the module docstring).

    * outbound: :meth:`send_encoded`, :meth:`push_group`, :meth:`send_request`,
      :meth:`no_atomic`, :meth:`accepting`, :meth:`written`, :meth:`add_set_hook`;
    * inbound: :meth:`on_inbound`, :meth:`dispatch`, :meth:`remember`, :meth:`on_key` /
      :meth:`drop_key`, :meth:`submit` (the handler thread);
    * lifecycle: :meth:`begin_close`, :meth:`disconnected`, :meth:`stop_recordings`,
      :meth:`add_thread`, :meth:`join_tasks`, :meth:`threads_to_join`.

    State the server's modules read: ``outbox``, ``rpc``/``till`` (pending tables),
    ``closed`` (an ``Event``), ``downlink`` (received events), ``recorders``, ``scene_epoch``
    (bumped by every ``SET``), ``last_write`` (monotonic time of the last written batch),
    ``render_state`` (``render``'s), ``grab_render_epoch``, ``dismiss_installed``,
    ``sender`` (the sender thread), ``ws`` (the connection)."""

    def __init__(self, session: VuerSession, app: Vuer,
                 ws: Union[WebSocketConnection, NonBlockingConnection], sid: str,
                 server: ServerSide):
        self.session = session
        self.app = app
        self.ws = ws
        self.server = server
        self.outbox = Outbox(
            encode=codec.encode_parts,
            decode=codec.unpack,
            max_bytes=app.outbox_bytes,
            policy=app.outbox_policy,
            block_timeout=app.outbox_timeout,
            coalesce_after=app.coalesce_after,
        )
        self.rpc = PendingTable()
        self.till = PendingTable()
        pool = server.workers
        self.handlers: Union[SerialQueue, SerialWorker] = (
            SerialQueue(pool, f"vuer-handlers:{sid[:8]}") if pool is not None
            else SerialWorker(f"vuer-handlers:{sid[:8]}"))
        self.downlink = ReceivedEvents(app.queue_len, app.downlink_bytes)
        self.closed = threading.Event()
        self.atomic = GroupLocal()
        self.inbound = {"received": 0, "bad_messages": 0}
        self.recorders: List[Any] = []
        self.scene_epoch = 0  # bumped by every SET: responders added earlier are gone
        self.grab_render_epoch = -1
        self.render_state = RenderState()  # what get_render remembers about this session
        self.dismiss_installed = False  # notifications' close-button script sent
        self.bind_queue: Any = None  # bind() mode: received events for the generator
        self.set_hooks: List[Callable[[Dict[str, Any]], Any]] = []
        self._key_handlers: Dict[Any, Callable[[ClientEvent], Any]] = {}
        self._state_lock = threading.Lock()
        self._closing = False
        self._threads: List[threading.Thread] = []
        self.tasks: List[threading.Thread] = []
        init_timeout = app.init_timeout
        self._init_by = None if not init_timeout else time.monotonic() + init_timeout
        hooks: Dict[str, Any] = dict(
            ping_interval=app.ping_interval, name=f"session {sid}",
            on_send_error=self._send_failed, on_keepalive_timeout=self._keepalive_timeout,
            deadline=self._init_deadline, on_deadline=self._init_overdue)
        self.channel: Union[Channel, LoopChannel]
        loop = server.pick_loop() if isinstance(ws, NonBlockingConnection) else None
        if loop is not None:  # started by the server once the session is registered
            assert isinstance(ws, NonBlockingConnection)
            self.channel = LoopChannel(loop, ws, self.outbox, on_message=self.on_inbound,
                                       on_end=self._ended, send_timeout=app.send_timeout,
                                       **hooks)
        else:
            assert not isinstance(ws, NonBlockingConnection), "no I/O loop is running"
            self.channel = Channel(ws, self.outbox, **hooks)
            self.channel.sender = start_thread(self.channel.send_loop, f"vuer-sender:{sid[:8]}")

    # -- outbound -------------------------------------------------------------------------

    def send_encoded(self, payload: Any, msg: Optional[Dict[str, Any]],
                     redundancy_key: Optional[str] = None,
                     info: Optional[MergeInfo] = None) -> None:
        """Queue one encoded frame (``msg``: its map, for coalescing and recordings)."""
        if msg is not None and msg.get("etype") == "SET":
            self.scene_epoch += 1  # from any source: session, app.scene, relay, playback
        for rec in self.recorders:
            rec.on_outbound(payload, msg)
        group = self.atomic.group
        if group is not None:
            if self.outbox.closed is not None:
                raise SessionClosed(f"connection closed: {self.outbox.closed}")
            group.append(payload)
            return
        try:
            self.outbox.push(payload, msg, redundancy_key, info)
        except SessionClosed:
            self._drop_if_over_budget()
            raise

    def send_broadcast(self, payload: Any, msg: Optional[Dict[str, Any]],
                       redundancy_key: Optional[str] = None,
                       info: Optional[MergeInfo] = None
                       ) -> Optional[Tuple[LoopChannel, OutMessage]]:
        """:meth:`send_encoded` for a frame many sessions get (``app.scene``). When this
        connection is on an I/O loop and idle (nothing queued or being written, no
        recording, no ``atomic()`` block), its outbox reserves the socket for the frame and
        the channel and message are returned: the caller hands them to the loop
        (``IoLoop.broadcast``: one wake-up for every session, and the frame encoded once).
        Otherwise the frame is queued as usual (it coalesces there if this client is behind)
        and ``None`` is returned."""
        ch = self.channel
        if not isinstance(ch, LoopChannel) or self.recorders or self.atomic.group is not None \
                or (msg is not None and msg.get("etype") == "SET"):
            self.send_encoded(payload, msg, redundancy_key, info)  # the general path
            return None
        # the hot path (a 1 kHz producer, many clients): one outbox call when it is busy
        if type(payload) is bytes and len(payload) <= ch.conn.protocol.fragment_size:
            m = self.outbox.take_direct(payload)
            if m is not None:
                return ch, m
        try:
            self.outbox.push(payload, msg, redundancy_key, info)
        except SessionClosed:
            self._drop_if_over_budget()
            raise
        return None

    def push_group(self, group: List[Any]) -> None:
        """Queue the frames of an ``atomic()`` block back to back."""
        try:
            self.outbox.push_group(group)
        except SessionClosed:
            self._drop_if_over_budget()
            raise

    def _drop_if_over_budget(self) -> None:
        reason = self.outbox.closed or ""
        if not reason.startswith("send queue over budget") or self._closing:
            return
        logger.warning("session %s dropped: %s", self.session.id, reason)
        self.begin_close(1013, "send queue over budget", drain=False)
        # the client is not reading: cut the socket rather than wait for a blocked write
        self.channel.abort()

    def no_atomic(self, what: str) -> None:
        """``RuntimeError`` inside ``atomic()``: ``what`` would wait for held-back messages."""
        if self.atomic.group is not None:
            raise RuntimeError(f"{what} would wait for messages held back by atomic()")

    def accepting(self) -> bool:
        """The outbox still takes messages (the session is not closing)."""
        return self.outbox.closed is None

    def written(self) -> int:
        """How many frames the sender has written so far."""
        return int(self.outbox.snapshot_stats()["sent"])

    def add_set_hook(self, hook: Callable[[Dict[str, Any]], Any]) -> None:
        """Call ``hook(msg)`` with the wire map of every ``SET`` the session's ``send`` queues,
        just before it is queued (``render`` keeps its helper cameras mounted with it)."""
        self.set_hooks.append(hook)

    def send_request(self, event: ServerRPC) -> None:
        """Send an RPC request; when nothing is queued, write it from this thread (the
        caller waits anyway), saving the hop to the sender thread."""
        msg = message_of(event)
        payload = codec.encode(msg)
        if self.recorders or self.atomic.group is not None:
            self.send_encoded(payload, msg)
            return
        m = self.outbox.take_direct(payload)
        if m is None:
            self.send_encoded(payload, msg)
            return
        try:
            self.channel.write_now(m)
        except Exception as e:
            self.outbox.abandon([m], "send failed")
            self.disconnected(f"send failed: {e}")
            raise SessionClosed(f"session {self.session.id}: send failed: {e}") from None

    def request(self, event: ServerRPC, fut: Reply, ttl: Optional[float], what: str) -> Any:
        """Send an RPC request (:meth:`send_request`) and block for its answer (see
        :func:`~vuer_sync.rpc.wait`), reading it from this thread where the connection
        allows it (``LoopChannel.read_until``: one cross-thread wake less per round trip)."""
        start = time.monotonic()
        self.channel.read_until(fut, ttl, lambda: self.send_request(event))
        left = ttl
        if ttl is not None and not fut.done():
            left = max(0.0, ttl - (time.monotonic() - start))
        return wait(fut, left, what, asked=ttl)

    # -- the sender thread (the channel's, with this session's hooks) --------------------

    def _init_deadline(self) -> Optional[float]:
        """When the client's INIT is due (None once it arrived, or without ``init_timeout``)."""
        if self._init_by is not None and self.session.init is not None:
            self._init_by = None
        return self._init_by

    def _init_overdue(self, now: float) -> bool:
        """The INIT deadline passed: close with 1008 (False: the sender ends)."""
        if self.session.init is not None:
            return True
        logger.info("session %s: no INIT within %.0f s (init_timeout): closing",
                    self.session.id, self.app.init_timeout)
        self.begin_close(1008, "no INIT received in time", drain=False)
        return False

    def _keepalive_timeout(self) -> None:
        self.begin_close(1011, "keepalive timeout", drain=False)

    def _ended(self, exc: BaseException) -> None:
        """The connection on an I/O loop ended (loop thread)."""
        self.server.connection_ended(self.session, exc)

    def _send_failed(self, exc: BaseException, batch: List[Any]) -> None:
        sid = self.session.id
        if isinstance(exc, OSError):
            logger.info("session %s: send failed: %s", sid, exc)
            self.outbox.abandon(batch, "send failed")
            self.disconnected(f"send failed: {exc}")
        else:  # ConnectionClosed from the transport
            logger.debug("session %s: sender stopped: %r", sid, exc)
            self.outbox.abandon(batch, "connection closed")
            self.disconnected(f"connection closed: {exc}")

    @property
    def last_write(self) -> float:
        """Monotonic time the sender (or an RPC caller) last wrote a batch."""
        return self.channel.last_write

    # -- inbound (reader thread: never runs user code) ------------------------------------

    def on_inbound(self, data: Any) -> None:
        """One frame from the client: decode it and dispatch the event."""
        self.inbound["received"] += 1
        try:
            msg = codec.decode(data)
        except ProtocolError as e:
            self.inbound["bad_messages"] += 1
            n = self.inbound["bad_messages"]
            if n <= 10 or n % 1000 == 0:
                logger.warning("session %s: ignored bad message #%d: %s", self.session.id, n, e)
            return
        ev = ClientEvent.from_dict(msg)
        try:
            self.dispatch(ev, len(data))
        except Exception:  # a bug of ours must not end the connection
            self.inbound["bad_messages"] += 1
            logger.exception("session %s: failed to dispatch %s", self.session.id, ev.etype)

    def dispatch(self, ev: ClientEvent, size: int = 0) -> None:
        """An RPC answer wakes its caller and stops there; anything else is buffered, wakes
        ``till``, and goes to the handlers (on the handler thread) and the bind generator."""
        session = self.session
        et = ev.etype
        if self.rpc.resolve(et, ev):
            if not reading_here():  # else the caller read its own answer: it runs already
                hand_over_gil()
            return
        if et == INIT and session.init is None:
            session.init = ev
            self.server.session_ready(session)
        self.remember(ev, size)  # before waking till(): the event is in the buffer by then
        woke = self.till.resolve(et, ev)
        if et == "CAMERA_MOVE":
            session.camera.on_move(ev)
        elif et == "HAND_MOVE":
            session.hands.on_event(ev)
        elif et == "CONTROLLER_MOVE":
            session.controllers.on_event(ev)
        elif et == "RTC":
            self.server.rtc_event(session, ev)
        if self._key_handlers:
            hook = self._key_handlers.get((et, getattr(ev, "key", None)))
            if hook is not None:
                self.handlers.submit(hook, ev)
        for fn in self.server.registry.take_handlers(et):
            self.handlers.submit(fn, ev, session)
        if self.bind_queue is not None:
            self.bind_queue.put(ev)
        if woke:
            hand_over_gil()

    def remember(self, ev: ClientEvent, size: int = 0) -> None:
        """Buffer a received event of ``size`` bytes on the wire (the session's
        ``popleft``/``stream`` read it; see :class:`~vuer_sync.events.ReceivedEvents`)."""
        self.downlink.append(ev, size)

    def on_key(self, etype: str, key: str, fn: Callable[[ClientEvent], Any]) -> None:
        """Call ``fn(event)`` on the handler thread for ``etype`` events with this ``key``."""
        self._key_handlers[(etype, key)] = fn

    def drop_key(self, etype: str, key: str) -> None:
        self._key_handlers.pop((etype, key), None)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the session's handler thread (in order, errors logged)."""
        self.handlers.submit(fn, *args)

    # -- lifecycle ------------------------------------------------------------------------

    def begin_close(self, code: int, reason: str, drain: bool) -> None:
        """Close with ``code``/``reason``, after what is queued (``drain``) or at once."""
        with self._state_lock:
            if self._closing:
                if not drain:
                    self.outbox.close(reason or "closed", drain=False)
                return
            self._closing = True
            self.channel.set_close(code, reason)
        self.outbox.close(reason or f"closed by server ({code})", drain=drain)
        self.closed.set()
        exc = SessionClosed(f"session {self.session.id} closed by the server "
                            f"({code} {reason})".strip())
        self.rpc.close(exc)
        self.till.close(exc)
        self.session.hands.close()  # wait_update() returns None, stream() ends
        self.session.controllers.close()

    def disconnected(self, why: str) -> None:
        """The connection ended (peer close, error or EOF)."""
        self.channel.reader_done.set()
        with self._state_lock:
            self._closing = True
        self.outbox.close(why, drain=False)
        self.closed.set()
        exc = SessionClosed(f"session {self.session.id}: {why}")
        self.rpc.close(exc)
        self.till.close(exc)
        self.session.hands.close()  # wait_update() returns None, stream() ends
        self.session.controllers.close()
        self.stop_recordings()  # streamed recordings of this session end with it

    def stop_recordings(self) -> None:
        """Finish this session's streamed recordings: pending records and the end record
        written, the files closed, the writer threads ended."""
        for rec in [r for r in self.recorders if r.path is not None]:
            rec.finish()

    def add_thread(self, t: threading.Thread, task: bool = False) -> None:
        """A thread of this session (spawn, bind, ``spawn_task`` when ``task``)."""
        self._threads.append(t)
        if task:
            self.tasks.append(t)

    def join_tasks(self, timeout: float) -> None:
        """Join this session's ``spawn_task`` threads (they see ``closed`` and should end)."""
        deadline = time.monotonic() + timeout
        for t in self.tasks:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                logger.warning("task %s of session %s still running after it closed",
                               t.name, self.session.id)

    def threads_to_join(self) -> List[threading.Thread]:
        ts: List[Any] = [*self.channel.threads(), *self._threads]
        h = self.handlers.stop()
        if h is not None:
            ts.append(h)
        return ts
