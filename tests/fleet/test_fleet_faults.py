"""Faults with a real redis-server: Redis killed and restarted (with AOF and empty), a node
killed with -9, the documented ACL rules, churn. Bounded waits, everything stopped."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from vuer_sync import Fleet, Vuer
from vuer_sync.fleet import RoomKeys
from vuer_sync.schemas import Box

from .test_fleet_processes import Fleet3, dump
from conftest import wait_until
from helpers import raw_client, recv_msg


def pos(app, key):
    node = app.scene.graph.find(key)
    return node and node["position"]


def test_redis_restarted_with_aof_loses_nothing_flushed(redis_aof, no_thread_leak):
    app = Vuer(port=0, fleet=redis_aof.url, room="lab")
    with app, Fleet(redis_aof.url, room="lab") as robot:
        for i in range(50):
            robot.upsert @ Box(key=f"b{i}", position=[i, 0, 0])
        robot.flush(5)
        app.fleet.sync(5)  # the node has them (its clients are served from its mirror)
        redis_aof.kill()  # a crash: SIGKILL
        robot.upsert @ Box(key="while_down", position=[1, 1, 1])
        with pytest.raises(TimeoutError, match="not acknowledged"):
            robot.flush(0.5)
        ws = raw_client(app.port)  # the node still serves its clients from its mirror
        try:
            first = recv_msg(ws)
            assert first["etype"] == "SET" and len(first["data"]["children"]) == 50
        finally:
            ws.close()
        redis_aof.start(port=redis_aof.port)  # same port, same dir: the AOF is replayed
        robot.flush(15)  # the waiting operation went out once Redis was back
        app.fleet.sync(15)
        assert pos(app, "while_down") == [1, 1, 1] and pos(app, "b49") == [49, 0, 0]
        with Vuer(port=0, fleet=redis_aof.url, room="lab") as late:
            assert late.scene.snapshot() == app.scene.snapshot()  # nothing flushed lost


def test_redis_restarted_empty_the_first_node_back_reseeds_the_room(redis_server,
                                                                    no_thread_leak):
    with Vuer(port=0, fleet=redis_server.url, room="lab") as a, \
            Vuer(port=0, fleet=redis_server.url, room="lab") as b:
        a.scene.upsert @ Box(key="before", position=[1, 0, 0])
        a.scene.flush(5)
        b.fleet.sync(5)
        redis_server.kill()
        redis_server.start(port=redis_server.port)  # empty: no AOF
        assert wait_until(lambda: a.fleet.stats["reseeds"] + b.fleet.stats["reseeds"] >= 1,
                          10), (a.fleet.stats, b.fleet.stats)
        time.sleep(1.5)  # a few more heartbeats: nobody else re-seeds
        assert a.fleet.stats["reseeds"] + b.fleet.stats["reseeds"] == 1
        a.scene.upsert @ Box(key="after", position=[2, 0, 0])
        a.scene.flush(15)
        b.fleet.sync(5)
        assert pos(b, "before") == [1, 0, 0] and pos(b, "after") == [2, 0, 0]
        with Vuer(port=0, fleet=redis_server.url, room="lab") as late:
            assert pos(late, "before") == [1, 0, 0]  # the room came back from a node's scene
            assert pos(late, "after") == [2, 0, 0]
            assert late.scene.snapshot() == a.scene.snapshot() == b.scene.snapshot()


def test_a_node_killed_with_9_leaves_the_others_unaffected(redis_server):
    fleet = Fleet3(redis_server.url, "procs")
    try:
        nodes = [fleet.node("--lease-ms", "600") for _ in range(2)]
        r = redis_server.client()
        leader = wait_until(lambda: r.get(RoomKeys("procs").leader), 5)
        assert leader, "no node took the snapshot lease"
        pid = int(leader.decode().split(":")[1])
        victim = next(p for p in nodes if p.proc.pid == pid)
        other = next(p for p in nodes if p is not victim)
        watcher = Fleet(redis_server.url, room="procs")  # lists the room's sessions
        viewer = raw_client(victim.port)

        def pids():
            return sorted(int(s["node"].split(":")[1]) for s in watcher.link.sessions())

        try:
            assert wait_until(lambda: pids() == [victim.proc.pid], 5), pids()
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            t0 = time.monotonic()  # its heartbeat lives 1 s (lease 600 ms: beats of 0.2 s)
            assert wait_until(lambda: pids() == [], 5), pids()
            assert time.monotonic() - t0 < 3
            assert [int(n.split(":")[1]) for n in watcher.link.nodes()] == [other.proc.pid]
        finally:
            viewer.close()
            watcher.close()
        def successor():
            now = r.get(RoomKeys("procs").leader)
            return now.decode() if now is not None and now != leader else None

        new = wait_until(successor, 10)  # the lease expires (600 ms) and the other takes it
        assert new and int(new.split(":")[1]) == other.proc.pid, new
        with Fleet(redis_server.url, room="procs") as robot:
            robot.upsert @ Box(key="after_kill", position=[3, 0, 0])
            robot.flush(5)
        ws = raw_client(other.port)
        try:
            deadline = time.monotonic() + 10
            seen = False
            while not seen and time.monotonic() < deadline:
                msg = recv_msg(ws)
                text = repr(msg)
                seen = "after_kill" in text
            assert seen
        finally:
            ws.close()
        r.close()
    finally:
        fleet.close()


def test_the_documented_acl_rules_are_enough_for_a_node(redis_server, no_thread_leak):
    r = redis_server.client()
    r.execute_command("ACL", "SETUSER", "vuer", "on", ">pw-0123456789", "~vuer_sync:*",
                      "+@read", "+@write", "+@stream", "+@transaction", "+@scripting",
                      "+ping")
    url = f"redis://vuer:pw-0123456789@127.0.0.1:{redis_server.port}/0"
    app = Vuer(port=0, fleet=url, room="lab")
    app.fleet.snapshot_interval = 0.05
    with app, Fleet(url, room="lab", snapshots=False) as robot:  # the node takes the lease
        robot.upsert @ Box(key="a", position=[1, 2, 3])
        robot.flush(5)
        app.fleet.sync(5)
        assert wait_until(lambda: app.fleet.stats["snapshots_written"] >= 1, 5), \
            app.fleet.stats
        assert app.fleet.stats["leader"]
    r.set("not_ours", 1)
    limited = type(r).from_url(url)
    try:
        with pytest.raises(Exception, match="permission"):
            limited.get("not_ours")  # the user reaches vuer_sync:* keys only
    finally:
        limited.close()
        r.close()


def test_nodes_joining_and_leaving_leave_no_threads_or_fds(redis_server, no_thread_leak):
    def fds():
        return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0

    def cycle(i):
        with Vuer(port=0, fleet=redis_server.url, room="lab") as app:
            app.scene.upsert @ Box(key="k", position=[i, 0, 0])
            app.scene.flush(5)

    cycle(0)
    before = fds(), threading.active_count()
    for i in range(1, 11):
        cycle(i)
    assert wait_until(lambda: threading.active_count() <= before[1], 5), \
        [t.name for t in threading.enumerate()]
    assert fds() <= before[0] + 2, (fds(), before)


def test_a_node_that_fell_behind_the_trimmed_stream_resyncs(redis_server):
    fleet = Fleet3(redis_server.url, "procs")
    r = redis_server.client()
    keys = RoomKeys("procs")
    try:
        a = fleet.node("--snapshot-every", "5", "--snapshot-interval", "0.05")
        assert wait_until(lambda: r.get(keys.leader), 5), "node a took no lease"
        b = fleet.node()  # never the snapshot writer while a is alive
        b.proc.send_signal(signal.SIGSTOP)  # b stops reading (a long GC pause, a debugger)
        try:
            with Fleet(redis_server.url, room="procs") as robot:
                for i in range(400):  # 400 entries: a snapshots and trims many times
                    robot.upsert @ Box(key=f"k{i % 20}", position=[i, 0, 0])
                    robot.flush(5)
            assert wait_until(lambda: r.xlen(keys.log) < 400, 10), r.xlen(keys.log)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        a.ask("sync", "SYNCED")
        b.ask("sync", "SYNCED")
        da, db = dump(a), dump(b)
        assert db["scene"] == da["scene"]
        assert db["stats"]["resyncs"] >= 1, db["stats"]
    finally:
        r.close()
        fleet.close()


def test_a_call_on_a_client_of_a_node_killed_with_9_ends_promptly(redis_server):
    from vuer_sync.errors import SessionClosed
    from vuer_sync.events import ServerRPC

    class Ping(ServerRPC):
        etype = "PING"

    fleet = Fleet3(redis_server.url, "procs")
    try:
        b = fleet.node("--lease-ms", "600")  # heartbeats of 0.2 s, living 1 s
        ws = raw_client(b.port)  # connected to b, never answers
        with Fleet(redis_server.url, room="procs") as caller:
            try:
                assert wait_until(caller.sessions, 5)
                tab = caller.session(caller.sessions()[0]["sid"])
                assert int(tab.node.split(":")[1]) == b.proc.pid
                outcome = []

                def call():
                    t0 = time.monotonic()
                    try:
                        tab.rpc(Ping({"n": 1}), ttl=30)
                    except Exception as e:
                        outcome.append((e, time.monotonic() - t0))

                t = threading.Thread(target=call)
                t.start()
                time.sleep(0.5)  # the request is waiting on b
                b.proc.send_signal(signal.SIGKILL)
                t.join(15)
                assert outcome and isinstance(outcome[0][0], SessionClosed), outcome
                assert outcome[0][1] < 5, outcome  # not the 30 s of its ttl
            finally:
                ws.close()
    finally:
        fleet.close()


def test_a_reseed_goes_before_what_was_published_since_and_applies_it_once(redis_server,
                                                                          no_thread_leak):
    """Redis lost the room; a robot published into the empty room before any node re-seeded
    it. The seed (a SET of a node's scene) must not overwrite those operations: it goes first
    and they are applied after it, exactly once (an ADD the seeder had applied already is
    not added twice)."""
    from vuer_sync.fleet.link import FleetLink, connect
    from vuer_sync.fleet.room import reseed
    from vuer_sync.server.fleet_api import MirrorSink

    r = redis_server.client()
    keys = RoomKeys("lab")
    with Fleet(redis_server.url, room="lab", snapshots=False) as robot:
        robot.add(Box(key="fresh", position=[1, 0, 0]))  # the room is empty: no epoch
        robot.flush(5)
        robot.add(Box(key="fresh2", position=[2, 0, 0]))
        robot.flush(5)
        producer = robot.link.node_id
    assert r.get(keys.epoch) is None and r.xlen(keys.log) == 2

    def seeder(applied):  # a node whose scene is the room before Redis lost it
        link = FleetLink(redis_server.url, room="lab")
        link.sink = MirrorSink()
        link.sink.fleet_apply([Vuer(port=0).scene.fleet_snapshot()])  # an empty SET
        from vuer_sync import codec
        link.sink.fleet_apply([codec.encode({"etype": "UPSERT", "data": {"nodes": [
            {"key": "before", "tag": "Box", "position": [9, 0, 0]}], "to": None}})])
        if applied:  # it had applied the robot's first entry, "fresh"
            link.sink.fleet_apply([codec.encode({"etype": "ADD", "data": {"nodes": [
                {"key": "fresh", "tag": "Box", "position": [1, 0, 0]}], "to": None}})])
            link._seen = {producer: 1}
        link._redis = connect(redis_server.url)
        return link

    link = seeder(applied=True)
    try:
        assert reseed(link._redis, keys, b"token-1", link.sink.fleet_snapshot(),
                      link._seen) is not None
        other = seeder(applied=False)
        assert reseed(other._redis, keys, b"token-2", other.sink.fleet_snapshot(),
                      other._seen) is None  # once: the epoch is back
        other._redis.close()
    finally:
        link._redis.close()
    assert r.get(keys.epoch) == b"token-1"
    entries = r.xrange(keys.log)
    assert len(entries) == 3 and b"seed" in entries[0][1], entries  # the seed goes first
    with Vuer(port=0, fleet=redis_server.url, room="lab") as late:
        kids = [c["key"] for c in late.scene.snapshot()["children"]]
        assert sorted(kids) == ["before", "fresh", "fresh2"], kids  # fresh once, none lost
        assert late.fleet.stats["duplicates"] == 1, late.fleet.stats
    r.close()
