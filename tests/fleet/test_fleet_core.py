"""The fleet's pure core, without Redis: the entry format, room keys, batching and the
coalescing rules (latest wins per node and property, never across SET/ADD/REMOVE)."""

from __future__ import annotations

import msgpack
import pytest

from vuer_sync import codec
from vuer_sync.fleet import Batcher, RoomKeys, decode_entry, encode_entry, split_batches
from vuer_sync.fleet.entry import EXCLUDE, GROUP, KEYED, check_room, item_ops
from vuer_sync.fleet.link import safe_url, stream_id


def enc(etype, **data):
    msg = {"etype": etype, "data": data}
    return codec.encode(msg), msg


def add(b, etype, **data):
    payload, msg = enc(etype, **data)
    b.add(payload, msg)


def decoded(items):
    out = []
    for it in items:
        if isinstance(it, bytes):
            out.append(codec.unpack(it))
        elif it[0] == GROUP:
            out.append([codec.unpack(p) for p in it[1]])
        else:
            out.append((codec.unpack(it[1]), it[2]))
    return out


def test_entry_round_trip_with_every_item_kind():
    items = [b"\x01\x02", (GROUP, [b"a", b"b"]), (KEYED, b"c", "rk"),
             (EXCLUDE, b"d", None, "node-1", "sid-1"),
             (GROUP, [b"e", b"f"], [("node-1", "sid-2"), None])]  # exclude= inside atomic()
    fields = encode_entry("host:1:abc", 42, items)
    wire = {k.encode(): (v if isinstance(v, bytes) else str(v).encode())
            for k, v in fields.items()}  # what redis-py hands back: all bytes
    e = decode_entry(wire)
    assert (e.producer, e.seq, e.items) == ("host:1:abc", 42, items)
    assert [item_ops(it) for it in items] == [1, 2, 1, 1, 2]


@pytest.mark.parametrize("fields", [
    {b"v": b"2", b"p": b"x", b"s": b"1", b"m": msgpack.packb([])},
    {b"v": b"1", b"p": b"x", b"m": msgpack.packb([])},
    {b"v": b"1", b"p": b"x", b"s": b"1", b"m": msgpack.packb([[9, b"a"]])},
    {},
])
def test_foreign_or_broken_entries_are_refused(fields):
    with pytest.raises(ValueError):
        decode_entry(fields)


def test_room_keys_share_one_hash_tag_and_names_are_checked():
    k = RoomKeys("lab")
    for key in (k.log, k.snapshot, k.leader, k.nodes):
        assert key.startswith("vuer_sync:{lab}:")
    for bad in ("", "a b", "a{b", "x" * 129, None):
        with pytest.raises(ValueError):
            check_room(bad)


def test_latest_wins_per_node_and_property():
    b = Batcher()
    add(b, "UPDATE", nodes=[{"key": "a", "x": 1, "y": 1}])
    add(b, "UPDATE", nodes=[{"key": "b", "x": 1}])
    add(b, "UPDATE", nodes=[{"key": "a", "x": 2}])
    add(b, "UPDATE", nodes=[{"key": "a", "z": 3}])
    assert b.stats == {"ops": 4, "coalesced": 2, "items": 0} and b.accepted == 4
    out = decoded(b.take())
    assert [m["data"]["nodes"] for m in out] == [[{"key": "a", "x": 2, "y": 1, "z": 3}],
                                                 [{"key": "b", "x": 1}]]
    assert len(b) == 0 and b.stats["items"] == 2


@pytest.mark.parametrize("barrier", [
    ("SET", {"tag": "Scene", "children": []}),
    ("ADD", {"nodes": [{"key": "c"}], "to": None}),
    ("REMOVE", {"keys": ["a"]}),
    ("UPSERT", {"nodes": [{"key": "a", "x": 5}], "to": "parent"}),
])
def test_nothing_merges_across_set_add_remove(barrier):
    b = Batcher()
    add(b, "UPDATE", nodes=[{"key": "a", "x": 1}])
    add(b, barrier[0], **barrier[1])
    add(b, "UPDATE", nodes=[{"key": "a", "x": 2}])
    out = decoded(b.take())
    assert [m["etype"] for m in out] == ["UPDATE", barrier[0], "UPDATE"]
    assert b.stats["coalesced"] == 0


def test_another_kind_about_the_same_node_is_a_barrier_for_it():
    b = Batcher()
    add(b, "UPSERT", nodes=[{"key": "a", "x": 1}], to=None)
    add(b, "UPDATE", nodes=[{"key": "a", "x": 2}])
    add(b, "UPSERT", nodes=[{"key": "a", "x": 3}], to=None)  # not into the first upsert
    assert [m["data"]["nodes"][0]["x"] for m in decoded(b.take())] == [1, 2, 3]


def test_groups_stay_whole_and_are_barriers():
    b = Batcher()
    add(b, "UPDATE", nodes=[{"key": "a", "x": 1}])
    b.add_group([enc("UPDATE", nodes=[{"key": "a", "x": 2}])[0],
                 enc("UPDATE", nodes=[{"key": "a", "x": 3}])[0]])
    add(b, "UPDATE", nodes=[{"key": "a", "x": 4}])
    out = decoded(b.take())
    assert len(out) == 3 and isinstance(out[1], list) and len(out[1]) == 2
    assert b.accepted == 4 and b.stats["coalesced"] == 0


def test_a_redundancy_key_replaces_the_waiting_message():
    b = Batcher()
    p1, m1 = enc("CUSTOM", value=1)
    p2, m2 = enc("CUSTOM", value=2)
    b.add(p1, m1, "cursor")
    b.add(p2, m2, "cursor")
    out = decoded(b.take())
    assert out == [(m2, "cursor")] and b.stats["coalesced"] == 1


def test_batches_respect_size_and_count_and_number_from_first_seq():
    items = [bytes(100)] * 10 + [(GROUP, [bytes(10)] * 5)]
    entries = split_batches(items, "p", 7, max_bytes=350, max_ops=100)
    assert [s for s, _, _ in entries] == list(range(7, 7 + len(entries)))
    assert sum(n for _, _, n in entries) == 15
    assert all(len(decode_entry(f).items) <= 3 for _, f, _ in entries)
    big = split_batches([bytes(1000)], "p", 1, max_bytes=10)
    assert len(big) == 1  # an item larger than the limit is an entry of its own
    by_count = split_batches([b"x"] * 10, "p", 1, max_ops=4)
    assert [n for _, _, n in by_count] == [4, 4, 2]


def test_stream_ids_compare_numerically_and_urls_hide_passwords():
    assert stream_id("10-0") > stream_id("9-99") and stream_id(b"5-1") == (5, 1)
    assert safe_url("rediss://user:secret@host:6380/0") == "rediss://***@host:6380/0"
    assert "secret" not in safe_url("redis://:secret@h/0")


def test_a_message_with_an_excluded_session_never_merges_and_bytes_are_counted():
    b = Batcher()
    p1, m1 = enc("UPDATE", nodes=[{"key": "a", "x": 1}])
    b.add(p1, m1)
    p2, m2 = enc("UPDATE", nodes=[{"key": "a", "x": 2}])
    b.add(p2, m2, exclude=("node-1", "sid-1"))
    b.add(p1, m1)
    assert b.nbytes == 2 * len(p1) + len(p2)
    out = b.take()
    assert b.stats["coalesced"] == 0 and out[1][0] == EXCLUDE and out[1][3:] == ("node-1",
                                                                                "sid-1")
    assert b.nbytes == 0
    b.add(p1, m1)
    b.add(p2, m2)  # merged: the waiting bytes are the merged message's
    assert b.stats["coalesced"] == 1 and b.nbytes == len(b.take()[0])


def test_vuer_sync_imports_and_serves_without_the_redis_package(tmp_path):
    """redis is optional: without it ``import vuer_sync`` and a plain ``Vuer`` work; a fleet
    says what to install."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    fake = tmp_path / "redis"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("No module named redis")\n')
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(root)]))
    code = (
        "import sys, vuer_sync\n"
        "assert 'redis' not in sys.modules\n"
        "from vuer_sync.schemas import Box\n"
        "app = vuer_sync.Vuer(port=0)\n"
        "app.scene.upsert @ Box(key='a')\n"
        "try:\n"
        "    vuer_sync.Fleet('redis://127.0.0.1:1/0', room='lab')\n"
        "except ImportError as e:\n"
        "    print('IMPORT-ERROR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, text=True, timeout=60,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert r.returncode == 0, r.stdout
    assert "IMPORT-ERROR" in r.stdout and "vuer-sync[fleet]" in r.stdout, r.stdout


def test_a_backlog_merges_across_entries_but_never_across_barriers():
    from vuer_sync.fleet.batcher import merge_backlog

    def upd(key, **props):
        return enc("UPDATE", nodes=[{"key": key, **props}])[0]

    rm = enc("REMOVE", keys=["a"])[0]
    batches = [[upd("a", x=1)], [upd("a", x=2, y=0), upd("b", x=5)],  # merge: a, b
               [rm], [upd("a", x=3)],  # not across the REMOVE
               [(GROUP, [upd("a", x=4)])], [upd("a", x=5)],  # nor a group
               [(EXCLUDE, upd("a", x=6), None, "n", "s")], [upd("a", x=7)]]  # nor an exclude
    items, merged = merge_backlog(batches)
    assert merged == 1
    assert decoded(items) == [
        {"etype": "UPDATE", "data": {"nodes": [{"key": "a", "x": 2, "y": 0}]}},
        {"etype": "UPDATE", "data": {"nodes": [{"key": "b", "x": 5}]}},
        {"etype": "REMOVE", "data": {"keys": ["a"]}},
        {"etype": "UPDATE", "data": {"nodes": [{"key": "a", "x": 3}]}},
        [{"etype": "UPDATE", "data": {"nodes": [{"key": "a", "x": 4}]}}],
        {"etype": "UPDATE", "data": {"nodes": [{"key": "a", "x": 5}]}},
        ({"etype": "UPDATE", "data": {"nodes": [{"key": "a", "x": 6}]}}, None),
        {"etype": "UPDATE", "data": {"nodes": [{"key": "a", "x": 7}]}}]


def test_fleet_objects_live_in_their_own_module_and_old_imports_work():
    import vuer_sync
    from vuer_sync.server import fleet_api, shared

    assert vuer_sync.Fleet is fleet_api.Fleet is shared.Fleet
    assert shared.FleetSession is fleet_api.FleetSession
    assert fleet_api.Fleet.__module__ == "vuer_sync.server.fleet_api"
