"""Scene-graph structure: ``node.insert`` / ``node.remove`` / ``node.move`` folded in the
total order, plus the user-facing :class:`SceneNode`.

Rules (each checked when the op is applied, so every replica decides identically):

* **insert** creates the node under ``parent`` unless the key was ever inserted or removed
  (keys are permanent: a second insert neither re-creates nor moves the node).  The
  parent does not need to exist yet: the child is listed under it and shows up when the
  parent arrives (R13).  The insert's other fields are *initial* property values: each
  is applied only if that property was never written (see ``prop.init`` in
  :mod:`vuer_sync.rtc.register`), so a repeated insert only fills in missing properties.
* **remove** tombstones the node and detaches it from its *actual* parent (the ``key`` the
  op names is ignored).  Descendants stay, unreachable.
* **move** re-parents a live node under a live parent (or the root ``""``).  It is skipped
  when the new parent is the node itself or one of its descendants (no cycles, R10) and
  a node always has exactly one parent (R11, R12).
* children are ordered by the ordering key of the op that attached them (insert or move).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .graph import SceneGraph

__all__ = ["SceneNode", "Tree"]

Key = Tuple[Any, ...]


class SceneNode:
    """A live node: ``key``, ``tag``, ``name``, ``parent``, ordered ``children`` keys and
    ``properties`` (path -> value).  Treat it as read-only; change it with ops.

    >>> n = SceneNode("cube", "Mesh", "Cube", "", [], {"position": [0, 1, 0]})
    >>> n.get_property("position")
    [0, 1, 0]
    """

    __slots__ = ("children", "key", "name", "parent", "properties", "tag")

    def __init__(
        self,
        key: str,
        tag: str,
        name: str,
        parent: str,
        children: List[str],
        properties: Dict[str, Any],
    ) -> None:
        self.key = key
        self.tag = tag
        self.name = name
        self.parent = parent
        self.children = children
        self.properties = properties

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
        }

    def __repr__(self) -> str:
        return f"SceneNode({self.key!r}, tag={self.tag!r}, children={self.children!r})"


class Tree:
    """Parent map, ordered child lists and tombstones; publishes live nodes into
    ``graph.nodes``.  Every mutator returns an inverse record (or ``None`` = no effect)."""

    __slots__ = ("akey", "graph", "info", "kids", "parent", "tomb")

    def __init__(self, graph: SceneGraph) -> None:
        self.graph = graph
        self.info: Dict[str, Tuple[str, str]] = {}  # key -> (tag, name), ever inserted
        self.parent: Dict[str, str] = {}
        self.akey: Dict[str, Key] = {}
        self.kids: Dict[str, List[str]] = {"": []}
        self.tomb: Set[str] = set()

    # -- helpers -------------------------------------------------------------------
    def live(self, k: str) -> bool:
        return k in self.info and k not in self.tomb

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

    def _publish(self, k: str) -> None:
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
        self._publish(k)
        return ("ins", k, p, i)

    def remove(self, k: str) -> Optional[Tuple[Any, ...]]:
        if k in self.tomb:
            return None
        self.tomb.add(k)
        if k not in self.info:
            return ("rm0", k)
        i = self._detach(self.parent[k], k)
        self.graph.nodes.pop(k, None)
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
            self.kids[self.parent[k]].insert(inv[2], k)
            self._publish(k)
        elif kind == "rm0":
            self.tomb.discard(k)
        elif kind == "mv":
            _, _, old, old_ak, i, n, j = inv
            del self.kids[n][j]
            self.parent[k] = old
            self.akey[k] = old_ak
            self.kids[old].insert(i, k)
            self.graph.nodes[k].parent = old

    # -- introspection ---------------------------------------------------------------
    def reachable(self) -> List[str]:
        """Keys reachable from the root, depth first in child order."""
        out: List[str] = []
        stack = list(reversed(self.kids.get("", [])))
        while stack:
            k = stack.pop()
            out.append(k)
            stack.extend(reversed(self.kids.get(k, [])))
        return out
