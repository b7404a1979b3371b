"""``SceneGraph.rekey``: moving a message to another Lamport time leaves the graph exactly as
if it had been integrated there in the first place (what a store does when the relay holds
its own re-stamped message at the old copy's ``lt``: ``test_rtc_rejoin.py``)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Dict, List

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rtc_strategies import Net, scenario

from vuer_sync.rtc import CRDTMessage, RelayCore, create_graph
from vuer_sync.rtc.graph import SceneGraph


def state_of(g: SceneGraph) -> Dict[str, Any]:
    """What must not depend on when the message moved: the graph, each message's undone
    flag and Lamport time, the undo/redo bookkeeping."""
    return {
        "graph": g.canonical(True),
        "msgs": {mid: (r.lt, r.excluded) for mid, r in sorted(g.msgs.items())},
        "metas": {t: sorted(ms) for t, ms in sorted(g.metas.items())},
    }


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(n=st.integers(2, 3), steps=scenario(20, 80), pick=st.integers(0, 10_000),
       lt=st.integers(0, 10_000), at=st.integers(0, 10_000), seed=st.integers(0, 2**16))
def test_rekey_equals_integrating_at_that_lt(n, steps, pick, lt, at, seed):
    net = Net(n, "any", peers=False)
    for act in steps:
        net.step(act)
    net.settle(seed, ack_all=False)
    msgs: List[CRDTMessage] = net.messages()
    assume(msgs)
    target = msgs[pick % len(msgs)]
    new_lt = lt % (max(m.lt for m in msgs) + 3)
    order = list(range(len(msgs)))
    random.Random(seed).shuffle(order)

    truth = SceneGraph()
    for i in order:
        truth.integrate(dataclasses.replace(msgs[i], lt=new_lt) if msgs[i] is target
                        else msgs[i])
    moved = SceneGraph()
    first = order.index(msgs.index(target))
    move_at = first + at % (len(order) - first)  # once it is there, before the rest or not
    for pos, i in enumerate(order):
        moved.integrate(msgs[i])
        if pos == move_at:
            lt_before = moved.lt
            assert moved.rekey(moved.msgs[target.id], new_lt)
            assert moved.lt == max(lt_before, new_lt)  # the clock never goes back
    assert moved.msgs[target.id].msg.lt == new_lt
    assert state_of(moved) == state_of(truth)
    replayed = moved.copy()
    replayed.replay_all()
    assert replayed.canonical(True) == truth.canonical(True)
    assert moved.stats["below_horizon"] == 0


def test_rekey_of_an_undo_decides_its_target_again():
    """A re-keyed ``meta.undo`` gets its new key in the undo bookkeeping: here it moves
    below the redo of the same message, which then wins."""
    a = create_graph("alice", epoch="")
    a.edit({"otype": "node.insert", "key": "", "path": "children",
            "value": {"key": "n", "hp": 0}})
    a.commit()
    a.edit({"otype": "number.add", "key": "n", "path": "hp", "value": 5})
    m = a.commit()
    undo = a.undo()
    redo = a.redo()
    assert m is not None and undo is not None and redo is not None
    # the undo is re-stamped above the redo: the message stays undone
    g = SceneGraph()
    for msg in (*[r.msg for r in a.get_state().graph.msgs.values() if r.id != undo.id],
                dataclasses.replace(undo, lt=redo.lt + 5)):
        g.integrate(msg)
    assert g.msgs[m.id].excluded and g.nodes["n"].get_property("hp") == 0
    assert g.rekey(g.msgs[undo.id], undo.lt)  # back where it was: the redo wins
    assert not g.msgs[m.id].excluded and g.nodes["n"].get_property("hp") == 5
    assert g.canonical(True) == a.get_state().graph.canonical(True)
    assert state_of(g)["metas"] == state_of(a.get_state().graph)["metas"]


def test_a_compacted_or_pending_record_does_not_move():
    relay = RelayCore()
    a = create_graph("alice", epoch="", undo_window=1, initial_state=relay.join(conn="A"))
    a.edit({"otype": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
    m = a.commit()
    a.receive_wire(relay.submit(m, conn="A").reply)
    a.receive_wire(relay.submit(a.heartbeat(seal=True), conn="A").reply)
    g = a.get_state().graph
    rec = g.msgs[m.id]
    assert rec.acked and a.compact() >= 1 and m.id not in g.msgs
    assert not g.rekey(rec, 0) and rec.lt == m.lt and g.stats["below_horizon"] == 0
    a.edit({"otype": "number.set", "key": "n", "path": "x", "value": 1})
    pending = a.get_state().edits.rec
    assert pending is not None and not g.rekey(pending, 1)
    assert g.nodes["n"].get_property("x") == 1


def test_a_record_compacted_in_part_does_not_move():
    """Alice's message is final, but Bob's earlier edit of one of its two properties can
    still be undone: compaction drops its entry of the other property only."""
    relay = RelayCore()
    a = create_graph("alice", epoch="", undo_window=1, initial_state=relay.join(conn="A"))
    b = create_graph("bob", epoch="", initial_state=relay.join(conn="B"))
    stores = {"A": a, "B": b}

    def send(conn: str, msg: Any) -> None:
        res = relay.submit(msg, conn=conn)
        stores[conn].receive_wire(res.reply)
        for other, s in stores.items():
            if other != conn and res.broadcast:
                s.receive_wire(res.broadcast)

    a.edit({"otype": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
    send("A", a.commit())
    b.edit({"otype": "number.set", "key": "n", "path": "y", "value": 1})
    send("B", b.commit())  # bob may undo it for a long time
    a.edit({"otype": "number.set", "key": "n", "path": "x", "value": 2})
    a.edit({"otype": "number.set", "key": "n", "path": "y", "value": 3})
    m = a.commit()
    send("A", m)
    send("A", a.heartbeat(seal=True))
    send("B", b.heartbeat())  # the horizon passes alice's message
    a.compact()
    g = a.get_state().graph
    rec = g.msgs[m.id]
    assert 0 < rec.live < len(rec.entries)
    before = g.canonical(True)
    assert not g.rekey(rec, 0) and rec.lt == m.lt and g.canonical(True) == before
