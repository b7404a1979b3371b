"""Transport-agnostic relay logic (no threads, no sockets): dicts in, dicts out.

The relay is the server side of a room.  For every submitted ``crdt`` envelope it
de-duplicates, assigns a dense server sequence number and returns the ``ack`` for the
sender and the ``broadcast`` for everybody else.  It keeps a *baked* replica of the final
prefix of the history (in the documented total order) plus the tail of messages that can
still move, and hands both to late joiners (``join() -> state``).

>>> from vuer_sync.rtc import create_graph
>>> relay = RelayCore()
>>> a = create_graph("alice", epoch="")
>>> a.edit({"otype": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
>>> res = relay.submit({"mtype": "crdt", "msg": a.commit()}, conn="A")
>>> res.reply["mtype"], res.reply["serverSeq"], res.broadcast["mtype"]
('ack', 1, 'broadcast')
>>> b = create_graph("bob", epoch="", initial_state=relay.join(conn="B"))
>>> sorted(b.get_state().graph.nodes)
['n']

Acks: ``{"mtype": "ack", "msgId", "serverSeq", "stable", "lt"}``; ``lt`` is the Lamport
time the relay holds the message at, which is the sender's own ``lt`` except for a
message its sender re-stamped on a rejoin (:func:`vuer_sync.rtc.store._rejoin`: same id,
larger ``lt``) after its old copy, still in flight from the previous connection, got
here first: the relay holds and broadcast the old copy, acks the re-stamped one as a
duplicate with the old ``lt``, and the sender re-keys its copy to it. A duplicate's ack
carries ``serverSeq`` and ``lt`` while the relay still knows them (see
:meth:`RelayCore._duplicate`). vuer-rtc 0.0.2 clients read ``msgId`` only.

>>> dup = relay.submit({"mtype": "crdt", "msg": a.get_state().journal[0].msg}, conn="A")
>>> dup.reply["serverSeq"], dup.reply["lt"] == res.reply["lt"], dup.broadcast
(1, True, None)

Stability: ``stable`` (sent in acks, broadcasts and ``state``) is the Lamport time up to
which no message can still be accepted: the minimum over every session the relay knows
(and every joined connection that has not sent yet, at its join time) of its newest
contiguous ``lt``.  Sessions leave with :meth:`RelayCore.leave`; afterwards a message
with ``lt <= stable`` from an unknown or retired session is refused (``error``
``"stale"``): its sender must rejoin.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Mapping, Optional, Tuple

from .common import DEFAULT_UNDO_WINDOW
from .graph import SceneGraph
from .ops import META_OTYPES
from .sessions import SessionTracker
from .snapshot import dump_graph, load_graph
from .wire import (
    CRDTMessage,
    WireError,
    ack_envelope,
    broadcast_envelope,
    error_envelope,
    parse_message,
    retire_envelope,
    state_envelope,
    to_wire,
)

__all__ = ["RelayCore", "RelayResult"]


@dataclass
class RelayResult:
    """What to send: ``reply`` to the sender, ``broadcast`` (or ``None``) to the others."""

    reply: Dict[str, Any]
    broadcast: Optional[Dict[str, Any]]
    server_seq: Optional[int] = None


class RelayCore:
    """Sequencer, de-duplicator and late-join state of one room."""

    def __init__(self, *, compact_every: int = 1000, spelling: str = "vuer-sync") -> None:
        self.compact_every = max(1, compact_every)
        self.spelling = spelling
        self.server_seq = 0
        self.sessions = SessionTracker()
        self.baked = SceneGraph()
        self.tail: Dict[str, Tuple[int, CRDTMessage]] = {}  # id -> (server seq, msg)
        self._order: List[Tuple[Any, ...]] = []  # keys of the tail, sorted (total order)
        self.metas: Dict[str, List[Tuple[Any, str, str]]] = {}
        self.conns: Dict[Hashable, Tuple[Optional[str], int]] = {}  # conn -> (sid, join lt)
        self.max_lt = 0
        self.announced = 0
        self._since_compact = 0

    # -- horizon ------------------------------------------------------------------------
    def stable(self) -> int:
        """Current stability horizon (see module docstring)."""
        h = self.sessions.horizon()
        known = any(not s.retired for s in self.sessions.sessions.values())
        for sid, join_lt in self.conns.values():
            if sid is None:
                h = join_lt if not known else min(h, join_lt)
                known = True
        h = h if known else 0
        self.announced = max(self.announced, h)
        return self.announced

    # -- messages -----------------------------------------------------------------------
    def submit(self, envelope: Any, conn: Optional[Hashable] = None) -> RelayResult:
        """Handle one ``crdt`` envelope (or bare message) from connection ``conn``."""
        try:
            msg = parse_message(envelope)
        except WireError as exc:
            mid = None
            if isinstance(envelope, Mapping):
                inner = envelope.get("msg", envelope)
                mid = inner.get("id") if isinstance(inner, Mapping) else None
            return RelayResult(error_envelope(mid, f"bad message: {exc}"), None)
        if msg.id in self.tail or self.sessions.is_dup(msg.sid, msg.seq, msg.id):
            return self._duplicate(msg)
        s = self.sessions.sessions.get(msg.sid)
        if msg.lt <= self.announced and (s is None or s.retired):
            return RelayResult(error_envelope(msg.id, "stale: rejoin the room"), None)
        if conn is not None:
            self.conns[conn] = (msg.sid, self.conns.get(conn, (None, 0))[1])
        self.server_seq += 1
        self.sessions.note(msg.sid, msg.client, msg.seq, msg.lt, msg.id, msg.uw)
        self.max_lt = max(self.max_lt, msg.lt)
        self.tail[msg.id] = (self.server_seq, msg)
        if not self._order or msg.key > self._order[-1]:
            self._order.append(msg.key)
        else:
            insort(self._order, msg.key)
        for i, op in enumerate(msg.ops):
            if op.get("otype") == "meta.seal" and type(op.get("fin")) is int:
                self.sessions.seal(msg.sid, msg.seq, op["fin"])
            t = op.get("targetMsgId")
            if op.get("otype") in META_OTYPES and type(t) is str:
                self.metas.setdefault(t, []).append(((*msg.key, i), op["otype"], msg.sid))
        self._since_compact += 1
        if self._since_compact >= self.compact_every:
            self.compact()
        stable = self.stable()
        return RelayResult(
            ack_envelope(msg.id, self.server_seq, stable, msg.lt),
            broadcast_envelope(msg, self.server_seq, stable, self.spelling),
            self.server_seq,
        )

    def _duplicate(self, msg: CRDTMessage) -> RelayResult:
        """The ack of a message the relay has: with its ``serverSeq`` and the ``lt`` it
        holds it at, from the tail, or once baked the ``lt`` from the session tracker if
        it still keeps it (the session's newest contiguous message, or one received out
        of order). A re-stamped copy (same id, larger ``lt``) whose old copy got here
        first is one: its sender re-keys its copy to that ``lt`` (see the module
        docstring).

        An older baked message's ``lt`` is gone (the baked replica keeps no records) and
        the ack carries none. Its sender is not wrong then: it already holds the
        message at the relay's ``lt``. The relay accepted the old copy after the
        sender's ``state`` (else the state held it, at the relay's ``lt``, and the
        sender dropped its own copy), so it sent that ``lt`` to the sender's connection
        then, ahead of this ack: in the broadcast, or in the ack of the old copy if
        both copies came with one connection id. So the ``lt`` here is only a second
        chance, and relays that baked at other times (nodes of one room) may differ in
        it, as in ``serverSeq``: each ack goes to one client, from its node."""
        held = self.tail.get(msg.id)
        seq: Optional[int] = None
        lt: Optional[int] = None
        if held is not None:
            seq, lt = held[0], held[1].lt
        else:
            lt = self.sessions.lt_of(msg.sid, msg.seq)
        return RelayResult(ack_envelope(msg.id, seq, self.stable(), lt), None, seq)

    def _undone(self, msg: CRDTMessage) -> bool:
        best = None
        for m in self.metas.get(msg.id, ()):
            if m[2] == msg.sid and (best is None or m[0] > best[0]):
                best = m
        return best is not None and best[1] == "meta.undo"

    def _final(self, msg: CRDTMessage, h: int) -> bool:
        if msg.lt > h:
            return False
        if all(op.get("otype") in META_OTYPES for op in msg.ops):
            return True
        s = self.sessions.sessions.get(msg.sid)
        if s is None or s.foreign or msg.seq is None:
            return False
        return msg.seq <= s.fin or s.floor_seq >= msg.seq + (msg.uw or s.uw or DEFAULT_UNDO_WINDOW)

    def compact(self) -> int:
        """Move the final prefix of the tail (in total order) into the baked replica."""
        self._since_compact = 0
        return self.bake(self.stable())

    def bake(self, h: Optional[int] = None) -> int:
        """Move the final prefix of the tail into the baked replica, up to the horizon
        ``h`` (default: the last announced ``stable``). Unlike :meth:`compact` it never
        announces a new horizon, so it changes nothing a client can see: a relay that
        replays a shared journal (one per node) may bake whenever it likes."""
        h = self.announced if h is None else h
        n = 0
        for key in self._order:
            msg = self.tail[key[2]][1]
            if not self._final(msg, h):
                break
            self.baked.integrate(msg, status=self._undone(msg), skip_meta=True)
            del self.tail[msg.id]
            self.metas.pop(msg.id, None)
            n += 1
        if n:
            del self._order[:n]
            self.baked.truncate(lambda rec: True)
        return n

    # -- membership ---------------------------------------------------------------------
    def join(self, conn: Optional[Hashable] = None) -> Dict[str, Any]:
        """``state`` envelope for a new client: baked snapshot + tail (server order)."""
        self._since_compact = 0
        self.bake(self.stable())
        self._register(conn)
        return self.state_view()

    def admit(self, conn: Hashable) -> None:
        """Register ``conn`` exactly as :meth:`join` does (the same horizon), without
        building the envelope: what a node does for a client that joined another node."""
        self.stable()
        self._register(conn)

    def _register(self, conn: Optional[Hashable]) -> None:
        if conn is not None:
            self.conns[conn] = (None, self.max_lt)
        self.stable()

    def state_view(self) -> Dict[str, Any]:
        """The ``state`` envelope as it is now (no side effect on the horizon)."""
        journal = [
            to_wire(m, self.spelling) for _, m in sorted(self.tail.values(), key=lambda sm: sm[0])
        ]
        env = state_envelope(dump_graph(self.baked), journal, self.server_seq, self.announced)
        env["retired"] = sorted(sid for sid, s in self.sessions.sessions.items() if s.retired)
        return env

    # -- persistence --------------------------------------------------------------------
    def dump(self) -> Dict[str, Any]:
        """The whole relay as plain data (msgpack-able; connection ids must be too):
        :meth:`load` gives a relay that answers every later input exactly as this one.

        >>> from vuer_sync.rtc import create_graph
        >>> r = RelayCore()
        >>> a = create_graph("alice", epoch="")
        >>> a.edit({"otype": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
        >>> _ = r.submit(a.commit(), conn="A")
        >>> r2 = RelayCore.load(r.dump())
        >>> r2.server_seq, r2.join(conn="B") == r.join(conn="B")
        (1, True)
        """
        self.bake()
        return {
            "v": 1,
            "compact_every": self.compact_every,
            "spelling": self.spelling,
            "server_seq": self.server_seq,
            "max_lt": self.max_lt,
            "announced": self.announced,
            "since_compact": self._since_compact,
            "baked": dump_graph(self.baked),
            "tail": [[seq, to_wire(m)] for seq, m in sorted(self.tail.values(),
                                                           key=lambda sm: sm[0])],
            "metas": [[t, [[list(k), ot, sid] for k, ot, sid in ms]]
                      for t, ms in self.metas.items()],
            "conns": [[c, sid, lt] for c, (sid, lt) in self.conns.items()],
            "sessions": self.sessions.to_dict(),
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> RelayCore:
        """Inverse of :meth:`dump`."""
        if data.get("v") != 1:
            raise ValueError(f"unsupported relay dump version {data.get('v')!r}")
        r = cls(compact_every=int(data["compact_every"]), spelling=str(data["spelling"]))
        r.server_seq, r.max_lt = int(data["server_seq"]), int(data["max_lt"])
        r.announced, r._since_compact = int(data["announced"]), int(data["since_compact"])
        r.baked = load_graph(data["baked"])
        for seq, wire in data["tail"]:
            m = parse_message(wire)
            r.tail[m.id] = (int(seq), m)
            r._order.append(m.key)
        r._order.sort()
        r.metas = {t: [(tuple(k), ot, sid) for k, ot, sid in ms] for t, ms in data["metas"]}
        r.conns = {c: (sid, int(lt)) for c, sid, lt in data["conns"]}
        r.sessions = SessionTracker.from_dict(data["sessions"])
        return r

    def leave(self, conn: Hashable) -> Optional[Dict[str, Any]]:
        """Forget a connection; returns a ``retire`` envelope to broadcast, if any."""
        sid, _ = self.conns.pop(conn, (None, 0))
        if sid is None or any(s == sid for s, _ in self.conns.values()):
            return None
        self.sessions.retire([sid])
        return retire_envelope([sid])
