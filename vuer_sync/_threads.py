"""Small threading helpers shared by the server and the client."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Any, Callable, Iterator, List, Optional

from .logsafe import TracebackLimiter

logger = logging.getLogger("vuer_sync.handlers")
#: A handler that raises on every event logs its traceback once a minute, with a count.
handler_errors = TracebackLimiter(logger)

__all__ = ["GroupLocal", "SerialWorker", "held_group", "start_thread"]

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
            try:
                fn(*args)
            except Exception as e:
                from .errors import SessionClosed

                name = getattr(fn, "__qualname__", fn)
                if isinstance(e, SessionClosed):  # the client left while it ran: normal end
                    logger.debug("handler %s stopped: %s", name, e)
                else:
                    handler_errors.log(f"handler {name} raised", e, source=str(name))

    def stop(self) -> Optional[threading.Thread]:
        """Let queued calls finish, then end the thread; returns it for joining."""
        with self._lock:
            self._stopped = True
            t = self._thread
        if t is not None:
            self._queue.put(_STOP)
        return t


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
