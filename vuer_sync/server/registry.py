"""What the user registered on a :class:`~vuer_sync.server.app.Vuer`: event handlers, spawn and
bind functions, connect/disconnect callbacks. The session's dispatcher reads it; nothing here
runs user code."""

from __future__ import annotations

import fnmatch
import inspect
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..events import ClientEvent

if TYPE_CHECKING:  # pragma: no cover
    from .session import VuerSession

__all__ = ["Handler", "Registry", "check_plain", "matches"]

Handler = Callable[[ClientEvent, "VuerSession"], Any]
SessionFn = Callable[["VuerSession"], Any]


def check_plain(fn: Callable[..., Any], what: str) -> None:
    """``TypeError`` for an ``async`` function: vuer_sync calls are blocking, no ``await``."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{what} must be a plain function in vuer_sync (blocking calls, no await): "
            f"{getattr(fn, '__qualname__', fn)} is async"
        )


def matches(init: ClientEvent, filters: Dict[str, Any]) -> bool:
    """Vuer's spawn filter: every ``k=pattern`` globs the INIT field ``k`` (which must exist)."""
    info = init.value if isinstance(init.value, dict) else {}
    return all(info.get(k) is not None and fnmatch.fnmatch(str(info.get(k)), str(p))
               for k, p in filters.items())


class Registry:
    """Handlers by event type (``add_handler``), spawn functions with their INIT filters,
    the bind generator, and the connect/disconnect callbacks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._handlers: Dict[str, Dict[int, Tuple[Handler, bool]]] = {}
        # event types whose handlers are all permanent -> those handlers (read without the
        # lock on every inbound event; replaced, never mutated, under the lock)
        self._plain: Dict[str, Tuple[Handler, ...]] = {}
        self._handler_ids = 0
        self.registered: Dict[type, List[Any]] = {}
        self.spawns: List[Tuple[SessionFn, Dict[str, Any]]] = []
        self.bind_fn: Optional[SessionFn] = None
        self.on_connect: List[SessionFn] = []
        self.on_disconnect: List[SessionFn] = []

    def add_handler(self, event_type: str, fn: Handler, once: bool) -> Callable[[], None]:
        """Register ``fn`` for ``event_type``; return the function that removes it."""
        check_plain(fn, "a handler")
        with self.lock:
            self._handler_ids += 1
            hid = self._handler_ids
            self._handlers.setdefault(event_type, {})[hid] = (fn, once)
            self._refresh(event_type)

        def cleanup() -> None:
            with self.lock:
                hs = self._handlers.get(event_type)
                if hs is not None:
                    hs.pop(hid, None)
                    if not hs:
                        del self._handlers[event_type]
                    self._refresh(event_type)

        return cleanup

    def _refresh(self, etype: str) -> None:
        """(Under the lock.) The lock-free view of ``etype``'s handlers, when none is
        ``once`` (those must be taken under the lock, exactly once)."""
        hs = self._handlers.get(etype)
        if hs and not any(once for _, once in hs.values()):
            self._plain[etype] = tuple(fn for fn, _ in hs.values())
        else:
            self._plain.pop(etype, None)

    def take_handlers(self, etype: str) -> Sequence[Handler]:
        """The handlers to call for one ``etype`` event (``once`` handlers are removed)."""
        plain = self._plain.get(etype)  # permanent handlers only: no lock (the usual case)
        if plain is not None:
            return plain
        if etype not in self._handlers:  # no handler: skip the lock (a dict read is atomic)
            return ()
        with self.lock:
            hs = self._handlers.get(etype)
            todo = []
            if hs:
                for hid, (fn, once) in list(hs.items()):
                    todo.append(fn)
                    if once:
                        del hs[hid]
                if not hs:
                    del self._handlers[etype]
                self._refresh(etype)
        return todo

    def spawns_for(self, init: ClientEvent) -> List[SessionFn]:
        """The spawn functions whose filters match this INIT, in registration order."""
        return [fn for fn, filters in self.spawns if matches(init, filters)]
