"""Serialise a fully compacted :class:`SceneGraph` (the relay's baked prefix) to plain
dicts and back.  Used by the ``state`` envelope for late joiners.

Format (``"v": 1``)::

    {"v": 1, "lt": 42,
     "nodes": [[key, parent, tag, name, attach_key], ...],   # every inserted node
     "tomb":  [key, ...],                                     # removed keys
     "deleted": [[key, deleted_at], ...],                     # tombstoned nodes
     "props": [[key, path, value], ...],                      # non-text registers
     "texts": [[key, path, [char ids], "chars", "1101"], ...],# text registers
     "sessions": {...}}                                       # dedupe / horizon state
"""

from __future__ import annotations

from typing import Any, Dict

from .common import MISSING
from .graph import SceneGraph
from .sessions import SessionTracker
from .text import TextSeq

__all__ = ["dump_graph", "load_graph"]


def dump_graph(graph: SceneGraph) -> Dict[str, Any]:
    """Plain-dict snapshot of ``graph``; it must hold no uncompacted ops."""
    if graph.active or graph.msgs:
        raise ValueError("dump_graph needs a fully compacted graph (no live journal)")
    t = graph.tree
    props, texts = [], []
    for reg in graph.iter_regs():
        k, p, v = reg.nkey, reg.path, reg.value
        if isinstance(v, TextSeq):
            vis = "".join("1" if x else "0" for x in v.vis)
            texts.append([k, p, list(v.ids), "".join(v.chars), vis])
        elif v is not MISSING:
            props.append([k, p, v])
    return {
        "v": 1,
        "lt": graph.lt,
        "nodes": [
            [k, t.parent[k], tag, name, list(t.akey[k])] for k, (tag, name) in t.info.items()
        ],
        "tomb": sorted(t.tomb),
        "deleted": [[k, n.deleted_at] for k, n in graph.nodes.items() if n.deleted],
        "props": props,
        "texts": texts,
        "sessions": graph.sessions.to_dict(),
    }


def load_graph(data: Dict[str, Any]) -> SceneGraph:
    """Inverse of :func:`dump_graph`."""
    if data.get("v") != 1:
        raise ValueError(f"unsupported snapshot version {data.get('v')!r}")
    g = SceneGraph()
    t = g.tree
    g.lt = int(data.get("lt", 0))
    for k, p, tag, name, ak in data.get("nodes", ()):
        t.info[k] = (tag, name)
        t.parent[k] = p
        t.akey[k] = tuple(ak)
    t.tomb = set(data.get("tomb", ()))
    t.rmkey = {k: () for k in t.tomb}  # removed in the baked prefix: later ops are ignored
    for k, p, v in data.get("props", ()):
        g.value_register(k, p).value = v
    for k, p, ids, chars, vis in data.get("texts", ()):
        g.value_register(k, p).value = TextSeq.from_lists(ids, chars, [c == "1" for c in vis])
    live = [k for k in t.info if k not in t.tomb]
    live.sort(key=lambda k: t.akey[k])
    for k in live:
        t.kids.setdefault(t.parent[k], []).append(k)
    for k in t.info:
        t.publish(k)
    for k, at in data.get("deleted", ()):
        node = g.nodes.get(k)
        if node is not None:
            node.deleted, node.deleted_at = True, at
    for k in t.tomb:  # snapshots without "deleted" (older writers)
        node = g.nodes.get(k)
        if node is not None:
            node.deleted = True
    g.sessions = SessionTracker.from_dict(data.get("sessions", {}))
    return g
