"""A long journal costs the cyclic GC one tracked object per entry (issue 21: throughput
flat from journal 0 to 100k *with the GC's time included*).

Every full collection walks every tracked object, so what a retained journal entry keeps
tracked is paid again and again as the journal grows. A received or committed one-op
message keeps exactly one: its :class:`MsgRecord`. Its ops are msgpack bytes, its clock a
dict of atoms, its register entry four list slots of its register, the op the register
keeps a dict of atoms (a vector's list as a tuple). These tests count with
``gc.get_objects()`` after full collections: deterministic, no timing.
"""

from __future__ import annotations

import gc
from typing import Any, Dict, List

from vuer_sync.rtc import (
    CRDTMessage,
    create_graph,
    get_unacked_messages,
    parse_message,
    rebuild_graph,
    to_wire,
)

from helpers import tracked_after

NODES = 20


def _op(i: int) -> Dict[str, Any]:
    if i % 2:
        return {"otype": "number.add", "key": f"n{i % NODES}", "path": "hp", "value": 1}
    return {"otype": "vector3.set", "key": f"n{i % NODES}", "path": "position",
            "value": [i, 0.5, 0]}


def _wire(client: str, seq: int, lt: int, ops: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"id": f"{client}:{seq}", "client": client, "clock": {client: seq}, "lt": lt,
            "ts": 1.25, "seq": seq, "ops": ops}


def _store() -> Any:
    store = create_graph("me", epoch="")
    store.receive(_wire("f", 1, 1, [
        {"otype": "node.insert", "key": "", "path": "children",
         "value": {"key": f"n{i}", "position": [0, 0, 0], "hp": 0}} for i in range(NODES)]))
    return store


def test_a_received_or_committed_message_keeps_one_tracked_object():
    n = 2000
    store = _store()
    # received as wire dicts (parse_message builds the message: the store owns it all)
    grew = tracked_after(lambda: [store.receive(_wire("f", i + 2, i + 2, [_op(i)]))
                                   for i in range(n)])
    assert grew <= n + 50, grew / n  # was 5 per entry (message, ops list, op, its list)
    # own edits, committed (the caller drops the returned message, as a sender does)
    def edit_commit() -> None:
        for i in range(n):
            store.edit(_op(i))
            store.commit()

    grew = tracked_after(edit_commit)
    assert grew <= n + 50, grew / n
    graph = store.get_state().graph
    assert len(graph.msgs) == 2 * n + 1
    assert graph.nodes["n4"].get_property("position") == [n - 16, 0.5, 0]


def test_the_frozen_message_comes_back_equal():
    store = _store()
    sent = [_wire("f", 2, 2, [_op(0), {"otype": "array.set", "key": "n1", "path": "tags",
                                        "value": [{"a": [1, None]}, "x", 2.5, True]}])]
    store.receive(sent[0])
    odd = CRDTMessage(id="f:3", client="f", lt=3, seq=3, ops=[
        {"otype": "number.set", "key": "n2", "path": "big", "value": 2**70}])
    store.receive(odd)  # msgpack cannot hold 2**70: that message keeps its ops as they are
    own = store.get_state()
    store.edit({"otype": "vector3.add", "key": "n3", "path": "position", "value": [1, 2, 3]})
    mine = store.commit("move n3")
    journal = own.journal
    assert [to_wire(e.msg) for e in journal[1:]] == [sent[0], to_wire(odd), to_wire(mine)]
    assert journal[-1].msg == mine  # rebuilt from the frozen form: equal
    assert get_unacked_messages(own) == [mine]
    assert own.graph.nodes["n2"].get_property("big") == 2**70
    assert own.graph.nodes["n3"].get_property("position") == [1, 2, 3]
    # undo re-folds from the register's op (the vector kept as a tuple): same value back
    store.undo()
    assert own.graph.nodes["n3"].get_property("position") == [0, 0, 0]
    store.redo()
    assert own.graph.nodes["n3"].get_property("position") == [1, 2, 3]
    assert rebuild_graph(own).canonical(True) == own.graph.canonical(True)


def _young_after(fn: Any) -> int:
    """Objects ``fn()`` leaves in the GC's young generation (no collection meanwhile)."""
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects(generation=0))
        fn()
        return len(gc.get_objects(generation=0)) - before
    finally:
        gc.enable()


def test_receiving_a_message_allocates_few_tracked_objects():
    """A collection of the young generation comes every 700 tracked objects allocated and
    walks each of them (and reads each object they refer to: the received message's
    strings and numbers, cold in a large heap). A one-op message received allocates its
    record and its register key, and for a vector op the op and its inverse as flat
    tuples of atoms: 3 on average here, was 6 (the record's ordering key, a tuple of its
    cold fields, a nested tuple for the vector, a tuple for a number's inverse)."""
    n = 2000
    store = _store()
    msgs = [parse_message(_wire("f", i + 2, i + 2, [_op(i)])) for i in range(n)]
    young = _young_after(lambda: [store.receive(m) for m in msgs])
    assert young <= 3.2 * n, young / n
    graph = store.get_state().graph
    assert graph.nodes["n4"].get_property("position") == [n - 16, 0.5, 0]
    assert graph.nodes["n3"].get_property("hp") == n // NODES
    # an undo of a number op restores the bare old value it kept
    store.edit({"otype": "number.add", "key": "n3", "path": "hp", "value": 5})
    store.commit()
    assert graph.nodes["n3"].get_property("hp") == n // NODES + 5
    store.undo()
    assert graph.nodes["n3"].get_property("hp") == n // NODES
    assert rebuild_graph(store.get_state()).canonical(True) == graph.canonical(True)
