"""Small threading helpers shared by the server and the client."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Optional

logger = logging.getLogger("vuer_sync.handlers")

__all__ = ["SerialWorker", "start_thread"]

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
            except Exception:
                logger.exception("handler %s raised", getattr(fn, "__qualname__", fn))

    def stop(self) -> Optional[threading.Thread]:
        """Let queued calls finish, then end the thread; returns it for joining."""
        with self._lock:
            self._stopped = True
            t = self._thread
        if t is not None:
            self._queue.put(_STOP)
        return t
