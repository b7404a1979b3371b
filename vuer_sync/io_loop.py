"""Shared I/O threads: a few selector loops move the bytes of every connection.

An :class:`IoLoop` is one thread running a poller (epoll on Linux) over many non-blocking
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
  ``on_message`` on the loop thread (the server decodes them and wakes ``till()`` waiters
  there; handlers run on the worker pool, never here). An ``rpc()`` caller reads its own
  answer instead (:meth:`LoopChannel.read_until`): while it waits, the socket is its, and the
  loop takes it back when the answer is in.
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
import os
import select
import socket
import threading
import time
from typing import Any, Callable, Deque, List, Optional, Protocol, Sequence, Tuple

from ._threads import start_thread, trim_heap, wake_writer
from .outbox import Outbox, OutMessage
from .transport import ConnectionClosed
from .transport.frames import OP_BINARY
from .transport.nonblocking import WRITTEN_NOW, NonBlockingConnection
from .transport.poller import READ, WRITE, make_poller

logger = logging.getLogger("vuer_sync.io")

__all__ = ["IoLoop", "IoLoops", "LoopChannel"]

_READ = READ
_WRITE = WRITE
#: Batches a channel writes per turn before the loop serves the others.
_TURN_BATCHES = 8
#: Bytes read per ``recv_into``: one read of a connection per round of the loop, so a client
#: that floods (a million pings) costs the others at most the parsing of this much per round.
_SCRATCH = 64 * 1024
#: Reads of one connection per turn, while each fills its buffer (a stream keeps coming).
_READS_PER_TURN = 4
#: How long a closing connection waits for the peer's close frame.
CLOSE_TIMEOUT = 1.0
#: How often a caller reading its own answer (:meth:`LoopChannel.read_until`) looks whether
#: its wait ended otherwise (answered by the loop, the session closed).
_POLL_SLICE = 0.02
#: An ``rpc()`` caller reading its own answer first polls its socket without sleeping for
#: this long (then it sleeps in ``poll`` as usual), when the previous round trip on that
#: connection took less than :data:`RPC_SPIN_WORTH_S`. On a VM, waking a thread that sleeps
#: costs a halted virtual CPU's wake-up (an inter-processor interrupt through the
#: hypervisor): measured on a 2-vCPU VM with a Python peer answering at once, p50 191 ->
#: 84-103 µs (raw peer), 255 -> 140-175 µs (``websockets`` client) with 300 µs. The caller
#: then spends up to this much CPU per call, and only while answers come that fast (a
#: browser's render takes milliseconds: it does not spin there).
RPC_SPIN_S = 250e-6
#: See :data:`RPC_SPIN_S`.
RPC_SPIN_WORTH_S = 1e-3
#: A loop that moved anything and then has nothing to do for this long hands the C heap's
#: free memory back to the OS (``_threads.trim_heap``, once per quiet spell): after a burst
#: (a stalled viewer's backlog, big uploads) RSS comes down instead of staying at its peak.
IDLE_TRIM_AFTER = 0.5

_callers = threading.local()  # a caller reading its own answer: its buffer and wake pipe


class Awaited(Protocol):
    """What :meth:`LoopChannel.read_until` waits for (an ``rpc.Reply``)."""

    def done(self) -> bool: ...

    def wake_with(self, fd: Optional[int]) -> None: ...


def _caller_state() -> Tuple[memoryview, int, int]:
    """This thread's scratch buffer and wake pipe (made once per thread; closed with it)."""
    st = getattr(_callers, "state", None)
    if st is None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        st = _callers.state = _CallerState(memoryview(bytearray(_SCRATCH)), r, w)
    return st.scratch, st.wake_r, st.wake_w


class _CallerState:
    __slots__ = ("scratch", "wake_r", "wake_w")

    def __init__(self, scratch: memoryview, wake_r: int, wake_w: int) -> None:
        self.scratch, self.wake_r, self.wake_w = scratch, wake_r, wake_w

    def __del__(self) -> None:  # the thread ended: its thread-local state goes
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def reading_here() -> bool:
    """True on a thread inside :meth:`LoopChannel.read_until` (it dispatches what it reads:
    whoever resolves its own answer has no other thread to hand the GIL to)."""
    return getattr(_callers, "reading", False)

SendErrorHook = Callable[[BaseException, List[OutMessage]], None]


class IoLoop:
    """One I/O thread (``vuer-io:<name>``) serving any number of :class:`LoopChannel`.

    Thread-safe entry points: :meth:`schedule`, :meth:`call_soon`, :meth:`stop`; the rest
    runs on the loop thread.
    """

    def __init__(self, name: str = "io") -> None:
        self.name = name
        self._sel = make_poller()
        self._sel_lock = threading.Lock()  # (un)registering: the loop, or a reading caller
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_write = wake_writer(self._wake_w)  # keeps the GIL: see wake_writer
        self._sel.register(self._wake_r.fileno(), _READ, None)
        self._ready: Deque[LoopChannel] = collections.deque()
        self._calls: Deque[Callable[[], Any]] = collections.deque()
        self._timers: List[Tuple[float, int, LoopChannel]] = []
        self._tick = itertools.count()
        self._sleeping = False
        self._woken = False
        self._stopping = False
        self._worked = False  # something happened since the loop last went to sleep
        self._trim_at: Optional[float] = None  # quiet until then: trim the heap
        self.trims = 0  # heap trims done (a quiet spell after traffic)
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

    def broadcast(self, payload: bytes, items: List[Tuple[LoopChannel, OutMessage]]) -> None:
        """Write one frame to many channels of this loop in one pass on the loop thread: one
        wake-up and one encoding for all of them, no per-channel turn on the ready list.

        ``items``: each channel with the message its outbox reserved for ``payload``
        (``Outbox.take_direct``: nothing was queued or being written, so order holds).
        """
        self.call_soon(lambda: self._write_all(payload, items))

    def _write_all(self, payload: bytes, items: List[Tuple[LoopChannel, OutMessage]]) -> None:
        """:meth:`broadcast` on the loop thread: the frame is encoded once (server frames are
        not masked: the same bytes for every connection with the same protocol settings)."""
        frames: dict[Tuple[bool, int], List[bytes]] = {}
        for ch, m in items:
            p = ch.conn.protocol
            shape = (p.is_server, p.fragment_size)
            bufs = frames.get(shape)
            if bufs is None:
                bufs = frames[shape] = [bytes(b) for b in p.encode_many([payload])[0]]
            try:
                ch.write_taken(list(bufs), m)
            except Exception as e:  # a bug of ours: it ends that connection only
                self._failed(ch, e)

    def _wake(self) -> None:
        self._woken = True
        self._wake_write()

    def stop(self, timeout: float = 2.0) -> None:
        """End the loop thread (connections still registered are closed) and join it."""
        self._stopping = True
        self._wake()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # -- the loop thread ------------------------------------------------------------------

    def register(self, ch: LoopChannel, events: int) -> None:
        with self._sel_lock:
            if ch.watched:  # a caller reading its answer registered it first
                self._sel.modify(ch.fd, events, ch)
            else:  # (events 0 while a caller reads: it gives reading back later)
                self._sel.register(ch.fd, events, ch)
                ch.watched = True
        ch.counted = True
        self.channels += 1

    def modify(self, ch: LoopChannel, events: int) -> None:
        """Set the events ``ch`` waits for (any thread: a caller reading its own answer takes
        reading away for a while). 0: none, it leaves the selector until it wants some."""
        with self._sel_lock:
            if ch.ended:
                return
            sel = self._sel
            try:
                if not ch.watched:
                    sel.register(ch.fd, events, ch)
                    ch.watched = True
                else:
                    sel.modify(ch.fd, events, ch)
            except (KeyError, ValueError, OSError):
                pass

    def unregister(self, ch: LoopChannel) -> None:
        with self._sel_lock:
            if ch.watched:
                ch.watched = False
                self._sel.unregister(ch.fd)
        if ch.counted:
            ch.counted = False
            self.channels -= 1
        ch.timer_at = None
        # the heap holds ended channels (and their sessions) until their entries come due, up
        # to a keepalive interval: once it has more than two entries per live channel, only
        # the due entry of each live one is kept (amortized: a rebuild at least halves it)
        timers = self._timers
        if len(timers) > 2 * self.channels:
            timers[:] = [e for e in timers if not e[2].ended and e[0] == e[2].timer_at]
            heapq.heapify(timers)

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
                if timeout != 0.0:
                    timeout = self._before_sleep(timeout)
                # the events and the channels of this round live in the helpers' frames
                # only: a local of this loop would keep the last round's channels (and their
                # sessions) alive while the loop sleeps, e.g. after a thousand clients left
                self._on_events(sel.select(timeout))
                if ready or calls:
                    self._worked = True
                while calls:
                    self._call(calls.popleft())
                if ready:
                    self._run_ready()
                if timers:
                    self._run_timers(time.monotonic())
        except Exception:  # pragma: no cover - a bug of ours: log it, then end every channel
            logger.exception("I/O loop %s failed", self.name)
        finally:
            self._shutdown()

    def _before_sleep(self, timeout: Optional[float]) -> Optional[float]:
        """The loop is about to wait: after traffic, a quiet spell of
        :data:`IDLE_TRIM_AFTER` seconds trims the heap; returns the wait, shortened to
        that moment."""
        now = time.monotonic()
        if self._worked:
            self._worked = False
            self._trim_at = now + IDLE_TRIM_AFTER
        elif self._trim_at is not None and now >= self._trim_at:
            self._trim_at = None
            self.trims += 1
            trim_heap()
        if self._trim_at is None:
            return timeout
        left = max(0.0, self._trim_at - now)
        return left if timeout is None else min(timeout, left)

    def _on_events(self, events: List[Tuple[Optional[LoopChannel], int]]) -> None:
        self._sleeping = False
        if events:
            self._worked = True
        for ch, mask in events:
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

    def _run_ready(self) -> None:
        ready = self._ready
        n = len(ready)
        while n and ready:  # those scheduled meanwhile wait for the next round
            n -= 1
            ch = ready.popleft()
            try:
                ch.on_ready()
            except Exception as e:
                self._failed(ch, e)

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
        for ch in self._sel.values():
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
        self.fd = conn.sock.fileno()  # the loop's poller key (still valid once it closes)
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
        self._reader = threading.Lock()  # one reader at a time: the loop, or a waiting caller
        self._interest = threading.Lock()  # _events, _writing, _caller_reads
        self._writing = False  # the socket is full: wait until it is writable
        self._caller_reads = False  # a caller reads (read_until): the loop does not
        self._last_rtt = 0.0  # the last read_until's round trip (RPC_SPIN_S)
        self.spins = 0  # read_until calls that polled without sleeping first
        self.spin_answers = 0  # ... and were answered meanwhile
        self.counted = False  # in the loop's channel count
        self.watched = False  # registered with the loop's selector (under its lock)

    # -- any thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Register with the loop: reading starts, and the outbox reports to this channel."""
        self.outbox.set_listener(self.outbox_ready)
        self.outbox.report_transport(blocked=False)  # this channel says when the socket is full
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
        self._write_here(self.conn.protocol.encode_many([message.payload])[0], message)

    def _write_here(self, bufs: List[Any], message: OutMessage) -> None:
        """Write a taken message from this thread; the rest is the loop's (raises when the
        write fails: the caller says who ends the connection)."""
        try:
            done = self.conn.write(bufs, [message])
        except BaseException:
            self._report()
            raise
        if done == WRITTEN_NOW:
            self.outbox.mark_written([message])
            self.last_write = time.monotonic()
            return
        self._report()
        if not done:
            self.outbox_ready()  # the loop waits for the socket to be writable

    def read_until(self, reply: Awaited, timeout: Optional[float],
                   first: Callable[[], Any] = lambda: None) -> None:
        """Call ``first()`` (send the request), then wait on the socket from the calling
        thread and read and dispatch what arrives (``on_message`` runs here), until
        ``reply.done()``, ``timeout`` seconds, or the connection's end; then the caller waits
        on ``reply`` as usual.

        An ``rpc()`` caller uses it: its answer wakes its own thread, where waiting for the
        loop to read it costs a second cross-thread wake per round trip. Meanwhile the loop
        does not watch the socket for input (a lock keeps one reader at a time, so
        messages keep their order); if the loop or another caller is reading at that
        moment, this caller waits as usual. A wait finished elsewhere (the session closed)
        wakes it through its wake pipe. What only the loop may do (answer a ping, end the
        connection) is handed to it.
        """
        if self.ended or not hasattr(select, "poll") or not self._reader.acquire(blocking=False):
            first()  # the loop is reading, or another caller is: theirs wakes this one
            return
        try:
            self._read_until(reply, timeout, first)
        finally:
            self._reader.release()
            if self._caller_reads:
                self._caller_reads = False
                self._set_events()  # the loop reads again

    def _read_until(self, reply: Awaited, timeout: Optional[float],
                    first: Callable[[], Any]) -> None:
        scratch, wake_r, wake_w = _caller_state()
        poller = select.poll()
        try:
            poller.register(self.conn.sock, select.POLLIN)
        except (ValueError, OSError):
            first()
            return
        poller.register(wake_r, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._caller_reads = True
        self._set_events()  # not the loop too: one thread wakes at the answer
        reply.wake_with(wake_w)  # ... unless something else finishes the wait
        first()
        sent = time.perf_counter()
        spin_until = sent + RPC_SPIN_S if self._last_rtt < RPC_SPIN_WORTH_S else 0.0
        self.spins += spin_until > 0.0
        _callers.reading = True
        try:
            while not reply.done():
                if spin_until:  # a fast peer: poll without sleeping for a moment first
                    ready = poller.poll(0)
                    if not ready:
                        if time.perf_counter() >= spin_until:
                            spin_until = 0.0
                        continue
                else:
                    wait = _POLL_SLICE
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            return
                    ready = poller.poll(wait * 1000.0)
                    if not ready:
                        continue
                if any(fd == wake_r for fd, _ in ready):
                    try:
                        os.read(wake_r, 64)
                    except OSError:
                        pass
                    continue
                if self.ended or self._read_input(scratch) is not None:
                    return
        finally:
            _callers.reading = False
            reply.wake_with(None)
            self._last_rtt = time.perf_counter() - sent if reply.done() else RPC_SPIN_WORTH_S
            self.spin_answers += spin_until > 0.0 and reply.done()

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

    def write_taken(self, bufs: List[Any], message: OutMessage) -> None:
        """Loop thread: write ``message`` (reserved by ``Outbox.take_direct``, encoded as
        ``bufs``); what the socket does not take now goes out when it is writable."""
        if self.ended:
            self.outbox.abandon([message], "connection closed")
            return
        self._write(bufs, [message])

    def write_taken_here(self, bufs: List[Any], message: OutMessage) -> None:
        """:meth:`write_taken` from the calling thread (any thread): the frame goes out
        without a wake-up of the loop when the socket takes it at once (the fleet's consumer
        delivering to an idle client). What the socket does not take, the loop writes when
        it is writable; a failed write is handed to the loop, which ends the connection."""
        try:
            self._write_here(bufs, message)
        except (ConnectionClosed, OSError) as e:
            err = e
            self.loop.call_soon(lambda: self._taken_failed(err, message))

    def _taken_failed(self, exc: BaseException, message: OutMessage) -> None:
        """Loop thread: a :meth:`write_taken_here` failed."""
        if self.ended:
            self.outbox.abandon([message], "connection closed")
        else:
            self._write_failed(exc, [message])

    # -- the loop thread ------------------------------------------------------------------

    def _register(self) -> None:
        if self.ended:
            return
        try:
            with self._interest:  # a caller may be reading already (read_until): not _READ
                self.loop.register(self, self._events)
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
        self._writing = on
        self.outbox.report_transport(blocked=on)  # coalescing counts only while it is full
        if self._set_events() and on:
            self._arm()  # the send timeout

    def _set_events(self) -> bool:
        """Tell the loop what to wait for; True if that changed."""
        with self._interest:
            events = (0 if self._caller_reads else _READ) | (_WRITE if self._writing else 0)
            if events == self._events or self.ended:
                return False
            self._events = events
            self.loop.modify(self, events)
            return True

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
        if not self._reader.acquire(blocking=False):
            return  # a caller reads (read_until): it has taken reading away from the loop
        try:
            if self.ended:
                return
            end = self._read_input(self.loop.scratch)
        finally:
            self._reader.release()
        if end is not None:
            self._input_done(*end)
        elif self.conn.protocol.has_control():
            self._flush()  # a pong

    def _read_input(self, scratch: memoryview) -> Optional[Tuple[BaseException, bool]]:
        """Read (again while each read fills the buffer) and dispatch. When the input ended:
        the error to end the connection with, and whether our close frame goes out first
        (after the peer's close frame or a protocol error; not after a failed read). Any
        thread holding ``_reader``: off the loop thread, what only the loop may do (the
        pong, the end) is handed to it."""
        conn = self.conn
        on_message = self.on_message
        end: Optional[Tuple[BaseException, bool]] = None
        for _ in range(_READS_PER_TURN):  # a read that filled its buffer: more is waiting
            try:
                messages = conn.read(scratch)
            except (ConnectionClosed, OSError) as e:
                end = (e, False)
                break
            for data in messages:
                try:
                    on_message(data)
                except Exception:
                    logger.exception("%s: failed to handle a message", self.name)
            if conn.input_ended:
                end = (conn.protocol.closed_error(), True)
                break
            if not conn.read_full:
                break
        if (end is not None or conn.protocol.has_control()) \
                and threading.current_thread() is not self.loop.thread:
            self.loop.call_soon(lambda: self._after_read(end))
        return end

    def _after_read(self, end: Optional[Tuple[BaseException, bool]]) -> None:
        """On the loop thread, after a caller's read: the pong, or the connection's end."""
        if self.ended:
            return
        if end is not None:
            self._input_done(*end)
        elif self.conn.protocol.has_control():
            self._flush()

    def _input_done(self, exc: BaseException, close_frame_first: bool) -> None:
        if close_frame_first:
            self._flush()  # our close frame: the reply, or the failure's code
        self.finish(exc)

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
