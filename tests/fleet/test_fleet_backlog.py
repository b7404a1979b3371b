"""A node that falls behind the room's stream merges its backlog (latest wins per node and
property, never across SET/ADD/REMOVE) before applying it and sending it to its clients."""

from __future__ import annotations

import copy
import threading

from vuer_sync import Fleet, Vuer
from vuer_sync.schemas import Box

from conftest import wait_until
from helpers import raw_client, recv_msg


def test_a_node_behind_merges_its_backlog_before_applying_and_sending(redis_server,
                                                                      no_thread_leak):
    gate = threading.Event()
    seen = []

    def observe(msg):  # the node's recorder: every message applied, in order
        seen.append(copy.deepcopy(msg))  # (the mirror keeps, and updates, these nodes)
        if len(seen) == 1:
            gate.wait(10)  # the node's consumer stalls here: it falls behind
        return False

    with Vuer(port=0, fleet=redis_server.url, room="lab") as a:
        ws = raw_client(a.port)
        try:
            assert wait_until(lambda: len(a.sessions) == 1, 5)
            a.scene.record(filter=observe)
            with Fleet(redis_server.url, room="lab", snapshots=False) as robot:
                robot.upsert @ Box(key="k", position=[0, 0, 0])
                robot.flush(5)
                assert wait_until(lambda: seen, 5)
                for i in range(1, 101):  # 100 entries while the node is stalled
                    robot.update @ {"key": "k", "position": [i, 0, 0]}
                    robot.flush(5)
                robot.remove("k")  # a barrier: nothing merges across it
                robot.add(Box(key="k", position=[-1, 0, 0]))
                robot.update @ {"key": "k", "color": "red"}
                robot.update @ {"key": "k", "position": [-2, 0, 0]}
                robot.flush(5)
                published = robot.stats["published"]  # (the robot may merge the last two)
            gate.set()
            a.fleet.sync(10)
            st = a.fleet.stats
            assert st["backlog_coalesced"] >= 99, st
            assert st["applied_ops"] == published >= 104, (st, published)
            kinds = [(m["etype"], (m["data"].get("nodes") or [{}])[0].get("position"))
                     for m in seen]
            assert kinds == [("UPSERT", [0, 0, 0]), ("UPDATE", [100, 0, 0]),
                             ("REMOVE", None), ("ADD", [-1, 0, 0]), ("UPDATE", [-2, 0, 0])], kinds
            node = a.scene.graph.find("k")
            assert node["position"] == [-2, 0, 0] and node["color"] == "red"
            got = []  # the client got the merged messages, in the same order
            while not got or got[-1] != ("UPDATE", [-2, 0, 0]):
                m = recv_msg(ws)
                got.append((m["etype"], (m["data"].get("nodes") or [{}])[0].get("position")))
            assert ("REMOVE", None) in got and got.index(("UPDATE", [100, 0, 0])) < \
                got.index(("REMOVE", None)), got
            assert all(p is None or p[0] in (0, 100, -1, -2) for _, p in got), got
        finally:
            gate.set()
            ws.close()
