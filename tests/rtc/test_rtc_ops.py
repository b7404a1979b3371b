"""Op rules, validation, the pure and low-level APIs, snapshots, incremental apply."""

from __future__ import annotations

import pytest

from vuer_sync.rtc import (
    CRDTMessage,
    apply_message,
    apply_message_mut,
    apply_messages,
    apply_operation,
    commit_edits,
    create_empty_graph,
    create_graph,
    create_initial_state,
    dump_graph,
    get_unacked_messages,
    load_graph,
    on_edit,
    on_remote_message,
    rebuild_graph,
    undo,
)
from vuer_sync.rtc.register import ValueRegister


def ins(key, parent="", **props):
    return {"otype": "node.insert", "key": parent, "path": "children",
            "value": dict({"key": key, "tag": "Mesh"}, **props)}


def op(otype, path, value=None, key="n", **extra):
    d = {"otype": otype, "key": key, "path": path, **extra}
    if value is not None:
        d["value"] = value
    return d


def graph_with(*ops):
    g = create_empty_graph()
    apply_operation(g, ins("n"))
    for o in ops:
        apply_operation(g, o)
    return g


def prop(g, path, key="n"):
    return g.nodes[key].get_property(path)


@pytest.mark.parametrize(
    "ops, path, expected",
    [
        ([op("number.add", "v", 3)], "v", 3),
        ([op("number.multiply", "v", 3)], "v", 3),
        ([op("number.min", "v", 3), op("number.min", "v", 5)], "v", 3),
        ([op("number.max", "v", 3), op("number.max", "v", 1)], "v", 3),
        ([op("vector3.add", "p", [1, 2, 3]), op("vector3.multiply", "p", [2, 2, 2])],
         "p", [2, 4, 6]),
        ([op("euler.add", "e", [0.5, 0, 0]), op("euler.add", "e", [0.5, 0, 0])], "e", [1.0, 0, 0]),
        ([op("quaternion.multiply", "q", [0, 0, 1, 0])], "q", [0, 0, 1, 0]),
        ([op("string.concat", "s", "a", separator="/"), op("string.concat", "s", "b",
                                                              separator="/")], "s", "a/b"),
        ([op("boolean.or", "b", False)], "b", False),
        ([op("boolean.and", "b", True)], "b", True),
        ([op("color.set", "c", "#ABC")], "c", "#aabbcc"),
        ([op("color.blend", "c", "#ff0000")], "c", "#ff0000"),  # missing: takes the value
        # Python equality, as vuer-rtc 0.0.2 (``elem not in merged``): 1 == True == 1.0
        ([op("array.union", "a", [1, True, 1.0, "1"])], "a", [1, "1"]),
        ([op("array.set", "a", [2, 1, 2, True, 2.0]), op("array.remove", "a", 2)], "a",
         [1, True]),
        ([op("array.set", "a", [1, True, 1.0, 0]), op("array.remove", "a", True)], "a", [0]),
        ([op("array.push", "a", None)], "a", [None]),
        ([op("array.remove", "a", 1)], "a", None),  # nothing to remove from: no value
        ([op("object.merge", "o", {"a": {"b": None}}), op("object.merge", "o", {"a": 1})],
         "o", {"a": 1}),
        ([op("object.set", "o", {"a": 1}), op("object.set", "o", {"b": 2})], "o", {"b": 2}),
    ],
)
def test_op_rules_and_defaults(ops, path, expected):
    assert prop(graph_with(*ops), path) == expected


@pytest.mark.parametrize(
    "first, then",
    [
        (op("string.set", "x", "s"), op("number.add", "x", 1)),
        (op("number.set", "x", 1), op("vector3.add", "x", [1, 1, 1])),
        (op("vector3.set", "x", [1, 2, 3]), op("quaternion.multiply", "x", [0, 0, 0, 1])),
        (op("boolean.set", "x", True), op("string.concat", "x", "a")),
        (op("number.set", "x", 1), op("boolean.or", "x", True)),
        (op("string.set", "x", "red"), op("color.blend", "x", "#000000")),
        (op("object.set", "x", {}), op("array.push", "x", 1)),
        (op("array.set", "x", []), op("object.merge", "x", {"a": 1})),
        (op("string.set", "x", "s"), op("text.insert", "x", "a", position=0)),
    ],
)
def test_wrong_type_is_rejected_not_raised(first, then):
    g = graph_with(first)
    before = prop(g, "x")
    apply_operation(g, then)
    assert prop(g, "x") == before
    assert g.stats["rejected"] == 1


def test_set_may_change_type_and_malformed_remote_ops_are_rejected():
    g = graph_with(op("number.set", "x", 1), op("string.set", "x", "now a string"))
    assert prop(g, "x") == "now a string"
    bad = CRDTMessage(id="r:1", client="r", lt=99, ops=[
        {"otype": "number.add", "key": "n", "path": "y", "value": "nope"},
        {"otype": "number.set", "key": "n", "path": "y", "value": float("nan")},
        {"otype": "nope.nope", "key": "n", "path": "y", "value": 1},
        {"otype": "node.move", "key": "", "value": "not a dict"},
        {"otype": "number.set", "key": 3, "path": "y", "value": 1},
        {"otype": "text.delete", "key": "n", "path": "t", "ids": [[1, 2]]},
        "not even a dict",
    ])
    apply_message_mut(g, bad)
    assert prop(g, "y") is None
    assert g.stats["rejected"] >= 5


@pytest.mark.parametrize(
    "bad",
    [
        {"otype": "nope.set", "key": "n", "path": "x", "value": 1},
        {"otype": "number.set", "key": "n", "path": "x", "value": "1"},
        {"otype": "number.set", "key": "n", "path": "x", "value": True},
        {"otype": "number.set", "key": "n", "path": "x", "value": float("inf")},
        {"otype": "vector3.set", "key": "n", "path": "x", "value": [1, 2]},
        {"otype": "color.set", "key": "n", "path": "x", "value": "red"},
        {"otype": "color.blend", "key": "n", "path": "x", "value": "#000", "alpha": 2},
        {"otype": "meta.undo", "key": "_meta", "path": "_meta", "targetMsgId": "x"},
        {"otype": "node.insert", "key": "", "path": "children", "value": {"tag": "no key"}},
        {"otype": "node.move", "key": "", "value": {"nodeKey": "a"}},
        {"otype": "number.set", "key": None, "path": "x", "value": 1},
        {"otype": "array.push", "key": "n", "path": "x", "value": object()},
        {"otype": "text.insert", "key": "n", "path": "t", "value": 5},
        "not a dict",
    ],
)
def test_edit_rejects_malformed_local_ops(bad):
    s = create_graph("c")
    with pytest.raises(ValueError):
        s.edit(bad)
    assert s.get_state().edits.ops == []


def test_numpy_values_and_ot_spelling_accepted_at_edit():
    np = pytest.importorskip("numpy")
    s = create_graph("c")
    s.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
    s.edit({"otype": "vector3.set", "key": "n", "path": "p", "value": np.array([1.0, 2, 3])})
    s.edit({"otype": "number.set", "key": "n", "path": "v", "value": np.float32(0.5)})
    m = s.commit()
    assert m.ops[1]["value"] == [1.0, 2.0, 3.0] and type(m.ops[1]["value"][0]) is float
    assert s.get_state().graph.nodes["n"].properties == {"p": [1.0, 2.0, 3.0], "v": 0.5}


def test_edit_buffer_merges_only_adjacent_and_matches_sequential_result():
    s = create_graph("c")
    s.edit(ins("n"))
    q1, q2 = [0, 0.6, 0, 0.8], [0.6, 0, 0, 0.8]
    s.edit(op("quaternion.multiply", "q", q1))
    s.edit(op("quaternion.multiply", "q", q2))  # merged: q1 * q2
    s.edit(op("number.add", "v", 1))
    s.edit(op("number.set", "w", 1))
    s.edit(op("number.add", "v", 1))  # not adjacent to the first add: kept
    m = s.commit()
    assert [o["otype"] for o in m.ops] == [
        "node.insert", "quaternion.multiply", "number.add", "number.set", "number.add"]
    seq = graph_with(op("quaternion.multiply", "q", q1), op("quaternion.multiply", "q", q2))
    assert s.get_state().graph.nodes["n"].get_property("q") == pytest.approx(prop(seq, "q"))
    assert s.get_state().graph.nodes["n"].get_property("v") == 2


def test_node_rules():
    g = create_empty_graph()
    apply_operation(g, ins("a", x=1, children=[{"key": "a1", "y": 2}, {"key": "a2"}]))
    assert g.nodes["a"].children == ["a1", "a2"] and prop(g, "y", "a1") == 2
    apply_operation(g, ins("a", "b", x=99, z=5))  # second insert: no re-create, no move,
    assert g.nodes["a"].parent == "" and g.children_of("b") == []
    assert prop(g, "x", "a") == 1 and prop(g, "z", "a") == 5  # only fills unset props
    apply_operation(g, {"otype": "node.remove", "key": "wrong-parent", "value": "a2"})
    assert g.nodes["a"].children == ["a1"] and g.nodes["a2"].deleted  # tombstone
    apply_operation(g, ins("a2", "a"))  # a removed key never comes back
    assert g.nodes["a2"].deleted and g.nodes["a"].children == ["a1"]
    apply_operation(g, {"otype": "node.move", "key": "", "value": {"nodeKey": "a1",
                                                                  "newParent": "a2"}})
    assert g.nodes["a1"].parent == "a"  # cannot move under a removed node
    apply_operation(g, ins("o1", "ghost"))  # orphan below a future node
    apply_operation(g, ins("ghost", "o1"))  # would make a cycle with its own orphan: skipped
    assert "ghost" not in g.nodes and g.nodes["o1"].parent == "ghost"
    assert g.reachable() == ["a", "a1"]


def test_text_positions_and_foreign_text_ops():
    g = graph_with(op("text.init", "t", "hello"))
    apply_operation(g, op("text.insert", "t", "!", position=99))  # clamped to the end
    apply_operation(g, op("text.delete", "t", position=3, length=99))
    assert prop(g, "t") == "hel"
    apply_operation(g, op("text.replace", "t", "J", position=0, length=1))
    assert prop(g, "t") == "Jel"
    # vuer-rtc 0.0.2 resolved insert (value = [anchor, content]): applied by position
    apply_operation(g, op("text.insert", "t", ["alice:9", "lo"], position=3))
    assert prop(g, "t") == "Jello"
    apply_operation(g, op("text.init", "t", "ignored"))  # second init: no effect
    assert prop(g, "t") == "Jello"


def test_text_init_converts_an_existing_string():
    s = create_graph("c")
    s.edit(ins("n", title="abc"))
    s.edit(op("text.init", "title"))
    s.edit(op("text.insert", "title", "X", position=1))
    s.commit()
    assert s.get_state().graph.nodes["n"].get_property("title") == "aXbc"


def test_pure_functions_do_not_mutate_their_input():
    s0 = create_initial_state("alice", epoch="")
    s1 = on_edit(s0, ins("n", v=1))
    assert s0.edits.ops == [] and "n" not in s0.graph.nodes
    s2, msg = commit_edits(s1)
    assert s1.edits.ops and msg is not None and s1.seq == 0 and s2.seq == 1
    s3, u = undo(s2)
    assert u.ops[0]["otype"] == "meta.undo" and "n" in s2.graph.nodes and "n" not in s3.graph.nodes
    peer = on_remote_message(create_initial_state("bob"), msg)
    assert peer.graph.nodes["n"].get_property("v") == 1
    assert rebuild_graph(s2).canonical(True) == s2.graph.canonical(True)
    assert get_unacked_messages(s3) == [msg, u]


def test_low_level_apply_functions():
    a = CRDTMessage(id="a:1", client="a", lt=1, ops=[ins("n", v=1)])
    b = CRDTMessage(id="b:1", client="b", lt=1, ops=[op("number.multiply", "v", 10)])
    c = CRDTMessage(id="c:2", client="c", lt=2, ops=[op("number.add", "v", 1)])
    g0 = create_empty_graph()
    g1 = apply_message(g0, a)
    assert "n" not in g0.nodes and prop(g1, "v") == 1
    r1 = apply_messages(g0, [c, b, a])
    r2 = apply_messages(g0, [a, b, c])
    assert prop(r1, "v") == prop(r2, "v") == 11  # (1 * 10) + 1 in (lt, client) order
    assert apply_message_mut(r1, b) is False  # duplicate


def test_snapshot_roundtrip():
    s = create_graph("c", epoch="")
    s.edit(ins("a", x=[1, 2], children=[{"key": "b", "t": "hey"}]))
    s.edit(ins("gone"))
    s.edit({"otype": "node.remove", "key": "", "value": "gone"})
    s.edit(op("text.init", "t", key="b"))
    s.edit(op("text.insert", "t", "?", key="b", position=3))
    s.edit(op("text.delete", "t", key="b", position=0, length=1))
    s.commit()
    g = s.get_state().graph
    g.truncate(lambda rec: True)  # bake everything
    g2 = load_graph(dump_graph(g))
    assert g2.canonical(True) == g.canonical(True)
    assert prop(g2, "t", "b") == "ey?"
    apply_operation(g2, op("text.insert", "t", "!", key="b", position=3))
    assert prop(g2, "t", "b") == "ey?!"


def test_incremental_apply_never_replays(monkeypatch):
    """In-order messages are applied in O(ops): each op is folded exactly once, however
    long the journal is (the cost that makes vuer-rtc linear per message)."""
    calls = {"n": 0}
    orig = ValueRegister._do

    def counting(self, e):
        calls["n"] += 1
        return orig(self, e)

    monkeypatch.setattr(ValueRegister, "_do", counting)
    s = create_graph("me", epoch="")
    s.receive(CRDTMessage(id="r:1", client="r", lt=1, seq=1, ops=[ins("n", v=0)]))
    for i in range(2, 3002):
        s.receive(CRDTMessage(id=f"r:{i}", client="r", lt=i, seq=i,
                              ops=[op("number.add", "v", 1)]))
        s.edit(op("number.add", "w", 1))
        s.commit()
    assert len(s.get_state().graph.msgs) == 6001
    assert calls["n"] == 1 + 3000 + 3000  # init, remote adds, local adds: once each
    assert s.get_state().graph.stats["late"] == 0
