from __future__ import annotations

import threading

import msgpack
import pytest

from vuer_sync import codec
from vuer_sync.errors import RPCTimeout, SessionClosed
from vuer_sync.outbox import Outbox, coalesce_key


def box(**kw):
    return Outbox(encode=codec.encode, decode=lambda b: msgpack.unpackb(b, raw=False), **kw)


def upd(key, etype="UPDATE", to=None, **props):
    data = {"nodes": [{"key": key, **props}]}
    if etype == "UPSERT":
        data["to"] = to
    msg = {"etype": etype, "data": data}
    return codec.encode(msg), msg


def drain(b):
    out = []
    while True:
        batch = b.pop_batch(timeout=0)
        if not batch:
            return out
        b.mark_written(batch)
        out.extend(msgpack.unpackb(m.payload, raw=False) for m in batch)


def test_coalesce_key_rules():
    assert coalesce_key(upd("a")[1]) == ("UPDATE", ("a",))
    assert coalesce_key(upd("a", "UPSERT")[1]) == ("UPSERT", ("a",))
    assert coalesce_key(upd("a", "UPSERT", to="parent")[1]) is None
    assert coalesce_key({"etype": "SET", "data": {}}) is None
    assert coalesce_key({"etype": "UPDATE", "data": {"nodes": [{"key": "a", "children": []}]}}) \
        is None
    assert coalesce_key({"etype": "UPDATE", "data": {"nodes": [{"key": "a"}, {"key": "a"}]}}) \
        is None


def test_updates_merge_per_property_latest_wins():
    b = box()
    b.push(*upd("a", x=1, color="red"))
    b.push(*upd("a", x=2))
    b.push(*upd("a", y=5, x=3))
    out = drain(b)
    assert [m["data"]["nodes"] for m in out] == [[{"key": "a", "x": 3, "color": "red", "y": 5}]]
    s = b.snapshot_stats()
    assert (s["queued"], s["coalesced"], s["sent"]) == (3, 2, 1)


def test_large_payload_supersedes_unsent_one():
    b = box()
    b.push(*upd("pc", "UPSERT", vertices=b"\x01" * 100_000))
    b.push(*upd("pc", "UPSERT", vertices=b"\x02" * 50_000))
    assert b.pending_bytes < 60_000
    (m,) = drain(b)
    assert m["data"]["nodes"][0]["vertices"] == b"\x02" * 50_000


def test_coalesce_after_keeps_a_short_backlog_then_merges_into_the_newest():
    """``coalesce_after=2``: up to two queued frames, a newer update is queued as it is;
    past that it merges into the newest queued one (latest value wins), so the client still
    ends at the last value, in order, having lost nothing of a short backlog."""
    b = box(coalesce_after=2)
    for x in range(6):
        b.push(*upd("a", x=x))
    out = [m["data"]["nodes"][0]["x"] for m in drain(b)]
    assert out == [0, 1, 5]
    s = b.snapshot_stats()
    assert (s["queued"], s["coalesced"], s["sent"]) == (6, 3, 3)


def test_coalesce_after_counts_only_while_the_socket_is_full():
    """Once the sender reports whether the socket takes bytes (``report_transport``), a
    backlog behind a free socket is the sender's own and is sent whole (up to the 64 KiB
    slack); behind a full socket, ``coalesce_after`` counts as before. ``socket_full`` in the
    stats says which (``None``: nothing reported, the count alone decides).
    ``coalesce_window=0``: updates at any pace count as a viewer's pace here."""
    b = box(coalesce_after=2, coalesce_window=0)
    assert b.snapshot_stats()["socket_full"] is None
    b.report_transport(blocked=False)
    for x in range(6):
        b.push(*upd("a", x=x))
    assert b.snapshot_stats()["coalesced"] == 0
    b.report_transport(blocked=True)
    b.push(*upd("a", x=6))
    b.push(*upd("a", x=7))
    s = b.snapshot_stats()
    assert (s["coalesced"], s["depth"], s["socket_full"]) == (2, 6, True)
    assert [m["data"]["nodes"][0]["x"] for m in drain(b)] == [0, 1, 2, 3, 4, 7]
    b.report_transport(blocked=False)
    for i in range(3):  # past the slack, updates merge even behind a free socket
        b.push(*upd("pc", "UPSERT", vertices=bytes([i]) * 100_000))
    assert b.snapshot_stats()["coalesced"] == 2 + 2
    (m,) = drain(b)
    assert m["data"]["nodes"][0]["vertices"] == b"\x02" * 100_000


def test_a_burst_merges_past_coalesce_after_even_behind_a_free_socket():
    """Updates of a node faster than one per ``coalesce_window`` (a tight loop: no display
    shows them) merge past ``coalesce_after`` although the socket takes bytes: a producer's
    burst does not make the sender write every frame of it. A frame older than the window
    is not merged into: the next update starts a new one."""
    b = box(coalesce_after=2, coalesce_window=60.0)  # every push below is "fast"
    b.report_transport(blocked=False)
    for x in range(6):
        b.push(*upd("a", x=x))
    assert [m["data"]["nodes"][0]["x"] for m in drain(b)] == [0, 1, 5]
    slow = box(coalesce_after=2, coalesce_window=1e-9)  # every push below is "slow"
    slow.report_transport(blocked=False)
    for x in range(6):
        slow.push(*upd("a", x=x))
    assert [m["data"]["nodes"][0]["x"] for m in drain(slow)] == list(range(6))


def test_coalesce_after_gives_way_to_bytes():
    """A short backlog of big frames merges at once: ``coalesce_after`` holds only while
    the queue is small in bytes, so a stalled client's point clouds never pile up."""
    b = box(coalesce_after=3)
    for i in range(3):
        b.push(*upd("pc", "UPSERT", vertices=bytes([i]) * 100_000))
    assert b.pending_bytes < 2 * 100_000
    (m,) = drain(b)
    assert m["data"]["nodes"][0]["vertices"] == b"\x02" * 100_000
    with pytest.raises(ValueError):
        box(coalesce_after=-1)


@pytest.mark.parametrize("barrier", [
    {"etype": "SET", "data": {"tag": "Scene"}},
    {"etype": "ADD", "data": {"nodes": [{"key": "b"}], "to": None}},
    {"etype": "REMOVE", "data": {"keys": ["a"]}},
    {"etype": "UPSERT", "data": {"nodes": [{"key": "c"}], "to": "a"}},
    {"etype": "GRAB_RENDER", "uuid": "u", "rtype": "GRAB_RENDER_RESPONSE@u", "data": {}},
    {"etype": "CUSTOM", "data": 1},
])
def test_never_merges_across_a_barrier(barrier):
    b = box()
    b.push(*upd("a", x=1))
    b.push(codec.encode(barrier), barrier)
    b.push(*upd("a", x=2))
    out = drain(b)
    assert [m["etype"] for m in out] == ["UPDATE", barrier["etype"], "UPDATE"]
    assert out[0]["data"]["nodes"][0]["x"] == 1 and out[2]["data"]["nodes"][0]["x"] == 2


def test_other_keys_and_kinds_stay_separate_and_ordered():
    b = box()
    b.push(*upd("a", x=1))
    b.push(*upd("b", x=1))
    b.push(*upd("a", "UPSERT", x=9))   # same key, other kind: not merged into the UPDATE
    b.push(*upd("a", x=2))             # UPDATE after an UPSERT of a: not merged before it
    out = drain(b)
    assert [(m["etype"], m["data"]["nodes"][0]["key"], m["data"]["nodes"][0]["x"]) for m in out] \
        == [("UPDATE", "a", 1), ("UPDATE", "b", 1), ("UPSERT", "a", 9), ("UPDATE", "a", 2)]


def test_no_merge_into_a_message_already_taken_by_the_sender():
    b = box()
    b.push(*upd("a", x=1))
    batch = b.pop_batch(timeout=0)
    b.push(*upd("a", x=2))
    b.mark_written(batch)
    assert [m["data"]["nodes"][0]["x"] for m in drain(b)] == [2]


def test_group_is_contiguous_and_not_coalesced():
    b = box()
    b.push(*upd("a", x=1))
    b.push_group([upd("a", x=2)[0], upd("b", x=2)[0]])
    b.push(*upd("a", x=3))
    out = drain(b)
    assert [(m["data"]["nodes"][0]["key"], m["data"]["nodes"][0]["x"]) for m in out] == \
        [("a", 1), ("a", 2), ("b", 2), ("a", 3)]


def test_budget_disconnect_policy_raises_and_counts():
    b = box(max_bytes=1000, policy="disconnect")
    b.push(codec.encode({"etype": "X", "data": b"x" * 900}))
    with pytest.raises(SessionClosed, match="over budget"):
        b.push(codec.encode({"etype": "Y", "data": b"y" * 900}))
    assert b.closed and b.snapshot_stats()["dropped"]["over budget"] == 1
    with pytest.raises(SessionClosed):
        b.push(codec.encode({"etype": "Z"}))


def test_budget_block_policy_waits_for_the_sender():
    b = box(max_bytes=1000, policy="block", block_timeout=5.0)
    b.push(codec.encode({"etype": "X", "data": b"x" * 900}))

    def sender():
        batch = b.pop_batch(timeout=5)
        b.mark_written(batch)

    t = threading.Timer(0.05, sender)
    t.start()
    b.push(codec.encode({"etype": "Y", "data": b"y" * 900}))  # blocks until the sender wrote
    t.join()
    assert b.closed is None and b.depth == 1


def test_block_policy_times_out_into_disconnect():
    b = box(max_bytes=1000, policy="block", block_timeout=0.05)
    b.push(codec.encode({"etype": "X", "data": b"x" * 900}))
    with pytest.raises(SessionClosed):
        b.push(codec.encode({"etype": "Y", "data": b"y" * 900}))


def test_one_message_bigger_than_the_budget_still_goes_when_queue_is_empty():
    b = box(max_bytes=100, policy="disconnect")
    b.push(codec.encode({"etype": "X", "data": b"x" * 1000}))
    assert len(drain(b)) == 1


def test_wait_written_and_close():
    b = box()
    seq = b.push(codec.encode({"etype": "X"}))
    with pytest.raises(RPCTimeout):
        b.wait_written(seq, timeout=0.01)
    b.mark_written(b.pop_batch(timeout=0))
    b.wait_written(seq, timeout=0.01)
    b.push(codec.encode({"etype": "Y"}))
    b.close("client left")
    assert b.pop_batch(timeout=0) is None
    assert b.snapshot_stats()["dropped"] == {"client left": 1}
    with pytest.raises(SessionClosed):
        b.wait_written(timeout=0.01)


def test_close_with_drain_lets_the_sender_finish():
    b = box()
    b.push(codec.encode({"etype": "X"}))
    b.close("done", drain=True)
    batch = b.pop_batch(timeout=0)
    assert len(batch) == 1
    b.mark_written(batch)
    assert b.pop_batch(timeout=0) is None


def test_requeue_front_keeps_order():
    b = box()
    for i in range(3):
        b.push(codec.encode({"etype": f"E{i}"}))
    batch = b.pop_batch(max_items=2, timeout=0)
    b.requeue_front(batch)
    assert [m["etype"] for m in drain(b)] == ["E0", "E1", "E2"]


def test_concurrent_producers_keep_each_producers_order():
    b = box()
    n = 2000

    def produce(tag):
        for i in range(n):
            b.push(codec.encode({"etype": "E", "data": [tag, i]}))

    ts = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out = drain(b)
    assert len(out) == 4 * n
    for tag in range(4):
        seq = [m["data"][1] for m in out if m["data"][0] == tag]
        assert seq == list(range(n))


def test_element_updates_coalesce_like_dicts():
    # regression: elements were left as objects in the message map, so nothing coalesced
    from vuer_sync.events import Update, Upsert
    from vuer_sync.schemas import Box
    from vuer_sync.server.ops import message_of

    b = box()
    for i in range(5):
        for ev in (Update(Box(key="a", position=[i, 0, 0])),):
            m = message_of(ev)
            b.push(codec.encode(m), m)
    m = message_of(Upsert(Box(key="b", args=[1, 1, 1])))
    b.push(codec.encode(m), m)
    m = message_of(Upsert(Box(key="b", position=[9, 9, 9])))
    b.push(codec.encode(m), m)
    out = drain(b)
    assert [(x["etype"], x["data"]["nodes"][0]) for x in out] == [
        ("UPDATE", {"key": "a", "tag": "Box", "position": [4, 0, 0]}),
        ("UPSERT", {"key": "b", "tag": "Box", "args": [1, 1, 1], "position": [9, 9, 9]}),
    ]
    assert b.snapshot_stats()["coalesced"] == 5


def test_budget_counts_per_message_overhead():
    b = box(max_bytes=50_000, policy="disconnect")
    with pytest.raises(SessionClosed):
        for i in range(10_000):  # ~20-byte payloads: the overhead is what fills the budget
            b.push(codec.encode({"etype": "E", "data": i}))
    assert b.snapshot_stats()["queued"] < 1000


def test_a_merge_that_grows_past_the_budget_applies_the_policy():
    b = box(max_bytes=20_000, policy="disconnect")
    b.push(codec.encode({"etype": "OTHER", "data": 1}))  # something else is queued
    b.push(*upd("pc", "UPSERT", vertices=b"\x01" * 100))
    with pytest.raises(SessionClosed, match="over budget"):
        b.push(*upd("pc", "UPSERT", vertices=b"\x02" * 50_000))  # merged, and too big


def test_a_message_setting_every_queued_property_replaces_without_decoding():
    decoded = []

    def decode(b):
        decoded.append(b)
        return msgpack.unpackb(b, raw=False)

    b = Outbox(encode=codec.encode, decode=decode)
    for x in range(5):  # a pose stream: the same properties every time
        b.push(*upd("arm", position=[x, 0, 0], rotation=[0, x, 0]))
    assert decoded == [] and b.stats["coalesced"] == 4
    b.push(*upd("arm", position=[9, 9, 9]))  # a subset: merged property by property
    assert len(decoded) == 2
    b.push(*upd("arm", position=[7, 7, 7], rotation=[1, 1, 1], color="red"))  # a superset
    assert len(decoded) == 2
    b.push(*upd("arm", color="red", rotation=[1, 1, 1], position=[7, 7, 7]))  # other order
    assert len(decoded) == 2
    b.push(*upd("arm", color="blue"))  # merges with what the superset left
    (m,) = drain(b)
    assert m["data"]["nodes"] == [
        {"key": "arm", "color": "blue", "rotation": [1, 1, 1], "position": [7, 7, 7]}]
    assert b.stats["coalesced"] == 8


def test_sent_messages_leave_no_merge_bookkeeping_behind():
    """A long stream of upserts of ever-new keys (frame-0, frame-1, ...) with no barrier in
    between must not grow the outbox's per-node index: once a message is taken for sending,
    nothing queued is about its nodes any more."""
    b = box()
    for i in range(2000):
        b.push(*upd(f"frame-{i}", "UPSERT", x=i))
        if i % 100 == 99:
            drain(b)
    drain(b)
    assert (len(b._index), len(b._key_owner)) == (0, 0)
    # and coalescing still works afterwards, including the barrier between kinds
    b.push(*upd("a", "UPSERT", x=1))
    b.push(*upd("a", "UPSERT", y=2))
    b.push(*upd("a", "UPDATE", x=3))
    b.push(*upd("a", "UPSERT", x=4))
    assert [m["data"]["nodes"] for m in drain(b)] == [
        [{"key": "a", "x": 1, "y": 2}], [{"key": "a", "x": 3}], [{"key": "a", "x": 4}]]


def test_bookkeeping_of_a_node_in_a_later_message_survives_sending_an_earlier_one():
    b = box()
    b.push(*upd("a", x=1))  # UPDATE (a)
    b.push(codec.encode(m := {"etype": "UPDATE", "data": {"nodes": [
        {"key": "a", "y": 1}, {"key": "c", "y": 1}]}}), m)  # UPDATE (a, c): owns "a" now
    first = b.pop_batch(max_items=1, timeout=0)
    b.mark_written(first)
    assert b._key_owner == {"a": ("UPDATE", ("a", "c")), "c": ("UPDATE", ("a", "c"))}
    b.push(codec.encode(m := {"etype": "UPDATE", "data": {"nodes": [
        {"key": "a", "y": 2}, {"key": "c", "y": 3}]}}), m)
    assert [m["data"]["nodes"] for m in drain(b)] == [
        [{"key": "a", "y": 2}, {"key": "c", "y": 3}]]


def test_flush_after_close_waits_for_the_batch_being_written():
    """A peer that closes as soon as it has everything: the reader closes the outbox while
    the sender is still returning from its last write. flush() must report that write (not
    SessionClosed), and must raise once a write in flight is known to be lost."""
    b = box()
    b.push(*upd("a", x=1))
    batch = b.pop_batch(timeout=0)
    b.close("client closed the connection", drain=False)
    outcome = []

    def flush():
        try:
            b.wait_written(timeout=5)
            outcome.append("written")
        except SessionClosed:
            outcome.append("closed")

    t = threading.Thread(target=flush)
    t.start()
    t.join(0.1)
    assert t.is_alive() and not outcome  # still in flight: unknown yet
    b.mark_written(batch)
    t.join(5)
    assert outcome == ["written"]

    b = box()
    b.push(*upd("a", x=1))
    batch = b.pop_batch(timeout=0)
    b.push(*upd("b", x=2))  # queued, never taken: lost at close
    b.close("gone", drain=False)
    b.abandon(batch, "send failed")
    with pytest.raises(SessionClosed):
        b.wait_written(timeout=5)
    s = b.snapshot_stats()
    assert (s["pending_bytes"], s["in_flight"]) == (0, 0)
    assert s["dropped"] == {"gone": 1, "send failed": 1}


def test_requeue_after_close_drops_the_batch_and_releases_flush():
    b = box()
    b.push(*upd("a", x=1))
    batch = b.pop_batch(timeout=0)
    b.close("client closed", drain=False)
    b.requeue_front(batch)  # a reconnecting client's sender, after the outbox was closed
    with pytest.raises(SessionClosed):
        b.wait_written(timeout=5)  # at once: nothing is in flight any more
    s = b.snapshot_stats()
    assert (s["pending_bytes"], s["in_flight"], s["depth"]) == (0, 0, 0)
    assert s["dropped"] == {"client closed": 1}



class FirstByte:
    """A coalescing policy that knows no Vuer message: frames are ``b"<key>:<value>"``;
    frames with the same key merge by concatenating values, ``b"!"`` is a barrier."""

    def info(self, payload, msg, redundancy_key):
        if payload == b"!":
            return None, None
        k, _ = payload.split(b":")
        return ("kv", (k.decode(),)), None

    def merge(self, key, queued, payload, props):
        return queued.payload + b"," + payload.split(b":")[1], None, None


def test_the_outbox_keys_and_merges_through_its_policy_alone():
    b = Outbox(coalescing=FirstByte())
    for p in (b"a:1", b"b:1", b"a:2", b"!", b"a:3", b"a:4"):
        b.push(p)
    out = []
    while True:
        batch = b.pop_batch(timeout=0)
        if not batch:
            break
        b.mark_written(batch)
        out.extend(m.payload for m in batch)
    assert out == [b"a:1,2", b"b:1", b"!", b"a:3,4"]
    s = b.snapshot_stats()
    assert (s["queued"], s["coalesced"], s["sent"]) == (6, 2, 4)


def test_an_outbox_needs_a_codec_or_a_policy():
    with pytest.raises(ValueError, match="coalescing"):
        Outbox()
    assert Outbox(encode=codec.encode, decode=codec.unpack).coalescing is not None
