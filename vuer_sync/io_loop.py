"""Shared I/O threads: a few selector loops move the bytes of every connection.

An :class:`IoLoop` is one thread running ``selectors`` (epoll on Linux) over many non-blocking
sockets. Each connection is a :class:`LoopChannel`: the same job as a
:class:`~vuer_sync.channel.Channel` (its outbox to the socket, keepalive pings, the INIT
deadline, the close handshake; every message read to a callback) without a thread of its own.

* **Out.** The outbox calls :meth:`LoopChannel.outbox_ready` (its listener) when a message is
  queued or it closes; the channel is put on the loop's ready list (once, however many
  messages come: a broadcast to 1000 clients wakes the loop once) and the loop writes what it
  can. A socket that is full keeps the rest and waits to be writable; meanwhile its outbox
  fills, coalesces and, past its budget, blocks or drops its producer, exactly as with a
  thread per connection. A stalled client costs no thread and delays no one.
* **In.** Readable sockets are read into one scratch buffer per loop; complete messages go to
  ``on_message`` on the loop thread (the server decodes them and wakes ``rpc()`` callers
  there; handlers run on the worker pool, never here).
* **Timers.** One heap per loop: keepalive pings, the INIT deadline, the close handshake's
  one second, and ``send_timeout`` for a socket that takes nothing.

>>> import socket
>>> from vuer_sync.outbox import Outbox
>>> from vuer_sync.transport import WebSocketConnection
>>> from vuer_sync.transport.nonblocking import NonBlockingConnection
>>> loop = IoLoop("doc")
>>> a, b = socket.socketpair()
>>> box = Outbox(encode=bytes, decode=lambda p: {})
>>> got = []
>>> ch = LoopChannel(loop, NonBlockingConnection(a), box, on_message=got.append)
>>> ch.start()
>>> peer = WebSocketConnection(b, is_server=False)
>>> _ = box.push(b"hello")
>>> peer.receive()
b'hello'
>>> peer.send(b"hi"); peer.close()
>>> ch.join(5), got
(True, [b'hi'])
>>> loop.stop(); b.close()
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

from ._threads import start_thread
from .outbox import Outbox, OutMessage
from .transport import ConnectionClosed
from .transport.frames import OP_BINARY
from .transport.nonblocking import WRITTEN_NOW, NonBlockingConnection

logger = logging.getLogger("vuer_sync.io")

__all__ = ["IoLoop", "IoLoops", "LoopChannel"]

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
#: Batches a channel writes per turn before the loop serves the others.
_TURN_BATCHES = 8
#: Bytes read per ``recv_into``: one read of a connection per round of the loop, so a client
#: that floods (a million pings) costs the others at most the parsing of this much per round.
_SCRATCH = 64 * 1024
#: Reads of one connection per turn, while each fills its buffer (a stream keeps coming).
_READS_PER_TURN = 4
#: How long a closing connection waits for the peer's close frame.
CLOSE_TIMEOUT = 1.0

SendErrorHook = Callable[[BaseException, List[OutMessage]], None]


class IoLoop:
    """One I/O thread (``vuer-io:<name>``) serving any number of :class:`LoopChannel`.

    Thread-safe entry points: :meth:`schedule`, :meth:`call_soon`, :meth:`stop`; the rest
    runs on the loop thread.
    """

    def __init__(self, name: str = "io") -> None:
        self.name = name
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, _READ, None)
        self._ready: Deque[LoopChannel] = collections.deque()
        self._calls: Deque[Callable[[], Any]] = collections.deque()
        self._timers: List[Tuple[float, int, LoopChannel]] = []
        self._ended_timers = 0  # entries of ended channels still in the heap
        self._tick = itertools.count()
        self._sleeping = False
        self._woken = False
        self._stopping = False
        self.channels = 0  # connections registered
        self.scratch = memoryview(bytearray(_SCRATCH))
        self.thread = start_thread(self._run, f"vuer-io:{name}")

    # -- any thread -----------------------------------------------------------------------

    def schedule(self, ch: LoopChannel) -> None:
        """Put ``ch`` on the ready list (its outbox has news) and wake the loop if asleep."""
        self._ready.append(ch)
        if self._sleeping and not self._woken:
            self._wake()

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on the loop thread."""
        self._calls.append(fn)
        if not self._woken:
            self._wake()

    def _wake(self) -> None:
        self._woken = True
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    def stop(self, timeout: float = 2.0) -> None:
        """End the loop thread (connections still registered are closed) and join it."""
        self._stopping = True
        self._wake()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # -- the loop thread ------------------------------------------------------------------

    def register(self, ch: LoopChannel, events: int) -> None:
        self._sel.register(ch.conn.sock, events, ch)
        self.channels += 1

    def modify(self, ch: LoopChannel, events: int) -> None:
        try:
            self._sel.modify(ch.conn.sock, events, ch)
        except (KeyError, ValueError, OSError):
            pass

    def unregister(self, ch: LoopChannel) -> None:
        try:
            self._sel.unregister(ch.conn.sock)
            self.channels -= 1
        except (KeyError, ValueError, OSError):
            pass
        if ch.timer_at is not None:
            ch.timer_at = None
            self._ended_timers += 1
            # the heap holds ended channels (and their sessions) until their entries come
            # due, up to a keepalive interval: drop them once they are half of it
            if self._ended_timers > 64 and self._ended_timers * 2 > len(self._timers):
                self._timers[:] = [e for e in self._timers if not e[2].ended]
                heapq.heapify(self._timers)
                self._ended_timers = 0

    def arm(self, ch: LoopChannel, when: float) -> None:
        """Call ``ch.on_timer`` at ``when`` (monotonic), unless an earlier call is due."""
        if ch.timer_at is None or when < ch.timer_at:
            ch.timer_at = when
            heapq.heappush(self._timers, (when, next(self._tick), ch))

    def _run(self) -> None:
        sel = self._sel
        ready = self._ready
        calls = self._calls
        timers = self._timers
        try:
            while not self._stopping:
                self._sleeping = True
                if ready or calls:
                    timeout: Optional[float] = 0.0
                elif timers:
                    timeout = max(0.0, timers[0][0] - time.monotonic())
                else:
                    timeout = None
                events = sel.select(timeout)
                self._sleeping = False
                for key, mask in events:
                    ch = key.data
                    if ch is None:
                        self._drain_wake()
                        continue
                    try:
                        if mask & _READ:
                            ch.on_readable()
                        if mask & _WRITE and not ch.ended:
                            ch.on_writable()
                    except Exception as e:  # a bug of ours: it ends that connection only
                        self._failed(ch, e)
                while calls:
                    self._call(calls.popleft())
                n = len(ready)
                while n and ready:  # those scheduled meanwhile wait for the next round
                    n -= 1
                    ch = ready.popleft()
                    try:
                        ch.on_ready()
                    except Exception as e:
                        self._failed(ch, e)
                if timers:
                    self._run_timers(time.monotonic())
        except Exception:  # pragma: no cover - a bug of ours: log it, then end every channel
            logger.exception("I/O loop %s failed", self.name)
        finally:
            self._shutdown()

    def _failed(self, ch: LoopChannel, exc: Exception) -> None:
        logger.exception("%s: I/O failed; closing that connection", ch.name)
        try:
            ch.finish(exc)
        except Exception:  # pragma: no cover
            logger.exception("%s: could not close it", ch.name)

    def _call(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:  # pragma: no cover - a bug of ours
            logger.exception("I/O loop %s: call failed", self.name)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._woken = False

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, ch = heapq.heappop(timers)
            if when != ch.timer_at or ch.ended:
                continue  # replaced by an earlier one, already run
            ch.timer_at = None
            try:
                nxt = ch.on_timer(now)
            except Exception as e:
                self._failed(ch, e)
                continue
            if nxt is not None:
                self.arm(ch, max(nxt, now + 0.001))  # never due again in this pass

    def _shutdown(self) -> None:
        for key in list(self._sel.get_map().values()):
            ch = key.data
            if ch is not None:
                ch.finish(ConnectionClosed(1001, "server stopping"))
        while self._calls:
            self._call(self._calls.popleft())
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


class IoLoops:
    """A fixed set of :class:`IoLoop` threads; new connections go to the least busy one."""

    def __init__(self, count: int = 1, name: str = "io") -> None:
        if count < 1:
            raise ValueError("IoLoops needs at least one loop")
        self.loops = [IoLoop(f"{name}{i}" if count > 1 else name) for i in range(count)]

    def pick(self) -> IoLoop:
        return min(self.loops, key=lambda lp: lp.channels)

    def stop(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for lp in self.loops:
            lp.stop(max(0.0, deadline - time.monotonic()))


class LoopChannel:
    """One connection on an :class:`IoLoop` (see the module docstring); the hooks are those
    of :class:`~vuer_sync.channel.Channel`, plus ``on_message(data)`` (on the loop thread)
    and ``on_end(exc)`` (once, on the loop thread, after the socket is closed: ``exc`` is
    the :class:`ConnectionClosed` or ``OSError`` that ended it).

    State read by the owner: ``last_write``, ``reader_done`` (an ``Event``: the connection
    has ended), ``conn``.
    """

    def __init__(
        self,
        loop: IoLoop,
        conn: NonBlockingConnection,
        outbox: Outbox,
        *,
        on_message: Callable[[Any], Any],
        on_end: Optional[Callable[[BaseException], Any]] = None,
        ping_interval: Optional[float] = None,
        send_timeout: Optional[float] = None,
        name: str = "channel",
        on_send_error: Optional[SendErrorHook] = None,
        on_keepalive_timeout: Optional[Callable[[], None]] = None,
        deadline: Optional[Callable[[], Optional[float]]] = None,
        on_deadline: Optional[Callable[[float], bool]] = None,
    ) -> None:
        self.loop = loop
        self.conn = conn
        self.outbox = outbox
        self.on_message = on_message
        self.on_end = on_end
        self.ping_interval = ping_interval or 0.0
        self.send_timeout = send_timeout or 0.0
        self.name = name
        self.on_send_error = on_send_error
        self.on_keepalive_timeout = on_keepalive_timeout
        self.deadline = deadline
        self.on_deadline = on_deadline
        self.last_write = 0.0
        self.reader_done = threading.Event()
        self.ended = False
        self.timer_at: Optional[float] = None
        self._scheduled = False
        self._events = _READ
        self._close_frame = (1000, "")
        self._close_by: Optional[float] = None  # our close frame is out: the peer's is due
        self._next_ping: Optional[float] = None
        self._ping_sent_at: Optional[float] = None
        self._report_lock = threading.Lock()

    # -- any thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Register with the loop: reading starts, and the outbox reports to this channel."""
        self.outbox.set_listener(self.outbox_ready)
        self.loop.call_soon(self._register)

    def outbox_ready(self) -> None:
        """The outbox's listener: something was queued, or it closed."""
        if not self._scheduled:
            self._scheduled = True
            self.loop.schedule(self)

    def set_close(self, code: int, reason: str = "") -> None:
        """The close frame sent when the outbox closes (default 1000, no reason)."""
        self._close_frame = (code, reason)

    def write_now(self, message: OutMessage) -> None:
        """Write one message the caller took with ``Outbox.take_direct`` from the caller's
        thread when the socket takes it at once (an RPC request: no hop to the loop); what
        the socket does not take the loop writes."""
        bufs, _ = self.conn.protocol.encode_many([message.payload])
        try:
            done = self.conn.write(bufs, [message])
        finally:
            self._report()
        if done == WRITTEN_NOW:
            self.outbox.mark_written([message])
            self.last_write = time.monotonic()
            return
        if not done:
            self.outbox_ready()

    def abort(self) -> None:
        """Drop the connection now (from any thread)."""
        self.conn.abort()
        self.loop.call_soon(lambda: self.finish(ConnectionClosed(1006, "aborted")))

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until the connection has ended; True if it has."""
        return self.reader_done.wait(timeout)

    def threads(self) -> List[threading.Thread]:
        """None of its own (the loop's thread is the server's)."""
        return []

    # -- the loop thread ------------------------------------------------------------------

    def _register(self) -> None:
        if self.ended:
            return
        try:
            self.loop.register(self, _READ)
        except (ValueError, OSError) as e:  # the socket is gone already
            self.finish(e)
            return
        if self.ping_interval:
            self._next_ping = time.monotonic() + self.ping_interval
        self._arm()
        self.on_ready()  # what was queued before the start (the scene, on_connect)

    def _arm(self) -> None:
        due = self._next_due()
        if due is not None:
            self.loop.arm(self, due)

    def _next_due(self) -> Optional[float]:
        due = [t for t in (self._next_ping, self._close_by) if t is not None]
        if self.deadline is not None:
            d = self.deadline()
            if d is not None:
                due.append(d)
        if self.send_timeout and self.conn.pending:
            due.append(self.conn.last_progress + self.send_timeout)
        return min(due) if due else None

    def _want_write(self, on: bool) -> None:
        events = _READ | _WRITE if on else _READ
        if events != self._events and not self.ended:
            self._events = events
            self.loop.modify(self, events)
            if on:
                self._arm()  # the send timeout

    def _report(self) -> None:
        """Tell the outbox which batches went out (in order: one reporter at a time)."""
        conn = self.conn
        with self._report_lock:
            written = conn.take_written()
            for batch in written:
                self.outbox.mark_written(batch)
            if written:
                self.last_write = time.monotonic()

    def on_ready(self) -> None:
        """Write what the outbox has, a few batches per turn."""
        self._scheduled = False
        if self.ended:
            return
        conn = self.conn
        if conn.pending:
            self._want_write(True)
            return
        outbox = self.outbox
        encode = conn.protocol.encode_many
        frag = conn.protocol.fragment_size
        for _ in range(_TURN_BATCHES):
            batch = outbox.take_batch()
            if batch is None:
                self._outbox_closed()
                return
            if not batch:
                return
            if any(m.nbytes > frag for m in batch):
                self._queue_fragmented(batch)
                if not self._flush():
                    return
            elif not self._write(encode([m.payload for m in batch])[0], batch):
                return
            if not outbox.depth and outbox.closed is None:
                return  # nothing more now (the listener calls again when there is)
        self.outbox_ready()  # more may be queued: the others first

    def _queue_fragmented(self, batch: List[OutMessage]) -> None:
        """A batch with a message larger than ``fragment_size``: each of its frames is an
        entry of its own, so pongs (control frames) can go out between them."""
        conn = self.conn
        protocol = conn.protocol
        small: List[Any] = []
        entries: List[Any] = []
        for m in batch:
            if m.nbytes <= protocol.fragment_size:
                small.append(m.payload)
                continue
            if small:
                entries.append(protocol.encode_many(small)[0])
                small = []
            entries.extend(protocol.frames_of(m.payload, OP_BINARY))
        if small:
            entries.append(protocol.encode_many(small)[0])
        for bufs in entries[:-1]:
            conn.queue(bufs, None)  # no token: the batch is reported with its last entry
        conn.queue(entries[-1], batch)

    def _write(self, bufs: List[Any], batch: List[OutMessage]) -> bool:
        """Write one batch's frames (the fast path when nothing waits before them)."""
        try:
            done = self.conn.write(bufs, batch)
        except (ConnectionClosed, OSError) as e:
            self._write_failed(e, batch)
            return False
        if done == WRITTEN_NOW:  # the common case: out at once, nothing else to report
            self.outbox.mark_written(batch)
            self.last_write = time.monotonic()
            return True
        self._report()
        if not done:
            self._want_write(True)
        return bool(done)

    def _flush(self) -> bool:
        """Write; True when everything is out. A failed write ends the connection."""
        try:
            done = self.conn.flush()
        except (ConnectionClosed, OSError) as e:
            self._write_failed(e)
            return False
        self._report()
        self._want_write(not done)
        return done

    def _write_failed(self, e: BaseException, batch: Sequence[OutMessage] = ()) -> None:
        self._report()
        lost = [*batch, *(m for b in self.conn.take_dropped() for m in b)]
        if self.on_send_error is not None:
            self.on_send_error(e, lost)
        else:
            self.outbox.abandon(lost, "send failed")
        self.finish(e)

    def on_writable(self) -> None:
        if self._flush():
            if self._close_by is None and not self.conn.protocol.close_sent:
                self.on_ready()

    def on_readable(self) -> None:
        conn = self.conn
        on_message = self.on_message
        for _ in range(_READS_PER_TURN):  # a read that filled its buffer: more is waiting
            try:
                messages = conn.read(self.loop.scratch)
            except (ConnectionClosed, OSError) as e:
                self.finish(e)
                return
            for data in messages:
                try:
                    on_message(data)
                except Exception:
                    logger.exception("%s: failed to handle a message", self.name)
            if conn.input_ended:
                self._flush()  # our close frame: the reply, or the failure's code
                self.finish(conn.protocol.closed_error())
                return
            if not conn.read_full:
                break
        if conn.protocol.has_control():
            self._flush()  # a pong

    def _outbox_closed(self) -> None:
        """The outbox closed and is drained: the close handshake."""
        p = self.conn.protocol
        if self._close_by is not None or p.close_sent:
            return
        code, reason = self._close_frame
        try:
            p.send_close(code, reason)
        except ValueError:
            p.send_close(1000, "")
        if self._flush():
            self._close_by = time.monotonic() + CLOSE_TIMEOUT
            self._arm()
        elif not self.ended:
            self._close_by = time.monotonic() + CLOSE_TIMEOUT
            self._arm()

    def on_timer(self, now: float) -> Optional[float]:
        """Keepalive, the deadline hook, the close and send timeouts; the next due time."""
        if self.ended:
            return None
        if self._close_by is not None and now >= self._close_by:
            self.finish(ConnectionClosed(1006, "no close frame from the peer in time"))
            return None
        conn = self.conn
        if self.send_timeout and conn.pending and now - conn.last_progress >= self.send_timeout:
            logger.info("%s: the client took nothing for %.0f s: dropping it", self.name,
                        self.send_timeout)
            self._fail_send(OSError(f"send timed out after {self.send_timeout:.0f} s"))
            return None
        if self.deadline is not None and self.on_deadline is not None:
            due = self.deadline()
            if due is not None and now >= due:
                self.deadline = None  # once: it closes the outbox, on_ready does the rest
                self.on_deadline(now)
        if self._next_ping is not None and now >= self._next_ping and self._close_by is None:
            sent_at = self._ping_sent_at
            if sent_at is not None and conn.last_received < sent_at:
                logger.warning("%s: no answer to keepalive ping for %.0f s", self.name,
                               now - sent_at)
                self._next_ping = None
                if self.on_keepalive_timeout is not None:
                    self.on_keepalive_timeout()
                else:
                    self.set_close(1011, "keepalive timeout")
                    self.outbox.close("keepalive timeout", drain=False)
            else:
                try:
                    conn.protocol.send_ping(b"vs")
                except ConnectionClosed:
                    pass
                else:
                    self._ping_sent_at = now
                    self._next_ping = now + self.ping_interval
                    self._flush()
        return self._next_due()

    def _fail_send(self, exc: BaseException) -> None:
        self.conn.protocol.write_failed()
        self._report()
        if self.on_send_error is not None:
            self.on_send_error(exc, [])
        self.finish(exc)

    def finish(self, exc: BaseException) -> None:
        """End the connection (loop thread; once): socket closed, what was not written
        counted as dropped, ``reader_done`` set, ``on_end(exc)`` called."""
        if self.ended:
            return
        self.ended = True
        self.loop.unregister(self)
        conn = self.conn
        conn.close_socket()
        self._report()
        lost = [m for b in conn.take_dropped() for m in b]
        if lost:
            self.outbox.abandon(lost, "connection closed")
        self.outbox.set_listener(None)
        self.outbox.close(f"connection closed: {exc}", drain=False)
        self.reader_done.set()
        if self.on_end is not None:
            try:
                self.on_end(exc)
            except Exception:  # pragma: no cover - a bug of ours
                logger.exception("%s: on_end failed", self.name)
