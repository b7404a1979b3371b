"""The fleet on a real redis-server, in one process: ``vuer_sync.Fleet`` (publisher only),
``Vuer(fleet=...)`` nodes, atomic groups, coalescing, snapshots, trimming, late join,
``exclude``, the buffer budget, presence, sessions on other nodes (send, rpc, flush, relay).
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from vuer_sync import Fleet, Vuer
from vuer_sync.fleet import FleetLink, RoomKeys, decode_entry
from vuer_sync.fleet.link import FleetUnavailable
from vuer_sync.schemas import Box, DefaultScene, Sphere

from .fleet_redis import need_redis
from conftest import wait_until
from helpers import raw_client, recv_msg


def node(url, room="lab", **fleet_options):
    app = Vuer(port=0, fleet=url, room=room)
    for k, v in fleet_options.items():
        setattr(app.fleet, k, v)
    return app


def positions(app):
    return {k: (app.scene.graph.find(k) or {}).get("position")
            for k in ("a", "b", "c")}


def test_fleet_publishes_batched_entries_and_flush_waits_for_redis(redis_server):
    r = redis_server.client()
    with Fleet(redis_server.url, room="lab") as fleet:
        for i in range(200):
            fleet.upsert @ Box(key=f"b{i}", position=[i, 0, 0])
        fleet.flush(5)
        st = fleet.stats
        assert st["published"] == 200 and st["pending"] == 0, st
        entries = r.xrange(RoomKeys("lab").log)
        assert 1 <= len(entries) == st["entries"] <= 200
        keys = [m for _, f in entries for m in decode_entry(f).items]
        assert len(keys) == 200
        seqs = [decode_entry(f).seq for _, f in entries]
        assert seqs == list(range(1, len(seqs) + 1))
    assert not [t for t in threading.enumerate() if t.name.startswith("vuer-fleet")]
    r.close()


def test_fleet_unreachable_redis_is_a_clear_error():
    need_redis()  # the redis module
    with pytest.raises(FleetUnavailable, match="unavailable"):
        Fleet("redis://127.0.0.1:1/0", room="lab")


def test_invalid_room_names_are_refused():
    with pytest.raises(ValueError, match="room name"):
        FleetLink("redis://127.0.0.1:6379/0", room="a{b}")
    with pytest.raises(ValueError, match="room name"):
        Vuer(port=0, fleet="redis://127.0.0.1:6379/0", room="")


def test_two_nodes_and_a_publisher_converge_and_clients_get_it(redis_server, no_thread_leak):
    with node(redis_server.url) as a, node(redis_server.url) as b:
        ws = raw_client(b.port)
        try:
            assert wait_until(lambda: len(b.sessions) == 1, 5)
            with Fleet(redis_server.url, room="lab") as robot:
                robot.set @ DefaultScene(Box(key="a", position=[0, 0, 0]))
                robot.upsert @ Box(key="a", position=[1, 2, 3])
                robot.flush(5)
            a.scene.upsert @ Sphere(key="b", position=[4, 5, 6])
            a.scene.flush(5)  # Redis has it, and node a applied it
            assert a.scene.graph.find("b")["position"] == [4, 5, 6]
            assert wait_until(lambda: positions(b) == positions(a), 5), (positions(a),
                                                                         positions(b))
            assert positions(a) == {"a": [1, 2, 3], "b": [4, 5, 6], "c": None}
            seen = []  # the raw client on node b received what the robot and node a sent
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and "b" not in seen:
                msg = recv_msg(ws)
                seen += [n.get("key") for n in msg.get("data", {}).get("nodes", [])]
            assert "a" in seen and "b" in seen, seen
        finally:
            ws.close()


def test_without_a_fleet_app_scene_is_local(no_thread_leak):
    app = Vuer(port=0)
    assert app.fleet is None and app.scene.fleet is None
    app.scene.upsert @ Box(key="a", position=[1, 0, 0])
    assert app.scene.graph.find("a")["position"] == [1, 0, 0]  # at once, no Redis


def test_atomic_group_is_one_item_and_arrives_back_to_back(redis_server, no_thread_leak):
    r = redis_server.client()
    with node(redis_server.url) as a:
        with a.scene.atomic():
            a.scene.upsert @ Box(key="a", position=[1, 0, 0])
            a.scene.upsert @ Box(key="a", position=[2, 0, 0])  # not coalesced in a group
            a.scene.remove("a")
        a.scene.flush(5)
        items = [it for _, f in r.xrange(RoomKeys("lab").log) for it in decode_entry(f).items]
        assert len(items) == 1 and items[0][0] == 1 and len(items[0][1]) == 3, items
        assert a.scene.graph.find("a") is None
    r.close()


def test_coalescing_while_redis_is_behind_is_counted_and_latest_wins(redis_server):
    n = 20000
    with Fleet(redis_server.url, room="lab") as robot:
        robot.set @ DefaultScene(*[Box(key=f"k{i}") for i in range(10)])
        for i in range(n):
            robot.update @ {"key": f"k{i % 10}", "position": [i, 0, 0]}
        robot.upsert @ Box(key="k0", position=[-1, 0, 0])  # another kind: no merge across
        robot.flush(10)
        st = robot.stats
    assert st["ops"] == n + 2 and st["published"] + st["coalesced"] == n + 2, st
    assert st["coalesced"] > 0, st  # 20k calls faster than round trips to Redis
    with node(redis_server.url) as late:  # latest value wins, for every node
        got = [late.scene.graph.find(f"k{i}")["position"] for i in range(10)]
    assert got == [[-1, 0, 0]] + [[n - 10 + i, 0, 0] for i in range(1, 10)], got


def test_snapshot_trim_and_late_join(redis_server, no_thread_leak):
    r = redis_server.client()
    keys = RoomKeys("lab")
    with node(redis_server.url) as a:
        a.fleet.snapshot_every = 5
        a.scene.set @ DefaultScene()
        for i in range(60):
            a.scene.upsert @ Box(key=f"b{i % 7}", position=[i, 0, 0])
            a.scene.flush(5)  # one entry each
        assert wait_until(lambda: a.fleet.stats["snapshots_written"] >= 3, 10), a.fleet.stats
        assert wait_until(lambda: r.xlen(keys.log) < 61, 10), r.xlen(keys.log)
        snap = r.hgetall(keys.snapshot)
        assert snap[b"trimmed"] and snap[b"id"] > snap[b"trimmed"]
        with node(redis_server.url) as late:
            assert late.fleet.stats["snapshots_loaded"] == 1
            for k in range(7):
                assert late.scene.graph.find(f"b{k}") == a.scene.graph.find(f"b{k}")
            ws = raw_client(late.port)
            try:
                first = recv_msg(ws)
                assert first["etype"] == "SET"
                kids = {n["key"]: n["position"] for n in first["data"]["children"]}
                assert kids["b3"] == [59 - (59 - 3) % 7, 0, 0], kids
            finally:
                ws.close()
    r.close()


def scene_keys(ws, until, limit=50):
    """Node keys of the scene messages ``ws`` receives, up to the one naming ``until``."""
    keys = []
    for _ in range(limit):
        msg = recv_msg(ws)
        data = msg.get("data") or {}
        keys += [n.get("key") for n in data.get("nodes") or []]
        if until in keys:
            return keys
    raise AssertionError(f"{until!r} not received: {keys}")


def test_broadcast_exclude_is_kept_across_the_fleet(redis_server, no_thread_leak):
    from vuer_sync.events import Update

    with node(redis_server.url) as a, node(redis_server.url) as b:
        c1 = raw_client(a.port)
        assert wait_until(lambda: len(a.sessions) == 1, 5)
        sender = a.sessions[0]
        c2, c3 = raw_client(a.port), raw_client(b.port)
        try:
            assert wait_until(lambda: len(a.sessions) == 2 and len(b.sessions) == 1, 5)
            a.scene.upsert @ Box(key="x")
            a.broadcast(Update({"key": "x", "position": [1, 1, 1]}), exclude=sender)
            a.scene.upsert @ Box(key="marker")
            a.scene.flush(5)
            assert scene_keys(c1, "marker") == ["x", "marker"]  # not its own echo
            assert scene_keys(c2, "marker") == ["x", "x", "marker"]
            assert scene_keys(c3, "marker") == ["x", "x", "marker"]  # on the other node
        finally:
            for ws in (c1, c2, c3):
                ws.close()


def test_producers_past_the_buffer_budget_get_fleet_unavailable(redis_server):
    robot = Fleet(redis_server.url, room="lab", max_buffer_bytes=20_000, buffer_timeout=0.3,
                  snapshots=False)  # (with a scene, it would re-seed the room Redis lost)
    try:
        redis_server.kill()
        accepted = 0
        t0 = time.monotonic()
        with pytest.raises(FleetUnavailable, match="max_buffer_bytes=20000"):
            for i in range(5000):  # ADDs never coalesce: the buffer only grows
                robot.add(Box(key=f"b{i}"))
                accepted += 1
        assert time.monotonic() - t0 < 10
        st = robot.stats
        assert st["blocked"] >= 1 and 0 < accepted < 5000, (accepted, st)
        assert st["buffered_bytes"] <= 20_000 + 200, st
        redis_server.start(port=redis_server.port)
        robot.flush(15)  # everything accepted was published once Redis was back
        r = redis_server.client()
        try:
            n = sum(len(decode_entry(f).items) for _, f in r.xrange(RoomKeys("lab").log))
        finally:
            r.close()
        assert n == accepted == robot.stats["published"], (n, accepted, robot.stats)
    finally:
        robot.close()


def test_sessions_lists_every_client_of_the_room_on_every_node(redis_server, no_thread_leak):
    with node(redis_server.url) as a, node(redis_server.url) as b:
        assert set(a.fleet.nodes()) == {a.fleet.node_id, b.fleet.node_id}
        c1, c2 = raw_client(a.port, client="python"), raw_client(b.port, client="browser")
        try:
            assert wait_until(lambda: len(a.sessions) == 1 and len(b.sessions) == 1, 5)
            want = {(a.sessions[0].id, a.fleet.node_id, "python"),
                    (b.sessions[0].id, b.fleet.node_id, "browser")}

            def listed(app):
                return {(s["sid"], s["node"], s["init"].get("client"))
                        for s in app.fleet.sessions()}

            assert wait_until(lambda: listed(a) == want and listed(b) == want, 5), \
                (listed(a), want)  # INIT fields arrive with a heartbeat (<= 1 s)
            assert all(s["since"] <= time.time() for s in a.fleet.sessions())
        finally:
            c1.close()
            c2.close()
        assert wait_until(lambda: a.fleet.sessions() == [], 5), a.fleet.sessions()
        b.stop()
        assert set(a.fleet.nodes()) == {a.fleet.node_id}  # a clean stop leaves at once


def test_closing_while_redis_is_down_is_bounded_and_counts_what_is_dropped(redis_server,
                                                                         caplog):
    robot = Fleet(redis_server.url, room="lab")
    redis_server.kill()
    robot.upsert @ Box(key="a")
    robot.add(Box(key="b"))
    t0 = time.monotonic()
    robot.close(timeout=0.3)
    assert time.monotonic() - t0 < 5
    assert robot.stats["lost"] == 2 and robot.stats["published"] == 0, robot.stats
    logged = [int(n) for n in re.findall(r"(\d+) operation\(s\) not published", caplog.text)]
    assert sum(logged) == 2, caplog.text  # one or two writes (the first may be direct)
    assert not [t for t in threading.enumerate() if t.name.startswith("vuer-fleet")]


def answer_rpcs(ws, n, stop):
    """A raw client that answers ``PING`` requests with ``{"pong": <its n>}``."""
    from vuer_sync import codec

    got = []
    while len(got) < n and not stop.is_set():
        try:
            msg = recv_msg(ws)
        except Exception:
            return got
        got.append(msg)
        if msg.get("etype") == "PING":
            ws.send_binary(codec.encode({"etype": msg["rtype"], "ts": 1.0,
                                         "value": {"pong": msg["data"]["n"]}}))
    return got


def test_a_session_on_another_node_is_reached_by_send_rpc_and_flush(redis_server,
                                                                    no_thread_leak):
    from vuer_sync.errors import SessionClosed
    from vuer_sync.events import ServerRPC

    class Ping(ServerRPC):
        etype = "PING"

    with node(redis_server.url) as a, node(redis_server.url) as b:
        ws_b, ws_a = raw_client(b.port), raw_client(a.port)
        stop = threading.Event()
        try:
            assert wait_until(lambda: len(b.sessions) == 1 and len(a.sessions) == 1, 5)
            sid = b.sessions[0].id
            assert wait_until(lambda: sid in {s["sid"] for s in a.fleet.sessions()}, 5)
            tab = a.fleet.session(sid)  # from node a: the client of node b
            assert tab.node == b.fleet.node_id
            tab.upsert @ Box(key="only_b", position=[1, 2, 3])
            tab.flush(5)
            first = recv_msg(ws_b)
            assert first["data"]["nodes"][0]["key"] == "only_b"
            answers = []
            t = threading.Thread(target=lambda: answers.extend(answer_rpcs(ws_b, 3, stop)))
            t.start()
            assert tab.rpc(Ping({"n": 7}), ttl=5).value == {"pong": 7}
            with Fleet(redis_server.url, room="lab") as robot:  # a process without HTTP
                assert robot.session(sid).rpc(Ping({"n": 8}), ttl=5).value == {"pong": 8}
            stop.set()
            ws_a.settimeout(0.3)
            with pytest.raises(Exception):  # node a's own client got none of it
                recv_msg(ws_a)
            ws_b.close()
            t.join(5)
            assert wait_until(lambda: not b.sessions, 5)
            with pytest.raises(SessionClosed):
                tab.rpc(Ping({"n": 9}), ttl=5)  # the client left: at once, not after 5 s
            with pytest.raises(SessionClosed):
                a.fleet.session(sid)
        finally:
            stop.set()
            ws_a.close()
            ws_b.close()


def test_a_call_on_a_node_that_goes_away_ends_with_session_closed(redis_server,
                                                                  no_thread_leak):
    from vuer_sync.errors import SessionClosed
    from vuer_sync.events import ServerRPC

    class Ping(ServerRPC):
        etype = "PING"

    with node(redis_server.url) as a:
        b = node(redis_server.url)
        b.start(block=False)
        ws = raw_client(b.port)  # never answers
        try:
            assert wait_until(lambda: len(b.sessions) == 1, 5)
            sid = b.sessions[0].id
            assert wait_until(lambda: sid in {s["sid"] for s in a.fleet.sessions()}, 5)
            tab = a.fleet.session(sid)
            threading.Timer(0.5, b.stop).start()
            t0 = time.monotonic()
            with pytest.raises(SessionClosed):
                tab.rpc(Ping({"n": 1}), ttl=30)
            assert time.monotonic() - t0 < 5
        finally:
            ws.close()
            b.stop()


def test_fleet_relay_reaches_a_client_or_every_client_on_any_node(redis_server,
                                                                  no_thread_leak):
    from vuer_sync import codec
    from vuer_sync.errors import SessionClosed

    with node(redis_server.url) as a, node(redis_server.url) as b:
        wa, wb = raw_client(a.port), raw_client(b.port)
        try:
            assert wait_until(lambda: len(a.sessions) == 1 and len(b.sessions) == 1, 5)
            sid_b = b.sessions[0].id
            assert wait_until(lambda: len(a.fleet.sessions()) == 2, 5)
            one = codec.encode({"etype": "NOTE", "ts": 1.0, "data": {"n": 1}})
            assert a.scene.fleet_relay(sid_b, one) == 1  # from node a to b's client
            assert recv_msg(wb)["data"] == {"n": 1}
            every = codec.encode({"etype": "NOTE", "ts": 1.0, "data": {"n": 2}})
            assert a.scene.fleet_relay("*", every) == 2
            assert recv_msg(wa)["data"] == {"n": 2} and recv_msg(wb)["data"] == {"n": 2}
            with pytest.raises(SessionClosed):
                a.scene.fleet_relay("no-such-session", one)
        finally:
            wa.close()
            wb.close()


def test_post_relay_on_any_node_reaches_the_client_wherever_it_is(redis_server, no_thread_leak):
    import urllib.error
    import urllib.request

    from vuer_sync import codec

    def post(app, sid, msg):
        req = urllib.request.Request(f"http://127.0.0.1:{app.port}/relay?sid={sid}",
                                     data=codec.encode(msg), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    with node(redis_server.url) as a, node(redis_server.url) as b:
        wa, wb = raw_client(a.port), raw_client(b.port)
        try:
            assert wait_until(lambda: len(a.sessions) == 1 and len(b.sessions) == 1, 5)
            assert wait_until(lambda: len(a.fleet.sessions()) == 2, 5)
            sid_b = b.sessions[0].id
            out = post(a, sid_b, {"etype": "NOTE", "ts": 1.0, "data": {"n": 1}})
            assert out == b'{"delivered": 1}'
            assert recv_msg(wb)["data"] == {"n": 1}  # posted on node a, connected to b
            out = post(b, "*", {"etype": "NOTE", "ts": 1.0, "data": {"n": 2}})
            assert out == b'{"delivered": 2}'
            assert recv_msg(wa)["data"] == {"n": 2} and recv_msg(wb)["data"] == {"n": 2}
            with pytest.raises(urllib.error.HTTPError) as e:
                post(a, "no-such-session", {"etype": "NOTE", "ts": 1.0})
            assert e.value.code == 404
        finally:
            wa.close()
            wb.close()


def test_broadcast_exclude_inside_atomic_is_kept_across_the_fleet(redis_server,
                                                                  no_thread_leak):
    from vuer_sync.events import Update

    with node(redis_server.url) as a, node(redis_server.url) as b:
        c1 = raw_client(a.port)
        assert wait_until(lambda: len(a.sessions) == 1, 5)
        sender = a.sessions[0]
        c2, c3 = raw_client(a.port), raw_client(b.port)
        try:
            assert wait_until(lambda: len(a.sessions) == 2 and len(b.sessions) == 1, 5)
            a.scene.upsert @ Box(key="x")
            with a.scene.atomic():
                a.broadcast(Update({"key": "x", "position": [1, 1, 1]}), exclude=sender)
                a.scene.upsert @ Box(key="y")
            a.scene.upsert @ Box(key="marker")
            a.scene.flush(5)
            assert scene_keys(c1, "marker") == ["x", "y", "marker"]  # not its own echo
            assert scene_keys(c2, "marker") == ["x", "x", "y", "marker"]
            assert scene_keys(c3, "marker") == ["x", "x", "y", "marker"]  # another node
            assert a.scene.graph.find("x")["position"] == [1, 1, 1]  # the scene has it
            assert b.scene.graph.find("x")["position"] == [1, 1, 1]
        finally:
            for ws in (c1, c2, c3):
                ws.close()


def test_an_idle_producer_writes_itself_and_a_busy_one_is_batched_in_order(redis_server):
    r = redis_server.client()
    with Fleet(redis_server.url, room="lab", snapshots=False) as robot:
        for i in range(5):  # paced: the link is idle at every call
            robot.upsert @ Box(key="a", position=[i, 0, 0])
            time.sleep(0.05)
        robot.flush(5)
        assert robot.stats["direct"] >= 3, robot.stats  # written by the caller's thread
        before = robot.stats["entries"]
        for i in range(2000):  # a burst: queued, batched by the publisher thread
            robot.add(Box(key=f"b{i}"))
        robot.flush(10)
        st = robot.stats
        assert st["published"] == 2005 and st["entries"] - before < 1000, st
    keys = []
    for _, fields in r.xrange(RoomKeys("lab").log):
        for it in decode_entry(fields).items:
            from vuer_sync import codec
            keys += [n["key"] for n in codec.unpack(it)["data"]["nodes"]]
    assert keys == ["a"] * 5 + [f"b{i}" for i in range(2000)]  # per-producer order kept
    r.close()


def test_a_room_of_publishers_only_keeps_its_stream_bounded(redis_server, no_thread_leak):
    r = redis_server.client()
    keys = RoomKeys("lab")
    with Fleet(redis_server.url, room="lab", snapshot_every=20) as robot:
        robot.set @ DefaultScene()
        for i in range(300):  # one entry each
            robot.upsert @ Box(key=f"b{i % 10}", position=[i, 0, 0])
            robot.flush(5)
        assert wait_until(lambda: robot.stats["snapshots_written"] >= 3, 10), robot.stats
        assert wait_until(lambda: r.xlen(keys.log) < 100, 10), r.xlen(keys.log)
        assert robot.link.nodes() == {}  # it takes part in the snapshots, serves no one
        assert robot.mirror.graph.find("b9")["position"] == [299, 0, 0]
    with node(redis_server.url) as late:  # snapshot + tail: the current scene
        assert late.fleet.stats["snapshots_loaded"] == 1, late.fleet.stats
        assert [late.scene.graph.find(f"b{k}")["position"][0] for k in range(10)] == \
            list(range(290, 300))
    r.close()


def test_a_burst_of_pooled_calls_leaves_no_redis_connections_behind(redis_server,
                                                                     no_thread_leak):
    """Concurrent listings grow the node's pool of Redis connections to their concurrency;
    once the pool is quiet for ``pool.idle_s`` the idle ones are closed (counted in
    ``pool_trims``), so a long-lived node's connections and fds do not keep a burst's peak."""
    r = redis_server.client()
    me = r.client_id()

    def connections():
        return sum(1 for c in r.client_list() if int(c["id"]) != me)

    app = Vuer(port=0, fleet=redis_server.url, room="lab")
    app.fleet.lease_ms = 600
    app.fleet.pool.idle_s = 0.5
    with app as a:
        a.fleet.nodes()
        assert wait_until(lambda: connections() >= 2, 5)  # the stream reader and the pool
        before = connections()
        gate = threading.Barrier(8)

        def burst():
            gate.wait(5)
            for _ in range(30):
                a.fleet.sessions()

        threads = [threading.Thread(target=burst) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        peak = connections()
        assert peak >= before + 2, (peak, before)  # the burst did grow the pool
        assert wait_until(lambda: connections() <= before, 10), (connections(), before)
        assert a.fleet.stats["pool_trims"] >= 1
        trims = a.fleet.stats["pool_trims"]
        time.sleep(1.5)  # quiet: no trim again (the heartbeat's connection stays)
        assert a.fleet.stats["pool_trims"] == trims
        assert a.fleet.sessions() == []  # the pool connects again on use
