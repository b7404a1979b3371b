"""Scene-graph structure: ``node.insert`` / ``node.remove`` / ``node.move`` folded in the
total order, plus the user-facing :class:`SceneNode`.

Rules (each checked when the op is applied, so every replica decides identically):

* **insert** creates the node under ``parent`` unless the key was ever inserted or removed
  (keys are permanent: a second insert neither re-creates nor moves the node).  The
  parent does not need to exist yet: the child is listed under it and shows up when the
  parent arrives (R13).  The insert's other fields are *initial* property values: each
  is applied only if that property was never written (see ``prop.init`` in
  :mod:`vuer_sync.rtc.register`), so a repeated insert only fills in missing properties.
* **remove** is a soft delete, as in vuer-rtc (``node._crdt.deletedAt``): the node
  stays in ``graph.nodes`` with ``deleted = True`` and ``deleted_at`` = the ``ts`` of the
  removing message, and is detached from its *actual* parent's children (the ``key`` the
  op names is ignored).  Its properties keep the values they had at the removal: every
  property op ordered after the remove is ignored (the property registers get a *cut*,
  see :meth:`Tree.flush_cuts`).  Undoing the remove restores the node, re-attaches it
  and re-applies the edits that were ignored.  Descendants stay, unreachable.  Only the
  first remove in the total order counts (``deleted_at`` is the same on every replica).
  A remove that sorts before the node's insert tombstones the key: the insert is ignored.
* **move** re-parents a live (not deleted) node under a live parent (or the root ``""``).
  It is skipped when the new parent is the node itself or one of its descendants (no
  cycles, R10) and a node always has exactly one parent (R11, R12).
* children are ordered by the ordering key of the op that attached them (insert or move).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .graph import SceneGraph

__all__ = ["SceneNode", "Tree"]

Key = Tuple[Any, ...]


class SceneNode:
    """A node: ``key``, ``tag``, ``name``, ``parent``, ordered ``children`` keys and
    ``properties`` (path -> value).  Treat it as read-only; change it with ops.

    ``deleted`` is ``True`` for a tombstone (``node.remove``); ``deleted_at`` is then the
    wall-clock ``ts`` (seconds) of the removing message, else ``None``.  A tombstone is
    in no parent's ``children``; its ``parent`` is the one it had when removed.

    >>> n = SceneNode("cube", "Mesh", "Cube", "", [], {"position": [0, 1, 0]})
    >>> n.get_property("position")
    [0, 1, 0]
    """

    __slots__ = ("children", "deleted", "deleted_at", "key", "name", "parent", "properties", "tag")

    def __init__(
        self,
        key: str,
        tag: str,
        name: str,
        parent: str,
        children: List[str],
        properties: Dict[str, Any],
        deleted: bool = False,
        deleted_at: Optional[float] = None,
    ) -> None:
        self.key = key
        self.tag = tag
        self.name = name
        self.parent = parent
        self.children = children
        self.properties = properties
        self.deleted = deleted
        self.deleted_at = deleted_at

    def get_property(self, path: str, default: Any = None) -> Any:
        """The value of property ``path`` (text properties read as ``str``)."""
        return self.properties.get(path, default)

    getProperty = get_property  # vuer-rtc spelling

    def to_dict(self) -> Dict[str, Any]:
        return {
            "key": self.key,
            "tag": self.tag,
            "name": self.name,
            "parent": self.parent,
            "children": list(self.children),
            "properties": dict(self.properties),
            "deleted": self.deleted,
            "deleted_at": self.deleted_at,
        }

    def __repr__(self) -> str:
        dead = ", deleted" if self.deleted else ""
        return f"SceneNode({self.key!r}, tag={self.tag!r}, children={self.children!r}{dead})"


class Tree:
    """Parent map, ordered child lists and tombstones; publishes nodes (tombstones
    included, marked ``deleted``) into ``graph.nodes``.  Every mutator returns an inverse
    record (or ``None`` = no effect)."""

    __slots__ = ("akey", "cut_dirty", "graph", "info", "kids", "parent", "rmkey", "tomb")

    def __init__(self, graph: SceneGraph) -> None:
        self.graph = graph
        self.info: Dict[str, Tuple[str, str]] = {}  # key -> (tag, name), ever inserted
        self.parent: Dict[str, str] = {}
        self.akey: Dict[str, Key] = {}
        self.kids: Dict[str, List[str]] = {"": []}
        self.tomb: Set[str] = set()
        # key -> ordering key of its effective remove (``()`` = in compacted history)
        self.rmkey: Dict[str, Key] = {}
        # key -> its rmkey before the current fold changed it (see flush_cuts)
        self.cut_dirty: Dict[str, Optional[Key]] = {}

    # -- helpers -------------------------------------------------------------------
    def live(self, k: str) -> bool:
        return k in self.info and k not in self.tomb

    def _cut_changes(self, k: str) -> None:
        if k not in self.cut_dirty:
            self.cut_dirty[k] = self.rmkey.get(k)

    def flush_cuts(self) -> None:
        """After a fold of the structure: re-fold the property registers of every node
        whose removal key changed (remove applied, undone, redone or re-keyed), from the
        smaller of the old and new keys on."""
        dirty = self.cut_dirty
        if not dirty:
            return
        self.cut_dirty = {}
        regs_of = self.graph.regs
        for k, old in dirty.items():
            new = self.rmkey.get(k)
            if new == old:
                continue
            regs = regs_of.get(k)
            if not regs:
                continue
            start = min(c for c in (old, new) if c is not None)
            for reg in list(regs.values()):
                reg.set_cut(new, start)

    def is_ancestor_or_self(self, a: str, n: str) -> bool:
        """True if ``a`` is ``n`` or one of its ancestors."""
        steps, limit = 0, len(self.parent) + 1
        while n and steps <= limit:
            if n == a:
                return True
            nxt = self.parent.get(n)
            if nxt is None:
                return False
            n, steps = nxt, steps + 1
        return False

    def _attach(self, p: str, k: str) -> int:
        lst = self.kids.get(p)
        if lst is None:
            lst = self.kids[p] = []
        akey = self.akey
        ak = akey[k]
        if not lst or akey[lst[-1]] < ak:
            lst.append(k)
            return len(lst) - 1
        lo, hi = 0, len(lst)
        while lo < hi:
            mid = (lo + hi) // 2
            if akey[lst[mid]] < ak:
                lo = mid + 1
            else:
                hi = mid
        lst.insert(lo, k)
        return lo

    def _detach(self, p: str, k: str) -> int:
        lst = self.kids[p]
        i = len(lst) - 1
        while lst[i] != k:  # recently attached nodes are near the end
            i -= 1
        del lst[i]
        return i

    def publish(self, k: str) -> None:
        tag, name = self.info[k]
        kids = self.kids.get(k)
        if kids is None:
            kids = self.kids[k] = []
        self.graph.nodes[k] = SceneNode(
            k, tag, name, self.parent[k], kids, self.graph.props_of(k)
        )

    # -- ops -------------------------------------------------------------------------
    def insert(self, k: str, p: str, tag: str, name: str, key: Key) -> Optional[Tuple[Any, ...]]:
        if not k or k == p or k in self.info or k in self.tomb:
            return None
        if p and self.is_ancestor_or_self(k, p):  # p is an orphan below k: would cycle
            return None
        self.info[k] = (tag, name)
        self.parent[k] = p
        self.akey[k] = key
        i = self._attach(p, k)
        self.publish(k)
        return ("ins", k, p, i)

    def remove(self, k: str, key: Key, ts: float) -> Optional[Tuple[Any, ...]]:
        if k in self.tomb:
            return None
        self.tomb.add(k)
        self._cut_changes(k)
        self.rmkey[k] = key
        if k not in self.info:
            return ("rm0", k)
        i = self._detach(self.parent[k], k)
        node = self.graph.nodes[k]
        node.deleted, node.deleted_at = True, ts
        return ("rm", k, i)

    def move(self, k: str, n: str, key: Key) -> Optional[Tuple[Any, ...]]:
        if not self.live(k) or (n and not self.live(n)) or self.parent[k] == n:
            return None
        if self.is_ancestor_or_self(k, n):
            return None
        old, old_ak = self.parent[k], self.akey[k]
        i = self._detach(old, k)
        self.parent[k] = n
        self.akey[k] = key
        j = self._attach(n, k)
        self.graph.nodes[k].parent = n
        return ("mv", k, old, old_ak, i, n, j)

    def rollback(self, inv: Tuple[Any, ...]) -> None:
        kind, k = inv[0], inv[1]
        if kind == "ins":
            del self.kids[inv[2]][inv[3]]
            del self.info[k], self.parent[k], self.akey[k]
            self.graph.nodes.pop(k, None)
        elif kind == "rm":
            self.tomb.discard(k)
            self._cut_changes(k)
            del self.rmkey[k]
            self.kids[self.parent[k]].insert(inv[2], k)
            node = self.graph.nodes[k]
            node.deleted, node.deleted_at = False, None
        elif kind == "rm0":
            self.tomb.discard(k)
            self._cut_changes(k)
            del self.rmkey[k]
        elif kind == "mv":
            _, _, old, old_ak, i, n, j = inv
            del self.kids[n][j]
            self.parent[k] = old
            self.akey[k] = old_ak
            self.kids[old].insert(i, k)
            self.graph.nodes[k].parent = old

    # -- introspection ---------------------------------------------------------------
    def reachable(self) -> List[str]:
        """Keys reachable from the root, depth first in child order (never a tombstone)."""
        out: List[str] = []
        stack = list(reversed(self.kids.get("", [])))
        while stack:
            k = stack.pop()
            out.append(k)
            stack.extend(reversed(self.kids.get(k, [])))
        return out
