"""The server-side scene mirror: applies SET/ADD/UPSERT/UPDATE/REMOVE the way the Vuer web
client does, so a client that joins late can be sent the current scene as one ``SET``.

Not the collaborative (CRDT) scene graph, which is :class:`vuer_sync.rtc.SceneGraph
<vuer_sync.rtc.graph.SceneGraph>`. ``SceneGraph`` here is the old name of
:class:`SceneMirror`, kept importable.

Pure: no threads, no sockets. Nodes are plain dicts (decoded wire form); a key index makes
``UPDATE``/``UPSERT`` of an existing node O(1), and structural changes rebuild it.

>>> g = SceneMirror()
>>> box = {"key": "a", "tag": "Box"}
>>> _ = g.apply({"etype": "SET", "data": {"tag": "Scene", "children": [box]}})
>>> _ = g.apply({"etype": "UPDATE", "data": {"nodes": [{"key": "a", "position": [1, 2, 3]}]}})
>>> _ = g.apply({"etype": "ADD", "data": {"nodes": [{"key": "b", "tag": "Sphere"}], "to": "a"}})
>>> g.snapshot()["children"]
[{'key': 'a', 'tag': 'Box', 'position': [1, 2, 3], 'children': [{'key': 'b', 'tag': 'Sphere'}]}]
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

logger = logging.getLogger("vuer_sync.scene")

__all__ = ["CONTAINERS", "SceneGraph", "SceneMirror"]

# the web client's findByKey searches the scene lists in this order
CONTAINERS = ("children", "bgChildren", "htmlChildren", "rawChildren")


def _initial() -> Dict[str, Any]:
    return {"tag": "Scene", "up": [0, 1, 0], "children": [], "rawChildren": [],
            "htmlChildren": [], "bgChildren": []}


class SceneMirror:
    """The current scene as the web client would hold it after the same messages."""

    def __init__(self) -> None:
        self.root: Dict[str, Any] = _initial()
        self.used = False  # any scene message applied yet
        self._index: Optional[Dict[str, Dict[str, Any]]] = None
        #: a columnar update not yet in the nodes: (keys, (N, 3|7) array)
        self._poses: Optional[Tuple[Tuple[str, ...], Any]] = None

    # -- lookup ---------------------------------------------------------------------------

    def _walk(self, nodes: List[Any]) -> Iterator[Dict[str, Any]]:
        for n in nodes:
            if isinstance(n, dict):
                yield n
                kids = n.get("children")
                if isinstance(kids, list):
                    yield from self._walk(kids)

    def _all(self, root: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        for c in CONTAINERS:
            lst = root.get(c)
            if isinstance(lst, list):
                yield from self._walk(lst)

    def find(self, key: str) -> Optional[Dict[str, Any]]:
        """The first node with ``key`` (all scene lists, depth first), or ``None``."""
        if self._poses is not None:
            self._settle_poses()
        if self._index is None:
            idx: Dict[str, Dict[str, Any]] = {}
            for n in self._all(self.root):
                k = n.get("key")
                if isinstance(k, str) and k not in idx:
                    idx[k] = n
            self._index = idx
        return self._index.get(key)

    def _find_parent(self, key: str) -> Optional[Tuple[List[Any], int]]:
        def search(nodes: List[Any]) -> Optional[Tuple[List[Any], int]]:
            for i, n in enumerate(nodes):
                if isinstance(n, dict):
                    if n.get("key") == key:
                        return nodes, i
                    kids = n.get("children")
                    if isinstance(kids, list):
                        found = search(kids)
                        if found is not None:
                            return found
            return None

        for c in CONTAINERS:
            lst = self.root.get(c)
            if isinstance(lst, list):
                found = search(lst)
                if found is not None:
                    return found
        return None

    def _changed(self) -> None:
        self._index = None

    def _appended(self, node: Dict[str, Any]) -> None:
        """``node`` was just added to the tree: index it when that is all that changed (a
        new key, no children), so a stream of new nodes does not rebuild the index each
        time; anything else rebuilds it on the next lookup."""
        idx = self._index
        key = node.get("key")
        if idx is not None and isinstance(key, str) and key not in idx \
                and not isinstance(node.get("children"), list):
            idx[key] = node  # the only node with this key, so the first one too
        else:
            self._changed()

    # -- operations -----------------------------------------------------------------------

    def apply(self, msg: Dict[str, Any]) -> bool:
        """Apply one decoded server message; returns ``False`` for non-scene events."""
        if self._poses is not None:
            self._settle_poses()
        etype = msg.get("etype")
        data = msg.get("data")
        handler = {"SET": self._set, "ADD": self._add, "UPSERT": self._upsert,
                   "UPDATE": self._update, "REMOVE": self._remove}.get(etype)  # type: ignore[arg-type]
        if handler is None:
            return False
        if isinstance(data, dict):
            handler(data)
            self.used = True
        return True

    def _set(self, data: Dict[str, Any]) -> None:
        for k, v in data.items():
            if k != "key":
                self.root[k] = v  # shallow merge, as the client's store does
        self._changed()

    def _add(self, data: Dict[str, Any]) -> None:
        to = data.get("to")
        for node in data.get("nodes") or []:
            if not isinstance(node, dict):
                continue
            if to in CONTAINERS:
                self.root.setdefault(to, []).append(node)
            else:
                parent = self.root if to is None else self.find(to)
                if parent is None:
                    logger.debug("ADD to missing parent %r skipped", to)
                    continue
                parent.setdefault("children", []).append(node)
            self._appended(node)

    def _upsert(self, data: Dict[str, Any]) -> None:
        to = data.get("to")
        for node in data.get("nodes") or []:
            if not isinstance(node, dict):
                continue
            key = node.get("key")
            if to is None:
                existing = self.find(key) if isinstance(key, str) else None
                if existing is not None:
                    existing.update(node)
                    if "children" in node:
                        self._changed()
                else:
                    self.root.setdefault("children", []).append(node)
                    self._appended(node)
                continue
            if to in CONTAINERS:
                lst = self.root.setdefault(to, [])
                existing = next((n for n in self._walk(lst) if n.get("key") == key), None)
                if existing is not None:
                    existing.update(node)
                else:
                    lst.append(node)
                self._changed()
                continue
            parent = self.find(to)
            if parent is None:
                logger.debug("UPSERT into missing parent %r skipped", to)
                continue
            kids = parent.setdefault("children", [])
            existing = next((n for n in self._walk(kids) if n.get("key") == key), None)
            if existing is not None:
                existing.update(node)
            else:
                kids.append(node)
            self._changed()

    def _update(self, data: Dict[str, Any]) -> None:
        for node in data.get("nodes") or []:
            if not isinstance(node, dict):
                continue
            key = node.get("key")
            existing = self.find(key) if isinstance(key, str) else None
            if existing is None:
                continue  # the client only logs unknown keys
            existing.update(node)
            if "children" in node:
                self._changed()

    def update_poses(self, keys: Tuple[str, ...], values: Any) -> None:
        """``UPDATE`` of ``position`` (and ``quaternion``) for each of ``keys``, from an
        ``(N, 3)`` or ``(N, 7)`` array (position, then quaternion ``[x, y, z, w]``): the
        columnar ``poses()`` path. Equivalent to :meth:`apply` of the same message (unknown
        keys are skipped, as the client does), but lazy: the array is kept, and a later
        update of the same keys replaces it; the nodes take the values when the mirror is
        next read or changed otherwise. A 1 kHz robot loop thus costs no Python work per
        pose here.

        >>> import numpy as np
        >>> g = SceneMirror()
        >>> g.apply({"etype": "ADD", "data": {"nodes": [{"key": "a", "tag": "Box"}]}})
        True
        >>> g.update_poses(("a", "gone"), np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
        >>> g.find("a")
        {'key': 'a', 'tag': 'Box', 'position': [1.0, 2.0, 3.0]}
        """
        self.used = True
        held = self._poses
        if held is not None and not (held[0] == keys and values.shape[1] >= held[1].shape[1]):
            self._settle_poses()  # other nodes, or fewer properties: the older one lands
        self._poses = (keys, values)

    def _settle_poses(self) -> None:
        """Put the held columnar update (:meth:`update_poses`) into the nodes."""
        held = self._poses
        if held is None:
            return
        self._poses = None
        keys, values = held
        if self._index is None:
            self.find("")  # builds the index
        get = (self._index or {}).get
        position = values[:, :3].tolist()
        if values.shape[1] == 3:
            for key, p in zip(keys, position):
                node = get(key)
                if node is not None:
                    node["position"] = p
            return
        for key, p, q in zip(keys, position, values[:, 3:7].tolist()):
            node = get(key)
            if node is not None:
                node["position"] = p
                node["quaternion"] = q

    def _remove(self, data: Dict[str, Any]) -> None:
        for key in data.get("keys") or []:
            found = self._find_parent(key) if isinstance(key, str) else None
            if found is not None:
                lst, i = found
                del lst[i]
        for c in ("children", "bgChildren"):
            top = self.root.get(c)
            if isinstance(top, list):
                self._drop_empty_groups(top)
        self._changed()

    def _drop_empty_groups(self, nodes: List[Any]) -> None:
        keep = []
        for n in nodes:
            if isinstance(n, dict):
                kids = n.get("children")
                if isinstance(kids, list):
                    self._drop_empty_groups(kids)
                if str(n.get("tag", "")).lower() == "group" and not n.get("children"):
                    continue
            keep.append(n)
        nodes[:] = keep

    def snapshot(self) -> Dict[str, Any]:
        """The whole scene as ``SET`` data (with explicit lists)."""
        self._settle_poses()
        return dict(self.root)

    def __len__(self) -> int:
        self._settle_poses()
        return sum(1 for _ in self._all(self.root))


SceneGraph = SceneMirror  # the old name (before the CRDT graph's SceneGraph came along)
