from __future__ import annotations

import socket
import threading
import time

import pytest

from vuer_sync.events import ServerEvent
from vuer_sync.scene import SceneMirror
from vuer_sync.schemas import Box, Group, Scene, Sphere

from conftest import wait_until
from helpers import raw_client, recv_msg


def test_graph_follows_the_web_client_store():
    g = SceneMirror()
    g.apply({"etype": "SET", "data": {"tag": "Scene", "children": [{"key": "a", "tag": "Box"}],
                                      "bgChildren": [{"key": "grid", "tag": "Grid"}]}})
    g.apply({"etype": "SET", "data": {"tag": "Scene", "children": [{"key": "b", "tag": "Box"}]}})
    snap = g.snapshot()
    assert [n["key"] for n in snap["children"]] == ["b"]            # SET replaces given lists
    assert [n["key"] for n in snap["bgChildren"]] == ["grid"]       # shallow merge keeps others
    g.apply({"etype": "UPSERT", "data": {"nodes": [{"key": "grid", "cellSize": 2}], "to": None}})
    assert g.find("grid")["cellSize"] == 2                          # found in bgChildren
    g.apply({"etype": "UPSERT", "data": {"nodes": [{"key": "c", "tag": "Sphere"}], "to": "b"}})
    assert g.find("b")["children"][0]["key"] == "c"
    g.apply({"etype": "ADD", "data": {"nodes": [{"key": "h", "tag": "Div"}],
                                      "to": "htmlChildren"}})
    assert g.snapshot()["htmlChildren"][0]["key"] == "h"
    g.apply({"etype": "ADD", "data": {"nodes": [{"key": "x"}], "to": "missing"}})
    assert g.find("x") is None
    g.apply({"etype": "UPDATE", "data": {"nodes": [{"key": "nobody", "p": 1}]}})
    assert g.find("nobody") is None                                 # UPDATE never inserts
    g.apply({"etype": "ADD", "data": {"nodes": [{"key": "grp", "tag": "group",
                                                 "children": [{"key": "only"}]}], "to": None}})
    g.apply({"etype": "REMOVE", "data": {"keys": ["only", "c"]}})
    keys = [n["key"] for n in g.snapshot()["children"]]
    assert keys == ["b"] and g.find("c") is None                    # empty group dropped too


def test_late_joiner_and_reload_get_the_current_scene(app):
    app.start(block=False)
    app.scene.set @ Scene(Box(key="a", position=[0, 0, 0]))
    for i in range(100):
        app.scene.update @ {"key": "a", "position": [i, 0, 0]}
    app.scene.upsert @ Sphere(key="s")
    app.scene.remove @ "s"
    app.scene.add @ Box(key="b")
    for _ in range(2):  # connect, then "reload" (disconnect and connect again)
        ws = raw_client(app.port)
        first = recv_msg(ws)
        assert first["etype"] == "SET"
        kids = {n["key"]: n for n in first["data"]["children"]}
        assert set(kids) == {"a", "b"} and kids["a"]["position"] == [99, 0, 0]
        app.scene.update @ {"key": "b", "color": "red"}
        live = recv_msg(ws)
        assert live["etype"] == "UPDATE" and live["data"]["nodes"][0]["color"] == "red"
        ws.close()
        wait_until(lambda: not app.sessions)


def test_broadcast_reaches_everyone_and_exclude_skips_one(app):
    app.start(block=False)
    a, b = raw_client(app.port), raw_client(app.port)
    wait_until(lambda: len(app.sessions) == 2)
    sa = app.sessions[0]
    app.scene.upsert @ Box(key="k")
    assert recv_msg(a)["etype"] == recv_msg(b)["etype"] == "UPSERT"
    app.broadcast(ServerEvent({"from": "a"}, etype="RELAYED"), exclude=sa)
    app.broadcast(ServerEvent({"n": 2}, etype="ALL"))
    first_a, first_b = recv_msg(a), recv_msg(b)
    # a (excluded from the relay) sees ALL first; b sees the relay then ALL
    ids = {s.id: s for s in app.sessions}
    assert sa.id in ids
    order = {"a": first_a["etype"], "b": first_b["etype"]}
    assert sorted(order.values()) == ["ALL", "RELAYED"]
    a.close()
    b.close()


def test_per_session_operations_stay_per_session(app):
    app.start(block=False)
    a, b = raw_client(app.port), raw_client(app.port)
    wait_until(lambda: len(app.sessions) == 2)
    s1, s2 = app.sessions
    s1.upsert @ Box(key="only-1")
    s2.upsert @ Box(key="only-2")
    app.scene.upsert @ Box(key="shared")
    got = {}
    for ws in (a, b):
        got[ws] = [recv_msg(ws)["data"]["nodes"][0]["key"] for _ in range(2)]
    assert sorted(map(tuple, got.values())) == [("only-1", "shared"), ("only-2", "shared")]
    assert app.scene.graph.find("only-1") is None
    a.close()
    b.close()


def test_stalled_client_harms_nobody_and_catches_up(app):
    app.start(block=False)
    fast = raw_client(app.port)
    assert wait_until(lambda: len(app.sessions) == 1)
    fast_session = app.sessions[0]
    stalled = raw_client(app.port, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    assert wait_until(lambda: len(app.sessions) == 2)
    slow_session = [s for s in app.sessions if s is not fast_session][0]
    app.scene.set @ Scene(*[Box(key=f"n{i}") for i in range(20)])
    # fill the stalled client's socket buffers so its sender blocks
    slow_session.send(ServerEvent(b"\x00" * (8 << 20), etype="BLOB"))
    received = []
    errors = []

    def read_fast():
        try:
            while True:
                m = recv_msg(fast)
                received.append(m)
                if m["etype"] == "DONE":
                    return
        except Exception as e:  # reported below
            errors.append(e)

    reader = threading.Thread(target=read_fast)
    reader.start()
    worst = 0.0
    ticks = 200
    for t in range(ticks):  # 20 nodes x 200 ticks
        t0 = time.perf_counter()
        for i in range(20):
            app.scene.update @ {"key": f"n{i}", "position": [t, i, 0]}
        worst = max(worst, time.perf_counter() - t0)
    app.broadcast(ServerEvent(None, etype="DONE"))
    reader.join(20)
    assert not reader.is_alive() and not errors, errors
    # the fast client got every update or, when it fell behind, the latest value: in order
    fast_latest = {}
    for m in received:
        if m["etype"] == "UPDATE":
            n = m["data"]["nodes"][0]
            assert n["position"][0] >= fast_latest.get(n["key"], [-1])[0]
            fast_latest[n["key"]] = n["position"]
    assert fast_latest == {f"n{i}": [ticks - 1, i, 0] for i in range(20)}
    # the producer never waited on the stalled client (budget not hit: coalescing)
    assert worst < 0.5, worst
    fast_session.flush(5)  # the client can read a frame before the sender counts it
    st, slow = fast_session.stats, slow_session.stats
    assert st["sent"] == len(received)
    assert slow["coalesced"] > 0 and slow["depth"] <= 20 + 3
    for s in (st, slow):  # counters account for every message
        assert s["queued"] == s["sent"] + s["coalesced"] + s["depth"] + s["in_flight"]
    # resume reading: the stalled client ends with the latest state of every node
    latest = {}
    while True:
        m = recv_msg(stalled)
        if m["etype"] == "UPDATE":
            for n in m["data"]["nodes"]:
                latest[n["key"]] = n["position"]
        if m["etype"] == "DONE":
            break
    assert latest == {f"n{i}": [ticks - 1, i, 0] for i in range(20)}
    fast.close()
    stalled.close()


@pytest.mark.parametrize("n_threads", [4])
def test_scene_atomic_groups_are_contiguous_for_every_client(app, n_threads):
    app.start(block=False)
    clients = [raw_client(app.port) for _ in range(2)]
    wait_until(lambda: len(app.sessions) == 2)

    def producer(tag):
        for g in range(30):
            with app.scene.atomic():
                for i in range(4):
                    app.scene.send(ServerEvent([tag, g, i], etype="PART"))

    ts = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for ws in clients:
        msgs = [recv_msg(ws)["data"] for _ in range(n_threads * 30 * 4)]
        for k in range(0, len(msgs), 4):
            chunk = msgs[k:k + 4]
            assert len({(m[0], m[1]) for m in chunk}) == 1 and [m[2] for m in chunk] == [0, 1,
                                                                                          2, 3]
        ws.close()


def test_app_stats_and_flush(app):
    app.start(block=False)
    ws = raw_client(app.port)
    wait_until(lambda: app.sessions)
    for i in range(50):
        app.scene.upsert @ Group(key="g", position=[i, 0, 0])
    app.flush(5)
    st = app.stats
    assert st["sessions"] == 1 and st["queued"] == 50 and st["sent"] + st["coalesced"] == 50
    ws.close()
    wait_until(lambda: not app.sessions)
    assert app.stats["sessions_ended"] == 1 and app.stats["queued"] == 50


def test_point_clouds_reach_live_stalled_and_late_clients_intact(app):
    """Large binaries travel by reference (codec.Segments): through the shared graph, the
    coalescing of a stalled client's queue and a late joiner's SET, byte for byte."""
    from vuer_sync.schemas import PointCloud

    app.start(block=False)
    live = raw_client(app.port)
    stalled = raw_client(app.port, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    assert wait_until(lambda: len(app.sessions) == 2)
    clouds = [(bytes([i]) * (3 << 20), bytes([100 + i]) * (1 << 20)) for i in range(4)]
    for verts, cols in clouds:
        app.scene.upsert @ PointCloud(key="pc", vertices=verts, colors=cols)
        got = recv_msg(live)["data"]["nodes"][0]
        assert (got["vertices"], got["colors"]) == (verts, cols)
    app.scene.update @ {"key": "pc", "size": 0.5}
    assert sum(s.stats["coalesced"] for s in app.sessions) >= 1  # the stalled one's queue
    app.broadcast(ServerEvent(None, etype="DONE"))
    last = {}
    while True:
        m = recv_msg(stalled)
        if m["etype"] == "DONE":
            break
        for n in m["data"]["nodes"]:
            last.update(n)
    assert last["vertices"] == clouds[-1][0] and last["colors"] == clouds[-1][1]
    assert last["size"] == 0.5
    late = raw_client(app.port)
    first = recv_msg(late)
    assert first["etype"] == "SET"
    (pc,) = first["data"]["children"]
    assert (pc["vertices"], pc["colors"], pc["size"]) == (*clouds[-1], 0.5)
    for ws in (live, stalled, late):
        ws.close()


def test_graph_index_follows_new_nodes_without_a_rebuild():
    """A stream of new nodes keeps the key index (no rebuild per node), and lookups stay
    right: new keys, a key added twice (the first wins), a new node with children."""
    g = SceneMirror()
    walks = []
    full_walk = g._all
    g._all = lambda root: (walks.append(1), full_walk(root))[1]
    g.apply({"etype": "ADD", "data": {"nodes": [{"key": "a", "tag": "Box"}]}})
    assert g.find("a") is not None and len(walks) == 1
    for i in range(200):
        g.apply({"etype": "UPSERT", "data": {"nodes": [{"key": f"n{i}", "tag": "Box"}],
                                             "to": None}})
        assert g.find(f"n{i}")["key"] == f"n{i}"
    assert len(walks) == 1  # the index grew in place: never rebuilt
    first = g.find("a")
    g.apply({"etype": "ADD", "data": {"nodes": [{"key": "a", "tag": "Sphere"}]}})
    assert g.find("a") is first  # depth first: the older one comes first
    g.apply({"etype": "ADD", "data": {"nodes": [{"key": "g", "tag": "Group",
                                                 "children": [{"key": "kid"}]}]}})
    assert g.find("kid") == {"key": "kid"}
