"""Small threading helpers shared by the server and the client."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import logging
import queue
import socket
import sys
import threading
import time
from typing import Any, Callable, Deque, Iterator, List, Optional, Set, Tuple

from .logsafe import TracebackLimiter

logger = logging.getLogger("vuer_sync.handlers")
#: A handler that raises on every event logs its traceback once a minute, with a count.
handler_errors = TracebackLimiter(logger)

__all__ = ["GroupLocal", "SerialQueue", "SerialWorker", "WorkerPool", "held_group", "wake_writer",
           "release_memory", "start_thread", "trim_heap"]

_STOP = object()


def start_thread(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    """Start a daemon thread (our threads never keep the interpreter alive)."""
    t = threading.Thread(target=target, name=name, args=args, daemon=True)
    t.start()
    return t


class SerialWorker:
    """Runs submitted calls one at a time, in order, on one lazily started thread.

    Used for event handlers: they run off the socket-reader thread, in arrival order per
    session, and an exception in one is logged without stopping the next.
    """

    def __init__(self, name: str):
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._stopped = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._thread is not None and not self._stopped:  # started: no lock needed
            self._queue.put((fn, args))
            return
        with self._lock:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = start_thread(self._run, self.name)
        self._queue.put((fn, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args = item
            run_handler(fn, args)

    def stop(self) -> Optional[threading.Thread]:
        """Let queued calls finish, then end the thread; returns it for joining."""
        with self._lock:
            self._stopped = True
            t = self._thread
        if t is not None:
            self._queue.put(_STOP)
        return t


def run_handler(fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    """Call a user's handler; its exception is logged (rate-limited), never raised."""
    try:
        fn(*args)
    except Exception as e:
        from .errors import SessionClosed

        name = getattr(fn, "__qualname__", fn)
        if isinstance(e, SessionClosed):  # the client left while it ran: normal end
            logger.debug("handler %s stopped: %s", name, e)
        else:
            handler_errors.log(f"handler {name} raised", e, source=str(name))


class WorkerPool:
    """A bounded pool of threads started on demand and ended when idle.

    At most ``max_workers`` threads; a thread with nothing to do for ``idle_timeout`` seconds
    ends, so an idle server holds none. Calls run in submission order as workers free up.

    >>> pool = WorkerPool("doc", max_workers=2)
    >>> done = threading.Event()
    >>> pool.submit(done.set)
    >>> done.wait(5)
    True
    >>> pool.stop(5)
    """

    def __init__(self, name: str, max_workers: int = 32, idle_timeout: float = 5.0):
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.name = name
        self.max_workers = int(max_workers)
        self.idle_timeout = float(idle_timeout)
        self._cv = threading.Condition(threading.Lock())
        self._queue: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = collections.deque()
        self._threads: Set[threading.Thread] = set()
        self._idle = 0
        self._stopped = False
        self._count = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker (its exception is logged)."""
        with self._cv:
            if self._stopped:
                raise RuntimeError(f"worker pool {self.name} is stopped")
            self._queue.append((fn, args))
            if len(self._queue) > self._idle and len(self._threads) < self.max_workers:
                self._count += 1
                t = threading.Thread(target=self._work, daemon=True,
                                     name=f"vuer-{self.name}:{self._count}")
                self._threads.add(t)
                t.start()
            else:
                self._cv.notify()

    def _work(self) -> None:
        me = threading.current_thread()
        cv = self._cv
        queue = self._queue
        while True:
            with cv:
                while not queue:
                    if self._stopped:
                        self._threads.discard(me)
                        return
                    self._idle += 1
                    try:
                        woke = cv.wait(self.idle_timeout)
                    finally:
                        self._idle -= 1
                    if not woke and not queue:
                        self._threads.discard(me)
                        return
                fn, args = queue.popleft()
            run_handler(fn, args)
            del fn, args  # an idle worker holds nothing of the last call (a session, say)

    def stop(self, timeout: float = 2.0) -> None:
        """Let queued calls finish, end the threads and join them (up to ``timeout``)."""
        with self._cv:
            self._stopped = True
            threads = list(self._threads)
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))


class SerialQueue:
    """Calls run one at a time, in order, on a shared :class:`WorkerPool`: a session's
    handlers keep their order, and a slow handler of one session holds one worker, not the
    others' handlers. ``stop()`` returns a handle whose ``join(timeout)`` waits for what was
    queued (the same use as :class:`SerialWorker`'s thread).

    >>> pool = WorkerPool("doc")
    >>> q, out = SerialQueue(pool, "doc"), []
    >>> for i in range(5):
    ...     q.submit(out.append, i)
    >>> q.stop().join(5); out
    [0, 1, 2, 3, 4]
    >>> pool.stop(5)
    """

    def __init__(self, pool: WorkerPool, name: str):
        self.pool = pool
        self.name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = collections.deque()
        self._running = False
        self._stopped = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if self._stopped:
                return
            self._queue.append((fn, args))
            if self._running:
                return
            self._running = True
        try:
            self.pool.submit(self._drain)
        except RuntimeError:  # the pool stopped (the server is stopping): drop them
            with self._lock:
                self._queue.clear()
                self._running = False
                self._idle.notify_all()

    def _drain(self) -> None:
        while True:
            with self._lock:  # take everything queued: one lock per run, not per call
                if not self._queue:
                    self._running = False
                    self._idle.notify_all()
                    return
                todo, self._queue = self._queue, collections.deque()
            for fn, args in todo:
                run_handler(fn, args)

    def stop(self) -> _Drained:
        """Take no more calls; the returned handle joins the ones queued."""
        with self._lock:
            self._stopped = True
        return _Drained(self)

    def wait_idle(self, timeout: Optional[float]) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def busy(self) -> bool:
        return self._running


class _Drained:
    """A :class:`SerialQueue` after ``stop()``, joinable like a thread."""

    def __init__(self, q: SerialQueue):
        self._q = q
        self.name = f"{q.name} (handlers)"

    def join(self, timeout: Optional[float] = None) -> None:
        self._q.wait_idle(timeout)

    def is_alive(self) -> bool:
        return self._q.busy()


def _load_malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _load_malloc_trim()


def _load_write_keeping_gil() -> Optional[Callable[[int, bytes, int], int]]:
    try:  # ctypes.PyDLL: calls made through it do not release the GIL
        fn = ctypes.PyDLL(None).write
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
        fn.restype = ctypes.c_ssize_t
        return fn
    except Exception:  # no C library to load this way (Windows): socket.send instead
        return None


_write_keeping_gil = _load_write_keeping_gil()


def wake_writer(sock: socket.socket) -> Callable[[], None]:
    """A function writing one byte to ``sock`` (the non-blocking write end of a wake-up
    socket pair) from the calling thread **without releasing the GIL**, where the C library
    allows it (``ctypes.PyDLL``'s ``write``; elsewhere ``sock.send``).

    Why: ``socket.send`` releases the GIL for the system call. The thread it wakes (an I/O
    loop asleep in ``epoll``) then takes the GIL at once, and the caller, back from a
    syscall of a microsecond, waits for the loop's Python work to reach its own next
    system call: measured ~30 us on a producer's every broadcast. Kept, the woken loop
    runs when the producer next blocks or sleeps (a robot loop's tick), or at the switch
    interval. A full pipe is fine: a wake-up is pending already.

    >>> a, b = socket.socketpair()
    >>> b.setblocking(False)
    >>> wake = wake_writer(b)
    >>> wake(); wake()
    >>> a.recv(8)
    b'\\x00\\x00'
    >>> b.close(); wake()  # closed: nothing is written anywhere
    >>> a.close()
    """
    raw = _write_keeping_gil
    if raw is None:
        def wake_by_send() -> None:
            try:
                sock.send(b"\0")
            except OSError:  # full (a wake-up is pending) or closed
                pass
        return wake_by_send
    fileno = sock.fileno

    def wake() -> None:
        # the descriptor is read each time: once the socket is closed it is -1, never a
        # number the process may since have given to another file. The GIL is held from
        # this read to the end of the write, and close() needs it to give the number up.
        fd = fileno()
        if fd >= 0:
            raw(fd, b"\0", 1)  # -1 (EAGAIN: full, so a wake-up is pending): fine
    return wake


#: CPython's type attribute cache holds a reference to each looked-up name: per-request
#: names (``http.server``'s ``"do_" + command``, one new string per handshake) stay alive in
#: it, scattered over the allocator's arenas, and keep those arenas (1 MiB each) from being
#: given back after a burst of connections (measured: ~7 MB of 19 after 1000 viewers left).
_clear_type_cache: Optional[Callable[[], None]] = getattr(
    sys, "_clear_internal_caches", None) or getattr(sys, "_clear_type_cache", None)


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc's ``malloc_trim``):
    after many connections end at once, RSS comes back down instead of staying at its peak.
    Costs a full collection (milliseconds); the server calls it after bursts of closes."""
    if _clear_type_cache is not None:
        _clear_type_cache()  # refilled on the next lookups (microseconds)
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand the C heap's free memory back to the OS (glibc's ``malloc_trim``; nothing on
    other C libraries). Well under a millisecond for a heap of tens of MB; the GIL is
    released meanwhile. glibc keeps freed memory when its trim threshold has grown (it does
    after large blocks are freed), so a burst of traffic otherwise holds RSS at its peak."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class GroupLocal(threading.local):
    """Per-thread state of :func:`held_group`. The class attributes are every thread's
    defaults, so reading ``group`` outside a block is a plain attribute read (a ``getattr``
    with a default on a bare ``threading.local`` raises and catches internally: it showed up
    in every producer call)."""

    group: Optional[List[Any]] = None
    depth: int = 0


@contextlib.contextmanager
def held_group(local: GroupLocal, release: Callable[[List[Any]], None]) -> Iterator[None]:
    """Nestable per-thread grouping (``atomic()``): while the block runs, ``local.group``
    collects what this thread sends; when the outermost block exits (also by an exception),
    ``release(group)`` sends it in one piece."""
    depth = local.depth
    if depth == 0:
        local.group = []
    local.depth = depth + 1
    try:
        yield
    finally:
        local.depth -= 1
        if local.depth == 0:
            group, local.group = local.group, None
            if group:
                release(group)
