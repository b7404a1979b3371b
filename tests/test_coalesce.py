"""vuer_sync.coalesce as a pure module: keys, merge info and merges, no outbox, no threads."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import msgpack
import pytest

from vuer_sync import coalesce, codec
from vuer_sync.coalesce import (
    BARRIER,
    REPLACE,
    MessageCoalescing,
    coalesce_key,
    covers,
    merge_info,
    merge_messages,
    node_merge_info,
    node_props,
    one_node_props,
)


def msg(etype, *nodes, to=None, **extra):
    data = {"nodes": list(nodes)}
    if etype == "UPSERT":
        data["to"] = to
    return {"etype": etype, "data": data, **extra}


@pytest.mark.parametrize("m, key", [
    (msg("UPDATE", {"key": "a", "x": 1}), ("UPDATE", ("a",))),
    (msg("UPSERT", {"key": "a"}), ("UPSERT", ("a",))),
    ({"etype": "UPSERT", "data": {"nodes": [{"key": "a"}]}}, ("UPSERT", ("a",))),  # no "to"
    (msg("UPDATE", {"key": "a"}, {"key": "b"}), ("UPDATE", ("a", "b"))),
    (msg("UPDATE", {"key": "b"}, {"key": "a"}), ("UPDATE", ("b", "a"))),  # order is the key's
    (msg("UPSERT", {"key": "a"}, to="parent"), None),  # into a parent: a barrier
    (msg("ADD", {"key": "a"}), None),
    ({"etype": "SET", "data": {}}, None),
    ({"etype": "REMOVE", "data": {"keys": ["a"]}}, None),
    ({"etype": "CUSTOM", "data": 1}, None),
    ({}, None),
    ({"etype": "UPDATE", "data": [1]}, None),  # data not a map
    ({"etype": "UPDATE", "data": {"nodes": {"key": "a"}}}, None),  # nodes not a list
    (msg("UPDATE"), None),  # no nodes
    (msg("UPDATE", {"key": "a", "children": []}), None),
    (msg("UPDATE", {"key": "a"}, {"key": "b", "children": []}), None),
    (msg("UPDATE", {"key": "a"}, {"key": "a"}), None),  # the same key twice
    (msg("UPDATE", {"key": 1}), None),
    (msg("UPDATE", {"tag": "Box"}), None),  # no key
    (msg("UPDATE", {"key": "a"}, {"key": None}), None),
    (msg("UPDATE", ["key", "a"]), None),  # a node that is not a map
    (msg("UPDATE", {"key": "a"}, "b"), None),
])
def test_coalesce_key(m, key):
    assert coalesce_key(m) == key


def test_merge_info_gives_the_key_and_each_nodes_property_names():
    assert merge_info(msg("UPDATE", {"key": "a", "x": 1, "y": 2})) == (
        ("UPDATE", ("a",)), (("key", "x", "y"),))
    assert merge_info(msg("UPSERT", {"key": "a", "x": 1}, {"key": "b", "tag": "Box"})) == (
        ("UPSERT", ("a", "b")), (("key", "x"), ("key", "tag")))
    assert merge_info(msg("ADD", {"key": "a"})) == BARRIER == (None, None)


def test_a_redundancy_key_is_its_own_kind_whatever_the_message():
    info = merge_info({"etype": "SET", "data": {}}, "camera")
    assert info == ((REPLACE, ("=camera",)), None)
    assert merge_info(msg("UPDATE", {"key": "a"}), "camera") == info


@pytest.mark.parametrize("etype", ["UPSERT", "UPDATE", "ADD", "SET"])
@pytest.mark.parametrize("node", [
    {"key": "b", "tag": "Box", "position": [0, 1, 0]},
    {"key": "b"},
    {"tag": "Box"},
    {"key": 3, "tag": "Box"},
    {"key": "g", "tag": "Group", "children": [{"key": "c"}]},
])
def test_node_merge_info_is_merge_info_of_the_one_node_message(etype, node):
    full = {"etype": etype, "data": {"nodes": [node], "to": None}}
    assert node_merge_info(etype, node) == merge_info(full)


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty property-name cache for the test (it is process-wide and bounded)."""
    cache = {}
    monkeypatch.setattr(coalesce, "_ONE_NODE_PROPS", cache)
    return cache


def test_one_node_props_are_shared_and_the_cache_is_bounded(fresh_cache):
    a = one_node_props({"key": "a", "tag": "Box", "position": [0, 0, 0]})
    b = one_node_props({"key": "b", "tag": "Box", "position": [1, 1, 1]})
    assert a == (("key", "tag", "position"),) and a is b  # one tuple for every such message
    assert merge_info(msg("UPDATE", {"key": "c", "position": [0, 0, 0]}))[1] is one_node_props(
        {"key": "x", "position": 1})
    assert node_merge_info("UPDATE", {"key": "y", "position": 2})[1] is one_node_props(
        {"key": "x", "position": 1})
    for i in range(5000):  # ever-new property names: the cache stops growing
        assert one_node_props({"key": "k", f"p{i}": i}) == (("key", f"p{i}"),)
        assert node_merge_info("UPDATE", {"key": "k", f"q{i}": i})[1] == (("key", f"q{i}"),)
    assert len(fresh_cache) == 4096


def test_node_props(fresh_cache):
    assert node_props(msg("UPDATE", {"key": "a", "x": 1}, {"key": "b"})) == (
        ("key", "x"), ("key",))
    one = node_props(msg("UPDATE", {"key": "a", "x": 1}))
    assert one == (("key", "x"),) and one is one_node_props({"key": "b", "x": 2})  # shared


@pytest.mark.parametrize("new, old, expected", [
    ((("key", "x"),), (("key", "x"),), True),
    ((("key", "x", "y"),), (("key", "x"),), True),  # a superset
    ((("x", "key"),), (("key", "x"),), True),  # another order
    ((("key",),), (("key", "x"),), False),  # a subset
    ((("key", "x"), ("key", "y")), (("key", "x"), ("key",)), True),
    ((("key", "x"), ("key",)), (("key", "x"), ("key", "y")), False),  # one node falls short
])
def test_covers(new, old, expected):
    assert covers(new, old) is expected


def test_merge_messages_latest_value_per_node_and_property_wins():
    old = msg("UPDATE", {"key": "a", "x": 1, "color": "red"}, {"key": "b", "y": 1}, ts=1.0)
    new = msg("UPDATE", {"key": "a", "x": 2}, {"key": "b", "z": 3}, ts=2.0, strict=False)
    before = copy.deepcopy((old, new))
    merged = merge_messages(old, new)
    assert merged == {"etype": "UPDATE", "ts": 2.0, "strict": False, "data": {"nodes": [
        {"key": "a", "x": 2, "color": "red"}, {"key": "b", "y": 1, "z": 3}]}}
    assert list(merged["data"]["nodes"][0]) == ["key", "x", "color"]  # the old order first
    assert (old, new) == before  # pure: neither input is changed


def test_merge_messages_keeps_the_newer_envelope():
    old = msg("UPSERT", {"key": "a", "x": 1}, to=None, ts=1.0)
    new = msg("UPSERT", {"key": "a", "y": 2}, to=None, ts=5.0)
    assert merge_messages(old, new) == msg("UPSERT", {"key": "a", "x": 1, "y": 2}, to=None,
                                           ts=5.0)


class Counting:
    """MessageCoalescing over msgpack that counts how often it decodes and encodes."""

    def __init__(self):
        self.decoded = 0
        self.encoded = 0
        self.policy = MessageCoalescing(self.encode, self.decode)

    def encode(self, m):
        self.encoded += 1
        return codec.encode(m)

    def decode(self, b):
        self.decoded += 1
        return msgpack.unpackb(b, raw=False)


def queued(m, policy):
    """The key and the queued message (as an outbox holds it) of ``m`` pushed alone."""
    key, props = policy.info(codec.encode(m), m, None)
    return key, SimpleNamespace(payload=codec.encode(m), decoded=None, props=props)


def test_policy_merges_a_subset_property_by_property_and_keeps_the_map():
    c = Counting()
    key, q = queued(msg("UPDATE", {"key": "a", "x": 1, "y": 1}), c.policy)
    new = msg("UPDATE", {"key": "a", "x": 2})
    payload, decoded, props = c.policy.merge(key, q, codec.encode(new), merge_info(new)[1])
    assert decoded == msgpack.unpackb(payload, raw=False) == msg(
        "UPDATE", {"key": "a", "x": 2, "y": 1})
    assert props == (("key", "x", "y"),)
    assert (c.decoded, c.encoded) == (2, 1)
    assert q.payload == codec.encode(msg("UPDATE", {"key": "a", "x": 1, "y": 1}))  # unchanged
    newer = msg("UPDATE", {"key": "a", "y": 3})  # merges again into the kept map
    q = SimpleNamespace(payload=payload, decoded=decoded, props=props)
    payload, decoded, props = c.policy.merge(key, q, codec.encode(newer), merge_info(newer)[1])
    assert decoded == msg("UPDATE", {"key": "a", "x": 2, "y": 3})
    assert (c.decoded, c.encoded) == (3, 2)  # the queued map was not decoded again


def test_policy_takes_a_message_that_sets_every_queued_property_as_is():
    c = Counting()
    key, q = queued(msg("UPDATE", {"key": "a", "x": 1}), c.policy)
    new = msg("UPDATE", {"key": "a", "x": 2, "y": 2})
    frame = codec.encode(new)
    assert c.policy.merge(key, q, frame, merge_info(new)[1]) == (
        frame, None, (("key", "x", "y"),))
    assert (c.decoded, c.encoded) == (0, 0)


def test_policy_replaces_a_message_with_the_same_redundancy_key():
    c = Counting()
    key, _ = c.policy.info(b"old", None, "cam")
    q = SimpleNamespace(payload=b"old", decoded=None, props=None)
    assert key == (REPLACE, ("=cam",))
    assert c.policy.merge(key, q, b"new", None) == (b"new", None, None)
    assert (c.decoded, c.encoded) == (0, 0)


def test_policy_reads_a_frame_pushed_without_its_map():
    c = Counting()
    m = msg("UPDATE", {"key": "a", "x": 1})
    assert c.policy.info(codec.encode(m), None, None) == merge_info(m)
    assert c.policy.info(b"\xc1", None, None) == BARRIER  # not msgpack
    assert c.policy.info(msgpack.packb([1, 2]), None, None) == BARRIER  # not a map
    decoded = c.decoded
    assert c.policy.info(codec.encode(m), m, None) == merge_info(m)  # the map: no decode
    assert c.decoded == decoded
