"""Pending-request table: one future per awaited response, failed all at once on close.

Used for RPC replies (keyed by ``rtype``) and ``till`` waiters (keyed by ``etype``) of one
session, so a reply or an event only ever reaches the session it arrived on.

>>> t = PendingTable()
>>> fut = t.register("PING_RESPONSE@1")
>>> t.resolve("PING_RESPONSE@1", "pong")
True
>>> wait(fut, 0.1, "ping")
'pong'
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from .errors import RPCTimeout, SessionClosed

__all__ = ["PendingTable", "Reply", "Waiter", "wait"]

_finish_lock = threading.Lock()  # makes "first to finish wins" atomic; held for a moment


class Reply:
    """A one-shot result for one waiting thread: a lock the waiter blocks on, released by
    whoever sets the result. (A ``concurrent.futures.Future`` does the same through a
    ``Condition`` in Python code, which costs a waiting RPC caller microseconds twice.)

    >>> r = Reply()
    >>> r.set_result(42)
    >>> r.done(), r.result(0)
    (True, 42)
    """

    __slots__ = ("_exc", "_finished", "_ready", "_value", "_wake")

    def __init__(self) -> None:
        self._ready = threading.Lock()
        self._ready.acquire()
        self._finished = False
        self._value: Any = None
        self._exc: Optional[BaseException] = None
        self._wake: Optional[Tuple[int, int]] = None

    def done(self) -> bool:
        return self._finished

    def wake_with(self, fd: Optional[int]) -> None:
        """While set, finishing from another thread also writes a byte to ``fd`` (the
        waiter polls it rather than blocking on the result; its own thread writes none)."""
        self._wake = None if fd is None else (threading.get_ident(), fd)

    def _finish(self, value: Any, exc: Optional[BaseException]) -> bool:
        with _finish_lock:
            if self._finished:
                return False
            self._finished = True
        self._value, self._exc = value, exc
        self._ready.release()
        wake = self._wake
        if wake is not None and wake[0] != threading.get_ident():
            try:
                os.write(wake[1], b"\0")
            except OSError:  # full (it is awake anyway) or closed
                pass
        return True

    def set_result(self, value: Any) -> None:
        self._finish(value, None)

    def set_exception(self, exc: BaseException) -> None:
        self._finish(None, exc)

    def cancel(self) -> bool:
        """Finish with nothing (a waiter gets ``TimeoutError``); ``False`` if already done."""
        return self._finish(None, TimeoutError("cancelled"))

    def result(self, timeout: Optional[float] = None) -> Any:
        """The value; raises the exception it was finished with, or ``TimeoutError``."""
        if not self._ready.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TimeoutError
        self._ready.release()  # stays readable: result() may be called again
        if self._exc is not None:
            raise self._exc
        return self._value


class PendingTable:
    """``key -> [futures]``; thread-safe; closing fails every pending future."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Dict[str, List[Reply]] = {}
        self._closed: Optional[BaseException] = None

    def register(self, key: str) -> Reply:
        """A future resolved by the next :meth:`resolve` of ``key``."""
        fut = Reply()
        with self._lock:
            if self._closed is not None:
                fut.set_exception(self._closed)
                return fut
            self._pending.setdefault(key, []).append(fut)
        return fut

    def discard(self, key: str, fut: Reply) -> None:
        """Forget ``fut`` (after a timeout) so the table does not grow."""
        with self._lock:
            futs = self._pending.get(key)
            if futs is None:
                return
            try:
                futs.remove(fut)
            except ValueError:
                pass
            if not futs:
                del self._pending[key]

    def wants(self, key: str) -> bool:
        return key in self._pending

    def resolve(self, key: str, value: Any) -> bool:
        """Resolve every future waiting on ``key``; ``False`` if none was."""
        if key not in self._pending:  # the common case, without the lock: a waiter registers
            return False  # before it sends what is answered, so it cannot be missed here
        with self._lock:
            futs = self._pending.pop(key, None)
        if not futs:
            return False
        for f in futs:
            if not f.done():
                f.set_result(value)
        return True

    def close(self, exc: BaseException) -> None:
        """Fail every pending and future registration with ``exc``."""
        with self._lock:
            self._closed = exc
            pending, self._pending = self._pending, {}
        for futs in pending.values():
            for f in futs:
                if not f.done():
                    f.set_exception(exc)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pending.values())


def format_seconds(t: float) -> str:
    """A timeout as people write it: ``3.95``, ``10``, ``0.5`` (two decimals at most).

    >>> format_seconds(3.9488599949997933), format_seconds(10.0), format_seconds(1 / 3)
    ('3.95', '10', '0.33')
    """
    return f"{t:.2f}".rstrip("0").rstrip(".") or "0"


def wait(fut: Reply, timeout: Optional[float], what: str,
         asked: Optional[float] = None) -> Any:
    """``fut.result(timeout)`` raising :class:`RPCTimeout` (a ``TimeoutError``) on timeout and
    :class:`SessionClosed` when the session ended. ``asked``: the caller's whole timeout, for
    the message, when ``timeout`` is what is left of it."""
    try:
        return fut.result(timeout)
    except TimeoutError:
        t = asked if asked is not None else timeout
        shown = format_seconds(t) if t is not None else "?"
        raise RPCTimeout(f"{what}: no answer within {shown} s") from None
    except SessionClosed as e:
        raise SessionClosed(f"{what}: {e}") from None


class Waiter:
    """One awaited event, registered *before* the action that causes it, so it cannot be missed.

    >>> t = PendingTable()
    >>> w = Waiter(t, "DONE", "till('DONE')")  # register first ...
    >>> t.resolve("DONE", "ok")                  # ... then whatever triggers the event
    True
    >>> w.wait(0.1)
    'ok'
    """

    def __init__(self, table: PendingTable, key: str, what: str) -> None:
        self._table, self._key, self._what = table, key, what
        self.future = table.register(key)

    def wait(self, timeout: Optional[float] = None) -> Any:
        """The event; :class:`RPCTimeout` after ``timeout`` s (the waiter is then forgotten)."""
        try:
            return wait(self.future, timeout, self._what)
        finally:
            if not self.future.done():
                self.cancel()

    def cancel(self) -> None:
        """Stop waiting (nothing is kept for this waiter afterwards)."""
        self._table.discard(self._key, self.future)
        self.future.cancel()

    def __enter__(self) -> Waiter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.future.done():
            self.cancel()
