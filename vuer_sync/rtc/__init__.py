"""vuer_sync.rtc -- a convergent CRDT scene-graph store (the seed document's API).

>>> from vuer_sync.rtc import create_graph
>>> a, b = create_graph("alice"), create_graph("bob")
>>> a.edit({"otype": "node.insert", "key": "", "path": "children",
...         "value": {"key": "obj", "tag": "Mesh", "health": 100}})
>>> b.receive(a.commit("create obj"))
True
>>> a.edit({"otype": "number.add", "key": "obj", "path": "health", "value": -25})
>>> b.edit({"otype": "number.add", "key": "obj", "path": "health", "value": -10})
>>> ma, mb = a.commit(), b.commit()
>>> a.receive(mb), b.receive(ma)
(True, True)
>>> [s.get_state().graph.nodes["obj"].get_property("health") for s in (a, b)]
[65, 65]

Modules: :mod:`.ops` (op rules), :mod:`.text` (text CRDT), :mod:`.tree` (structure),
:mod:`.register` (incremental fold with rollback), :mod:`.graph` (replica and low-level
apply), :mod:`.store` (client store), :mod:`.wire` (messages/envelopes), :mod:`.relay`
(server core), :mod:`.journal` (the relay's record order), :mod:`.snapshot`,
:mod:`.sessions`.  See ``docs/rtc.md``.
"""

from __future__ import annotations

from .common import DEFAULT_UNDO_WINDOW
from .graph import (
    SceneGraph,
    SceneNode,
    apply_message,
    apply_message_mut,
    apply_messages,
    apply_operation,
    create_empty_graph,
)
from .journal import JournalSink, MemoryJournal, RelayEffects, RelayJournal, apply_record
from .ops import OTYPES
from .relay import RelayCore, RelayResult
from .snapshot import dump_graph, load_graph
from .store import (
    ClientState,
    EditBuffer,
    GraphStore,
    JournalEntry,
    cancel_edits,
    clone_state,
    commit_edits,
    compact,
    create_graph,
    create_initial_state,
    get_unacked_messages,
    on_edit,
    on_remote_message,
    on_server_ack,
    rebuild_graph,
    redo,
    undo,
)
from .text import TextSeq
from .wire import (
    CRDTMessage,
    WireError,
    ack_envelope,
    broadcast_envelope,
    crdt_envelope,
    error_envelope,
    pack,
    parse_message,
    retire_envelope,
    state_envelope,
    to_wire,
    unpack,
)

__all__ = [
    "DEFAULT_UNDO_WINDOW",
    "OTYPES",
    "CRDTMessage",
    "ClientState",
    "EditBuffer",
    "GraphStore",
    "JournalEntry",
    "JournalSink",
    "MemoryJournal",
    "RelayCore",
    "RelayEffects",
    "RelayJournal",
    "RelayResult",
    "SceneGraph",
    "SceneNode",
    "TextSeq",
    "WireError",
    "ack_envelope",
    "apply_message",
    "apply_message_mut",
    "apply_messages",
    "apply_operation",
    "apply_record",
    "broadcast_envelope",
    "cancel_edits",
    "clone_state",
    "commit_edits",
    "compact",
    "create_empty_graph",
    "create_graph",
    "create_initial_state",
    "crdt_envelope",
    "dump_graph",
    "error_envelope",
    "get_unacked_messages",
    "load_graph",
    "on_edit",
    "on_remote_message",
    "on_server_ack",
    "pack",
    "parse_message",
    "rebuild_graph",
    "redo",
    "retire_envelope",
    "state_envelope",
    "to_wire",
    "undo",
    "unpack",
]
