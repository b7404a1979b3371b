"""Fleet deliveries written by the consumer thread: an entry read alone (the node is not
behind) goes to idle clients from the fleet's consumer thread, with no hand-over to the I/O
loop's thread; a client with anything queued or being written queues it as before. Order per
client is kept whichever path each message takes."""

from __future__ import annotations

import socket
import threading
import time

from vuer_sync import Fleet, Vuer
from vuer_sync.io_loop import IoLoop, LoopChannel
from vuer_sync.outbox import Outbox
from vuer_sync.schemas import Box
from vuer_sync.transport import WebSocketConnection
from vuer_sync.transport.nonblocking import NonBlockingConnection

from conftest import wait_until
from helpers import keys_until, raw_client


def test_idle_clients_get_entries_from_the_consumer_thread_in_order(redis_server,
                                                                    no_thread_leak):
    with Vuer(port=0, fleet=redis_server.url, room="lab") as node:
        ws = raw_client(node.port)
        try:
            assert wait_until(lambda: len(node.sessions) == 1, 5)
            session = node.sessions[0]
            with Fleet(redis_server.url, room="lab", snapshots=False) as robot:
                # 1. paced entries, each read alone, to an idle client: all written directly
                for i in range(20):
                    robot.upsert @ Box(key=f"p{i}")
                    robot.flush(5)
                    node.fleet.sync(5)
                assert keys_until(ws, [f"p{i}" for i in range(20)]) == \
                    [f"p{i}" for i in range(20)]
                st = node.fleet.stats
                assert st["direct_writes"] == 20, st
                assert session.core.outbox.snapshot_stats()["dropped"] == {}

                # 2. three producers at once: the robot (a consumer-thread write when the
                # client is idle, else queued), app.scene (the same stream) and the
                # session itself (always queued: the loop writes it)
                n = 150

                def robot_side():
                    for i in range(n):
                        robot.upsert @ Box(key=f"r{i}")
                        if i % 3 == 0:
                            robot.flush(5)

                def scene_side():
                    for i in range(n):
                        node.scene.upsert @ Box(key=f"s{i}")
                        time.sleep(0.0005)

                def session_side():
                    for i in range(n):
                        session.upsert @ Box(key=f"l{i}")
                        time.sleep(0.0002)

                threads = [threading.Thread(target=f) for f in
                           (robot_side, scene_side, session_side)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(30)
                robot.flush(5)
                node.scene.flush(5)
                want = [f"{p}{i}" for p in "rsl" for i in range(n)]
                got = keys_until(ws, want)
            for p in "rsl":  # each producer's messages: all there, once, in order
                assert [k for k in got if k[0] == p] == [f"{p}{i}" for i in range(n)], p
            st2 = node.fleet.stats
            assert st2["direct_writes"] > st["direct_writes"], st2  # taken under load too
            out = session.core.outbox.snapshot_stats()
            assert out["sent"] == out["queued"] - out["coalesced"] and out["dropped"] == {}
        finally:
            ws.close()


def test_without_direct_delivery_the_loop_writes_every_message(redis_server, no_thread_leak):
    with Vuer(port=0, fleet=redis_server.url, room="lab") as node:
        node.fleet.direct_delivery = 0
        ws = raw_client(node.port)
        try:
            assert wait_until(lambda: len(node.sessions) == 1, 5)
            with Fleet(redis_server.url, room="lab", snapshots=False) as robot:
                for i in range(5):
                    robot.upsert @ Box(key=f"p{i}")
                    robot.flush(5)
                    node.fleet.sync(5)
            assert keys_until(ws, [f"p{i}" for i in range(5)]) == [f"p{i}" for i in range(5)]
            st = node.fleet.stats
            assert st["direct_writes"] == 0 and st["direct_entries"] == 0, st
        finally:
            ws.close()


def test_a_write_the_socket_does_not_take_is_finished_by_the_loop_in_order():
    """``LoopChannel.write_taken_here`` on a full socket: the rest goes out when the socket
    is writable, and what is queued meanwhile waits behind it (no second direct write)."""
    loop = IoLoop("test-delivery")
    a, b = socket.socketpair()
    box = Outbox(encode=bytes, decode=lambda p: {})
    ch = LoopChannel(loop, NonBlockingConnection(a), box, on_message=lambda m: None)
    try:
        ch.start()
        big = b"x" * (8 << 20)  # far more than the socket buffers hold
        m = box.take_direct(big)
        assert m is not None
        ch.write_taken_here(ch.conn.protocol.encode_many([big])[0], m)
        assert ch.conn.pending  # partly written: the loop has the rest
        assert box.take_direct(b"second") is None  # busy: a later message queues
        box.push(b"after")
        peer = WebSocketConnection(b, is_server=False)
        assert peer.receive() == big
        assert peer.receive() == b"after"
        assert wait_until(lambda: box.snapshot_stats()["sent"] == 2, 5)
        assert box.take_direct(b"idle again") is not None  # the socket is free again
    finally:
        loop.stop()
        a.close()
        b.close()
