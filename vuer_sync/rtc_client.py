"""A blocking client of the server's collaborative scene graph (``app.rtc``).

>>> from vuer_sync import Vuer, VuerClient
>>> with Vuer(port=0) as app:  # doctest: +ELLIPSIS
...     with VuerClient(f"ws://127.0.0.1:{app.port}") as a, \\
...          VuerClient(f"ws://127.0.0.1:{app.port}") as b:
...         ra, rb = a.rtc("alice").join(), b.rtc("bob").join()
...         ra.edit({"otype": "node.insert", "key": "", "path": "children",
...                  "value": {"key": "cube", "tag": "Box", "hp": 100}})
...         ra.commit()
...         rb.edit({"otype": "number.add", "key": "cube", "path": "hp", "value": -10})
...         _ = rb.wait_for(lambda g: "cube" in g.nodes, timeout=5)
...         rb.commit()
...         ra.wait_for(lambda g: g.nodes["cube"].get_property("hp") == 90, timeout=5)
Vuer server (vuer_sync ...)
...
True
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional, Protocol

from .errors import RPCTimeout
from .events import ClientEvent
from .rtc import crdt_envelope, create_graph

__all__ = ["RtcClient"]


class EventSender(Protocol):
    """What an :class:`RtcClient` needs of its :class:`~vuer_sync.client.VuerClient` (which
    owns it and feeds it the server's envelopes): ``send @ event`` and
    ``send(event, timeout=...)``. The client imports this module, not the other way round."""

    @property
    def send(self) -> Any: ...


class RtcClient:
    """Edits go through a local :class:`~vuer_sync.rtc.GraphStore` (optimistic, with
    ``edit``/``commit``/``cancel``/``undo``/``redo``); committed messages are sent to the
    server's room, whose acks and broadcasts come back on the client's reader thread.
    ``graph`` is the local converged view; :meth:`wait_for` blocks on a condition of it.
    """

    def __init__(self, client: EventSender, client_id: str, **store_options: Any):
        self._client = client
        self._cv = threading.Condition()
        self._joined = False
        self.errors: list = []
        self.store = create_graph(client_id, on_send=self._send, **store_options)
        self.store.subscribe(self._notify)

    def _send(self, msg: Any) -> None:
        self._client.send @ ClientEvent(etype="RTC", value=crdt_envelope(msg))

    def _notify(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def on_envelope(self, env: Dict[str, Any]) -> None:
        """An RTC envelope from the server (the client's reader thread calls this)."""
        result = self.store.receive_wire(env)
        with self._cv:
            if env.get("mtype") == "state":
                self._joined = True
            elif env.get("mtype") == "error":
                self.errors.append(result)
            self._cv.notify_all()

    def join(self, timeout: float = 10.0) -> RtcClient:
        """Get the room's current state, then (re)send our unacknowledged messages."""
        with self._cv:
            self._joined = False
        self._client.send(ClientEvent(etype="RTC", value={"mtype": "join"}), timeout=timeout)
        with self._cv:
            if not self._cv.wait_for(lambda: self._joined, timeout):
                raise RPCTimeout(f"no room state from the server within {timeout} s")
        self.store.retry()
        return self

    # -- the seed's GraphStore API --------------------------------------------------------

    def edit(self, op: Dict[str, Any]) -> None:
        self.store.edit(op)

    def commit(self, description: Optional[str] = None) -> Any:
        return self.store.commit(description)

    def cancel(self) -> None:
        self.store.cancel()

    def undo(self) -> Any:
        return self.store.undo()

    def redo(self) -> Any:
        return self.store.redo()

    def get_state(self) -> Any:
        return self.store.get_state()

    @property
    def graph(self) -> Any:
        return self.store.get_state().graph

    def wait_for(self, predicate: Callable[[Any], bool], timeout: Optional[float] = None
                 ) -> bool:
        """Block until ``predicate(graph)`` is true (re-checked after every change)."""
        def check() -> bool:
            try:
                return bool(predicate(self.graph))
            except (KeyError, AttributeError):
                return False

        with self._cv:
            if not self._cv.wait_for(check, timeout):
                raise RPCTimeout(f"condition not reached within {timeout} s")
        return True

    def wait_acked(self, timeout: Optional[float] = 10.0) -> None:
        """Block until the server acknowledged every message we committed."""
        from .rtc import get_unacked_messages

        with self._cv:
            if not self._cv.wait_for(
                    lambda: not get_unacked_messages(self.store.get_state()), timeout):
                raise RPCTimeout(f"messages not acknowledged within {timeout} s")
