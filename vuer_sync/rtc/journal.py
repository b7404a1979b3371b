"""The relay's journal: where a room's inputs are put in their one total order.

Everything that changes a :class:`~vuer_sync.rtc.RelayCore` is a *record* (a plain,
msgpack-able dict), applied in journal order:

- ``{"k": "join", "c": conn}``: ``conn`` joined (it gets the ``state`` if it is local);
- ``{"k": "crdt", "c": conn, "m": envelope}``: a ``crdt`` envelope from ``conn``;
- ``{"k": "leave", "c": conn}``: ``conn`` left (the others get a ``retire``).

A journal takes records (:meth:`RelayJournal.append`, any thread) and hands them back, in
its order, to its sink (:meth:`JournalSink.journal_apply`). :class:`MemoryJournal` (the
default) hands each one back at once, in the caller's thread: one process, nothing
stored. A durable journal (``vuer_sync.fleet.rtc_journal.RedisRelayJournal``, a Redis
Stream per room) hands them back once the store acknowledged them, in the stream's order,
to every node of the room: their relays apply the same records in the same order, so they
agree on every ``serverSeq``, ack and ``state``. :func:`apply_record` is that pure step.

>>> from vuer_sync.rtc import RelayCore, create_graph
>>> relay = RelayCore()
>>> a = create_graph("alice", epoch="")
>>> a.edit({"otype": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
>>> fx = apply_record(relay, {"k": "crdt", "c": "A", "m": {"mtype": "crdt",
...                                                         "msg": a.commit().to_dict()}})
>>> fx.reply["mtype"], fx.broadcast["serverSeq"], fx.exclude
('ack', 1, 'A')
>>> apply_record(relay, {"k": "join", "c": "B"}, local=True).reply["serverSeq"]
1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Hashable, Optional, Protocol

from .relay import RelayCore

__all__ = ["JournalSink", "MemoryJournal", "RelayEffects", "RelayJournal", "apply_record"]


@dataclass
class RelayEffects:
    """What one record makes the relay say: ``reply`` for the record's own connection
    (an ack, an error, the joiner's ``state``) and ``broadcast`` for every other joined
    connection (``exclude``: the one not to send it to)."""

    reply: Optional[Dict[str, Any]] = None
    broadcast: Optional[Dict[str, Any]] = None
    exclude: Optional[Hashable] = None


def apply_record(relay: RelayCore, record: Dict[str, Any], local: bool = True
                 ) -> RelayEffects:
    """Apply one journal record to ``relay``. ``local``: the record's connection is served
    here (a join then builds the ``state`` envelope; elsewhere only registers it).
    ``ValueError`` for an unknown record kind."""
    kind, conn = record.get("k"), record.get("c")
    if kind == "crdt":
        res = relay.submit(record.get("m"), conn=conn)
        return RelayEffects(res.reply, res.broadcast, conn)
    if kind == "join":
        if local:
            return RelayEffects(relay.join(conn=conn))
        if conn is not None:
            relay.admit(conn)
        return RelayEffects()
    if kind == "leave":
        return RelayEffects(None, relay.leave(conn) if conn is not None else None, conn)
    raise ValueError(f"unknown relay journal record {kind!r}")


class JournalSink(Protocol):
    """The room a journal feeds (``app.rtc`` is one)."""

    def journal_apply(self, record: Dict[str, Any]) -> None:
        """Apply one record (in journal order) and send what it says to the local clients."""

    def journal_dump(self) -> bytes:
        """The relay's state (a snapshot of everything applied so far)."""

    def journal_load(self, data: bytes) -> None:
        """Replace the relay's state with a snapshot from :meth:`journal_dump`."""


class RelayJournal(Protocol):
    """Puts records in one order and hands them to the sink (see the module docstring)."""

    #: this process's id in the room ("" for a journal that is not shared)
    node_id: str

    @property
    def leader(self) -> bool:
        """This process writes what one process of the room must write (the snapshots,
        the mirror into ``app.scene``)."""

    def start(self, sink: JournalSink) -> None:
        """Load what the journal holds into ``sink``, then follow it."""

    def append(self, record: Dict[str, Any]) -> None:
        """Queue one record (returns at once)."""

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the journal."""


class MemoryJournal:
    """Today's relay: each record is applied at once, in the caller's thread; nothing is
    stored and nothing is shared.

    >>> seen = []
    >>> class Sink:
    ...     def journal_apply(self, record): seen.append(record["k"])
    >>> j = MemoryJournal(); j.start(Sink()); j.append({"k": "join", "c": 1}); seen
    ['join']
    """

    node_id = ""

    def __init__(self) -> None:
        self._sink: Any = None

    @property
    def leader(self) -> bool:
        return True

    def start(self, sink: JournalSink) -> None:
        self._sink = sink

    def append(self, record: Dict[str, Any]) -> None:
        self._sink.journal_apply(record)

    def close(self, timeout: float = 5.0) -> None:
        """Nothing runs: a no-op."""
