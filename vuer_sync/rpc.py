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

import concurrent.futures
import threading
from typing import Any, Dict, List, Optional

from .errors import RPCTimeout, SessionClosed

__all__ = ["PendingTable", "Waiter", "wait"]


class PendingTable:
    """``key -> [futures]``; thread-safe; closing fails every pending future."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Dict[str, List[concurrent.futures.Future]] = {}
        self._closed: Optional[BaseException] = None

    def register(self, key: str) -> concurrent.futures.Future:
        """A future resolved by the next :meth:`resolve` of ``key``."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed is not None:
                fut.set_exception(self._closed)
                return fut
            self._pending.setdefault(key, []).append(fut)
        return fut

    def discard(self, key: str, fut: concurrent.futures.Future) -> None:
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


def wait(fut: concurrent.futures.Future, timeout: Optional[float], what: str) -> Any:
    """``fut.result(timeout)`` raising :class:`RPCTimeout` (a ``TimeoutError``) on timeout and
    :class:`SessionClosed` when the session ended."""
    try:
        return fut.result(timeout)
    except concurrent.futures.TimeoutError:
        raise RPCTimeout(f"{what}: no answer within {timeout} s") from None
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
