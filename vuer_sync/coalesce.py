"""How outbound messages coalesce: the one place that decides which queued message a new one
may be merged into, and what the merge is.

The outbox (:mod:`vuer_sync.outbox`) knows no message kinds. For every pushed frame it asks its
coalescing policy for a :data:`MergeInfo` ``(key, props)``: ``key`` is ``None`` for a barrier,
else ``(kind, subjects)``; the outbox keeps one mergeable queued message per key and treats a
queued message with another key about one of the same subjects as a barrier for them. When a
queued message has the new one's key, the outbox hands both to the policy's ``merge`` and
stores what it returns. :class:`MessageCoalescing` is the policy for Vuer message maps:

- ``UPDATE`` and root ``UPSERT`` (``to`` is ``None``) messages whose nodes are dicts with
  distinct string keys and no ``children`` are keyed by their etype and node keys; the merge is
  per node and property, latest value wins (values are merged, never compared);
- a message with a ``redundancy_key`` (viser's rule) is keyed by it and *replaces* the queued
  one with the same key;
- everything else (``SET``, ``ADD``, ``REMOVE``, an ``UPSERT`` into a parent, an RPC request,
  a custom event) is a barrier.

Everything here is a pure function of its arguments (the property-name cache aside, which
only shares equal tuples).

>>> merge_info({"etype": "UPDATE", "data": {"nodes": [{"key": "b", "x": 1}]}})
(('UPDATE', ('b',)), (('key', 'x'),))
>>> merge_info({"etype": "SET", "data": {}})
(None, None)
>>> merge_messages({"etype": "UPDATE", "data": {"nodes": [{"key": "b", "x": 1, "y": 2}]}},
...                {"etype": "UPDATE", "data": {"nodes": [{"key": "b", "x": 3}]}})
{'etype': 'UPDATE', 'data': {'nodes': [{'key': 'b', 'x': 3, 'y': 2}]}}
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Protocol, Tuple

__all__ = [
    "BARRIER",
    "REPLACE",
    "CoalesceKey",
    "Coalescing",
    "MergeInfo",
    "Merged",
    "MessageCoalescing",
    "NodeProps",
    "Queued",
    "coalesce_key",
    "covers",
    "merge_info",
    "merge_messages",
    "node_merge_info",
    "node_props",
    "one_node_props",
]

# (kind, subjects): the etype (or REPLACE) and the node keys the message is about
CoalesceKey = Tuple[str, Tuple[str, ...]]
# each node's property names, in its order. Tuples, not sets: a queued message's bookkeeping
# then holds no object the garbage collector keeps tracking (tuples of strings are untracked
# at their first collection), which keeps gen-2 collections rare under a message flood
NodeProps = Tuple[Tuple[str, ...], ...]
# what the outbox stores for a queued message: its merge key (None: a barrier) and props
MergeInfo = Tuple[Optional[CoalesceKey], Optional[NodeProps]]

BARRIER: MergeInfo = (None, None)
REPLACE = "="  # the kind of a redundancy key: the newer message replaces the queued one

# what a merge gives the queued message: (payload, decoded map, props)
Merged = Tuple[Any, Optional[Dict[str, Any]], Optional[NodeProps]]


def coalesce_key(msg: Dict[str, Any]) -> Optional[CoalesceKey]:
    """The key under which ``msg`` may be merged with an earlier queued message, or ``None``.

    Only ``UPDATE`` and root ``UPSERT`` (``to`` is ``None``) messages whose nodes are dicts with
    distinct string keys and no ``children`` coalesce.
    """
    etype = msg.get("etype")
    if etype not in ("UPDATE", "UPSERT"):
        return None
    data = msg.get("data")
    if not isinstance(data, dict):
        return None
    if etype == "UPSERT" and data.get("to") is not None:
        return None
    nodes = data.get("nodes")
    if type(nodes) is not list or not nodes:
        return None
    if len(nodes) == 1:  # the common case, without the list and set
        n = nodes[0]
        if type(n) is not dict or "children" in n:
            return None
        k = n.get("key")
        return (etype, (k,)) if type(k) is str else None
    keys = []
    for n in nodes:
        if not isinstance(n, dict) or "children" in n:
            return None
        k = n.get("key")
        if not isinstance(k, str):
            return None
        keys.append(k)
    if len(set(keys)) != len(keys):
        return None
    return (etype, tuple(keys))


_ONE_NODE_PROPS: Dict[Tuple[str, ...], NodeProps] = {}
_ONE_NODE_PROPS_MAX = 4096


def node_props(msg: Dict[str, Any]) -> NodeProps:
    """The property names of each node of a coalescible message."""
    nodes = msg["data"]["nodes"]
    if len(nodes) == 1:  # shared, as one_node_props; no generator
        props = _ONE_NODE_PROPS.get(tuple(nodes[0]))
        return props if props is not None else one_node_props(nodes[0])
    return tuple(tuple(n) for n in nodes)


def one_node_props(node: Dict[str, Any]) -> NodeProps:
    """:func:`node_props` of a one-node message. The same few property sets recur (a pose
    stream sends the same ones every time): they are shared, so a queued message adds no
    tuple of its own for the garbage collector to track (at most 4096 distinct sets kept)."""
    names = tuple(node)
    props = _ONE_NODE_PROPS.get(names)
    if props is None:
        props = (names,)
        if len(_ONE_NODE_PROPS) < _ONE_NODE_PROPS_MAX:
            _ONE_NODE_PROPS[names] = props
    return props


def merge_info(msg: Dict[str, Any], redundancy_key: Optional[str] = None) -> MergeInfo:
    """What the outbox stores to coalesce ``msg``: its key and node properties."""
    if redundancy_key is not None:
        return (REPLACE, (f"{REPLACE}{redundancy_key}",)), None
    ckey = coalesce_key(msg)
    if ckey is None:
        return BARRIER
    return ckey, node_props(msg)


def node_merge_info(etype: str, node: Dict[str, Any]) -> MergeInfo:
    """:func:`merge_info` of the one-node message ``{"etype": etype, "data": {"nodes":
    [node], "to": None}}`` (``upsert @ element`` / ``update @ element``), without the map.

    >>> node_merge_info("UPSERT", {"key": "b", "tag": "Box"})
    (('UPSERT', ('b',)), (('key', 'tag'),))
    >>> node_merge_info("UPSERT", {"key": "g", "tag": "Group", "children": []})
    (None, None)
    """
    key = node.get("key")
    if type(key) is not str or "children" in node or etype not in ("UPDATE", "UPSERT"):
        return BARRIER
    props = _ONE_NODE_PROPS.get(tuple(node))  # one_node_props, its cache hit inlined
    return (etype, (key,)), props if props is not None else one_node_props(node)


def covers(new: NodeProps, old: NodeProps) -> bool:
    """Does each node of ``new`` set every property its counterpart in ``old`` set?"""
    if new is old:  # a stream sending the same properties (one_node_props shares them)
        return True
    return all(a == b or set(a).issuperset(b) for a, b in zip(new, old))


def merge_messages(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    """``new`` with each node's properties merged over ``old``'s (latest value wins)."""
    nodes = [{**a, **b} for a, b in zip(old["data"]["nodes"], new["data"]["nodes"])]
    return {**new, "data": {**new["data"], "nodes": nodes}}


class Queued(Protocol):
    """A queued message as a policy's ``merge`` reads it (an
    :class:`~vuer_sync.outbox.OutMessage`): its frame and what earlier merges left."""

    payload: Any
    decoded: Optional[Dict[str, Any]]
    props: Optional[NodeProps]


class Coalescing(Protocol):
    """What an :class:`~vuer_sync.outbox.Outbox` asks of its coalescing policy."""

    def info(self, payload: Any, msg: Optional[Dict[str, Any]],
             redundancy_key: Optional[str]) -> MergeInfo:
        """The merge info of a pushed frame (``msg``: its map, when the caller has it)."""

    def merge(self, key: CoalesceKey, queued: Queued, payload: Any,
              props: Optional[NodeProps]) -> Merged:
        """Merge a new frame (``payload``, ``props``) into the queued one with the same
        ``key`` (not changing it); returns its new ``(payload, decoded, props)``."""


class MessageCoalescing:
    """The coalescing policy for Vuer message maps (see the module docstring).

    ``encode``/``decode`` turn a message map into frame bytes and back: used to merge, and to
    read a frame pushed without its map.
    """

    __slots__ = ("decode", "encode")

    def __init__(self, encode: Callable[[Dict[str, Any]], Any],
                 decode: Callable[[Any], Dict[str, Any]]):
        self.encode = encode
        self.decode = decode

    def info(self, payload: Any, msg: Optional[Dict[str, Any]] = None,
             redundancy_key: Optional[str] = None) -> MergeInfo:
        """:func:`merge_info` of the frame; ``msg`` is decoded from ``payload`` if missing."""
        if redundancy_key is None:
            return merge_info(msg if msg is not None else self.peek(payload))
        return merge_info({}, redundancy_key)

    def peek(self, payload: Any) -> Dict[str, Any]:
        """The message map of a frame, ``{}`` if it is not one."""
        try:
            msg = self.decode(payload)
        except Exception:
            return {}
        return msg if isinstance(msg, dict) else {}

    def merge(self, key: CoalesceKey, queued: Queued, payload: Any,
              props: Optional[NodeProps]) -> Merged:
        """A redundancy key: the new frame replaces the queued one. A message that sets every
        queued property again: the merge is the new message (nothing decoded). Otherwise
        both are decoded, merged property by property and encoded again."""
        if key[0] == REPLACE:
            return payload, queued.decoded, queued.props
        old_props = queued.props
        if props is not None and old_props is not None and covers(props, old_props):
            return payload, None, props
        old = queued.decoded
        if old is None:
            old = self.decode(queued.payload)
        merged = merge_messages(old, self.decode(payload))
        return self.encode(merged), merged, node_props(merged)
