"""One scenario per reproduced vuer-rtc 0.0.2 bug (R01-R24 in rtc-semantics.md), each
with the converged state we expect written down explicitly."""

from __future__ import annotations

from typing import Any, List

import pytest

from vuer_sync.rtc import CRDTMessage, GraphStore, create_graph, get_unacked_messages


class Peer:
    def __init__(self, name: str, **kw: Any) -> None:
        self.out: List[CRDTMessage] = []
        kw.setdefault("epoch", "")
        self.store: GraphStore = create_graph(name, on_send=self.out.append, **kw)

    def ec(self, *ops: dict) -> CRDTMessage:
        for op in ops:
            self.store.edit(op)
        msg = self.store.commit()
        assert msg is not None
        return msg

    def get(self, key: str, path: str) -> Any:
        return self.store.get_state().graph.nodes[key].get_property(path)

    @property
    def graph(self):
        return self.store.get_state().graph


def ins(key: str, parent: str = "", **props: Any) -> dict:
    return {"otype": "node.insert", "key": parent, "path": "children",
            "value": dict({"key": key, "tag": "Mesh"}, **props)}


def op(otype: str, key: str, path: str, value: Any = None, **extra: Any) -> dict:
    d = {"otype": otype, "key": key, "path": path, **extra}
    if value is not None:
        d["value"] = value
    return d


def give(dst: Peer, *msgs: CRDTMessage) -> None:
    for m in msgs:
        dst.store.receive(m)


def pair(**kw: Any):
    return Peer("alice", **kw), Peer("bob", **kw)


def converged(*peers: Peer) -> None:
    first = peers[0].graph.canonical(internals=True)
    for p in peers[1:]:
        assert p.graph.canonical(internals=True) == first


# -- ordering / merge rules -----------------------------------------------------------------
def test_r01_set_vs_add_same_result_everywhere():
    a, b = pair()
    give(b, a.ec(ins("n", x=5)))
    ma = a.ec(op("number.set", "n", "x", 10))  # (lt 2, "alice")
    mb = b.ec(op("number.add", "n", "x", 5))  # (lt 2, "bob") -> after alice's set
    give(a, mb)
    give(b, ma)
    assert a.get("n", "x") == b.get("n", "x") == 15
    # the same two ops with the authors swapped: the add comes first, then the set wins
    c, d = pair()
    give(d, c.ec(ins("n", x=5)))
    mc = c.ec(op("number.add", "n", "x", 5))
    md = d.ec(op("number.set", "n", "x", 10))
    give(c, md)
    give(d, mc)
    assert c.get("n", "x") == d.get("n", "x") == 10


@pytest.mark.parametrize(
    "path, base, op_a, op_b, expected",
    [
        ("items", [], ("array.push", 1, {}), ("array.push", 2, {}), [1, 2]),
        ("tags", [], ("array.union", ["a", "b"], {}), ("array.union", ["b", "c"], {}),
         ["a", "b", "c"]),
        ("log", "", ("string.concat", "x", {"separator": "-"}),
         ("string.concat", "y", {"separator": "-"}), "x-y"),
        ("cfg", {"a": {"p": 1}}, ("object.merge", {"a": {"q": 1}, "k": 1}, {}),
         ("object.merge", {"a": {"q": 2}, "k": {"z": 1}}, {}),
         {"a": {"p": 1, "q": 2}, "k": {"z": 1}}),
        ("color", "#000000", ("color.blend", "#ffffff", {"alpha": 0.5}),
         ("color.blend", "#ff0000", {"alpha": 0.5}), "#c04040"),
        ("rot", [0, 0, 0, 1], ("quaternion.multiply", [1, 0, 0, 0], {}),
         ("quaternion.multiply", [0, 1, 0, 0], {}), [0, 0, 1, 0]),
        ("hp", 5, ("number.min", 3, {}), ("number.max", 4, {}), 4),
        ("flag", False, ("boolean.or", True, {}), ("boolean.and", False, {}), False),
    ],
)
def test_r02_non_commuting_pairs_converge(path, base, op_a, op_b, expected):
    a, b = pair()
    give(b, a.ec(ins("n", **{path: base})))
    ma = a.ec(op(op_a[0], "n", path, op_a[1], **op_a[2]))
    mb = b.ec(op(op_b[0], "n", path, op_b[1], **op_b[2]))
    give(a, mb)  # alice applies bob's op after her own ...
    give(b, ma)  # ... bob receives alice's later: same result, alice's op first
    assert a.get("n", path) == expected
    assert b.get("n", path) == expected
    converged(a, b)


def test_r03_float_adds_identical_bits():
    peers = [Peer(n) for n in ("alice", "bob", "carol")]
    base = peers[0].ec(ins("n", v=0))
    for p in peers[1:]:
        give(p, base)
    msgs = [p.ec(op("number.add", "n", "v", d)) for p, d in zip(peers, (0.1, 0.2, 0.3))]
    give(peers[0], msgs[2], msgs[1])
    give(peers[1], msgs[0], msgs[2])
    give(peers[2], msgs[1], msgs[0])
    # order: (lt, client) -> alice, bob, carol; ((0 + 0.1) + 0.2) + 0.3
    for p in peers:
        assert p.get("n", "v") == 0.6000000000000001
    assert 0.3 + 0.2 + 0.1 == 0.6  # another order would give other bits


# -- edit buffer -----------------------------------------------------------------------------
def test_r04_buffer_keeps_set_then_add_and_both_pushes():
    a, b = pair()
    give(b, a.ec(ins("n")))
    m = a.ec(
        op("number.set", "n", "x", 5),
        op("number.add", "n", "x", 1),
        op("array.push", "n", "items", 1),
        op("array.push", "n", "items", 2),
        op("number.add", "n", "y", 1),
        op("number.add", "n", "y", 2),  # adjacent same-otype add: merged
    )
    assert [o["otype"] for o in m.ops] == [
        "number.set", "number.add", "array.push", "array.push", "number.add"]
    assert m.ops[-1]["value"] == 3
    give(b, m)
    for p in (a, b):
        assert p.get("n", "x") == 6
        assert p.get("n", "items") == [1, 2]
        assert p.get("n", "y") == 3


def test_r05_several_text_ops_in_one_commit():
    a, b = pair()
    give(b, a.ec(ins("doc"), op("text.init", "doc", "t")))
    # continuous typing, one commit
    for i, ch in enumerate("hello"):
        a.store.edit(op("text.insert", "doc", "t", ch, position=i))
    a.store.edit(op("text.insert", "doc", "t", " world", position=5))
    m = a.store.commit()
    assert len(m.ops) == 6
    give(b, m)
    assert a.get("doc", "t") == b.get("doc", "t") == "hello world"
    # delete + insert in one commit (the seed's pitfall)
    m2 = a.ec(op("text.delete", "doc", "t", position=0, length=1),
              op("text.insert", "doc", "t", "J", position=0))
    give(b, m2)
    assert a.get("doc", "t") == b.get("doc", "t") == "Jello world"


def test_r21_many_inserts_under_one_parent_in_one_commit():
    a, b = pair()
    give(b, a.ec(ins("scene")))
    m = a.ec(ins("cube", "scene"), ins("sphere", "scene"), ins("light", "scene"))
    assert len(m.ops) == 3
    give(b, m)
    for p in (a, b):
        assert p.graph.nodes["scene"].children == ["cube", "sphere", "light"]


def test_r06_pending_edit_stays_on_top_and_wins_after_commit():
    a, b = pair()
    give(b, a.ec(ins("n", x=1)))
    a.store.edit(op("number.set", "n", "x", 3))  # pending, not committed
    mb = b.ec(op("number.set", "n", "x", 7))
    give(a, mb)
    assert a.get("n", "x") == 3  # the local edit is not overwritten while editing
    ma = a.store.commit()
    assert ma.lt > mb.lt  # committed after seeing bob's write: ordered after it
    give(b, ma)
    assert a.get("n", "x") == b.get("n", "x") == 3
    converged(a, b)


# -- undo / compaction / idempotency -------------------------------------------------------------
def test_r07_undo_before_its_target_and_after_receiver_compacted():
    a, b = pair()
    give(b, a.ec(ins("n", x=1)))
    target = a.ec(op("number.set", "n", "x", 2))
    u = a.store.undo()
    assert a.get("n", "x") == 1
    give(b, u)  # undo arrives before its target (non-causal transport)
    assert b.get("n", "x") == 1
    give(b, target)
    assert b.get("n", "x") == 1
    # after compaction of the receiver
    c, d = pair()
    give(d, c.ec(ins("n", x=1)))
    t2 = c.ec(op("number.set", "n", "x", 2))
    give(d, t2)
    d.store.compact()
    give(d, c.store.undo())
    assert c.get("n", "x") == d.get("n", "x") == 1


def test_r07_compaction_respects_the_undo_window():
    a, b = pair(undo_window=1)
    m0 = a.ec(ins("n", x=0))
    m1 = a.ec(op("number.set", "n", "x", 1))
    m2 = a.ec(op("number.set", "n", "x", 2))
    give(b, m0, m1, m2)
    give(a, b.ec(op("number.set", "n", "y", 0)))  # alice hears from bob: horizon moves
    for m in (m0, m1, m2):
        a.store.ack(m.id)
    dropped = b.store.compact()
    assert dropped >= 2 and m0.id not in b.graph.msgs and m1.id not in b.graph.msgs
    assert m2.id in b.graph.msgs  # still undoable (inside alice's window): kept
    u = a.store.undo()
    assert u.ops[0]["targetMsgId"] == m2.id
    give(b, u)
    assert a.get("n", "x") == b.get("n", "x") == 1
    assert a.store.undo() is None  # m1 is out of the window: alice may not undo it


def test_r08_duplicate_after_compaction_ignored():
    a, b = pair(undo_window=1)
    m1 = a.ec(ins("n", v=0))
    m2 = a.ec(op("number.add", "n", "v", 5))
    m3 = a.ec(op("number.add", "n", "w", 1))  # pushes m2 out of the undo window
    give(b, m1, m2, m3)
    assert b.store.compact() >= 2
    assert m2.id not in b.graph.msgs  # really compacted away
    give(b, m2, m1, m2)  # re-delivered (e.g. retry after a lost ack)
    assert b.get("n", "v") == 5
    assert b.graph.stats["duplicates"] == 3


def test_r09_compaction_keeps_unacked_local_messages_for_retry():
    a, b = pair(undo_window=1)
    m1 = a.ec(ins("n", v=0))
    m2 = a.ec(op("number.add", "n", "v", 1))
    m3 = a.ec(op("number.add", "n", "v", 2))
    m4 = a.ec(op("number.add", "n", "w", 1))
    a.store.ack(m1.id)
    a.store.ack(m3.id)  # m2 never acknowledged
    a.store.compact()
    assert get_unacked_messages(a.store.get_state()) == [m2, m4]
    assert m2.id in a.graph.msgs
    give(b, m1, m3)  # the relay only got m1, m3
    for m in get_unacked_messages(a.store.get_state()):  # retry after reconnect
        give(b, m)
    assert a.get("n", "v") == b.get("n", "v") == 3
    converged(a, b)


def test_r17_redo_is_lifo():
    a = Peer("alice")
    a.ec(ins("n"))
    a.ec(op("number.set", "n", "x", 1))
    a.ec(op("number.set", "n", "x", 2))
    a.store.undo()
    assert a.get("n", "x") == 1
    a.store.undo()
    assert a.get("n", "x") is None
    a.store.redo()
    assert a.get("n", "x") == 1  # the most recently undone one (vuer-rtc: 2)
    a.store.redo()
    assert a.get("n", "x") == 2
    assert a.store.redo() is None


def test_r18_undo_with_pending_edits_sends_the_commit():
    a, b = pair()
    give(b, a.ec(ins("n", x=1)))
    a.store.edit(op("number.set", "n", "x", 5))
    u = a.store.undo()
    assert [m.ops[0]["otype"] for m in a.out[-2:]] == ["number.set", "meta.undo"]
    assert a.out[-1] is u
    assert a.get("n", "x") == 1
    give(b, *a.out[1:])
    assert b.get("n", "x") == 1
    # a peer that only sees the retry (undo first, then the edit) ends up the same
    c = Peer("carol")
    give(c, a.out[0], *reversed(get_unacked_messages(a.store.get_state())))
    assert c.get("n", "x") == 1
    converged(a, b, c)


# -- tree -----------------------------------------------------------------------------------------
def test_r10_no_cycles():
    a, b = pair()
    give(b, a.ec(ins("A"), ins("B"), ins("C", "A")))
    ma = a.ec({"otype": "node.move", "key": "", "path": "children",
               "value": {"nodeKey": "A", "newParent": "B"}})
    mb = b.ec({"otype": "node.move", "key": "", "path": "children",
               "value": {"nodeKey": "B", "newParent": "A"}})
    give(a, mb)
    give(b, ma)
    for p in (a, b):
        g = p.graph
        assert g.children_of("") == ["B"]
        assert g.nodes["B"].children == ["A"]
        assert g.nodes["A"].children == ["C"]
        assert g.reachable() == ["B", "A", "C"]
    # self move and moving under an own descendant are skipped
    give(b, a.ec({"otype": "node.move", "key": "", "path": "children",
                  "value": {"nodeKey": "B", "newParent": "B"}},
                 {"otype": "node.move", "key": "", "path": "children",
                  "value": {"nodeKey": "B", "newParent": "C"}}))
    assert a.graph.reachable() == b.graph.reachable() == ["B", "A", "C"]
    converged(a, b)


def test_r11_concurrent_moves_single_parent():
    a, b = pair()
    give(b, a.ec(ins("P"), ins("Q"), ins("R"), ins("X", "P")))
    ma = a.ec({"otype": "node.move", "key": "P", "path": "children",
               "value": {"nodeKey": "X", "newParent": "Q"}})
    mb = b.ec({"otype": "node.move", "key": "P", "path": "children",
               "value": {"nodeKey": "X", "newParent": "R"}})
    give(a, mb)
    give(b, ma)
    for p in (a, b):
        g = p.graph
        assert (g.nodes["P"].children, g.nodes["Q"].children, g.nodes["R"].children) == (
            [], [], ["X"])
        assert g.nodes["X"].parent == "R"


@pytest.mark.parametrize("mover, remover", [("alice", "bob"), ("bob", "alice")])
def test_r12_move_vs_remove(mover, remover):
    peers = {"alice": Peer("alice"), "bob": Peer("bob")}
    a, b = peers["alice"], peers["bob"]
    give(b, a.ec(ins("P"), ins("Q"), ins("X", "P")))
    mm = peers[mover].ec({"otype": "node.move", "key": "P", "path": "children",
                          "value": {"nodeKey": "X", "newParent": "Q"}})
    mr = peers[remover].ec({"otype": "node.remove", "key": "P", "path": "children",
                            "value": "X"})
    give(peers[remover], mm)
    give(peers[mover], mr)
    for p in (a, b):
        g = p.graph
        assert g.nodes["P"].children == [] and g.nodes["Q"].children == []
        assert g.nodes["X"].deleted and g.is_deleted("X")  # tombstone everywhere
    converged(a, b)


def test_r13_child_before_parent():
    a, b = pair()
    m1 = a.ec(ins("P"))
    m2 = a.ec(ins("C", "P", size=2))
    give(b, m2)
    g = b.graph
    assert g.nodes["C"].get_property("size") == 2 and g.nodes["C"].parent == "P"
    assert g.reachable() == [] and g.root_key == ""
    give(b, m1)
    assert g.nodes["P"].children == ["C"]
    assert g.reachable() == ["P", "C"] and g.root_key == "P"
    converged(a, b)


# -- text -----------------------------------------------------------------------------------------
def test_r14_text_insert_before_its_anchor():
    a, b = pair()
    m0 = a.ec(ins("doc"), op("text.init", "doc", "t"))
    m1 = a.ec(op("text.insert", "doc", "t", "hello", position=0))
    m2 = a.ec(op("text.insert", "doc", "t", " world", position=5))
    give(b, m0, m2)
    assert b.get("doc", "t") == ""  # parked, not at position 0
    give(b, m1)
    assert b.get("doc", "t") == "hello world"
    converged(a, b)


def test_r15_concurrent_text_init_is_idempotent():
    a, b = pair()
    give(b, a.ec(ins("doc")))
    ma = a.ec(op("text.init", "doc", "t", "hi"))
    mb = b.ec(op("text.init", "doc", "t", "hi"))
    give(a, mb)
    give(b, ma)
    assert a.get("doc", "t") == b.get("doc", "t") == "hi"
    md = a.ec(op("text.delete", "doc", "t", position=0, length=1))
    give(b, md)
    assert a.get("doc", "t") == b.get("doc", "t") == "i"
    converged(a, b)


def test_r16_ids_never_reused_and_redo_after_new_typing():
    a, b = pair()
    give(b, a.ec(ins("doc"), op("text.init", "doc", "t")))
    give(b, a.ec(op("text.insert", "doc", "t", "abc", position=0)))
    give(b, a.store.undo())
    assert a.get("doc", "t") == ""
    give(b, a.ec(op("text.insert", "doc", "t", "xyz", position=0)))
    give(b, a.store.redo())
    assert a.get("doc", "t") == b.get("doc", "t") == "xyzabc"
    ids = [i for i, _, _ in a.graph.text_seq("doc", "t").to_list()]
    assert len(ids) == len(set(ids)) == 6
    converged(a, b)


def test_r23_concurrent_delete_does_not_hit_new_text():
    a, b = pair()
    give(b, a.ec(ins("doc"), op("text.init", "doc", "t")))
    give(b, a.ec(op("text.insert", "doc", "t", "hello", position=0)))
    ub = b.ec(op("text.delete", "doc", "t", position=1, length=4))  # bob deletes "ello"
    ua = a.store.undo()
    mw = a.ec(op("text.insert", "doc", "t", "world", position=0))
    give(a, ub)
    give(b, ua, mw)
    assert a.get("doc", "t") == b.get("doc", "t") == "world"
    give(b, a.store.redo())  # hello comes back, minus what bob deleted
    assert a.get("doc", "t") == b.get("doc", "t") == "worldh"
    converged(a, b)


# -- API / validation / identity ------------------------------------------------------------------
def test_r19_seed_api_and_otype_on_the_wire():
    import vuer_sync.rtc as rtc

    for name in ("create_graph", "create_initial_state", "on_edit", "commit_edits",
                 "cancel_edits", "on_server_ack", "on_remote_message", "undo", "redo",
                 "compact", "rebuild_graph", "apply_operation", "apply_message",
                 "apply_message_mut", "apply_messages", "create_empty_graph",
                 "get_unacked_messages"):
        assert callable(getattr(rtc, name)), name
    a, b = pair()
    m = a.ec(ins("n", x=1))
    wire = m.to_dict()
    assert wire["ops"][0]["otype"] == "node.insert" and "ot" not in wire["ops"][0]
    assert b.store.receive(wire) is True  # an "otype" dict: no KeyError
    legacy = {"id": "z:1", "sessionId": "z", "lamportTime": 9, "timestamp": 1.0,
              "ops": [{"ot": "number.add", "key": "n", "path": "x", "value": 1}]}
    assert b.store.receive(legacy) is True
    assert b.get("n", "x") == 2


def test_r20_deep_merge_alpha_and_remove_every_equal_element():
    a = Peer("alice")
    a.ec(ins("n", cfg={"a": {"b": 1, "c": 2}, "d": 1}, color="#000000", items=[2, 1, 2, 2]))
    a.ec(op("object.merge", "n", "cfg", {"a": {"c": 3, "e": 4}}),
         op("color.blend", "n", "color", "#ffffff", alpha=0.25),
         op("array.remove", "n", "items", 2))
    assert a.get("n", "cfg") == {"a": {"b": 1, "c": 3, "e": 4}, "d": 1}
    assert a.get("n", "color") == "#404040"  # floor(255 * 0.25 + 0.5) = 64
    assert a.get("n", "items") == [1]  # every equal element, as vuer-rtc 0.0.2


def test_r22_type_conflicts_rejected_identically():
    a, b = pair()
    give(b, a.ec(ins("n", x=1)))
    ma = a.ec(op("number.add", "n", "x", 2))  # (2, alice): 1 + 2 = 3
    mb = b.ec(op("string.set", "n", "x", "a"))  # (2, bob): "a"
    give(a, mb)
    give(b, ma)
    mc = a.ec(op("number.add", "n", "x", 1))  # add on a string: rejected everywhere
    give(b, mc)
    assert a.get("n", "x") == b.get("n", "x") == "a"
    assert a.graph.stats["rejected"] >= 1 and b.graph.stats["rejected"] >= 1
    converged(a, b)


def test_r24_restart_with_same_client_id_gets_new_ids():
    bob = Peer("bob")
    first = create_graph("alice")  # random epoch
    first.edit(ins("n", v=0))
    m1 = first.commit()
    give(bob, m1)
    first.edit(op("number.add", "n", "v", 1))
    give(bob, first.commit())
    restarted = create_graph("alice")  # same client id, fresh process
    restarted.receive(m1)
    restarted.edit(op("number.add", "n", "v", 10))
    m3 = restarted.commit()
    assert m3.id != m1.id and m3.client == "alice"
    assert bob.store.receive(m3) is True
    assert bob.get("n", "v") == 11
    # the contract: forcing the same (empty) epoch twice does reuse ids
    x1 = create_graph("zed", epoch="")
    x1.edit(op("number.add", "n", "v", 100))
    give(bob, x1.commit())
    x2 = create_graph("zed", epoch="")
    x2.edit(op("number.add", "n", "v", 100))
    assert bob.store.receive(x2.commit()) is False
    assert bob.get("n", "v") == 111
