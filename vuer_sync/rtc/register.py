"""Registers: ordered op logs with incremental apply and exact rollback.

A register holds the not-yet-compacted ops that target it, sorted by their ordering key,
and the value obtained by folding them (on top of whatever compaction already baked in).
Each applied op stores an inverse record, so:

* an op whose key is larger than everything in the register (the usual case) is applied
  in O(1);
* a late op (smaller key), an undo/redo of an op, or the removal of a cancelled edit
  rolls back only the ops *after* it in this register, then re-applies them.  The cost is
  proportional to how late the op is, not to the size of the journal.

There is one register per ``(node key, property path)`` and one for the tree structure.

Deleted nodes: a property register of a removed node has a *cut*, the ordering key of the
node's effective ``node.remove``.  Entries that sort after the cut are folded as if their
message were undone (ignored; text inserts stay as hidden characters), so the property
keeps the value it had at the removal.  The tree register moves the cut (and re-folds the
entries after it) when the remove is applied, undone, redone or re-keyed.  So an entry's
effect depends on the removes of its node that sort before it, which live in another
register: compaction keeps every entry that sorts after a remove of its node that is not
final yet (see :meth:`~vuer_sync.rtc.graph.SceneGraph.truncate`).
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .common import MISSING, NOCHANGE, REJECT, log
from .ops import (
    INV_MISSING,
    KEEP_WHEN_EXCLUDED,
    apply_value,
    rollback_value,
    untracked_inv,
)
from .text import TextSeq
from .values import json_copy
from .wire import CRDTMessage, freeze_ops, thaw_ops

if TYPE_CHECKING:  # pragma: no cover
    from .graph import SceneGraph
    from .tree import Tree

__all__ = ["EntryRef", "MsgRecord", "Register", "TreeRegister", "ValueRegister"]

Key = Tuple[Any, ...]
#: One register entry of a message: its register and its ordering key (the very tuple the
#: register holds, so the register finds it by identity).
EntryRef = Tuple["Register", Key]


class MsgRecord:
    """Replica-side bookkeeping for one message (committed, received or pending).

    A record lives as long as the journal keeps its message, and every full collection of
    the cyclic GC walks what it keeps tracked, so a record is the *only* tracked object of
    a journal entry. The message's fields are atoms in slots of the record (``ts``, ``uw``,
    ``desc`` and the ops as msgpack bytes, :func:`~vuer_sync.rtc.wire.freeze_ops`) and
    :attr:`clock`, a dict of atoms the GC does not track; :attr:`msg` rebuilds the message
    on demand, :attr:`key` the ordering key. No tuple of them either: a new tuple is
    tracked until the next collection of the young generation, so each one would make
    those collections come sooner while messages are received. Its register entries live
    in the registers' own lists (no object per entry); the record only knows where they
    are: the first as two slots, the others (a message of several ops) in a list of
    :data:`EntryRef`.

    >>> m = CRDTMessage(id="a:1", client="a", lt=3, ts=1.5, clock={"a": 1}, seq=1,
    ...                 ops=[{"otype": "number.set", "key": "n", "path": "x", "value": 1}])
    >>> rec = MsgRecord(m.id, m.client, m.sid, m.seq, m.lt, m)
    >>> rec.msg == m, type(rec.frozen_ops)
    (True, <class 'bytes'>)
    """

    __slots__ = (
        "_desc",
        "_ekey",
        "_more",
        "_ops",
        "_reg",
        "_ts",
        "_uw",
        "acked",
        "client",
        "clock",
        "excluded",
        "id",
        "live",
        "lt",
        "meta",
        "own",
        "pending",
        "seq",
        "sid",
    )

    def __init__(
        self,
        mid: str,
        client: str,
        sid: str,
        seq: Optional[int],
        lt: Any,
        msg: Optional[CRDTMessage] = None,
    ) -> None:
        self.id = mid
        self.client = client
        self.sid = sid
        self.seq = seq
        self.lt = lt
        self.excluded = False  # undone
        self.acked = True
        self.own = False
        self.pending = False
        self.meta = False  # every op is a meta op (set by SceneGraph.integrate)
        self._reg: Optional[Register] = None
        self._ekey: Key = ()
        self._more: Optional[List[EntryRef]] = None
        self.live = 0  # entries still held by registers
        # the message's other fields, its ops frozen (``_ops`` is None while pending): in
        # slots of their own, not in a tuple (one tracked object less per message received)
        self._ts = 0.0
        self._uw: Optional[int] = None
        self._desc: Optional[str] = None
        self._ops: Any = None
        self.clock: Dict[str, int] = {}
        if msg is not None:
            self.set_msg(msg)

    @property
    def key(self) -> Key:
        """The message's ordering key ``(lt, client, id)`` (a new tuple on each access:
        kept in a slot it would be one more object per message for the GC to collect)."""
        return (self.lt, self.client, self.id)

    def set_msg(self, msg: CRDTMessage) -> None:
        """Keep ``msg``'s fields (its ops frozen); :attr:`msg` gives back an equal one."""
        self._ts, self._uw, self._desc = msg.ts, msg.uw, msg.desc
        self._ops = freeze_ops(msg.ops)
        self.clock = msg.clock

    @property
    def ts(self) -> Optional[float]:
        """The message's ``ts`` (``None`` while pending)."""
        return None if self._ops is None else self._ts

    @property
    def frozen_ops(self) -> Any:
        """The message's ops as :func:`~vuer_sync.rtc.wire.freeze_ops` keeps them."""
        return self._ops

    @property
    def msg(self) -> Optional[CRDTMessage]:
        """The message (rebuilt: a new object equal to the one integrated), or ``None``
        for a pending record."""
        ops = self._ops
        if ops is None:
            return None
        return CRDTMessage(
            id=self.id,
            client=self.client,
            lt=self.lt,
            ops=thaw_ops(ops),
            ts=self._ts,
            clock=self.clock,
            sid=self.sid,
            seq=self.seq,
            uw=self._uw,
            desc=self._desc,
        )

    @property
    def entries(self) -> List[EntryRef]:
        """This message's register entries, in the order they were added (a new list)."""
        reg = self._reg
        if reg is None:
            return []
        first = (reg, self._ekey)
        return [first] if self._more is None else [first, *self._more]

    def add_entry(self, reg: Register, key: Key) -> None:
        """Append the entry ``key`` of ``reg`` to :attr:`entries`."""
        if self._reg is None:
            self._reg, self._ekey = reg, key
        elif self._more is None:
            self._more = [(reg, key)]
        else:
            self._more.append((reg, key))

    def last_entry(self) -> Optional[EntryRef]:
        """The last of :attr:`entries` (``None`` if there is none)."""
        if self._more:
            return self._more[-1]
        return None if self._reg is None else (self._reg, self._ekey)

    def pop_entry(self) -> EntryRef:
        """Remove and return the last of :attr:`entries` (``IndexError`` if none)."""
        more = self._more
        if more:
            e = more.pop()
            if not more:
                self._more = None
            return e
        reg = self._reg
        if reg is None:
            raise IndexError("pop from a record without entries")
        e = (reg, self._ekey)
        self._reg, self._ekey = None, ()
        return e

    def rebase(self, base: Key) -> List[Tuple[Register, Key, Key]]:
        """Re-key every entry onto ``base`` (the committed ``(lt, client, id)`` of a pending
        record): returns ``(register, old key, new key)`` for each, in order."""
        reg = self._reg
        if reg is None:
            return []
        old = self._ekey
        self._ekey = new = base + old[3:]
        out = [(reg, old, new)]
        more = self._more
        if more:
            for j, (r, k) in enumerate(more):
                nk = base + k[3:]
                more[j] = (r, nk)
                out.append((r, k, nk))
        return out

    def clear_entries(self) -> None:
        """Forget every entry (the record was compacted, or is re-keyed)."""
        self._reg, self._ekey, self._more = None, (), None

    def __repr__(self) -> str:
        return f"MsgRecord({self.id!r}, lt={self.lt}, excluded={self.excluded})"


class Register:
    """Sorted entries + fold; subclasses define ``_do``/``_undo``/``publish``.

    Entry ``i`` is ``keys[i]`` (its ordering key), ``ops[i]`` (the op, or a tuple for the
    tree and for a node's initial properties), ``recs[i]`` (its message's record) and
    ``invs[i]`` (what rolls its effect back, ``None`` if it had none; a value register
    keeps an old number, string or bool bare instead of in a tuple): four lists per
    register rather than an object per entry, which the cyclic GC would have to walk."""

    __slots__ = ("floor", "graph", "invs", "keys", "ops", "recs")

    def __init__(self, graph: SceneGraph) -> None:
        self.graph = graph
        # the immutable () until the first op arrives (most registers are idle), so an
        # idle register costs no lists; add() swaps in real lists
        self.keys: List[Key] = ()  # type: ignore[assignment]
        self.ops: List[Any] = ()  # type: ignore[assignment]
        self.recs: List[MsgRecord] = ()  # type: ignore[assignment]
        self.invs: List[Any] = ()  # type: ignore[assignment]
        self.floor: Optional[Key] = None  # key of the newest compacted entry

    def _do(self, i: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _undo(self, i: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def publish(self) -> None:
        """Push the current value to the live scene graph view."""

    def _rewind(self, pos: int) -> None:
        for i in range(len(self.keys) - 1, pos - 1, -1):
            self._undo(i)

    def _replay(self, pos: int) -> None:
        for i in range(pos, len(self.keys)):
            self._do(i)

    def _pos(self, key: Key) -> int:
        """Index of the entry whose key is the object ``key``."""
        keys = self.keys
        pos = bisect_left(keys, key)
        while keys[pos] is not key:
            pos += 1
        return pos

    def add(self, key: Key, op: Any, rec: MsgRecord) -> None:
        """Insert the entry ``(key, op, rec)`` in key order and fold it in."""
        keys = self.keys
        if type(keys) is tuple:
            keys = self.keys = []
            self.ops, self.recs, self.invs = [], [], []
        if not keys or key > keys[-1]:
            if self.floor is not None and key < self.floor:
                self._below_floor(rec)
            keys.append(key)
            self.ops.append(op)
            self.recs.append(rec)
            self.invs.append(None)
            self._do(len(keys) - 1)
        else:
            if self.floor is not None and key < self.floor:
                self._below_floor(rec)
            pos = bisect_right(keys, key)
            self._rewind(pos)
            keys.insert(pos, key)
            self.ops.insert(pos, op)
            self.recs.insert(pos, rec)
            self.invs.insert(pos, None)
            self._replay(pos)
            self.graph.stats["late"] += 1
        self.publish()

    def _below_floor(self, rec: MsgRecord) -> None:
        self.graph.stats["below_horizon"] += 1
        log.warning(
            "op of %s sorts before already compacted ops (compaction contract violated); "
            "applied after them",
            rec.id,
        )

    def refresh(self, key: Key) -> None:
        """Re-fold from the entry ``key`` on (its message was undone or redone)."""
        pos = self._pos(key)
        self._rewind(pos)
        self._replay(pos)
        self.publish()

    def drop(self, key: Key) -> None:
        """Remove the entry ``key`` (a cancelled or re-merged local edit) and re-fold
        after it."""
        pos = self._pos(key)
        self._rewind(pos)
        del self.keys[pos], self.ops[pos], self.recs[pos], self.invs[pos]
        self._replay(pos)
        self.publish()

    def rekey_many(self, items: List[Tuple[Key, Key]]) -> None:
        """Give pending entries their committed keys (``(old, new)`` pairs), which sort the
        same way: in place (the newest entries, so found from the end)."""
        keys = self.keys
        for old, new in items:
            pos = len(keys) - 1
            while keys[pos] is not old:
                pos -= 1
            keys[pos] = new

    def truncate(self, final: Callable[[MsgRecord], bool], limit: Optional[Key] = None) -> int:
        """Forget the leading entries whose messages are final and, if ``limit`` is given,
        whose keys sort before it; returns how many."""
        recs = self.recs
        n = 0
        if limit is None:
            while n < len(recs) and final(recs[n]):
                n += 1
        else:
            keys = self.keys
            while n < len(recs) and keys[n] < limit and final(recs[n]):
                n += 1
        if n:
            self.floor = self.keys[n - 1]
            for i in range(n):
                recs[i].live -= 1
            if n == len(recs):
                self.keys = self.ops = self.recs = self.invs = ()  # type: ignore[assignment]
            else:
                del self.keys[:n], self.ops[:n], recs[:n], self.invs[:n]
        return n

    def replay_all(self) -> None:
        """Roll everything back and re-fold (self check used by rebuild_graph)."""
        self._rewind(0)
        self._replay(0)
        self.publish()


class ValueRegister(Register):
    """The value of one property ``(nkey, path)``."""

    __slots__ = ("cut", "nkey", "path", "value")

    def __init__(self, graph: SceneGraph, nkey: str, path: str) -> None:
        super().__init__(graph)
        self.nkey = nkey
        self.path = path
        self.value: Any = MISSING
        self.cut: Optional[Key] = None  # ordering key of the node's removal, if removed

    def set_cut(self, cut: Optional[Key], start: Key) -> None:
        """The node's removal key became ``cut``: re-fold the entries after ``start``."""
        self.cut = cut
        keys = self.keys
        pos = bisect_right(keys, start) if keys else 0
        if pos < len(keys):
            self._rewind(pos)
            self._replay(pos)
            self.publish()

    def _do(self, i: int) -> None:
        op, rec = self.ops[i], self.recs[i]
        excluded = rec.excluded
        cut = self.cut
        if cut is not None and self.keys[i] > cut:  # addressed to a deleted node: ignored
            excluded = True
        invs = self.invs
        if type(op) is tuple:
            if op[0] != "init":  # a vector op (ops.hot_op)
                op = {"otype": op[1], "value": op[2:]}
            else:  # ("init", value): initial property from node.insert
                invs[i] = None
                if not excluded and self.value is MISSING:
                    v = json_copy(op[1])
                    if v is REJECT:
                        self.graph.stats["rejected"] += 1
                    else:
                        self.value, invs[i] = v, INV_MISSING
                return
        if excluded and op.get("otype") not in KEEP_WHEN_EXCLUDED:
            invs[i] = None
            return
        res = apply_value(self.value, op, f"{rec.id}/{self.keys[i][3]}", excluded)
        if res is REJECT:
            self.graph.stats["rejected"] += 1
            invs[i] = None
        elif res is NOCHANGE:
            invs[i] = None
        else:
            self.value, inv = res
            if inv[0] == "v":
                old = inv[1]
                t = type(old)
                if t is int or t is float or t is str or t is bool:
                    inv = old  # a bare atom: the old value itself (see _undo)
                elif t is list:
                    inv = untracked_inv(inv)
            invs[i] = inv

    def _undo(self, i: int) -> None:
        # an inverse is a tuple (ops.rollback_value), or for an old value that is a number,
        # a string or a bool, that value itself: no new tuple per number op, which each
        # collection of the young generation would walk
        inv = self.invs[i]
        if inv is not None:
            self.value = rollback_value(self.value, inv) if type(inv) is tuple else inv
            self.invs[i] = None

    def published(self) -> Any:
        v = self.value
        return v.text() if isinstance(v, TextSeq) else v

    def publish(self) -> None:
        node = self.graph.nodes.get(self.nkey)
        if node is not None:
            if self.value is MISSING:
                node.properties.pop(self.path, None)
            else:
                node.properties[self.path] = self.published()


class TreeRegister(Register):
    """The structure: entries carry ``("ins", k, parent, tag, name)``, ``("rm", k)`` or
    ``("mv", k, new_parent)``."""

    __slots__ = ("tree",)

    def __init__(self, graph: SceneGraph, tree: Tree) -> None:
        super().__init__(graph)
        self.tree = tree

    def _do(self, i: int) -> None:
        rec = self.recs[i]
        if rec.excluded:
            self.invs[i] = None
            return
        op, key = self.ops[i], self.keys[i]
        kind = op[0]
        if kind == "ins":
            inv = self.tree.insert(op[1], op[2], op[3], op[4], key)
        elif kind == "rm":
            ts = rec.ts
            inv = self.tree.remove(op[1], key, ts if ts is not None else time.time())
        else:
            inv = self.tree.move(op[1], op[2], key)
        self.invs[i] = inv
        if inv is None:
            self.graph.stats["noop_struct"] += 1

    def _undo(self, i: int) -> None:
        inv = self.invs[i]
        if inv is not None:
            self.tree.rollback(inv)
            self.invs[i] = None

    def publish(self) -> None:
        self.tree.flush_cuts()

    def rekey_many(self, items: List[Tuple[Key, Key]]) -> None:
        """Attach keys are stored in the tree (and in move inverses), so re-fold the
        pending entries with their committed keys instead of patching them in place."""
        where = [self._pos(old) for old, _ in items]
        pos = min(where)
        self._rewind(pos)
        keys = self.keys
        for i, (_, new) in zip(where, items):
            keys[i] = new
        self._replay(pos)
        self.publish()


def group_first(entries: List[EntryRef]) -> List[EntryRef]:
    """For each register touched, the entry with the smallest key (where a re-fold starts)."""
    out: Dict[int, EntryRef] = {}
    for reg, key in entries:
        cur = out.get(id(reg))
        if cur is None or key < cur[1]:
            out[id(reg)] = (reg, key)
    return list(out.values())
