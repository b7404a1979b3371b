"""``app.rtc``: the collaborative scene graph over our own server.

Clients exchange :mod:`vuer_sync.rtc` envelopes in ``RTC`` events (client -> server in
``value``, server -> client in ``data``): ``{"mtype": "join"}`` gets the room's ``state``
(snapshot + tail); a ``crdt`` envelope is sequenced by a :class:`~vuer_sync.rtc.RelayCore`,
acked to its sender and broadcast to every other member. The converged graph is also
mirrored into ``app.scene`` under one group node, so a plain browser sees the result as
ordinary scene updates.

Every join, message and leave goes through the room's journal
(:class:`~vuer_sync.rtc.RelayJournal`) before the relay applies it: in memory by default
(applied at once), or a Redis Stream shared by every node of a fleet room
(:class:`~vuer_sync.fleet.rtc_journal.RedisRelayJournal`; ``Vuer(fleet=...)``, or
``Vuer(rtc_journal=...)``; ``docs/rtc.md``), where a message is acked once Redis has it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Set, Tuple

import msgpack

from ..errors import SessionClosed
from ..events import ClientEvent, ServerEvent
from ..rtc import (
    MemoryJournal,
    RelayCore,
    RelayJournal,
    WireError,
    apply_record,
    create_graph,
    parse_message,
)

if TYPE_CHECKING:  # pragma: no cover
    from .app import Vuer
    from .session import VuerSession

logger = logging.getLogger("vuer_sync.rtc.room")

__all__ = ["RTC_ETYPE", "RtcRoom", "make_journal"]

RTC_ETYPE = "RTC"
_STRUCTURE = ("node.insert", "node.remove", "node.move")


def rtc_event(envelope: Dict[str, Any]) -> ServerEvent:
    return ServerEvent(envelope, etype=RTC_ETYPE)


def make_journal(app: Vuer) -> RelayJournal:
    """The journal ``app.rtc`` uses: ``app.rtc_journal`` is ``"memory"``, ``"redis"`` (the
    fleet's Redis and room), a ``redis://`` URL (that Redis, room ``app.rtc_room``), or
    ``None``: ``"redis"`` when the app has a fleet, else ``"memory"``."""
    choice = app.rtc_journal
    fleet = app.fleet
    if choice is None:
        choice = "redis" if fleet is not None else "memory"
    if choice == "memory":
        return MemoryJournal()
    from ..fleet.rtc_journal import RedisRelayJournal  # redis is imported when it starts

    if choice == "redis":
        if fleet is None:
            raise ValueError("rtc_journal='redis' needs a fleet (Vuer(fleet='redis://...')); "
                             "or pass the Redis URL as rtc_journal")
        return RedisRelayJournal(fleet.url, fleet.room, node_id=fleet.node_id,
                                 live_nodes=lambda: fleet.nodes().keys())
    if not str(choice).startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"rtc_journal must be 'memory', 'redis' or a redis:// URL, "
                         f"not {choice!r}")
    room = fleet.room if fleet is not None else (app.rtc_room or "default")
    return RedisRelayJournal(str(choice), room)


class RtcRoom:
    """One room per server (``app.rtc``), created on first use.

    ``mirror_key``: the key of the group node under which the graph is mirrored into
    ``app.scene`` (``None`` turns the mirror off; with a fleet, the node that holds the
    journal's lease mirrors). ``journal``: see :func:`make_journal` (the default).
    """

    def __init__(self, app: Vuer, mirror_key: Optional[str] = "vuer-sync-rtc",
                 journal: Optional[RelayJournal] = None):
        self._app = app
        self._lock = threading.Lock()
        self.relay = RelayCore()
        self.replica = create_graph("vuer-sync-server", epoch="")
        self.local: Dict[str, VuerSession] = {}  # conn -> session, sessions of this node
        self.members: Dict[str, VuerSession] = {}  # conn -> session, joined (state sent)
        self.mirror_key = mirror_key
        self._mirrored = False
        self.journal = journal if journal is not None else make_journal(app)
        self._loading = True  # the journal's history: mirrored once, at the end
        try:
            self.journal.start(self)
        finally:
            self._loading = False
        if self.graph.nodes:
            self._mirror({})

    @property
    def graph(self) -> Any:
        """The converged scene graph as the server sees it."""
        return self.replica.get_state().graph

    @property
    def durable(self) -> bool:
        """The room lives in a shared journal (Redis), not only in this process."""
        return not isinstance(self.journal, MemoryJournal)

    def conn_of(self, session: VuerSession) -> str:
        """The room's id of a session of this node (unique across the nodes of a room)."""
        node = self.journal.node_id
        return f"{node}|{session.id}" if node else session.id

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the journal (``app.stop()`` calls this)."""
        self.journal.close(timeout)

    # -- called by the server's dispatcher (reader thread; no user code) ------------------

    def on_event(self, session: VuerSession, ev: ClientEvent) -> None:
        env = ev.value if isinstance(ev.value, dict) else {}
        mtype = env.get("mtype")
        conn = self.conn_of(session)
        if mtype not in ("join", "crdt"):
            self._send(session, {"mtype": "error", "msgId": None,
                                 "error": f"unknown RTC mtype {mtype!r}"})
            return
        with self._lock:
            self.local[conn] = session
        if mtype == "join":
            self.journal.append({"k": "join", "c": conn})
            return
        if self.durable:  # refuse a malformed message here: the journal holds valid ones
            try:
                parse_message(env)
            except WireError as exc:
                inner = env.get("msg")
                mid = inner.get("id") if isinstance(inner, dict) else None
                self._send(session, {"mtype": "error", "msgId": mid,
                                     "error": f"bad message: {exc}"})
                return
        self.journal.append({"k": "crdt", "c": conn, "m": env})

    def leave(self, session: VuerSession) -> None:
        conn = self.conn_of(session)
        with self._lock:
            if self.local.pop(conn, None) is None:
                return
            self.members.pop(conn, None)
        self.journal.append({"k": "leave", "c": conn})

    # -- the journal's sink (records in journal order) -------------------------------------

    def journal_apply(self, record: Dict[str, Any]) -> None:
        c = record.get("c")
        conn = c if isinstance(c, str) else ""
        sends: List[Tuple[VuerSession, Dict[str, Any]]] = []
        with self._lock:
            me = self.local.get(conn)
            fx = apply_record(self.relay, record, local=me is not None)
            if record.get("k") == "join" and me is not None:
                self.members[conn] = me
            if me is not None and fx.reply is not None:
                sends.append((me, fx.reply))
            if fx.broadcast is not None:
                if fx.broadcast.get("mtype") == "broadcast":
                    self.replica.receive_wire(fx.broadcast)
                sends += [(s, fx.broadcast) for c, s in self.members.items() if c != fx.exclude]
        for s, env in sends:
            self._send(s, env)
        if fx.broadcast is not None and fx.broadcast.get("mtype") == "broadcast":
            self._mirror(fx.broadcast.get("msg") or {})

    def journal_dump(self) -> bytes:
        with self._lock:
            return msgpack.packb(self.relay.dump(), use_bin_type=True)

    def journal_conns(self) -> List[str]:
        """The connections the relay knows (``node|session`` ids with a shared journal)."""
        with self._lock:
            return [c for c in self.relay.conns if isinstance(c, str)]

    def journal_load(self, data: bytes) -> None:
        relay = RelayCore.load(msgpack.unpackb(data, raw=False, strict_map_key=False))
        replica = create_graph("vuer-sync-server", epoch="", initial_state=relay.state_view())
        with self._lock:
            self.relay, self.replica = relay, replica
            stale = list(self.members.values())
            self._mirrored = False
        if stale:
            logger.warning("rtc room reloaded from its snapshot while %d client(s) were "
                           "joined here: they must rejoin", len(stale))

    def _send(self, session: VuerSession, env: Dict[str, Any]) -> None:
        try:
            session.send(rtc_event(env))
        except SessionClosed:  # a member leaving must not stop the others
            logger.debug("could not relay to %s", session.id)

    # -- mirror into app.scene ------------------------------------------------------------

    def _mirror(self, msg: Dict[str, Any]) -> None:
        if self.mirror_key is None:
            return
        if self._loading or (self._app.fleet is not None and not self.journal.leader):
            self._mirrored = False  # one node mirrors; a new one starts with the whole tree
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
