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
entries after it) when the remove is applied, undone, redone or re-keyed.
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

if TYPE_CHECKING:  # pragma: no cover
    from .graph import SceneGraph
    from .tree import Tree
    from .wire import CRDTMessage

__all__ = ["Entry", "MsgRecord", "Register", "TreeRegister", "ValueRegister"]

Key = Tuple[Any, ...]


class MsgRecord:
    """Replica-side bookkeeping for one message (committed, received or pending).

    Its register entries are kept as the first one plus a list of the others (created only
    for a message of several entries): most messages have one op, and a record lives as
    long as the journal keeps it, so this spares the cyclic GC a list per journal entry.
    """

    __slots__ = (
        "_first",
        "_more",
        "acked",
        "client",
        "excluded",
        "id",
        "key",
        "live",
        "lt",
        "msg",
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
        self.key: Key = (lt, client, mid)
        self.msg = msg
        self.excluded = False  # undone
        self.acked = True
        self.own = False
        self.pending = False
        self._first: Optional[Entry] = None
        self._more: Optional[List[Entry]] = None
        self.live = 0  # entries still held by registers

    @property
    def entries(self) -> List[Entry]:
        """This message's register entries, in the order they were added (a new list)."""
        first = self._first
        if first is None:
            return []
        return [first] if self._more is None else [first, *self._more]

    def add_entry(self, e: Entry) -> None:
        """Append ``e`` to :attr:`entries`."""
        if self._first is None:
            self._first = e
        elif self._more is None:
            self._more = [e]
        else:
            self._more.append(e)

    def last_entry(self) -> Optional[Entry]:
        """The last of :attr:`entries` (``None`` if there is none)."""
        return self._more[-1] if self._more else self._first

    def pop_entry(self) -> Entry:
        """Remove and return the last of :attr:`entries` (``IndexError`` if none)."""
        more = self._more
        if more:
            e = more.pop()
            if not more:
                self._more = None
            return e
        first = self._first
        if first is None:
            raise IndexError("pop from a record without entries")
        self._first = None
        return first

    def clear_entries(self) -> None:
        """Forget every entry (the record was compacted)."""
        self._first = self._more = None

    def __repr__(self) -> str:
        return f"MsgRecord({self.id!r}, lt={self.lt}, excluded={self.excluded})"


class Entry:
    """One op (or one part of an expanded op) inside one register."""

    __slots__ = ("inv", "key", "op", "rec", "reg")

    def __init__(self, key: Key, op: Any, rec: MsgRecord, reg: Register) -> None:
        self.key = key
        self.op = op
        self.rec = rec
        self.reg = reg
        self.inv: Any = None


class Register:
    """Sorted entries + fold; subclasses define ``_do``/``_undo``/``publish``."""

    __slots__ = ("entries", "floor", "graph", "keys")

    def __init__(self, graph: SceneGraph) -> None:
        self.graph = graph
        # the immutable () until the first op arrives (most registers are idle), so an
        # idle register costs no lists; add() swaps in real lists
        self.keys: List[Key] = ()  # type: ignore[assignment]
        self.entries: List[Entry] = ()  # type: ignore[assignment]
        self.floor: Optional[Key] = None  # key of the newest compacted entry

    def _do(self, e: Entry) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _undo(self, e: Entry) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def publish(self) -> None:
        """Push the current value to the live scene graph view."""

    def _rewind(self, pos: int) -> None:
        entries = self.entries
        for i in range(len(entries) - 1, pos - 1, -1):
            self._undo(entries[i])

    def _replay(self, pos: int) -> None:
        entries = self.entries
        for i in range(pos, len(entries)):
            self._do(entries[i])

    def _pos(self, e: Entry) -> int:
        pos = bisect_left(self.keys, e.key)
        entries = self.entries
        while entries[pos] is not e:
            pos += 1
        return pos

    def add(self, e: Entry) -> None:
        keys, k = self.keys, e.key
        if type(keys) is tuple:
            keys = self.keys = []
            self.entries = []
        if not keys or k > keys[-1]:
            if self.floor is not None and k < self.floor:
                self._below_floor(e)
            keys.append(k)
            self.entries.append(e)
            self._do(e)
        else:
            if self.floor is not None and k < self.floor:
                self._below_floor(e)
            pos = bisect_right(keys, k)
            self._rewind(pos)
            keys.insert(pos, k)
            self.entries.insert(pos, e)
            self._replay(pos)
            self.graph.stats["late"] += 1
        self.publish()

    def _below_floor(self, e: Entry) -> None:
        self.graph.stats["below_horizon"] += 1
        log.warning(
            "op of %s sorts before already compacted ops (compaction contract violated); "
            "applied after them",
            e.rec.id,
        )

    def refresh(self, e: Entry) -> None:
        """Re-fold from ``e`` on (its message was undone or redone)."""
        pos = self._pos(e)
        self._rewind(pos)
        self._replay(pos)
        self.publish()

    def drop(self, e: Entry) -> None:
        """Remove ``e`` (a cancelled or re-merged local edit) and re-fold after it."""
        pos = self._pos(e)
        self._rewind(pos)
        del self.keys[pos], self.entries[pos]
        self._replay(pos)
        self.publish()

    def rekey(self, e: Entry, key: Key) -> None:
        """Give a pending entry its committed key (which sorts the same way)."""
        entries = self.entries
        pos = len(entries) - 1
        while entries[pos] is not e:
            pos -= 1
        self.keys[pos] = key
        e.key = key

    def rekey_many(self, items: List[Tuple[Entry, Key]]) -> None:
        """Re-key several pending entries at once (default: in place, see :meth:`rekey`)."""
        for e, k in items:
            self.rekey(e, k)

    def truncate(self, final: Callable[[MsgRecord], bool]) -> int:
        """Forget the leading entries whose messages are final; returns how many."""
        entries = self.entries
        n = 0
        while n < len(entries) and final(entries[n].rec):
            n += 1
        if n:
            self.floor = self.keys[n - 1]
            for e in entries[:n]:
                e.rec.live -= 1
                e.inv = None
            if n == len(entries):
                self.keys, self.entries = (), ()  # type: ignore[assignment]
            else:
                del self.keys[:n], entries[:n]
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

    def _do(self, e: Entry) -> None:
        op, rec = e.op, e.rec
        excluded = rec.excluded
        cut = self.cut
        if cut is not None and e.key > cut:  # addressed to a deleted node: ignored
            excluded = True
        if type(op) is tuple:  # ("init", value): initial property from node.insert
            e.inv = None
            if not excluded and self.value is MISSING:
                v = json_copy(op[1])
                if v is REJECT:
                    self.graph.stats["rejected"] += 1
                else:
                    self.value, e.inv = v, INV_MISSING
            return
        if excluded and op.get("otype") not in KEEP_WHEN_EXCLUDED:
            e.inv = None
            return
        res = apply_value(self.value, op, f"{rec.id}/{e.key[3]}", excluded)
        if res is REJECT:
            self.graph.stats["rejected"] += 1
            e.inv = None
        elif res is NOCHANGE:
            e.inv = None
        else:
            self.value, inv = res
            e.inv = untracked_inv(inv) if inv[0] == "v" and type(inv[1]) is list else inv

    def _undo(self, e: Entry) -> None:
        inv = e.inv
        if inv is not None:
            self.value = rollback_value(self.value, inv)
            e.inv = None

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

    def _do(self, e: Entry) -> None:
        if e.rec.excluded:
            e.inv = None
            return
        op = e.op
        kind = op[0]
        if kind == "ins":
            e.inv = self.tree.insert(op[1], op[2], op[3], op[4], e.key)
        elif kind == "rm":
            msg = e.rec.msg
            e.inv = self.tree.remove(op[1], e.key, msg.ts if msg is not None else time.time())
        else:
            e.inv = self.tree.move(op[1], op[2], e.key)
        if e.inv is None:
            self.graph.stats["noop_struct"] += 1

    def _undo(self, e: Entry) -> None:
        if e.inv is not None:
            self.tree.rollback(e.inv)
            e.inv = None

    def publish(self) -> None:
        self.tree.flush_cuts()

    def rekey_many(self, items: List[Tuple[Entry, Key]]) -> None:
        """Attach keys are stored in the tree (and in move inverses), so re-fold the
        pending entries with their committed keys instead of patching them in place."""
        pos = min(self._pos(e) for e, _ in items)
        self._rewind(pos)
        for e, k in items:
            e.key = k
        entries = self.entries
        self.keys[pos:] = [e.key for e in entries[pos:]]
        self._replay(pos)
        self.publish()


def group_first(entries: List[Entry]) -> List[Entry]:
    """For each register touched, the entry with the smallest key (where a re-fold starts)."""
    out: Dict[int, Entry] = {}
    for e in entries:
        cur = out.get(id(e.reg))
        if cur is None or e.key < cur.key:
            out[id(e.reg)] = e
    return list(out.values())
