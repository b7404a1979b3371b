"""The producer's side of a room before Redis: operations waiting to be published, coalesced
latest-wins while the producer is ahead of Redis (pure: no Redis, no threads, no lock; the
link holds one around it).

The keying rules are :mod:`vuer_sync.coalesce`'s, the same as a client's outbox: ``UPDATE``
and root ``UPSERT`` messages of plain nodes merge per node and property (latest value wins);
a message with a ``redundancy_key`` replaces the waiting one with the same key; ``SET``,
``ADD``, ``REMOVE``, an ``UPSERT`` into a parent, custom events and ``atomic()`` groups are
barriers: nothing merges across them, so the order of structural changes is kept.

>>> from vuer_sync import codec
>>> b = Batcher()
>>> def update(key, **props):
...     msg = {"etype": "UPDATE", "data": {"nodes": [{"key": key, **props}]}}
...     b.add(codec.encode(msg), msg)
>>> update("arm", x=1, y=2); update("arm", x=3); update("hand", z=0)
>>> b.stats["coalesced"], len(b)
(1, 2)
>>> [codec.unpack(p)["data"]["nodes"] for p in b.take()]
[[{'key': 'arm', 'x': 3, 'y': 2}], [{'key': 'hand', 'z': 0}]]
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .. import codec
from ..coalesce import CoalesceKey, MergeInfo, MessageCoalescing, NodeProps, merge_info
from .entry import EXCLUDE, GROUP, KEYED, Item, encode_entry, item_ops, item_size

__all__ = ["Batcher", "merge_backlog", "split_batches"]

_POLICY = MessageCoalescing(codec.encode, codec.unpack)


class _Waiting:
    """One waiting message (read by the policy's ``merge`` as a queued message)."""

    __slots__ = ("decoded", "exclude", "payload", "props", "rkey")

    def __init__(self, payload: Any, props: Optional[NodeProps], rkey: Optional[str],
                 exclude: Optional[Tuple[str, str]] = None):
        self.payload = payload
        self.decoded: Optional[Dict[str, Any]] = None
        self.props = props
        self.rkey = rkey
        self.exclude = exclude

    def item(self) -> Item:
        data = bytes(self.payload)
        if self.exclude is not None:
            return (EXCLUDE, data, self.rkey, *self.exclude)
        return data if self.rkey is None else (KEYED, data, self.rkey)


class Batcher:
    """Operations not yet handed to Redis, in order, coalesced as the module says.

    ``add``/``add_group`` queue; ``take`` hands everything waiting over (as stream items) and
    starts a new batch. ``stats``: ``ops`` (accepted), ``coalesced`` (merged into a waiting
    one), ``items`` (taken). ``nbytes``: the size of what is waiting.
    """

    def __init__(self) -> None:
        self._items: List[Any] = []  # _Waiting | Item (groups)
        self._open: Dict[CoalesceKey, _Waiting] = {}  # the mergeable waiting message per key
        self._subject: Dict[str, CoalesceKey] = {}  # node key -> the key that last named it
        self.accepted = 0  # ops accepted so far (coalesced ones included)
        self.nbytes = 0  # the payload bytes waiting
        self.stats: Dict[str, int] = {"ops": 0, "coalesced": 0, "items": 0}

    def __len__(self) -> int:
        return len(self._items)

    def _barrier(self) -> None:
        if self._open:
            self._open.clear()
            self._subject.clear()

    def add(self, payload: Any, msg: Optional[Dict[str, Any]], rkey: Optional[str] = None,
            info: Optional[MergeInfo] = None, exclude: Optional[Tuple[str, str]] = None
            ) -> None:
        """Queue one encoded message (``msg``: its map; ``info``: its merge info if known;
        ``exclude``: ``(node, session id)`` not to send it to; such a message never
        merges)."""
        self.accepted += 1
        self.stats["ops"] += 1
        self.nbytes += len(payload)
        if info is None:
            info = merge_info(msg if msg is not None else _POLICY.peek(payload), rkey)
        key, props = info
        if key is None or exclude is not None:
            self._barrier()
            self._items.append(_Waiting(payload, None, rkey, exclude))
            return
        waiting = self._open.get(key)
        subjects = key[1]
        if waiting is not None and all(self._subject.get(s) == key for s in subjects):
            self.nbytes -= len(waiting.payload) + len(payload)
            waiting.payload, waiting.decoded, waiting.props = _POLICY.merge(
                key, waiting, payload, props)
            self.nbytes += len(waiting.payload)
            if rkey is not None:
                waiting.rkey = rkey
            self.stats["coalesced"] += 1
            return
        w = _Waiting(payload, props, rkey)
        for s in subjects:  # another kind of message about this node: no merging across it
            other = self._subject.get(s)
            if other is not None and other != key:
                self._open.pop(other, None)
            self._subject[s] = key
        self._open[key] = w
        self._items.append(w)

    def add_group(self, payloads: List[Any],
                  excludes: Optional[List[Optional[Tuple[str, str]]]] = None) -> None:
        """Queue an ``atomic()`` group: its messages stay back to back, nothing merges into
        or across it. ``excludes``: per message, ``None`` or the ``(node, session id)`` not
        to send it to."""
        if not payloads:
            return
        self.accepted += len(payloads)
        self.stats["ops"] += len(payloads)
        self.nbytes += sum(len(p) for p in payloads)
        self._barrier()
        data = [bytes(p) for p in payloads]
        if excludes is not None and any(ex is not None for ex in excludes):
            self._items.append((GROUP, data, list(excludes)))
        else:
            self._items.append((GROUP, data))

    def take(self) -> List[Item]:
        """Everything waiting, as stream items, in order; the batcher is empty after."""
        items = self._items
        self._items = []
        self.nbytes = 0
        self._barrier()
        out = [w.item() if isinstance(w, _Waiting) else w for w in items]
        self.stats["items"] += len(out)
        return out


def merge_backlog(batches: List[List[Item]]) -> Tuple[List[Item], int]:
    """Several stream entries' items (a consumer's backlog, in stream order) as one list,
    coalesced by the same rules as a producer's: latest wins per node and property, never
    across ``SET``/``ADD``/``REMOVE``, an ``atomic()`` group or a message with an excluded
    session. Returns the items and how many messages were merged away.

    >>> from vuer_sync import codec
    >>> def update(key, x):
    ...     return codec.encode({"etype": "UPDATE", "data": {"nodes": [{"key": key, "x": x}]}})
    >>> items, merged = merge_backlog([[update("a", 1)], [update("a", 2), update("b", 0)]])
    >>> merged, [codec.unpack(p)["data"]["nodes"] for p in items]
    (1, [[{'key': 'a', 'x': 2}], [{'key': 'b', 'x': 0}]])
    """
    b = Batcher()
    for items in batches:
        for it in items:
            if isinstance(it, bytes):
                b.add(it, None)
            elif it[0] == GROUP:
                b.add_group(it[1], it[2] if len(it) > 2 else None)
            elif it[0] == KEYED:
                b.add(it[1], None, it[2])
            else:
                b.add(it[1], None, it[2], exclude=(it[3], it[4]))
    return b.take(), b.stats["coalesced"]


def split_batches(items: List[Item], producer: str, first_seq: int,
                  max_bytes: int = 1 << 20, max_ops: int = 4096
                  ) -> List[Tuple[int, Dict[str, Any], int]]:
    """``items`` cut into stream entries of at most ``max_bytes`` / ``max_ops`` each (an
    item larger than that is an entry of its own), numbered from ``first_seq``. Returns
    ``(seq, XADD fields, ops)`` per entry.

    >>> [(s, n) for s, _, n in split_batches([b"a" * 10] * 5, "p", 1, max_bytes=25)]
    [(1, 2), (2, 2), (3, 1)]
    """
    out: List[Tuple[int, Dict[str, Any], int]] = []
    batch: List[Item] = []
    size = ops = 0
    seq = first_seq
    for it in items:
        n, k = item_size(it), item_ops(it)
        if batch and (size + n > max_bytes or ops + k > max_ops):
            out.append((seq, encode_entry(producer, seq, batch), ops))
            seq += 1
            batch, size, ops = [], 0, 0
        batch.append(it)
        size += n
        ops += k
    if batch:
        out.append((seq, encode_entry(producer, seq, batch), ops))
    return out
