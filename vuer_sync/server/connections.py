"""The serving side of :class:`~vuer_sync.server.app.Vuer`: the connected sessions, the websocket
loop of each connection (accept, read until it ends, clean up), the spawn and bind threads, and
what ``stop()`` does to the connections.

After the handshake a connection is served by the shared I/O threads (``io_threads``, a
:class:`~vuer_sync.io_loop.IoLoops`): the socket is taken from the HTTP server's thread, which
ends. Every frame goes to the session's core (:meth:`SessionCore.on_inbound
<vuer_sync.server.core.SessionCore.on_inbound>`), which decodes and dispatches it; handlers run
on the worker pool (``handler_threads``). With ``io_threads=0``, and for TLS, the HTTP
server's thread reads the connection until it ends and a sender thread writes it.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import struct
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from flask import request

from .._threads import WorkerPool, release_memory, start_thread
from ..channel import Channel
from ..errors import RPCTimeout, SessionClosed
from ..events import ClientEvent, Frame, NullEvent, ServerEvent
from ..io_loop import IoLoop, IoLoops
from ..transport import ConnectionClosed, WebSocketConnection
from ..transport.budget import InboundBudget
from ..transport.nonblocking import NonBlockingConnection
from .registry import Registry, matches
from .serving import TAKE_SOCKET
from .session import VuerSession

if TYPE_CHECKING:  # pragma: no cover
    from .app import Vuer
    from .rtc_room import RtcRoom

logger = logging.getLogger("vuer_sync.server")

__all__ = ["Connections"]

#: After this many sessions ended (and none is left, or four times as many in any case) the
#: server collects garbage and trims the heap (``_threads.release_memory``).
TRIM_AFTER = 256

_SUMMED = ("queued", "sent", "coalesced", "bytes_sent", "received", "bad_messages",
           "downlink_dropped")


def add_stats(total: Dict[str, Any], st: Dict[str, Any]) -> None:
    for k in _SUMMED:
        total[k] = total.get(k, 0) + st.get(k, 0)
    dropped = total.setdefault("dropped", {})
    for reason, n in st.get("dropped", {}).items():
        dropped[reason] = dropped.get(reason, 0) + n


class Connections:
    """The sessions of one server and their threads (``app.connections``; internals)."""

    def __init__(self, app: Vuer, registry: Registry):
        self.app = app
        self.registry = registry
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)  # notified when sessions come, go or INIT
        self._sessions: Dict[str, VuerSession] = {}
        self._threads: List[threading.Thread] = []
        self._ended_stats: Dict[str, Any] = {"sessions_ended": 0}
        self.inbound_budget = InboundBudget(app.inbound_bytes)
        self.rtc_room: Optional[RtcRoom] = None
        self._rtc_lock = threading.Lock()  # making the room (it may load from Redis)
        self.io: Optional[IoLoops] = None  # the shared I/O threads (start_io)
        self.workers: Optional[WorkerPool] = None  # handlers and session ends
        self._ended_since_trim = 0

    def start_io(self) -> None:
        """Start the shared I/O threads and the worker pool (``Vuer.start``)."""
        with self.lock:
            if self.workers is None:
                self.workers = WorkerPool("handlers", max_workers=self.app.handler_threads)
            if self.io is None and self.app.io_threads > 0:
                self.io = IoLoops(self.app.io_threads, name=str(self.app.port))

    def stop_io(self, timeout: float) -> None:
        """Stop them (``Vuer.stop``, after the sessions are closed)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            io, self.io = self.io, None
        if io is not None:  # connections still open end here, and are cleaned up by workers
            io.stop(timeout)
        with self.lock:
            workers, self.workers = self.workers, None
        if workers is not None:
            workers.stop(max(0.0, deadline - time.monotonic()))

    def pick_loop(self) -> Optional[IoLoop]:
        """The I/O loop for a new connection (None: serve it with threads)."""
        io = self.io
        return io.pick() if io is not None else None

    def rtc(self) -> RtcRoom:
        """The collaborative room (``app.rtc``), made on first use. Made under a lock of
        its own: with a Redis journal it connects and loads the room's history first, and
        meanwhile connections come, go and list as usual."""
        room = self.rtc_room
        if room is None:
            from .rtc_room import RtcRoom  # vuer_sync.rtc is loaded when first needed

            with self._rtc_lock:
                room = self.rtc_room
                if room is None:
                    room = self.rtc_room = RtcRoom(self.app)
        return room

    # -- what a session's dispatcher calls (core.ServerSide) ------------------------------

    def session_ready(self, session: VuerSession) -> None:
        with self.lock:
            self.cv.notify_all()
        self._start_spawn(session)

    def rtc_event(self, session: VuerSession, ev: ClientEvent) -> None:
        self.rtc().on_event(session, ev)

    # -- sessions -------------------------------------------------------------------------

    def sessions(self) -> List[VuerSession]:
        """The connected sessions, oldest first."""
        with self.lock:
            return list(self._sessions.values())

    def wait_for(self, timeout: Optional[float], filters: Dict[str, Any]) -> VuerSession:
        """The oldest connected session past an INIT matching ``filters``, waiting for one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cv:
            while True:
                for s in self._sessions.values():
                    if s.init is not None and not s.closed and matches(s.init, filters):
                        return s
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    which = f" matching {filters}" if filters else ""
                    raise RPCTimeout(f"no client{which} connected within {timeout} s")
                self.cv.wait(left)

    def stats(self) -> Dict[str, Any]:
        with self.lock:
            total: Dict[str, Any] = {k: v for k, v in self._ended_stats.items()
                                     if k != "dropped"}
            total["dropped"] = dict(self._ended_stats.get("dropped", {}))
            live = list(self._sessions.values())
        for s in live:
            add_stats(total, s.stats)
        total["sessions"] = len(live)
        return total

    # -- the websocket loop ---------------------------------------------------------------

    def serve(self, ws: Any) -> None:
        """flask-sock's handler for ``/``: hand the connection to the I/O threads and return
        (or, without them, run it until it ends)."""
        take = request.environ.get(TAKE_SOCKET)
        if self.io is not None and take is not None and not isinstance(ws.sock, ssl.SSLSocket):
            self._serve_on_loop(ws, take)
            return
        conn = self._take_socket(ws)
        session = VuerSession(self.app, conn, str(uuid.uuid4()), request.environ, self)
        self._open(session)
        why = "client disconnected"
        channel = session.core.channel
        assert isinstance(channel, Channel)
        try:
            end = channel.read_loop(session.core.on_inbound)
            if isinstance(end, ConnectionClosed):
                why = f"client closed the connection " \
                      f"({end.code}{' ' + end.reason if end.reason else ''})"
            else:
                why = f"connection lost: {end}"
        except Exception:
            logger.exception("session %s: reader failed", session.id)
            why = "reader error"
        finally:
            self._close(session, conn, why)

    def _serve_on_loop(self, ws: Any, take: Callable[[], socket.socket]) -> None:
        ws.connected = False  # from here on our transport owns the socket
        own = take()  # the HTTP server's thread ends now, without touching the connection
        conn = NonBlockingConnection(own, is_server=True,
                                     max_message_size=self.app.WEBSOCKET_MAX_SIZE,
                                     inbound_budget=self.inbound_budget)
        session = VuerSession(self.app, conn, str(uuid.uuid4()), request.environ, self)
        self._open(session)
        session.core.channel.start()

    def connection_ended(self, session: VuerSession, exc: BaseException) -> None:
        """A connection on the I/O threads ended (loop thread): clean up on a worker."""
        if isinstance(exc, ConnectionClosed):
            why = f"client closed the connection " \
                  f"({exc.code}{' ' + exc.reason if exc.reason else ''})"
        else:
            why = f"connection lost: {exc}"
        workers = self.workers
        if workers is None:
            return
        try:
            workers.submit(self._close, session, session.core.ws, why)
        except RuntimeError:  # stopping: stop() cleans up
            pass

    def _take_socket(self, ws: Any) -> WebSocketConnection:
        sock = ws.sock
        ws.connected = False  # from here on our transport owns the socket
        send_timeout = self.app.send_timeout
        if send_timeout and hasattr(socket, "SO_SNDTIMEO"):
            sec = int(send_timeout)
            usec = int((send_timeout - sec) * 1e6)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, usec))
            except OSError:
                pass
        return WebSocketConnection(sock, is_server=True,
                                   max_message_size=self.app.WEBSOCKET_MAX_SIZE,
                                   inbound_budget=self.inbound_budget)

    def _open(self, session: VuerSession) -> None:
        core = session.core
        with self.lock:
            self._sessions[session.id] = session
            self.cv.notify_all()
        self.app.scene.join(session)  # the current shared scene first, then live updates
        logger.info("session %s connected from %s", session.id, session.remote_addr)
        for cb in self.registry.on_connect:
            core.submit(cb, session)
        if self.registry.bind_fn is not None:
            core.bind_queue = queue.SimpleQueue()
            core.add_thread(start_thread(self._run_bind, f"vuer-bind:{session.id[:8]}",
                                         session, core.bind_queue))

    def _close(self, session: VuerSession, conn: Any, why: str) -> None:
        core = session.core
        self.app.scene.leave(session)
        if self.rtc_room is not None:
            self.rtc_room.leave(session)
        core.disconnected(why)
        if core.bind_queue is not None:
            core.bind_queue.put(None)
        core.channel.join(2.0)
        conn.abort()
        core.join_tasks(1.0)
        for cb in self.registry.on_disconnect:
            core.submit(cb, session)
        st = session.stats
        with self.lock:
            add_stats(self._ended_stats, st)
            self._ended_stats["sessions_ended"] += 1
            self._sessions.pop(session.id, None)
            # joined by stop() if still running then (spawn functions, handlers, tasks)
            self._threads.extend(t for t in core.threads_to_join() if t.is_alive())
            self._threads = [t for t in self._threads if t.is_alive()]
            self.cv.notify_all()
            self._ended_since_trim += 1
            trim = (self._ended_since_trim >= TRIM_AFTER and not self._sessions) \
                or self._ended_since_trim >= 4 * TRIM_AFTER
            if trim:
                self._ended_since_trim = 0
        logger.info("session %s ended: %s", session.id, why)
        if trim:  # a burst of closes: give the memory back (RSS returns near its baseline)
            release_memory()

    # -- spawn and bind -------------------------------------------------------------------

    def _start_spawn(self, session: VuerSession) -> None:
        init = session.init
        assert init is not None
        found = self.registry.spawns_for(init)
        if not found:
            return
        if len(found) > 1:
            info = init.value if isinstance(init.value, dict) else {}
            logger.warning("several spawn functions match %s; running the first (%s)",
                           info, getattr(found[0], "__qualname__", found[0]))
        session.core.add_thread(start_thread(self._run_spawn, f"vuer-spawn:{session.id[:8]}",
                                             found[0], session))

    @staticmethod
    def _run_spawn(fn: Callable[[VuerSession], Any], session: VuerSession) -> None:
        try:
            fn(session)
        except SessionClosed as e:
            logger.debug("spawn function ended: %s", e)
            return
        except Exception:
            logger.exception("spawn function %s raised; closing session %s with 1011",
                             getattr(fn, "__qualname__", fn), session.id)
            session.core.begin_close(1011, "server error", drain=True)
            return
        session.close(1000, "")

    def _run_bind(self, session: VuerSession, inbox: Any) -> None:
        bind_fn = self.registry.bind_fn
        assert bind_fn is not None
        gen = bind_fn(session)
        try:
            out = next(gen)
            while True:
                while isinstance(out, Frame):
                    session.send(out.data)
                    if session.wait_closed(1.0 / max(out.frame_rate, 1e-3)):
                        return
                    out = gen.send(NullEvent())
                if isinstance(out, ServerEvent):
                    session.send(out)
                ev = inbox.get()
                if ev is None:
                    return
                out = gen.send(ev)
        except (StopIteration, SessionClosed):
            return
        except Exception:
            logger.exception("bind generator raised; closing session %s", session.id)
            session.core.begin_close(1011, "server error", drain=True)
        finally:
            gen.close()

    # -- stop -----------------------------------------------------------------------------

    def close_all(self, timeout: float) -> List[threading.Thread]:
        """``stop()``: close every session (1001), give the close handshakes half of
        ``timeout``, cut what is left; return the threads still to join."""
        sessions = self.sessions()
        for s in sessions:
            s.core.begin_close(1001, "server stopping", drain=False)
        close_by = time.monotonic() + timeout / 2  # time for the close handshakes
        for s in sessions:
            s.core.channel.join(max(0.0, close_by - time.monotonic()))
        for s in sessions:
            s.core.channel.abort()
        threads: List[threading.Thread] = []
        with self.lock:
            threads.extend(self._threads)
            self._threads.clear()
            live = list(self._sessions.values())
        for s in live:
            threads.extend(s.core.threads_to_join())
        return threads

    def forget_all(self) -> None:
        with self.lock:
            self._sessions.clear()
            self.cv.notify_all()
