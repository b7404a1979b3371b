"""The replicated scene graph: registers + tree + message records, and the low-level
``apply_*`` functions.

Total order
-----------
Every op gets the ordering key ``(lt, client, msg_id, op_index, sub_index)``: Lamport
time, then client id (string order), then message id (unique; only matters for two
sessions of one client with equal ``lt``), then the op's index in its message (and the
index of a nested node inside one ``node.insert``).  Each register folds its ops in this
order, so the graph is a deterministic function of the *set* of messages received,
whatever the delivery order, duplication or delay.  Undo/redo (``meta.undo``/``meta.redo``)
exclude/include a whole message; the status of a message is decided by the meta op with
the largest key that targets it and comes from the same session.

Deleted nodes
-------------
``node.remove`` is a soft delete (tombstone): the node stays in ``graph.nodes`` with
``deleted = True`` and ``deleted_at`` (the removing message's ``ts``), keeps the property
values it had at the removal (later ops addressed to it are ignored) and is in no
``children`` list.  Live views skip tombstones: ``children_of``, :meth:`SceneGraph.reachable`,
:meth:`SceneGraph.live_nodes`, :meth:`SceneGraph.roots`.  ``undo()`` of the remove brings it
back (with the edits that were ignored).

>>> g = create_empty_graph()
>>> _ = apply_operation(g, {"otype": "node.insert", "key": "", "path": "children",
...                         "value": {"key": "n", "tag": "Mesh", "x": 1}})
>>> _ = apply_operation(g, {"otype": "number.add", "key": "n", "path": "x", "value": 2})
>>> g.nodes["n"].get_property("x")
3
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union

from .common import MISSING, PENDING_LT
from .ops import META_OTYPES, NODE_OTYPES, atoms_tuple, hot_op
from .register import MsgRecord, Register, TreeRegister, ValueRegister, group_first
from .sessions import SessionTracker
from .text import TextSeq
from .tree import SceneNode, Tree
from .wire import CRDTMessage, parse_message

__all__ = [
    "SceneGraph",
    "SceneNode",
    "apply_message",
    "apply_message_mut",
    "apply_messages",
    "apply_operation",
    "create_empty_graph",
]

_MAX_NESTED = 100_000
_auto_ids = itertools.count(1)


def _expand_insert(op: Mapping[str, Any]) -> List[Tuple[int, Any, List[Tuple[str, Any]]]]:
    """``node.insert`` (possibly with nested ``children`` dicts) -> [(sub, tree op, props)]."""
    out: List[Tuple[int, Any, List[Tuple[str, Any]]]] = []
    root = op.get("value")
    parent = op.get("key")
    if type(root) is not dict or type(parent) is not str:
        return out
    stack: List[Tuple[str, Any]] = [(parent, root)]
    while stack and len(out) < _MAX_NESTED:
        p, v = stack.pop()
        k = v.get("key")
        if type(k) is not str or not k:
            continue
        tag, name = v.get("tag", ""), v.get("name", "")
        tag = tag if type(tag) is str else ""
        name = name if type(name) is str else ""
        props = [(pk, pv) for pk, pv in v.items() if pk not in ("key", "tag", "name", "children")]
        out.append((len(out), ("ins", k, p, tag, name), props))
        kids = v.get("children")
        if type(kids) is list:
            stack.extend((k, c) for c in reversed(kids) if type(c) is dict)
    return out


class SceneGraph:
    """Replica state.  ``nodes`` maps key -> :class:`SceneNode` for every inserted node,
    tombstones included (``node.deleted``, as vuer-rtc's ``nodes`` keeps them); also nodes
    whose parent is not there yet or was removed.  :meth:`live_nodes` skips tombstones,
    :meth:`reachable` lists the nodes attached to the root."""

    def __init__(self) -> None:
        self.nodes: Dict[str, SceneNode] = {}
        self.tree = Tree(self)
        self.treg = TreeRegister(self, self.tree)
        self.regs: Dict[str, Dict[str, ValueRegister]] = {}  # node key -> path -> register
        self.active: Set[Register] = set()  # registers holding uncompacted entries
        self.msgs: Dict[str, MsgRecord] = {}  # uncompacted messages, arrival order
        self.metas: Dict[str, List[Tuple[Any, str, str]]] = {}  # target -> [(key, kind, sid)]
        self.sessions = SessionTracker()
        self.lt = 0
        self.stats: Counter = Counter()

    # -- views ----------------------------------------------------------------------
    @property
    def root_key(self) -> str:
        """First top-level node ("" if none)."""
        top = self.tree.kids.get("", [])
        return top[0] if top else ""

    rootKey = root_key

    def get_node(self, key: str, include_deleted: bool = True) -> Optional[SceneNode]:
        """The node ``key`` (a tombstone too, unless ``include_deleted=False``)."""
        n = self.nodes.get(key)
        if n is not None and n.deleted and not include_deleted:
            return None
        return n

    def is_deleted(self, key: str) -> bool:
        """True if ``key`` was removed (its node is a tombstone, or it never will be)."""
        return key in self.tree.tomb

    def live_nodes(self) -> Dict[str, SceneNode]:
        """``nodes`` without the tombstones (key -> node, insertion order)."""
        return {k: n for k, n in self.nodes.items() if not n.deleted}

    def roots(self) -> List[str]:
        """Live nodes to draw at the top: parent ``""`` or a parent not inserted (yet).
        Children of a deleted node are hidden with it (its tombstone is still there)."""
        nodes = self.nodes
        return [
            k for k, n in nodes.items()
            if not n.deleted and (not n.parent or n.parent not in nodes)
        ]

    def reachable(self) -> List[str]:
        """Keys of the nodes attached (transitively) to the root, depth first."""
        return self.tree.reachable()

    def children_of(self, key: str) -> List[str]:
        return list(self.tree.kids.get(key, ()))

    def props_of(self, key: str) -> Dict[str, Any]:
        regs = self.regs.get(key)
        if not regs:
            return {}
        return {p: r.published() for p, r in regs.items() if r.value is not MISSING}

    def text_seq(self, key: str, path: str) -> Optional[TextSeq]:
        reg = self.reg(key, path)
        return reg.value if reg is not None and isinstance(reg.value, TextSeq) else None

    def reg(self, key: str, path: str) -> Optional[ValueRegister]:
        """The register of property ``path`` of node ``key`` (``None`` if never written)."""
        regs = self.regs.get(key)
        return regs.get(path) if regs else None

    def iter_regs(self) -> Iterable[ValueRegister]:
        for regs in self.regs.values():
            yield from regs.values()

    def canonical(self, internals: bool = False) -> Dict[str, Any]:
        """Plain-dict form for convergence checks (equal on replicas that saw the same
        messages).  ``internals`` adds hidden registers, tombstones and text ids."""
        out: Dict[str, Any] = {
            "roots": list(self.tree.kids.get("", ())),
            "nodes": {
                k: {
                    "tag": n.tag,
                    "name": n.name,
                    "parent": n.parent,
                    "children": list(n.children),
                    "props": dict(sorted(n.properties.items())),
                    "deleted": n.deleted,
                    "deleted_at": n.deleted_at,
                }
                for k, n in sorted(self.nodes.items())
            },
        }
        if internals:
            out["registers"] = {
                f"{k}\x00{p}": (r.value.to_list() if isinstance(r.value, TextSeq) else r.value)
                for (k, p), r in sorted(((r.nkey, r.path), r) for r in self.iter_regs())
                if r.value is not MISSING
            }
            out["tomb"] = sorted(self.tree.tomb)
            out["kids"] = {p: list(v) for p, v in sorted(self.tree.kids.items()) if v}
        return out

    to_dict = canonical

    def copy(self) -> SceneGraph:
        """Independent deep copy."""
        return copy.deepcopy(self)

    # -- registers --------------------------------------------------------------------
    def value_register(self, key: str, path: str) -> ValueRegister:
        regs = self.regs.get(key)
        if regs is None:
            regs = self.regs[key] = {}
        reg = regs.get(path)
        if reg is None:
            reg = regs[path] = ValueRegister(self, key, path)
            reg.cut = self.tree.rmkey.get(key)
        return reg

    def _push(self, reg: Register, rec: MsgRecord, op: Any, key: Tuple[Any, ...]) -> None:
        rec.add_entry(reg, key)
        rec.live += 1
        self.active.add(reg)
        reg.add(key, op, rec)

    def add_op(self, rec: MsgRecord, op: Mapping[str, Any], idx: int) -> bool:
        """Expand op number ``idx`` of ``rec`` into register entries and apply them.
        Returns whether it is a meta op (undo, redo, seal: no entries)."""
        ot = op.get("otype")
        if ot in META_OTYPES:
            return True
        if ot in NODE_OTYPES:
            base = rec.key
            v = op.get("value")
            if ot == "node.insert":
                parts = _expand_insert(op)
                if not parts:
                    self.stats["rejected"] += 1
                for sub, top, props in parts:
                    k = (*base, idx, sub)
                    self._push(self.treg, rec, top, k)
                    for pk, pv in props:  # ("init", value): the node's initial properties
                        t = atoms_tuple(pv)  # a list of atoms as a tuple: not GC-tracked
                        self._push(self.value_register(top[1], pk), rec,
                                   ("init", pv if t is None else t), k)
            elif ot == "node.remove" and type(v) is str:
                self._push(self.treg, rec, ("rm", v), (*base, idx, 0))
            elif (
                ot == "node.move"
                and type(v) is dict
                and type(v.get("nodeKey")) is str
                and type(v.get("newParent")) is str
            ):
                self._push(self.treg, rec, ("mv", v["nodeKey"], v["newParent"]), (*base, idx, 0))
            else:
                self.stats["rejected"] += 1
            return False
        key, path = op.get("key"), op.get("path")
        if type(key) is not str or type(path) is not str:
            self.stats["rejected"] += 1
            return False
        self._push(self.value_register(key, path), rec, hot_op(op),
                   (rec.lt, rec.client, rec.id, idx, 0))
        return False

    def drop_op(self, rec: MsgRecord, idx: int) -> None:
        """Remove the entries of op ``idx`` (the last op) of a pending record."""
        while True:
            last = rec.last_entry()
            if last is None or last[1][3] != idx:
                break
            reg, key = rec.pop_entry()
            rec.live -= 1
            reg.drop(key)

    def drop_all(self, rec: MsgRecord) -> None:
        """Remove every entry of a record from its registers, each of which re-folds what
        sorts after it (cancelling a pending record; :meth:`rekey`)."""
        while rec.last_entry() is not None:
            reg, key = rec.pop_entry()
            rec.live -= 1
            reg.drop(key)

    # -- messages -------------------------------------------------------------------
    def _status(self, rec: MsgRecord) -> bool:
        metas = self.metas.get(rec.id)
        best = None
        if metas:
            for m in metas:
                if m[2] == rec.sid and (best is None or m[0] > best[0]):
                    best = m
        return best is not None and best[1] == "meta.undo"

    def refresh(self, rec: MsgRecord) -> None:
        for reg, key in group_first(rec.entries):
            reg.refresh(key)

    def _metas(self, rec: MsgRecord, ops: List[Dict[str, Any]]) -> None:
        for idx, op in enumerate(ops):
            ot = op.get("otype")
            if ot == "meta.seal":
                fin = op.get("fin")
                if type(fin) is int:
                    self.sessions.seal(rec.sid, rec.seq, fin)
                continue
            target = op.get("targetMsgId")
            if ot not in META_OTYPES or type(target) is not str:
                continue
            self.metas.setdefault(target, []).append(((*rec.key, idx), ot, rec.sid))
            self._redecide(target)

    def _redecide(self, target: str) -> None:
        """The undo/redo ops aimed at message ``target`` changed: decide again whether it
        is undone, and refresh what it touches if that changed."""
        trec = self.msgs.get(target)
        if trec is not None and not trec.pending:
            status = self._status(trec)
            if status != trec.excluded:
                trec.excluded = status
                self.refresh(trec)

    def is_duplicate(self, msg: CRDTMessage) -> bool:
        return msg.id in self.msgs or self.sessions.is_dup(msg.sid, msg.seq, msg.id)

    def integrate(
        self,
        msg: CRDTMessage,
        *,
        acked: bool = True,
        own: bool = False,
        status: Optional[bool] = None,
        skip_meta: bool = False,
    ) -> Optional[MsgRecord]:
        """Add a message (idempotent).  Returns its record, or ``None`` if already seen.

        ``status`` forces the undone flag (used when baking a final prefix)."""
        if self.is_duplicate(msg):
            self.stats["duplicates"] += 1
            return None
        self.sessions.note(msg.sid, msg.client, msg.seq, msg.lt, msg.id, msg.uw)
        for sid in msg.clock:
            if type(sid) is str:
                self.sessions.know(sid)
        self.lt = max(self.lt, msg.lt)
        rec = MsgRecord(msg.id, msg.client, msg.sid, msg.seq, msg.lt, msg)
        rec.acked, rec.own = acked, own
        rec.excluded = self._status(rec) if status is None else status
        self.msgs[rec.id] = rec
        meta = True
        for idx, op in enumerate(msg.ops):
            meta = self.add_op(rec, op, idx) and meta
        rec.meta = meta
        if not skip_meta:
            self._metas(rec, msg.ops)
        self.stats["messages"] += 1
        return rec

    def rekey(self, rec: MsgRecord, lt: int) -> bool:
        """Move the committed message of ``rec`` to Lamport time ``lt``: afterwards the
        graph is what it would be had the message been integrated at ``lt`` in the first
        place (what a store does when the relay holds its own message at another ``lt``,
        see :func:`vuer_sync.rtc.store._adopt_lt`).

        Costs O(what sorts after the message in the registers it touches), like a late
        message: its entries are dropped (each register re-folds after them), the record
        gets ``lt`` and its ops are added again under the new keys; a meta op of the
        message (undo/redo) gets its new key in :attr:`metas` and its target's status is
        decided again. The record object stays (undo/redo stacks and ``unacked`` keep
        it), and so does :attr:`lt` (the clock never goes back). Returns ``False``, and
        changes nothing, for a pending record or one compacted already, wholly or in
        part (it can no longer move)."""
        msg = rec.msg
        if (msg is None or rec.pending or self.msgs.get(rec.id) is not rec
                or rec.live != len(rec.entries)):
            return False
        if rec.lt == lt:
            return True
        old = rec.key
        self.drop_all(rec)
        rec.lt = lt
        new = rec.key
        for idx, op in enumerate(msg.ops):
            self.add_op(rec, op, idx)
        targets: Set[str] = set()
        for op in msg.ops:
            target = op.get("targetMsgId")
            if op.get("otype") in META_OTYPES and type(target) is str:
                targets.add(target)
        for target in targets:
            metas = self.metas.get(target)
            if not metas:
                continue
            self.metas[target] = [
                ((*new, *k[3:]), kind, sid) if k[:3] == old else (k, kind, sid)
                for k, kind, sid in metas
            ]
            self._redecide(target)
        self.sessions.restamp(rec.sid, rec.seq, lt)
        self.lt = max(self.lt, lt)
        self.stats["rekeyed"] += 1
        return True

    def new_pending(self, mid: str, client: str, sid: str) -> MsgRecord:
        rec = MsgRecord(mid, client, sid, None, PENDING_LT)
        rec.pending, rec.own, rec.acked = True, True, False
        return rec

    def commit_pending(self, rec: MsgRecord, msg: CRDTMessage) -> None:
        """Turn the pending record into the committed message ``msg``."""
        rec.lt, rec.seq = msg.lt, msg.seq
        rec.set_msg(msg)
        rec.pending = False
        by_reg: Dict[int, Tuple[Register, List[Tuple[Tuple[Any, ...], Tuple[Any, ...]]]]] = {}
        for reg, old, new in rec.rebase(rec.key):
            by_reg.setdefault(id(reg), (reg, []))[1].append((old, new))
        # the tree last: re-keying a pending node.remove moves its node's cut, which
        # re-folds that node's property registers (already holding their committed keys)
        tree_items = by_reg.pop(id(self.treg), None)
        for reg, items in by_reg.values():
            reg.rekey_many(items)
        if tree_items is not None:
            self.treg.rekey_many(tree_items[1])
        self.msgs[rec.id] = rec
        self.sessions.note(msg.sid, msg.client, msg.seq, msg.lt, msg.id, msg.uw)
        self.lt = max(self.lt, msg.lt)
        self.stats["messages"] += 1

    # -- compaction -------------------------------------------------------------------
    def truncate(self, final: Any) -> int:
        """Compact: drop every register's leading entries whose message is final, then the
        records of final messages that no register needs any more.  Returns the number of
        records dropped.

        A property entry that sorts after a ``node.remove`` of its node is ignored while
        that remove counts (the register's cut) and applied again when the remove is
        undone, ignored again when it is redone: its effect is final only once every
        remove of its node that sorts before it is final too.  So a property register of
        node ``k`` keeps its entries from the first non-final remove of ``k`` on."""
        treg = self.treg
        holds: Dict[str, Tuple[Any, ...]] = {}  # node key -> first non-final remove's key
        for op, rec, key in zip(treg.ops, treg.recs, treg.keys):
            if op[0] == "rm" and op[1] not in holds and not final(rec):
                holds[op[1]] = key
        for reg in list(self.active):
            if holds and isinstance(reg, ValueRegister):
                reg.truncate(final, holds.get(reg.nkey))
            else:
                reg.truncate(final)
            if not reg.keys:
                self.active.discard(reg)
        gone = [r for r in self.msgs.values() if r.live == 0 and final(r)]
        for r in gone:
            del self.msgs[r.id]
            self.metas.pop(r.id, None)
            r.clear_entries()
        return len(gone)

    def replay_all(self) -> None:
        """Re-fold every register from its compacted base (consistency self-check)."""
        self.treg.replay_all()
        for reg in list(self.iter_regs()):
            if reg.keys:
                reg.replay_all()


# -- low-level API (seed names) ----------------------------------------------------------
MessageLike = Union[CRDTMessage, Mapping[str, Any], Any]


def create_empty_graph() -> SceneGraph:
    """A new, empty :class:`SceneGraph`."""
    return SceneGraph()


def apply_operation(
    graph: SceneGraph, op: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None
) -> SceneGraph:
    """Apply one op in place (as a one-op message) and return ``graph``.

    ``meta`` may give ``lt``, ``client`` and ``id``; by default the op is ordered after
    everything the graph has seen.  Position-based text ops are resolved at apply time.
    """
    meta = meta or {}
    n = next(_auto_ids)
    client = str(meta.get("client", "local"))
    msg = CRDTMessage(
        id=str(meta.get("id", f"~op:{n}")),
        client=client,
        lt=int(meta.get("lt", graph.lt + 1)),
        ops=[dict(op)],
        sid=str(meta.get("sid", f"~op:{n}")),
    )
    apply_message_mut(graph, msg)
    return graph


def apply_message_mut(graph: SceneGraph, msg: MessageLike) -> bool:
    """Apply a message in place; returns ``False`` if it was a duplicate."""
    return graph.integrate(parse_message(msg)) is not None


def apply_message(graph: SceneGraph, msg: MessageLike) -> SceneGraph:
    """Return a new graph with ``msg`` applied (``graph`` is untouched)."""
    g = graph.copy()
    apply_message_mut(g, msg)
    return g


def apply_messages(graph: SceneGraph, msgs: Iterable[MessageLike]) -> SceneGraph:
    """Return a new graph with all ``msgs`` applied (any order gives the same result)."""
    g = graph.copy()
    for m in msgs:
        apply_message_mut(g, m)
    return g
