"""The seed document's (003) examples, run verbatim with ``from vuer_sync.rtc import``."""

from __future__ import annotations

from vuer_sync.rtc import create_graph, get_unacked_messages


def test_quick_start():
    sent = []

    def send_to_server(msg):
        sent.append(msg)

    # Create a client store
    store = create_graph("client-1", on_send=lambda msg: send_to_server(msg))  # noqa: PLW0108

    # Build a scene
    store.edit({
        "otype": "node.insert",
        "key": "",            # parent key ("" = root)
        "path": "children",
        "value": {"key": "scene", "tag": "Scene", "name": "My Scene"},
    })
    store.edit({
        "otype": "node.insert",
        "key": "scene",
        "path": "children",
        "value": {"key": "cube", "tag": "Mesh", "position": [0, 1, 0], "opacity": 1.0},
    })
    store.commit("create scene")

    # Edit properties
    store.edit({"otype": "vector3.set", "key": "cube", "path": "position", "value": [3, 2, 1]})
    store.edit({"otype": "number.set",  "key": "cube", "path": "opacity",  "value": 0.5})
    store.commit("move and fade cube")

    # Read state
    graph = store.get_state().graph
    assert graph.nodes["cube"].get_property("position") == [3, 2, 1]
    assert graph.nodes["cube"].get_property("opacity") == 0.5
    assert graph.nodes["scene"].children == ["cube"]
    assert graph.nodes["scene"].name == "My Scene"
    assert len(sent) == 2
    # both node.inserts of the first commit are on the wire (R21 would keep only one)
    assert [op["otype"] for op in sent[0].ops] == ["node.insert", "node.insert"]


def test_two_client_example():
    messages_a, messages_b = [], []

    store_a = create_graph("alice", on_send=lambda msg: messages_a.append(msg))  # noqa: PLW0108
    store_b = create_graph("bob",   on_send=lambda msg: messages_b.append(msg))  # noqa: PLW0108

    # Alice creates a node
    store_a.edit({
        "otype": "node.insert",
        "key": "",
        "path": "children",
        "value": {"key": "obj", "tag": "Mesh", "health": 100},
    })
    msg = store_a.commit("create obj")

    # Bob receives Alice's message
    store_b.receive(msg)

    # Both edit concurrently
    store_a.edit({"otype": "number.add", "key": "obj", "path": "health", "value": -25})
    msg_a = store_a.commit("damage")

    store_b.edit({"otype": "number.add", "key": "obj", "path": "health", "value": -10})
    msg_b = store_b.commit("poison")

    # Exchange messages
    store_a.receive(msg_b)
    store_b.receive(msg_a)

    # Both converge: 100 + (-25) + (-10) = 65
    assert store_a.get_state().graph.nodes["obj"].get_property("health") == 65
    assert store_b.get_state().graph.nodes["obj"].get_property("health") == 65
    assert messages_a == [msg, msg_a] and messages_b == [msg_b]


def test_operations_table_all_apply():
    """Every op listed in the seed's "Operations" section, on a node "n" / "doc"."""
    store = create_graph("c")
    store.edit({"otype": "node.insert", "key": "", "path": "children",
                "value": {"key": "n", "tag": "Mesh"}})
    store.edit({"otype": "node.insert", "key": "", "path": "children",
                "value": {"key": "doc", "tag": "Text"}})
    store.edit({"otype": "node.insert", "key": "", "path": "children",
                "value": {"key": "parent", "tag": "Group"}})
    store.edit({"otype": "node.insert", "key": "", "path": "children",
                "value": {"key": "new-parent", "tag": "Group"}})
    store.commit("setup")
    ops = [
        {"otype": "number.set",      "key": "n", "path": "score",    "value": 42},
        {"otype": "number.add",      "key": "n", "path": "counter",  "value": 1},
        {"otype": "number.multiply", "key": "n", "path": "scale",    "value": 2},
        {"otype": "number.min",      "key": "n", "path": "cooldown", "value": 5},
        {"otype": "number.max",      "key": "n", "path": "health",   "value": 0},
        {"otype": "vector3.set", "key": "n", "path": "position", "value": [1, 2, 3]},
        {"otype": "vector3.add", "key": "n", "path": "velocity", "value": [0, 1, 0]},
        {"otype": "quaternion.set",      "key": "n", "path": "rotation", "value": [0, 0, 0, 1]},
        {"otype": "quaternion.multiply", "key": "n", "path": "rotation",
         "value": [0, 0.707, 0, 0.707]},
        {"otype": "euler.set", "key": "n", "path": "euler", "value": [0, 1.57, 0]},
        {"otype": "euler.add", "key": "n", "path": "euler", "value": [0, 0.1, 0]},
        {"otype": "string.set",   "key": "n", "path": "name",    "value": "Cube"},
        {"otype": "string.set",   "key": "n", "path": "log",     "value": "line1"},
        {"otype": "string.concat", "key": "n", "path": "log",     "value": "line2",
         "separator": "\n"},
        {"otype": "boolean.set", "key": "n", "path": "visible", "value": True},
        {"otype": "boolean.or",  "key": "n", "path": "dirty",   "value": True},
        {"otype": "boolean.and", "key": "n", "path": "locked",  "value": False},
        {"otype": "color.set",   "key": "n", "path": "color", "value": "#ff0000"},
        {"otype": "color.blend",  "key": "n", "path": "color", "value": "#0000ff", "alpha": 0.5},
        {"otype": "array.set",    "key": "n", "path": "items", "value": [1, 2, 3]},
        {"otype": "array.push",   "key": "n", "path": "items", "value": 4},
        {"otype": "array.remove",  "key": "n", "path": "items", "value": 2},
        {"otype": "array.union",   "key": "n", "path": "tags",  "value": ["a", "b"]},
        {"otype": "object.set",   "key": "n", "path": "config", "value": {"debug": True}},
        {"otype": "object.merge",  "key": "n", "path": "config", "value": {"verbose": True}},
        {"otype": "node.insert", "key": "parent", "path": "children",
         "value": {"key": "child", "tag": "Mesh", "name": "Child"}},
        {"otype": "node.insert", "key": "parent", "path": "children",
         "value": {"key": "child2", "tag": "Mesh", "name": "Child2"}},
        {"otype": "node.remove", "key": "parent", "path": "children", "value": "child2"},
        {"otype": "node.move", "key": "parent", "path": "children",
         "value": {"nodeKey": "child", "newParent": "new-parent"}},
        {"otype": "text.init",    "key": "doc", "path": "content"},
        {"otype": "text.insert",  "key": "doc", "path": "content", "position": 0,
         "value": "Hello"},
        {"otype": "text.delete",  "key": "doc", "path": "content", "position": 0, "length": 5},
        {"otype": "text.insert",  "key": "doc", "path": "content", "position": 0,
         "value": "Hello"},
        {"otype": "text.replace", "key": "doc", "path": "content", "position": 0, "length": 5,
         "value": "Hi"},
    ]
    peer = create_graph("peer")
    for op in ops:
        store.edit(op)
    msg = store.commit("everything")
    assert len(msg.ops) == len(ops)  # nothing merged away, nothing dropped
    for m in get_unacked_messages(store.get_state()):
        peer.receive(m)
    for g in (store.get_state().graph, peer.get_state().graph):
        n = g.nodes["n"]
        assert n.get_property("score") == 42
        assert n.get_property("counter") == 1
        assert n.get_property("scale") == 2
        assert n.get_property("cooldown") == 5
        assert n.get_property("health") == 0
        assert n.get_property("position") == [1, 2, 3]
        assert n.get_property("velocity") == [0, 1, 0]
        assert n.get_property("rotation") == [0, 0.707, 0, 0.707]
        assert n.get_property("euler") == [0, 1.57 + 0.1, 0]
        assert n.get_property("name") == "Cube"
        assert n.get_property("log") == "line1\nline2"
        assert n.get_property("visible") is True
        assert n.get_property("dirty") is True
        assert n.get_property("locked") is False
        assert n.get_property("color") == "#800080"  # 255*0.5 rounds half up to 128
        assert n.get_property("items") == [1, 3, 4]
        assert n.get_property("tags") == ["a", "b"]
        assert n.get_property("config") == {"debug": True, "verbose": True}
        assert g.nodes["parent"].children == []
        assert g.nodes["new-parent"].children == ["child"]
        assert g.nodes["child2"].deleted and "child2" not in g.live_nodes()  # tombstone
        assert g.nodes["doc"].get_property("content") == "Hi"
    assert store.get_state().graph.canonical(True) == peer.get_state().graph.canonical(True)


def test_undo_redo_example():
    store = create_graph("c")
    store.edit({"otype": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
    store.commit()
    store.edit({"otype": "number.set", "key": "n", "path": "x", "value": 10})
    store.commit("set x")

    store.undo()  # x reverts to previous value
    assert store.get_state().graph.nodes["n"].get_property("x") is None
    store.redo()  # x = 10 again
    assert store.get_state().graph.nodes["n"].get_property("x") == 10


def test_edit_buffer_example():
    store = create_graph("c")
    store.edit({"otype": "node.insert", "key": "", "path": "children", "value": {"key": "n"}})
    store.commit()
    store.edit({"otype": "vector3.add", "key": "n", "path": "pos", "value": [1, 0, 0]})
    store.edit({"otype": "vector3.add", "key": "n", "path": "pos", "value": [0, 1, 0]})
    store.edit({"otype": "vector3.add", "key": "n", "path": "pos", "value": [0, 0, 1]})

    # Only one op in the buffer: value = [1, 1, 1]
    assert len(store.get_state().edits.ops) == 1
    assert store.get_state().edits.ops[0]["value"] == [1, 1, 1]

    msg = store.commit("combined move")
    assert len(msg.ops) == 1
    assert store.get_state().graph.nodes["n"].get_property("pos") == [1, 1, 1]


def test_cancel_reverts_to_pre_edit_graph():
    store = create_graph("c")
    store.edit({"otype": "node.insert", "key": "", "path": "children",
                "value": {"key": "n", "x": 1}})
    store.commit()
    before = store.get_state().graph.canonical(True)
    store.edit({"otype": "number.set", "key": "n", "path": "x", "value": 5})
    store.edit({"otype": "node.insert", "key": "n", "path": "children", "value": {"key": "k"}})
    assert store.get_state().graph.nodes["n"].get_property("x") == 5
    store.cancel()
    assert store.get_state().graph.canonical(True) == before
    assert store.get_state().edits.ops == []


def test_receive_idempotent_retry_and_compact_example():
    sent = []
    store = create_graph("c", on_send=sent.append)
    peer = create_graph("p")
    store.edit({"otype": "node.insert", "key": "", "path": "children",
                "value": {"key": "n", "v": 0}})
    m1 = store.commit()
    store.edit({"otype": "number.add", "key": "n", "path": "v", "value": 5})
    m2 = store.commit()
    # Retry unacknowledged messages (e.g. after reconnect)
    retry = get_unacked_messages(store.get_state())
    assert retry == [m1, m2]
    for msg in retry + retry:  # duplicates are ignored
        peer.receive(msg)
    assert peer.get_state().graph.nodes["n"].get_property("v") == 5
    store.ack(m1.id)  # mark one of our messages as server-acknowledged
    assert get_unacked_messages(store.get_state()) == [m2]
    store.compact()  # compact acknowledged journal entries
    assert store.get_state().graph.nodes["n"].get_property("v") == 5
