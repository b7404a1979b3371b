"""Client store: edit buffer, commit, receive, ack/retry, undo/redo, compaction.

Quick start (the seed document's example)::

    >>> from vuer_sync.rtc import create_graph
    >>> sent = []
    >>> store = create_graph("client-1", on_send=sent.append)
    >>> store.edit({"otype": "node.insert", "key": "", "path": "children",
    ...             "value": {"key": "cube", "tag": "Mesh", "position": [0, 1, 0]}})
    >>> msg = store.commit("create scene")
    >>> store.edit({"otype": "vector3.set", "key": "cube", "path": "position", "value": [3, 2, 1]})
    >>> _ = store.commit("move cube")
    >>> store.get_state().graph.nodes["cube"].get_property("position")
    [3, 2, 1]
    >>> len(sent)
    2

Identity (R24): a store has a session id ``sid = f"{client}~{epoch}"`` where ``epoch`` is
random per store (pass ``epoch=""`` to get ``sid == client``).  Message ids are
``f"{sid}:{seq}"`` with a per-session counter ``seq``; a restarted client therefore never
reuses an id.  Lamport time ``lt`` is only used for ordering.

Mechanics:

* ``edit`` validates the op, appends it to the buffer and applies it optimistically with
  a *pending* key that sorts after every committed op; remote messages that arrive while
  editing are slotted under the pending ops (R06).  Only *adjacent* additive ops of the
  same otype on the same ``key:path`` are merged; nothing is ever dropped (R04, R05, R21).
* ``commit`` stamps ``lt = max seen + 1`` (so the pending ops keep their place).
* ``undo``/``redo`` are LIFO over this session's own messages (R17).  ``undo`` with pending
  edits commits *and sends* them first (R18).  A message can be undone/redone only by a
  message at most ``undo_window`` later in the same session.
* ``compact`` forgets ops that can no longer move: acknowledged (own messages need the
  relay's ack, R09), no earlier message can still arrive (causal-stability horizon) and
  no undo/redo of them can still arrive (undo window).  See :func:`compact`.
* A ``state`` loaded by a store that holds data (a rejoin) may *re-stamp* own
  unacknowledged messages: same id and ``seq``, a larger ``lt`` (see :func:`_rejoin`).
  If the old copy of such a message was still in flight and reaches the relay first, the
  relay holds (and broadcast) it at the old ``lt``.  The store learns that ``lt`` from
  the relay's broadcast of that copy, or from an ack (every ack carries the ``lt`` the
  relay holds the message at, when it still knows it), and *re-keys* its own copy there
  (:meth:`SceneGraph.rekey`), so every replica orders the message alike.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .common import DEFAULT_UNDO_WINDOW, REJECT, log
from .graph import SceneGraph
from .ops import MERGEABLE, merge_values, normalize_op
from .register import MsgRecord
from .snapshot import load_graph
from .text import TEXT_OTYPES, resolve_text_op
from .wire import CRDTMessage, WireError, parse_message

__all__ = [
    "ClientState",
    "EditBuffer",
    "GraphStore",
    "JournalEntry",
    "cancel_edits",
    "clone_state",
    "commit_edits",
    "compact",
    "create_graph",
    "create_initial_state",
    "get_unacked_messages",
    "on_edit",
    "on_remote_message",
    "on_server_ack",
    "rebuild_graph",
    "redo",
    "undo",
]


class EditBuffer:
    """Uncommitted ops (``ops``) and the pending record they are applied under."""

    __slots__ = ("ops", "rec")

    def __init__(self) -> None:
        self.ops: List[Dict[str, Any]] = []
        self.rec: Optional[MsgRecord] = None


@dataclass
class JournalEntry:
    """Read-only view of one uncompacted message."""

    msg: CRDTMessage
    ack: bool
    undone: bool
    own: bool


class ClientState:
    """Everything one replica knows.  Mutated in place by :class:`GraphStore`; the
    module-level pure functions work on a deep copy instead."""

    def __init__(
        self,
        client: str,
        *,
        epoch: Optional[str] = None,
        peers: Iterable[str] = (),
        undo_window: int = DEFAULT_UNDO_WINDOW,
    ) -> None:
        if type(client) is not str or not client:
            raise ValueError("client id must be a non-empty string")
        if undo_window < 1:
            raise ValueError("undo_window must be >= 1")
        self.client = client
        self.epoch = secrets.token_hex(3) if epoch is None else epoch
        self.sid = f"{client}~{self.epoch}" if self.epoch else client
        self.graph = SceneGraph()
        self.seq = 0
        self.edits = EditBuffer()
        self.undo_stack: List[str] = []
        self.redo_stack: List[str] = []
        self.unacked: Dict[str, MsgRecord] = {}
        self.peers: Tuple[str, ...] = tuple(peers)
        self.undo_window = undo_window
        self.relay_stable: Optional[int] = None
        self.sealed = 0  # own messages with seq <= sealed can no longer be undone

    @property
    def lt(self) -> int:
        """Largest Lamport time seen or issued."""
        return self.graph.lt

    @property
    def vector_clock(self) -> Dict[str, int]:
        return self.graph.sessions.clock()

    @property
    def journal(self) -> List[JournalEntry]:
        """Uncompacted messages in arrival order (built on access: O(journal))."""
        return [
            JournalEntry(r.msg, r.acked, r.excluded, r.own)  # type: ignore[arg-type]
            for r in self.graph.msgs.values()
        ]


# -- in-place transitions (used by GraphStore) ---------------------------------------------
def _edit(s: ClientState, op: Mapping[str, Any]) -> None:
    nop = normalize_op(op)
    g, buf = s.graph, s.edits
    if buf.rec is None:
        buf.rec = g.new_pending(f"{s.sid}:{s.seq + 1}", s.client, s.sid)
    rec, ops, ot = buf.rec, buf.ops, nop["otype"]
    if ot in TEXT_OTYPES:
        reg = g.reg(nop["key"], nop["path"])
        nop = resolve_text_op(reg.value if reg is not None else None, nop)
    if ops and ot in MERGEABLE:
        last = ops[-1]
        if last["otype"] == ot and last["key"] == nop["key"] and last["path"] == nop["path"]:
            merged = merge_values(ot, last.get("value"), nop.get("value"))
            if merged is not REJECT:
                g.drop_op(rec, len(ops) - 1)
                new_last = dict(last)
                new_last["value"] = merged
                ops[-1] = new_last
                g.add_op(rec, new_last, len(ops) - 1)
                return
    ops.append(nop)
    g.add_op(rec, nop, len(ops) - 1)


def _clock(s: ClientState) -> Dict[str, int]:
    c = s.graph.sessions.clock()
    c[s.sid] = s.seq
    return c


def _commit(s: ClientState, description: Optional[str] = None) -> Optional[CRDTMessage]:
    buf = s.edits
    if not buf.ops:
        buf.rec = None
        return None
    rec = buf.rec
    assert rec is not None
    g = s.graph
    s.seq += 1
    msg = CRDTMessage(
        id=rec.id,
        client=s.client,
        lt=g.lt + 1,
        ops=buf.ops,
        ts=time.time(),
        clock=_clock(s),
        sid=s.sid,
        seq=s.seq,
        uw=None if s.undo_window == DEFAULT_UNDO_WINDOW else s.undo_window,
        desc=description,
    )
    g.commit_pending(rec, msg)
    s.unacked[msg.id] = rec
    s.undo_stack.append(msg.id)  # new edits keep the redo stack (as vuer-rtc does)
    s.edits = EditBuffer()
    return msg


def _emit(s: ClientState, ops: List[Dict[str, Any]]) -> CRDTMessage:
    """Commit a message of meta ops immediately (undo/redo)."""
    s.seq += 1
    g = s.graph
    msg = CRDTMessage(
        id=f"{s.sid}:{s.seq}",
        client=s.client,
        lt=g.lt + 1,
        ops=ops,
        ts=time.time(),
        clock=_clock(s),
        sid=s.sid,
        seq=s.seq,
        uw=None if s.undo_window == DEFAULT_UNDO_WINDOW else s.undo_window,
    )
    rec = g.integrate(msg, acked=False, own=True)
    assert rec is not None
    s.unacked[msg.id] = rec
    return msg


def _cancel(s: ClientState) -> None:
    if s.edits.rec is not None:
        s.graph.drop_all(s.edits.rec)
    s.edits = EditBuffer()


def _ack(
    s: ClientState, msg_id: str, stable: Optional[int] = None, lt: Any = None
) -> bool:
    """The relay has own message ``msg_id``, at Lamport time ``lt`` if it says so (the
    ack's ``lt``): a local copy at another ``lt`` is re-keyed to it. Returns whether the
    graph changed."""
    moved = type(lt) is int and _adopt_lt(s, msg_id, lt)
    rec = s.unacked.pop(msg_id, None)
    if rec is not None:
        rec.acked = True
    if stable is not None:
        s.relay_stable = stable if s.relay_stable is None else max(s.relay_stable, stable)
    return moved


def _adopt_lt(s: ClientState, msg_id: str, lt: int) -> bool:
    """The relay holds own message ``msg_id`` at Lamport time ``lt``: if this replica
    holds it at another one, re-key it there (:meth:`SceneGraph.rekey`), so that it
    sorts as on every other replica. Happens to a message re-stamped by :func:`_rejoin`
    whose old copy, still in flight from the previous connection, reached the relay
    after the ``state`` and before the re-stamped copy: the relay broadcast the old copy
    (and acks the re-stamped one as a duplicate), everyone else integrated it at the old
    ``lt``. Returns whether the graph changed."""
    g = s.graph
    rec = g.msgs.get(msg_id)
    if rec is None or rec.sid != s.sid or rec.pending or rec.lt == lt:
        return False
    old = rec.lt
    if not g.rekey(rec, lt):
        log.warning("own message %s is held at lt %s by the relay and at %s here, where it "
                    "was compacted already: it cannot move", msg_id, lt, old)
        return False
    log.info("own message %s re-keyed from lt %s to the relay's lt %s", msg_id, old, lt)
    return True


def _receive(s: ClientState, msg: Any) -> bool:
    m = parse_message(msg)
    if m.sid == s.sid and m.seq is not None and m.seq > s.seq:
        # Someone else sends with our session id (misconfiguration): never reuse its ids.
        log.warning("received %s from our own session id %s", m.id, s.sid)
        if s.edits.rec is None:
            s.seq = m.seq
    if s.graph.integrate(m, acked=True) is not None:
        return True
    # a duplicate; our own message as the relay holds it (see _adopt_lt) moves to its lt
    return m.sid == s.sid and _adopt_lt(s, m.id, m.lt)


def _meta_op(kind: str, target: str) -> Dict[str, Any]:
    return {"otype": kind, "key": "_meta", "path": "_meta", "targetMsgId": target}


def _undo(s: ClientState) -> Optional[CRDTMessage]:
    if s.edits.ops:
        _commit(s)  # the store sends it; pure callers find it in get_unacked_messages()
    g = s.graph
    while s.undo_stack:
        tid = s.undo_stack.pop()
        rec = g.msgs.get(tid)
        if rec is None or rec.excluded:
            continue
        if rec.seq is None or s.seq + 1 > rec.seq + s.undo_window:
            s.undo_stack.clear()  # older entries are even further outside the window
            break
        msg = _emit(s, [_meta_op("meta.undo", tid)])
        s.redo_stack.append(tid)
        return msg
    return None


def _redo(s: ClientState) -> Optional[CRDTMessage]:
    if s.edits.ops:
        _commit(s)
    g = s.graph
    while s.redo_stack:
        tid = s.redo_stack.pop()
        rec = g.msgs.get(tid)
        if rec is None or not rec.excluded:
            continue
        if rec.seq is None or s.seq + 1 > rec.seq + s.undo_window:
            s.redo_stack.clear()
            break
        msg = _emit(s, [_meta_op("meta.redo", tid)])
        s.undo_stack.append(tid)
        return msg
    return None


def _heartbeat(s: ClientState, seal: bool = False) -> CRDTMessage:
    if s.edits.ops:
        _commit(s)
    if seal:
        s.sealed = s.seq
        s.undo_stack.clear()
        s.redo_stack.clear()
    return _emit(s, [{"otype": "meta.seal", "key": "_meta", "path": "_meta", "fin": s.sealed}])


def horizon(s: ClientState) -> int:
    """Lamport time up to which no message can still arrive (see :func:`compact`)."""
    h = s.graph.sessions.horizon(s.peers, own=s.sid, own_lt=s.graph.lt)
    if s.relay_stable is not None:
        h = min(h, s.relay_stable)
    return h


def _compact(s: ClientState) -> int:
    h = horizon(s)
    sessions = s.graph.sessions

    def final(rec: MsgRecord) -> bool:
        if rec.pending or not rec.acked or rec.lt > h:
            return False
        if rec.meta:  # only undo/redo/seal ops
            return True
        return sessions.undo_final(rec.sid, rec.seq)

    dropped = s.graph.truncate(final)
    live = s.graph.msgs
    s.undo_stack = [i for i in s.undo_stack if i in live]
    s.redo_stack = [i for i in s.redo_stack if i in live]
    return dropped


def _load(s: ClientState, env: Mapping[str, Any]) -> None:
    stable = env.get("stable")
    if env.get("snapshot"):
        _rejoin(s, env)
    else:
        for m in env.get("journal", ()):
            _receive(s, m)
    s.graph.sessions.retire(x for x in env.get("retired", ()) if type(x) is str)
    if type(stable) is int:
        s.relay_stable = stable


def _rejoin(s: ClientState, env: Mapping[str, Any]) -> None:
    """Load a relay ``state`` (snapshot + journal tail) into ``s``, which may already
    hold data (a client that reconnects, or edits made before the first ``state``).
    The relay may have compacted and trimmed messages this replica never
    received, so the graph is rebuilt from the snapshot and the journal tail; then this
    session's messages the relay does not have (unacknowledged, not in the state) are
    integrated again, and the pending edits re-applied, so they still show and
    :meth:`GraphStore.retry` re-sends them.

    An own message the relay does not have and whose ``lt`` is not above every message
    of the state may sort below the relay's baked prefix, and the relay refuses it as
    stale once its ``stable`` passes that ``lt`` if it retired our session (it does when
    the connection closes). So it and the later ones are re-stamped above everything in
    the state: same id and ``seq``, a larger ``lt`` (a rebase, as pending edits get at
    commit).
    Sequence numbers and the Lamport clock never go back; the undo/redo stacks keep the
    messages still in the journal.

    The old copy of a re-stamped message may still be in flight from the previous
    connection (in the relay's handler of it, or on another node, not yet in the
    journal) and reach the relay after this ``state`` and before the re-stamped copy:
    the relay then holds the message at the old ``lt``, broadcasts it so to everybody,
    this client's new connection included, and acks the re-stamped copy as a duplicate,
    with that ``lt``. Either one re-keys our copy to the relay's ``lt``
    (:func:`_adopt_lt`) before this replica can have compacted anything the move crosses:
    the relay accepts a message only above every ``stable`` it announced before (it
    refuses a retired session's older ones as stale; a live session holds the horizon
    below its next message), and the broadcast (or, on a connection id reused for the
    old copy, its ack) leaves the relay right after, on the connection's ordered channel,
    ahead of any larger ``stable``. If the connection drops again first, the next
    ``state`` holds the message at the relay's ``lt`` and the copy here is dropped as a
    duplicate (above)."""
    old = s.graph
    pending = s.edits.ops
    unacked = [r.msg for r in s.unacked.values()]
    g = s.graph = load_graph(env["snapshot"])
    s.edits = EditBuffer()
    s.unacked = {}
    for m in env.get("journal", ()):
        _receive(s, m)
    for rec in g.msgs.values():
        if rec.sid == s.sid:
            rec.own = True  # ours, delivered by the relay before we left
    floor = g.lt  # the newest message in the state
    lt = max(g.lt, old.lt)
    restamp = False
    for m in sorted((m for m in unacked if m is not None), key=lambda m: m.seq or 0):
        if g.is_duplicate(m):
            continue  # the relay has it (its ack was lost): it is in the state
        if restamp or m.lt <= floor:
            restamp = True
            lt += 1
            clock = g.sessions.clock()
            clock[m.sid] = m.seq or 0
            m = CRDTMessage(id=m.id, client=m.client, lt=lt, ops=m.ops, ts=m.ts,
                            clock=clock, sid=m.sid, seq=m.seq, uw=m.uw, desc=m.desc)
        mine = g.integrate(m, acked=False, own=True)
        if mine is not None:
            s.unacked[m.id] = mine
    g.lt = max(g.lt, lt)
    own = g.sessions.sessions.get(s.sid)
    if own is not None and own.floor_seq > s.seq:  # see _receive: never reuse its ids
        s.seq = own.floor_seq
    for op in pending:  # already normalized and resolved: re-add them as they are
        if s.edits.rec is None:
            s.edits.rec = g.new_pending(f"{s.sid}:{s.seq + 1}", s.client, s.sid)
        s.edits.ops.append(op)
        g.add_op(s.edits.rec, op, len(s.edits.ops) - 1)
    live = g.msgs
    s.undo_stack = [i for i in s.undo_stack if i in live]
    s.redo_stack = [i for i in s.redo_stack if i in live]
    g.stats.update(old.stats)


# -- pure functions (seed API): each works on a deep copy ------------------------------------
def create_initial_state(
    client_id: str,
    *,
    epoch: Optional[str] = None,
    peers: Iterable[str] = (),
    undo_window: int = DEFAULT_UNDO_WINDOW,
    initial_state: Optional[Mapping[str, Any]] = None,
) -> ClientState:
    """A fresh :class:`ClientState` (optionally loaded from a relay ``state`` envelope)."""
    s = ClientState(client_id, epoch=epoch, peers=peers, undo_window=undo_window)
    if initial_state is not None:
        _load(s, initial_state)
    return s


def clone_state(state: ClientState) -> ClientState:
    """Deep copy (O(state)); what the pure functions below do first."""
    return copy.deepcopy(state)


def on_edit(state: ClientState, op: Mapping[str, Any]) -> ClientState:
    """Pure: buffer and optimistically apply ``op``."""
    s = clone_state(state)
    _edit(s, op)
    return s


def commit_edits(
    state: ClientState, description: Optional[str] = None
) -> Tuple[ClientState, Optional[CRDTMessage]]:
    """Pure: commit the buffer; returns ``(state, message or None)``."""
    s = clone_state(state)
    return s, _commit(s, description)


def cancel_edits(state: ClientState) -> ClientState:
    """Pure: drop the buffer and its optimistic effects."""
    s = clone_state(state)
    _cancel(s)
    return s


def on_server_ack(
    state: ClientState, msg_id: str, stable: Optional[int] = None, lt: Optional[int] = None
) -> ClientState:
    """Pure: mark an own message as acknowledged by the relay (and re-key it to ``lt``,
    the Lamport time the relay holds it at, if given and different)."""
    s = clone_state(state)
    _ack(s, msg_id, stable, lt)
    return s


def on_remote_message(state: ClientState, msg: Any) -> ClientState:
    """Pure: integrate a remote message (duplicates are ignored, except that an own
    message at another ``lt`` is re-keyed to it)."""
    s = clone_state(state)
    _receive(s, msg)
    return s


def undo(state: ClientState) -> Tuple[ClientState, Optional[CRDTMessage]]:
    """Pure: undo the newest own message that is not undone.  Pending edits are committed
    first; that message is in :func:`get_unacked_messages` of the returned state."""
    s = clone_state(state)
    return s, _undo(s)


def redo(state: ClientState) -> Tuple[ClientState, Optional[CRDTMessage]]:
    """Pure: redo the most recently undone own message (LIFO)."""
    s = clone_state(state)
    return s, _redo(s)


def compact(state: ClientState) -> ClientState:
    """Pure: forget every op that can no longer change the result.

    An op is compacted when its message is (1) acknowledged (own messages: by the
    relay; received ones are born acknowledged), (2) at or below the stability horizon
    ``H`` = min over known sessions of the Lamport time of their last contiguously
    received message (for this replica: its current ``lt``), also bounded by the relay's
    ``stable`` value if one was received, and 0 until every ``peers`` client was heard
    from, and (3) out of its session's undo window.  Compaction therefore never changes
    the graph, and late duplicates stay ignored (the per-session counters persist).
    """
    s = clone_state(state)
    _compact(s)
    return s


def rebuild_graph(state: ClientState) -> SceneGraph:
    """Pure: re-fold every uncompacted op from scratch and return the graph (it equals
    ``state.graph``; useful as a self check)."""
    s = clone_state(state)
    s.graph.replay_all()
    return s.graph


def get_unacked_messages(state: ClientState) -> List[CRDTMessage]:
    """Own messages not yet acknowledged, oldest first (re-send them after a reconnect)."""
    msgs = (r.msg for r in state.unacked.values())
    return [m for m in msgs if m is not None]


# -- the store ------------------------------------------------------------------------------
class GraphStore:
    """Mutable holder of a :class:`ClientState` with the seed document's methods.

    Thread-safe (one re-entrant lock, :attr:`lock`); ``on_send`` and listeners run in the
    calling thread while the lock is held, in message order.  To read the graph from
    another thread while it may change, hold ``store.lock``.

    >>> a = GraphStore("alice", epoch="")
    >>> a.edit({"otype": "node.insert", "key": "", "path": "children",
    ...         "value": {"key": "obj", "health": 100}})
    >>> m = a.commit()
    >>> b = GraphStore("bob", epoch="")
    >>> b.receive(m)
    True
    >>> b.get_state().graph.nodes["obj"].get_property("health")
    100
    """

    def __init__(
        self,
        client_id: str,
        on_send: Optional[Callable[[CRDTMessage], Any]] = None,
        *,
        epoch: Optional[str] = None,
        peers: Iterable[str] = (),
        undo_window: int = DEFAULT_UNDO_WINDOW,
        initial_state: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self._state = create_initial_state(
            client_id, epoch=epoch, peers=peers, undo_window=undo_window,
            initial_state=initial_state,
        )
        self._on_send = on_send
        self._lock = threading.RLock()
        self._listeners: List[Callable[[], Any]] = []

    # -- helpers --
    @property
    def client(self) -> str:
        return self._state.client

    @property
    def sid(self) -> str:
        """Session id (``client~epoch``)."""
        return self._state.sid

    @property
    def lock(self) -> threading.RLock:
        """The re-entrant lock every method holds."""
        return self._lock

    def _changed(self) -> None:
        for fn in list(self._listeners):
            fn()

    def _send(self, msg: Optional[CRDTMessage]) -> None:
        if msg is not None and self._on_send is not None:
            self._on_send(msg)

    def subscribe(self, listener: Callable[[], Any]) -> Callable[[], None]:
        """Call ``listener()`` after every change; returns an unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- seed API --
    def edit(self, op: Mapping[str, Any]) -> None:
        """Buffer ``op`` and apply it optimistically (raises ``ValueError`` if malformed)."""
        with self._lock:
            _edit(self._state, op)
            self._changed()

    def commit(self, description: Optional[str] = None) -> Optional[CRDTMessage]:
        """Commit the buffer as one message, pass it to ``on_send`` and return it."""
        with self._lock:
            msg = _commit(self._state, description)
            self._send(msg)
            if msg is not None:
                self._changed()
            return msg

    def cancel(self) -> None:
        """Discard uncommitted edits (the graph returns to its committed state)."""
        with self._lock:
            _cancel(self._state)
            self._changed()

    def receive(self, msg: Any) -> Any:
        """Integrate a remote message (``CRDTMessage``, dict in any spelling, vuer-rtc
        message, or a wire envelope).  Returns ``False`` for a duplicate, except for one of
        our own messages at another Lamport time than ours: the relay holds it there, so
        our copy is re-keyed to it (``True``)."""
        # (the type test first: isinstance() against typing's Mapping is slow)
        if type(msg) is not CRDTMessage and isinstance(msg, Mapping) and "mtype" in msg:
            return self.receive_wire(msg)
        with self._lock:
            fresh = _receive(self._state, msg)
            if fresh:
                self._changed()
            return fresh

    def ack(self, msg_id: str, stable: Optional[int] = None, lt: Optional[int] = None) -> None:
        """Mark own message ``msg_id`` as acknowledged by the relay; ``lt`` (the ack's
        ``lt``): the Lamport time the relay holds it at, where our copy is re-keyed if it
        is at another one."""
        with self._lock:
            if _ack(self._state, msg_id, stable, lt):
                self._changed()

    def undo(self) -> Optional[CRDTMessage]:
        """Undo the newest own message (pending edits are committed and sent first)."""
        with self._lock:
            if self._state.edits.ops:
                self.commit()
            msg = _undo(self._state)
            self._send(msg)
            if msg is not None:
                self._changed()
            return msg

    def redo(self) -> Optional[CRDTMessage]:
        """Redo the most recently undone own message (LIFO)."""
        with self._lock:
            if self._state.edits.ops:
                self.commit()
            msg = _redo(self._state)
            self._send(msg)
            if msg is not None:
                self._changed()
            return msg

    def heartbeat(self, seal: bool = False) -> CRDTMessage:
        """Send a ``meta.seal`` message that changes nothing in the graph but lets peers
        and the relay compact: it raises this session's Lamport floor (an idle session
        otherwise holds back everybody's stability horizon).  With ``seal=True`` it also
        gives up this session's undo/redo history, so its messages become final at once
        instead of after ``undo_window`` more messages.  Pending edits are committed first.
        Call it when the client goes idle (e.g. every few seconds without edits)."""
        with self._lock:
            if self._state.edits.ops:
                self.commit()
            msg = _heartbeat(self._state, seal)
            self._send(msg)
            return msg

    def compact(self) -> int:
        """Forget final ops (see :func:`compact`); returns the number of messages dropped."""
        with self._lock:
            return _compact(self._state)

    def get_state(self) -> ClientState:
        """The live state (do not mutate it)."""
        return self._state

    getState = get_state

    # -- transport helpers --
    def retry(self) -> List[CRDTMessage]:
        """Re-send every unacknowledged own message through ``on_send``."""
        with self._lock:
            msgs = get_unacked_messages(self._state)
            for m in msgs:
                self._send(m)
            return msgs

    def receive_wire(self, env: Mapping[str, Any]) -> Any:
        """Handle a relay envelope: ``crdt``/``broadcast`` (receive), ``ack`` (with its
        ``lt``, see :meth:`ack`), ``state`` (load snapshot + journal), ``retire`` and
        ``error`` (logged, returned)."""
        mtype = env.get("mtype")
        with self._lock:
            stable = env.get("stable")
            if type(stable) is int and mtype in ("ack", "broadcast"):
                _ack(self._state, "", stable)
            if mtype in ("crdt", "broadcast"):
                fresh = _receive(self._state, env.get("msg"))
                if fresh:
                    self._changed()
                return fresh
            if mtype == "ack":
                if _ack(self._state, str(env.get("msgId")), lt=env.get("lt")):
                    self._changed()
                return True
            if mtype == "state":
                _load(self._state, env)
                self._changed()
                return True
            if mtype == "retire":
                self._state.graph.sessions.retire(env.get("sids", ()))
                return True
            if mtype == "error":
                log.warning("relay refused %s: %s", env.get("msgId"), env.get("error"))
                return env
        raise WireError(f"unknown envelope mtype {mtype!r}")


def create_graph(
    client_id: str,
    on_send: Optional[Callable[[CRDTMessage], Any]] = None,
    **kwargs: Any,
) -> GraphStore:
    """Create a :class:`GraphStore` (seed API).

    Keyword options: ``epoch`` (session nonce, random by default; ``""`` makes the session
    id equal the client id), ``peers`` (client ids that must be heard from before
    anything is compacted, for relay-less setups), ``undo_window`` (default
    :data:`DEFAULT_UNDO_WINDOW`), ``initial_state`` (a relay ``state`` envelope).

    >>> out = []
    >>> s = create_graph("alice", on_send=out.append)
    >>> s.edit({"otype": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
    >>> s.edit({"otype": "number.add", "key": "n", "path": "hp", "value": 5})
    >>> m = s.commit("spawn")
    >>> out == [m], m.ops[1]["value"], s.get_state().graph.nodes["n"].get_property("hp")
    (True, 5, 5)
    """
    return GraphStore(client_id, on_send, **kwargs)
