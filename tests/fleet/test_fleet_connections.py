"""The fleet's latency path runs on Redis connections of its own, outside redis-py's pool
(``link.OwnConnection``): a producer's direct ``XADD``, the publisher thread's ``XADD``s
and the consumer's ``XREAD``. Through the client each of those costs the pool's checks and
hooks (tens of µs before the bytes leave and after they arrive). These connections come
back by themselves when Redis drops them."""

from __future__ import annotations

import threading

import pytest
import redis
import redis.client

from vuer_sync import Fleet, Vuer
from vuer_sync.fleet.link import OwnConnection, stream_reply
from vuer_sync.schemas import Box

from conftest import wait_until
from helpers import keys_until, raw_client


@pytest.fixture
def client_commands(monkeypatch):
    """The names of the commands sent through redis-py's client (its pool), with the
    sending thread's name: ``[(thread, command)]``."""
    seen = []
    lock = threading.Lock()
    execute_command = redis.Redis.execute_command
    execute = redis.client.Pipeline.execute

    def on_command(self, *args, **options):
        with lock:
            seen.append((threading.current_thread().name, str(args[0]).upper()))
        return execute_command(self, *args, **options)

    def on_pipeline(self, *args, **kwargs):
        with lock:
            seen.extend((threading.current_thread().name, str(c[0][0]).upper())
                        for c in self.command_stack)
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", on_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", on_pipeline)
    return seen


def test_stream_reads_and_writes_bypass_the_client_pool(redis_server, client_commands,
                                                        no_thread_leak):
    with Vuer(port=0, fleet=redis_server.url, room="lab") as node:
        ws = raw_client(node.port)
        try:
            assert wait_until(lambda: len(node.sessions) == 1, 5)
            node.fleet.direct_gap = 0.0  # every paced call may write itself
            with Fleet(redis_server.url, room="lab", snapshots=False) as robot:
                robot.link.direct = False  # the robot's calls go through its publisher thread
                start = len(client_commands)
                for i in range(10):
                    node.scene.upsert @ Box(key=f"n{i}")  # the caller's own XADD
                    node.scene.flush(5)
                    robot.upsert @ Box(key=f"r{i}")  # the publisher thread's XADD
                    robot.flush(5)
                    node.fleet.sync(5)
                want = [k for i in range(10) for k in (f"n{i}", f"r{i}")]
                assert keys_until(ws, want) == want
                assert node.fleet.stats["direct"] >= 10, node.fleet.stats
                assert robot.stats["direct"] == 0 and robot.stats["entries"] >= 10
                through_pool = [(t, c) for t, c in client_commands[start:]
                                if c in ("XADD", "XREAD")]
                assert through_pool == [], through_pool
        finally:
            ws.close()


def test_links_come_back_when_redis_drops_their_connections(redis_server, no_thread_leak):
    admin = redis_server.client()
    with Vuer(port=0, fleet=redis_server.url, room="lab") as node:
        ws = raw_client(node.port)
        try:
            assert wait_until(lambda: len(node.sessions) == 1, 5)
            with Fleet(redis_server.url, room="lab", snapshots=False) as robot:
                robot.upsert @ Box(key="before")
                robot.flush(5)
                node.scene.upsert @ Box(key="mine-before")
                node.scene.flush(5)
                assert keys_until(ws, ["before", "mine-before"])
                # every connection but the admin's: the consumer's blocked XREAD, the
                # producers' and publisher threads' idle ones
                assert admin.execute_command("CLIENT", "KILL", "TYPE", "normal",
                                             "SKIPME", "yes") >= 3
                for i in range(5):
                    robot.upsert @ Box(key=f"r{i}")
                    node.scene.upsert @ Box(key=f"n{i}")
                robot.flush(10)
                node.scene.flush(10)
                want = [f"r{i}" for i in range(5)] + [f"n{i}" for i in range(5)]
                got = keys_until(ws, want)
                assert [k for k in got if k.startswith("r")] == want[:5]  # each in order
                assert [k for k in got if k.startswith("n")] == want[5:]
                assert node.fleet.stats["lost"] == 0 and robot.stats["lost"] == 0
        finally:
            ws.close()
    admin.close()


def test_own_connection_pipelines_and_drops_a_broken_socket(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    conn = OwnConnection(client)
    try:
        ids = conn.calls([("XADD", "s", "*", "a", "1"), ("XADD", "s", "*", "a", "2")])
        assert len(ids) == 2 and ids[0] < ids[1]
        got = stream_reply(conn.call("XREAD", "COUNT", 10, "STREAMS", "s", "0-0"))
        assert [f for _, f in got[0][1]] == [{b"a": b"1"}, {b"a": b"2"}]
        assert stream_reply(conn.call("XREAD", "BLOCK", 10, "STREAMS", "s", "$")) == []
        with pytest.raises(redis.ResponseError):
            conn.calls([("GET", "s"), ("PING",)])  # WRONGTYPE: the PING's reply unread
        assert conn.call("PING") in (b"PONG", "PONG", True)  # a fresh socket, in step
        client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        with pytest.raises(redis.ConnectionError):
            conn.call("PING")
        assert conn.call("ECHO", "x") == b"x"  # connected again
    finally:
        conn.close()
        client.close()
