"""The room's Redis key names and the stream entry format (pure: no Redis, no threads).

One stream entry is one batch of already-encoded Vuer scene messages (the same msgpack bytes
a websocket client receives), written by one producer, numbered per producer. Its fields:

- ``v``: the format version (``1``);
- ``p``: the producer id (unique per producing process and link);
- ``s``: the producer's sequence number of this entry (1, 2, 3, ...: a consumer skips an
  entry whose number it has already applied, so a batch sent twice after a lost
  acknowledgement is applied once);
- ``m``: the batch, msgpack: a list of items, each one of

  - ``bytes``: one encoded message;
  - ``[1, [bytes, ...]]``: an ``atomic()`` group, delivered back to back; with a third
    element, ``[1, [bytes, ...], [ex, ...]]``, each message's ``ex`` is nil or the
    ``[node, sid]`` of a session not to send it to (``exclude=`` inside ``atomic()``);
  - ``[2, bytes, key]``: one message with a ``redundancy_key`` (``key``);
  - ``[3, bytes, key, node, sid]``: one message not to be sent to the session ``sid`` of
    the node ``node`` (``app.broadcast(event, exclude=session)``; ``key`` may be nil);
- ``seed`` (only in the entry that re-seeds a room Redis lost): the producer sequence
  numbers, msgpack, that the entry's one message (a ``SET`` of a node's scene) reflects.

>>> e = encode_entry("node-a", 7, [b"\\x81\\xa1a\\x01", (GROUP, [b"x", b"y"])])
>>> sorted(e)
['m', 'p', 's', 'v']
>>> d = decode_entry({k.encode(): v for k, v in e.items()})
>>> d.producer, d.seq, d.items
('node-a', 7, [b'\\x81\\xa1a\\x01', (1, [b'x', b'y'])])
>>> RoomKeys("lab").log
'vuer_sync:{lab}:log'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple, Union

import msgpack

__all__ = ["EXCLUDE", "FORMAT", "GROUP", "KEYED", "Entry", "Item", "RoomKeys", "check_room",
           "decode_entry", "encode_entry", "item_ops", "item_size"]

FORMAT = 1
GROUP = 1  # item kind: an atomic() group
KEYED = 2  # item kind: a message with a redundancy key
EXCLUDE = 3  # item kind: a message not for one session of one node

# bytes | (GROUP, [bytes, ...]) | (GROUP, [bytes, ...], [None | (node, sid), ...])
# | (KEYED, bytes, key) | (EXCLUDE, bytes, key, node, sid)
Item = Union[bytes, Tuple[Any, ...]]

_ROOM = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,128}$")


def check_room(room: str) -> str:
    """``room`` if it is a valid room name (1-128 of ``A-Z a-z 0-9 _ . : @ / + = -``), else
    ``ValueError``. Braces are excluded: the name goes inside a Redis Cluster hash tag.

    >>> check_room("lab-1")
    'lab-1'
    """
    if not isinstance(room, str) or not _ROOM.match(room):
        raise ValueError(f"invalid fleet room name {room!r}: 1-128 characters of "
                         "A-Z a-z 0-9 _ . : @ / + = -")
    return room


class RoomKeys:
    """The Redis keys of one room. Every key carries the room as a hash tag (``{room}``), so
    in a Redis Cluster they all live on one shard (multi-key scripts work).

    >>> k = RoomKeys("lab")
    >>> k.log, k.snapshot, k.leader, k.nodes
    ('vuer_sync:{lab}:log', 'vuer_sync:{lab}:snapshot', 'vuer_sync:{lab}:leader', \
'vuer_sync:{lab}:nodes')
    """

    __slots__ = ("epoch", "leader", "log", "nodes", "prefix", "room", "snapshot", "token")

    def __init__(self, room: str):
        self.room = check_room(room)
        self.prefix = f"vuer_sync:{{{room}}}"
        self.log = f"{self.prefix}:log"  # the stream of batches
        self.snapshot = f"{self.prefix}:snapshot"  # hash: id, data, seqs, time, trimmed
        self.leader = f"{self.prefix}:leader"  # the snapshot writer's lease (SET NX PX)
        self.nodes = f"{self.prefix}:nodes"  # set: the ids of the nodes that heartbeat
        self.epoch = f"{self.prefix}:epoch"  # a token: gone when Redis lost the room
        self.token = f"{self.prefix}:token"  # the browser-facing token every node requires

    def inbox(self, node_id: str) -> str:
        """The stream of requests for one node (calls on the sessions connected to it)."""
        return f"{self.prefix}:inbox:{node_id}"

    def reply(self, request_id: str) -> str:
        """The list that carries the answer to one request."""
        return f"{self.prefix}:reply:{request_id}"

    def node(self, node_id: str) -> str:
        """The key of one node's heartbeat (its sessions; expires when it stops).

        >>> RoomKeys("lab").node("host:1:ab")
        'vuer_sync:{lab}:node:host:1:ab'
        """
        return f"{self.prefix}:node:{node_id}"


@dataclass
class Entry:
    """A decoded stream entry."""

    producer: str
    seq: int
    items: List[Item]


def encode_entry(producer: str, seq: int, items: List[Item]) -> Dict[str, Any]:
    """The XADD fields of one batch (see the module docstring)."""
    wire: List[Any] = []
    for it in items:
        if isinstance(it, bytes):
            wire.append(it)
        elif it[0] == GROUP:
            group: List[Any] = [GROUP, [bytes(p) for p in it[1]]]
            if len(it) > 2 and any(ex is not None for ex in it[2]):
                group.append([None if ex is None else list(ex) for ex in it[2]])
            wire.append(group)
        else:
            wire.append([it[0], bytes(it[1]), *it[2:]])
    return {"v": FORMAT, "p": producer, "s": seq,
            "m": msgpack.packb(wire, use_bin_type=True)}


def _field(fields: Mapping[Any, Any], name: str) -> Any:
    v = fields.get(name.encode())
    return fields.get(name) if v is None else v


def decode_entry(fields: Mapping[Any, Any]) -> Entry:
    """The batch of an entry's fields (as redis-py returns them: ``bytes`` keys).

    ``ValueError`` if the entry is not one of ours (another format version, a missing
    field)."""
    version = _field(fields, "v")
    if version is None or int(version) != FORMAT:
        raise ValueError(f"unknown fleet entry format {version!r}")
    producer = _field(fields, "p")
    seq = _field(fields, "s")
    raw = _field(fields, "m")
    if producer is None or seq is None or raw is None:
        raise ValueError("fleet entry without p/s/m")
    if isinstance(producer, bytes):
        producer = producer.decode()
    items: List[Item] = []
    for it in msgpack.unpackb(raw, raw=False, use_list=True):
        if isinstance(it, bytes):
            items.append(it)
        elif isinstance(it, list) and len(it) == 2 and it[0] == GROUP:
            items.append((GROUP, list(it[1])))
        elif isinstance(it, list) and len(it) == 3 and it[0] == GROUP \
                and len(it[2]) == len(it[1]):
            items.append((GROUP, list(it[1]), [None if ex is None else (ex[0], ex[1])
                                                for ex in it[2]]))
        elif isinstance(it, list) and len(it) == 3 and it[0] == KEYED:
            items.append((KEYED, it[1], it[2]))
        elif isinstance(it, list) and len(it) == 5 and it[0] == EXCLUDE:
            items.append((EXCLUDE, it[1], it[2], it[3], it[4]))
        else:
            raise ValueError("malformed fleet entry item")
    return Entry(producer, int(seq), items)


def item_ops(item: Item) -> int:
    """How many messages an item holds."""
    if isinstance(item, bytes):
        return 1
    return len(item[1]) if item[0] == GROUP else 1


def item_size(item: Item) -> int:
    """An item's encoded size in bytes (roughly: msgpack headers not counted)."""
    if isinstance(item, bytes):
        return len(item)
    if item[0] == GROUP:
        return sum(len(p) for p in item[1])
    return len(item[1])
