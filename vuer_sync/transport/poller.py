"""The readiness poller an I/O loop waits on: ``select.epoll`` driven directly on Linux,
``selectors.DefaultSelector`` elsewhere, behind one small interface keyed by file
descriptor.

Why not ``selectors`` everywhere: an ``rpc()`` caller that reads its own answer takes
reading away from the loop and gives it back on every call, and ``selectors`` does each of
those in Python (a key object, a file-object lookup, an unregister then a register: about
7 µs per call on a loaded 2-core VM, against about 1.2 µs for the bare ``epoll_ctl``).

Events are :data:`READ` and :data:`WRITE` (``selectors``' values). :meth:`select` returns
``(data, events)`` pairs, where ``events`` has only what was asked for; an error or hang-up
reports as both, as ``selectors`` does.

>>> import socket
>>> a, b = socket.socketpair()
>>> p = make_poller()
>>> p.register(a.fileno(), READ | WRITE, "a")
>>> sorted(p.select(1.0))
[('a', 2)]
>>> b.send(b"x")
1
>>> sorted(p.select(1.0))
[('a', 3)]
>>> p.modify(a.fileno(), 0, "a")  # registered, but waits for nothing
>>> p.select(0.0), p.values()
([], ['a'])
>>> p.unregister(a.fileno()); p.close(); a.close(); b.close()
"""

from __future__ import annotations

import select
import selectors
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["READ", "WRITE", "EpollPoller", "SelectorPoller", "make_poller"]

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


class _Poller:
    """What both pollers share: the table ``fd -> (events, data)``; an fd that waits for
    nothing leaves the backend (an epoll set would still report its hang-up,
    level-triggered, to a loop that does not read it) and comes back when it waits for
    something again."""

    def __init__(self) -> None:
        self._fds: Dict[int, Tuple[int, Any]] = {}  # fd -> (events, data)

    # the backend: watch, change, stop watching (only for events != 0)
    def _add(self, fd: int, events: int, data: Any) -> None:
        raise NotImplementedError

    def _change(self, fd: int, events: int, data: Any) -> None:
        raise NotImplementedError

    def _remove(self, fd: int) -> None:
        raise NotImplementedError

    def register(self, fd: int, events: int, data: Any) -> None:
        """Watch ``fd`` for ``events`` (0: nothing yet); ``data`` is what :meth:`select`
        returns for it. Raises ``KeyError`` if it is registered already."""
        if fd in self._fds:
            raise KeyError(f"fd {fd} is already registered")
        if events:
            self._add(fd, events, data)
        self._fds[fd] = (events, data)

    def modify(self, fd: int, events: int, data: Any) -> None:
        """Change what a registered ``fd`` waits for."""
        old = self._fds[fd][0]
        if old and events:
            if old != events:
                self._change(fd, events, data)
        elif events:
            self._add(fd, events, data)
        elif old:
            self._remove(fd)
        self._fds[fd] = (events, data)

    def unregister(self, fd: int) -> None:
        """Forget ``fd`` (no error if the socket is already closed)."""
        events, _ = self._fds.pop(fd, (0, None))
        if events:
            try:
                self._remove(fd)
            except (KeyError, ValueError, OSError):
                pass

    def values(self) -> List[Any]:
        """The ``data`` of every registered fd."""
        return [d for _, d in self._fds.values()]


class SelectorPoller(_Poller):
    """The portable poller, on ``selectors.DefaultSelector``."""

    def __init__(self) -> None:
        super().__init__()
        self._sel = selectors.DefaultSelector()

    def _add(self, fd: int, events: int, data: Any) -> None:
        self._sel.register(fd, events, data)

    def _change(self, fd: int, events: int, data: Any) -> None:
        self._sel.modify(fd, events, data)

    def _remove(self, fd: int) -> None:
        self._sel.unregister(fd)

    def select(self, timeout: Optional[float]) -> List[Tuple[Any, int]]:
        """Wait up to ``timeout`` seconds (``None``: no limit) for readiness."""
        fds = self._fds
        return [(fds[key.fd][1], mask) for key, mask in self._sel.select(timeout)
                if key.fd in fds]

    def close(self) -> None:
        self._sel.close()
        self._fds.clear()


class EpollPoller(_Poller):
    """Linux: ``epoll`` without ``selectors`` in between."""

    def __init__(self) -> None:
        super().__init__()
        self._ep = select.epoll()

    @staticmethod
    def _mask(events: int) -> int:
        return (select.EPOLLIN if events & READ else 0) | (
            select.EPOLLOUT if events & WRITE else 0)

    def _add(self, fd: int, events: int, data: Any) -> None:
        self._ep.register(fd, self._mask(events))

    def _change(self, fd: int, events: int, data: Any) -> None:
        self._ep.modify(fd, self._mask(events))

    def _remove(self, fd: int) -> None:
        self._ep.unregister(fd)

    def select(self, timeout: Optional[float]) -> List[Tuple[Any, int]]:
        """See :meth:`SelectorPoller.select`."""
        try:
            ready = self._ep.poll(-1 if timeout is None else timeout)
        except InterruptedError:
            return []
        fds = self._fds
        out = []
        for fd, ev in ready:
            entry = fds.get(fd)
            if entry is None:
                continue
            mask = (WRITE if ev & ~select.EPOLLIN else 0) | (READ if ev & ~select.EPOLLOUT else 0)
            mask &= entry[0]
            if mask:
                out.append((entry[1], mask))
        return out

    def close(self) -> None:
        self._ep.close()
        self._fds.clear()


def make_poller() -> Any:
    """An :class:`EpollPoller` where the platform has ``epoll``, else a
    :class:`SelectorPoller`."""
    return EpollPoller() if hasattr(select, "epoll") else SelectorPoller()
