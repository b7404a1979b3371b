"""``app.rtc``: the collaborative scene graph over our own server.

Clients exchange :mod:`vuer_sync.rtc` envelopes in ``RTC`` events (client -> server in
``value``, server -> client in ``data``): ``{"mtype": "join"}`` gets the room's ``state``
(snapshot + tail); a ``crdt`` envelope is sequenced by a :class:`~vuer_sync.rtc.RelayCore`,
acked to its sender and broadcast to every other member. The converged graph is also
mirrored into ``app.scene`` under one group node, so a plain browser sees the result as
ordinary scene updates.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Set

from ..errors import SessionClosed
from ..events import ClientEvent, ServerEvent
from ..rtc import RelayCore, create_graph

if TYPE_CHECKING:  # pragma: no cover
    from .app import Vuer
    from .session import VuerSession

logger = logging.getLogger("vuer_sync.rtc.room")

__all__ = ["RTC_ETYPE", "RtcRoom"]

RTC_ETYPE = "RTC"
_STRUCTURE = ("node.insert", "node.remove", "node.move")


def rtc_event(envelope: Dict[str, Any]) -> ServerEvent:
    return ServerEvent(envelope, etype=RTC_ETYPE)


class RtcRoom:
    """One room per server (``app.rtc``), created on first use.

    ``mirror_key``: the key of the group node under which the graph is mirrored into
    ``app.scene`` (``None`` turns the mirror off).
    """

    def __init__(self, app: Vuer, mirror_key: Optional[str] = "vuer-sync-rtc"):
        self._app = app
        self._lock = threading.Lock()
        self.relay = RelayCore()
        self.replica = create_graph("vuer-sync-server", epoch="")
        self.members: Dict[str, VuerSession] = {}
        self.mirror_key = mirror_key
        self._mirrored = False

    @property
    def graph(self) -> Any:
        """The converged scene graph as the server sees it."""
        return self.replica.get_state().graph

    # -- called by the server's dispatcher (reader thread; no user code) ------------------

    def on_event(self, session: VuerSession, ev: ClientEvent) -> None:
        env = ev.value if isinstance(ev.value, dict) else {}
        mtype = env.get("mtype")
        if mtype == "join":
            with self._lock:
                state = self.relay.join(conn=session.id)
                self.members[session.id] = session
            session.send(rtc_event(state))
            return
        if mtype != "crdt":
            session.send(rtc_event({"mtype": "error", "msgId": None,
                                    "error": f"unknown RTC mtype {mtype!r}"}))
            return
        with self._lock:
            res = self.relay.submit(env, conn=session.id)
            others = [s for sid, s in self.members.items() if sid != session.id]
            if res.broadcast is not None:
                self.replica.receive_wire(res.broadcast)
        session.send(rtc_event(res.reply))
        if res.broadcast is not None:
            for s in others:
                try:
                    s.send(rtc_event(res.broadcast))
                except SessionClosed:  # a member leaving must not stop the others
                    logger.debug("could not relay to %s", s.id)
            self._mirror(res.broadcast.get("msg") or {})

    def leave(self, session: VuerSession) -> None:
        with self._lock:
            if self.members.pop(session.id, None) is None:
                return
            retire = self.relay.leave(session.id)
            members = list(self.members.values())
        if retire is not None:
            for s in members:
                try:
                    s.send(rtc_event(retire))
                except SessionClosed:
                    pass

    # -- mirror into app.scene ------------------------------------------------------------

    def _mirror(self, msg: Dict[str, Any]) -> None:
        if self.mirror_key is None:
            return
        ops: List[Dict[str, Any]] = [op for op in msg.get("ops") or [] if isinstance(op, dict)]
        kinds = {op.get("otype") or op.get("ot") for op in ops}
        graph = self.graph
        if not self._mirrored or kinds & set(_STRUCTURE):
            self._app.scene.upsert(self._element(self.mirror_key, "group", {},
                                                 self._roots(graph), graph))
            self._mirrored = True
            return
        touched: Set[str] = {k for k in (op.get("key") for op in ops) if isinstance(k, str)}
        updates = []
        for key in sorted(touched):
            node = graph.nodes.get(key)
            if node is not None and not node.deleted:
                updates.append({"key": key, **_props(node.properties)})
        if updates:
            self._app.scene.update(updates)

    def _roots(self, graph: Any) -> List[str]:
        return list(graph.roots())  # live nodes only: tombstones stay in graph.nodes

    def _element(self, key: str, tag: str, props: Dict[str, Any], children: Iterable[str],
                 graph: Any) -> Dict[str, Any]:
        kids = []
        for k in children:
            n = graph.nodes.get(k)
            if n is not None:
                kids.append(self._element(k, n.tag or "group", _props(n.properties),
                                          n.children, graph))
        return {"key": key, "tag": tag, **props, "children": kids}


def _props(properties: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in properties.items() if not str(k).startswith("_")}
