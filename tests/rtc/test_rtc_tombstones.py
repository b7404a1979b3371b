"""Seed fidelity (issue 21, part 1): ``node.remove`` is a soft delete (tombstone) and
``array.remove`` removes every equal element, as in vuer-rtc 0.0.2."""

from __future__ import annotations

from typing import Any, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtc_strategies import Net, assert_converged

from vuer_sync.rtc import (
    CRDTMessage,
    RelayCore,
    apply_operation,
    create_empty_graph,
    create_graph,
    dump_graph,
    load_graph,
)


def ins(key: str, parent: str = "", **props: Any) -> dict:
    return {"otype": "node.insert", "key": parent, "path": "children",
            "value": dict({"key": key, "tag": "Mesh"}, **props)}


def rm(key: str, parent: str = "") -> dict:
    return {"otype": "node.remove", "key": parent, "path": "children", "value": key}


def mv(key: str, new_parent: str) -> dict:
    return {"otype": "node.move", "key": "", "path": "children",
            "value": {"nodeKey": key, "newParent": new_parent}}


def op(otype: str, key: str, path: str, value: Any = None, **extra: Any) -> dict:
    d = {"otype": otype, "key": key, "path": path, **extra}
    if value is not None:
        d["value"] = value
    return d


def ec(store, *ops: dict) -> CRDTMessage:
    for o in ops:
        store.edit(o)
    m = store.commit()
    assert m is not None
    return m


def graph(store):
    return store.get_state().graph


# -- node.remove: tombstone -----------------------------------------------------------------
def test_remove_keeps_a_tombstone_with_its_properties():
    s = create_graph("alice", epoch="")
    ec(s, ins("scene"), ins("cube", "scene", hp=10, pos=[0, 1, 0]), ins("kid", "cube"))
    ec(s, op("number.add", "cube", "hp", 5))
    m = ec(s, rm("cube", "scene"))
    g = graph(s)
    n = g.nodes["cube"]
    assert n.deleted is True and n.deleted_at == m.ts  # the removing message's ts
    assert n.properties == {"hp": 15, "pos": [0, 1, 0]}  # as they were at the removal
    assert n.parent == "scene" and n.children == ["kid"]  # descendants untouched
    assert g.is_deleted("cube") and g.get_node("cube", include_deleted=False) is None
    # live views skip it (and its now unreachable subtree)
    assert g.children_of("scene") == [] and g.nodes["scene"].children == []
    assert g.reachable() == ["scene"]
    assert "cube" not in g.live_nodes() and "kid" in g.live_nodes()
    assert g.roots() == ["scene"]
    assert n.to_dict()["deleted"] is True and "deleted" in repr(n)
    assert g.canonical()["nodes"]["cube"]["deleted"] is True
    assert g.nodes["scene"].deleted is False and g.nodes["scene"].deleted_at is None


def test_edits_to_a_deleted_node_are_ignored_and_undo_brings_it_back():
    a, b = create_graph("alice", epoch=""), create_graph("bob", epoch="")
    b.receive(ec(a, ins("p"), ins("n", "p", hp=1, t="x")))
    b.receive(ec(a, rm("n", "p")))
    mb = ec(b, op("number.add", "n", "hp", 5), op("string.set", "n", "t", "late"),
            op("text.init", "n", "doc", "hi"), op("array.push", "n", "arr", 1))
    a.receive(mb)
    for s in (a, b):
        n = graph(s).nodes["n"]
        assert n.deleted and n.properties == {"hp": 1, "t": "x"}
        assert graph(s).stats["rejected"] == 0  # ignored, not rejected
    # undo the remove (alice's newest message): back, with the edits that were ignored
    b.receive(a.undo())
    for s in (a, b):
        n = graph(s).nodes["n"]
        assert not n.deleted and n.deleted_at is None
        assert n.properties == {"hp": 6, "t": "late", "doc": "hi", "arr": [1]}
        assert graph(s).nodes["p"].children == ["n"]
    b.receive(a.redo())
    assert graph(a).canonical(True) == graph(b).canonical(True)
    assert graph(a).nodes["n"].deleted and graph(a).nodes["n"].properties == {"hp": 1, "t": "x"}


def test_edit_before_the_remove_in_the_total_order_still_counts():
    """Concurrent edit and remove: the one with the smaller (lt, client) goes first, on
    every replica; the remove still wins (the node ends deleted everywhere)."""
    for editor, remover in (("alice", "bob"), ("bob", "alice")):
        peers = {n: create_graph(n, epoch="") for n in ("alice", "bob")}
        peers["bob"].receive(ec(peers["alice"], ins("n", hp=1)))
        me = ec(peers[editor], op("number.add", "n", "hp", 10))
        mr = ec(peers[remover], rm("n"))
        assert me.lt == mr.lt
        peers[remover].receive(me)
        peers[editor].receive(mr)
        hp = 11 if editor == "alice" else 1  # alice < bob: alice's op sorts first
        for s in peers.values():
            n = graph(s).nodes["n"]
            assert n.deleted and n.properties["hp"] == hp
        assert graph(peers["alice"]).canonical(True) == graph(peers["bob"]).canonical(True)


def test_same_message_edit_then_remove_and_remove_then_edit():
    s = create_graph("alice", epoch="")
    ec(s, ins("a", v=0), ins("b", v=0))
    s.edit(op("number.set", "a", "v", 1))  # before the remove in the message: applies
    s.edit(rm("a"))
    s.edit(rm("b"))
    s.edit(op("number.set", "b", "v", 1))  # after it: ignored
    pending = {k: graph(s).nodes[k].properties["v"] for k in "ab"}
    m = s.commit()
    g = graph(s)
    assert pending == {"a": 1, "b": 0}
    assert g.nodes["a"].properties["v"] == 1 and g.nodes["b"].properties["v"] == 0
    assert g.nodes["a"].deleted_at == m.ts  # the committed message's ts
    peer = create_graph("observer", epoch="")
    for e in s.get_state().journal:
        peer.receive(e.msg)
    assert graph(peer).canonical(True) == g.canonical(True)
    s2 = create_graph("bob", epoch="")
    s2.edit(ins("x", v=1))
    s2.edit(rm("x"))
    s2.cancel()
    assert "x" not in graph(s2).nodes and not graph(s2).tree.rmkey


def test_remove_vs_move_and_insert_under_converge_deleted_everywhere():
    a, b, c = (create_graph(n, epoch="") for n in ("alice", "bob", "carol"))
    base = ec(a, ins("P"), ins("Q"), ins("X", "P"))
    b.receive(base)
    c.receive(base)
    ms = [ec(a, rm("X")), ec(b, mv("X", "Q")), ec(c, ins("kid", "X", v=1))]
    for s in (a, b, c):
        for m in ms:
            s.receive(m)
    first = graph(a).canonical(True)
    for s in (b, c):
        assert graph(s).canonical(True) == first
    for s in (a, b, c):
        g = graph(s)
        assert g.nodes["X"].deleted and "X" not in g.reachable()
        assert "kid" in g.nodes and "kid" not in g.reachable()  # under a tombstone: hidden
        assert g.children_of("P") == [] and g.children_of("Q") == []


def test_remove_before_insert_and_move_under_a_deleted_node():
    g = create_empty_graph()
    apply_operation(g, rm("ghost"))  # removed before it was ever inserted
    apply_operation(g, ins("ghost", v=1))  # keys are permanent: ignored
    assert "ghost" not in g.nodes and g.is_deleted("ghost")
    apply_operation(g, ins("a"))
    apply_operation(g, ins("b"))
    apply_operation(g, rm("b"))
    apply_operation(g, mv("a", "b"))  # cannot move under a tombstone
    apply_operation(g, mv("b", "a"))  # a tombstone cannot move
    assert g.nodes["a"].parent == "" and g.nodes["b"].parent == "" and g.roots() == ["a"]


def test_tombstones_survive_compaction_snapshot_and_late_join():
    relay = RelayCore()
    a = create_graph("alice", epoch="")

    def send(m):
        res = relay.submit({"mtype": "crdt", "msg": m}, conn="A")
        a.ack(m.id)
        return res

    send(ec(a, ins("n", hp=3)))
    rmsg = ec(a, rm("n"))
    send(rmsg)
    for _ in range(5):  # move the stability horizon on
        send(ec(a, op("number.add", "n", "hp", 1)))
    late = create_graph("late", epoch="", initial_state=relay.join(conn="B"))
    for g in (graph(a), graph(late)):
        n = g.nodes["n"]
        assert n.deleted and n.deleted_at == rmsg.ts and n.properties == {"hp": 3}
    # a fully compacted graph round-trips through the snapshot format
    g = create_empty_graph()
    apply_operation(g, ins("k", v=1))
    apply_operation(g, rm("k"), {"lt": 5})
    g.truncate(lambda r: True)
    back = load_graph(dump_graph(g))
    assert back.canonical(True) == g.canonical(True)
    apply_operation(back, op("number.set", "k", "v", 9))  # still ignored after loading
    assert back.nodes["k"].properties == {"v": 1}


def _edit_after_a_remove_then_compact(undo_first: bool):
    """bob inserts ``n``; alice removes it (``lt`` 2, and with ``undo_first`` undoes that at
    once); bob concurrently edits ``n`` (``lt`` 2: sorts after the remove, so the edit is
    ignored while the remove counts); bob seals and compacts once he has alice's messages.
    bob's edit is then final, alice's remove is not (it is in her undo window)."""
    peers = ["alice", "bob"]
    a = create_graph("alice", epoch="", peers=peers)
    b = create_graph("bob", epoch="", peers=peers)
    mi = ec(b, ins("n", hp=1))
    b.ack(mi.id)
    a.receive(mi)
    from_a = [ec(a, rm("n"))]
    if undo_first:
        from_a.append(a.undo())
    me = ec(b, op("number.add", "n", "hp", 5), op("array.set", "n", "arr", []))
    assert me.lt == from_a[0].lt
    b.ack(me.id)
    for m in from_a:
        b.receive(m)
    b.heartbeat(seal=True)
    b.compact()
    a.receive(me)
    return a, b


def test_compaction_keeps_an_edit_that_undoing_the_remove_brings_back():
    """Regression (a Hypothesis example of test_replicas_converge): bob's compaction
    dropped his final edit of the removed node while it was ignored, so undoing the
    remove afterwards brought the node back without it on bob only."""
    a, b = _edit_after_a_remove_then_compact(undo_first=False)
    for s in (a, b):
        n = graph(s).nodes["n"]
        assert n.deleted and n.properties == {"hp": 1}
    b.receive(a.undo())
    for s in (a, b):
        n = graph(s).nodes["n"]
        assert not n.deleted and n.properties == {"hp": 6, "arr": []}
    assert graph(b).canonical(True) == graph(a).canonical(True)
    b.compact()
    assert graph(b).canonical(True) == graph(a).canonical(True)


def test_compaction_keeps_an_edit_that_redoing_the_remove_ignores_again():
    a, b = _edit_after_a_remove_then_compact(undo_first=True)
    for s in (a, b):
        n = graph(s).nodes["n"]
        assert not n.deleted and n.properties == {"hp": 6, "arr": []}
    b.receive(a.redo())
    for s in (a, b):
        n = graph(s).nodes["n"]
        assert n.deleted and n.properties == {"hp": 1}
    assert graph(b).canonical(True) == graph(a).canonical(True)


def test_compaction_keeps_an_edit_of_a_never_inserted_key_until_its_remove_is_final():
    """The minimal example of test_replicas_converge: the removed key was never inserted,
    so the edit shows only in the property registers (``canonical(True)``)."""
    net = Net(2, "fifo")
    for act in MINIMAL_REMOVE_UNDO_COMPACT:
        net.step(act)
    assert_converged(net, 0)
    for s in net.stores:
        assert graph(s).canonical(True)["registers"] == {"c\x00array": []}


MINIMAL_REMOVE_UNDO_COMPACT = [
    ("ec", 0, rm("c")),
    ("undo", 0, None),
    ("ec", 1, op("array.set", "c", "array", [])),
    ("ack", 1, None),
    ("deliver", 0, 0),
    ("heartbeat", 1, True),
    ("compact", 1, None),
]


# -- property test: concurrent remove with edit, move, insert-under ---------------------------
NODE = "n"
tomb_op = st.one_of(
    st.builds(lambda v: op("number.add", NODE, "hp", v), st.integers(-3, 3)),
    st.builds(lambda v: op("string.set", NODE, "s", v), st.sampled_from(["x", "y"])),
    st.builds(lambda v: op("array.push", NODE, "arr", v), st.integers(0, 2)),
    st.builds(lambda v: op("array.remove", NODE, "arr", v), st.integers(0, 2)),
    st.builds(lambda p: mv(NODE, p), st.sampled_from(["", "P", "Q"])),
    st.builds(lambda p: mv("Q", p), st.sampled_from(["", NODE])),
    st.builds(lambda k: ins(k, NODE, hp=1), st.sampled_from(["k1", "k2"])),
    st.builds(lambda pos: op("text.insert", NODE, "t", "ab", position=pos), st.integers(0, 3)),
    st.just(rm(NODE)),
    st.just(rm("P")),
)
tomb_action = st.one_of(
    st.tuples(st.just("ec"), st.integers(0, 2), tomb_op),
    st.tuples(st.just("ec"), st.integers(0, 2), tomb_op),
    st.tuples(st.just("edit"), st.integers(0, 2), tomb_op),
    st.tuples(st.just("commit"), st.integers(0, 2), st.none()),
    st.tuples(st.just("undo"), st.integers(0, 2), st.none()),
    st.tuples(st.just("redo"), st.integers(0, 2), st.none()),
    st.tuples(st.just("cancel"), st.integers(0, 2), st.none()),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 10_000)),
    st.tuples(st.just("deliver"), st.integers(0, 2), st.integers(0, 10_000)),
    st.tuples(st.just("compact"), st.integers(0, 2), st.none()),
    st.tuples(st.just("ack"), st.integers(0, 2), st.none()),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mode=st.sampled_from(["fifo", "any"]), steps=st.lists(tomb_action, max_size=60),
       seed=st.integers(0, 2**16), remover=st.integers(0, 2))
def test_concurrent_remove_converges_with_the_node_deleted_everywhere(mode, steps, seed,
                                                                       remover):
    net = Net(3, mode)
    seed_store = net.stores[0]
    seed_store.edit(ins("P"))
    seed_store.edit(ins("Q"))
    seed_store.edit(ins(NODE, "P", hp=0, t=""))
    seed_store.edit(op("text.init", NODE, "t"))
    seed_store.commit()
    seed_store.heartbeat(seal=True)  # the setup can no longer be undone
    for act in steps:
        net.step(act)
    # a final remove nobody undoes, concurrent with whatever is still in flight
    r = net.stores[remover]
    r.edit(rm(NODE))
    r.commit()
    assert_converged(net, seed)
    for s in net.stores:
        g = graph(s)
        assert g.nodes[NODE].deleted and NODE not in g.reachable()
        assert NODE not in g.live_nodes() and NODE not in g.roots()
        assert g.nodes[NODE].deleted_at is not None


# -- array.remove -------------------------------------------------------------------------------
def test_array_remove_removes_every_equal_element_like_vuer_rtc():
    a, b = create_graph("alice", epoch=""), create_graph("bob", epoch="")
    b.receive(ec(a, ins("n", items=[2, 1, 2, 3, 2])))
    m = ec(a, op("array.remove", "n", "items", 2))
    b.receive(m)
    for s in (a, b):
        assert graph(s).nodes["n"].get_property("items") == [1, 3]
    assert "all" not in m.ops[0]
    # "all": true is accepted (and dropped: it is not on the vuer-rtc wire)
    m2 = ec(a, op("array.remove", "n", "items", 3, all=True))
    assert "all" not in m2.ops[0] and graph(a).nodes["n"].get_property("items") == [1]
    b.receive(m2)
    with pytest.raises(ValueError, match="every equal element"):
        a.edit(op("array.remove", "n", "items", 1, all=False))
    # a legacy first-only flag on a received op is ignored: same result as vuer-rtc
    legacy = CRDTMessage(id="old:1", client="old", lt=99,
                         ops=[op("array.remove", "n", "items", 1, all=False)])
    b.receive(legacy)
    assert graph(b).nodes["n"].get_property("items") == []


def test_array_remove_rollback_restores_every_position():
    a = create_graph("alice", epoch="")
    ec(a, ins("n", items=["x", 1, "x", 2, "x"]))
    ec(a, op("array.remove", "n", "items", "x"))
    assert graph(a).nodes["n"].get_property("items") == [1, 2]
    a.undo()
    assert graph(a).nodes["n"].get_property("items") == ["x", 1, "x", 2, "x"]
    late: List[CRDTMessage] = []
    b = create_graph("bob", epoch="")
    for e in a.get_state().journal:
        late.append(e.msg)
    for m in reversed(late):
        b.receive(m)
    assert graph(b).canonical(True) == graph(a).canonical(True)
