"""The collaborative scene graph over our own server (app.rtc + VuerClient.rtc)."""

from __future__ import annotations

import threading

from vuer_sync import VuerClient
from vuer_sync.events import ClientEvent

from conftest import wait_until
from helpers import raw_client, recv_msg

INSERT = {"otype": "node.insert", "key": "", "path": "children"}


def insert(key, tag="Box", **props):
    return {**INSERT, "value": {"key": key, "tag": tag, **props}}


def test_two_clients_converge_and_a_plain_client_sees_scene_updates(app):
    app.start(block=False)
    viewer = raw_client(app.port, client="browser")  # a plain Vuer client: scene events only
    wait_until(lambda: app.sessions)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as a, \
            VuerClient(f"ws://127.0.0.1:{app.port}") as b:
        ra, rb = a.rtc("alice").join(), b.rtc("bob").join()
        ra.edit(insert("cube", position=[0, 0, 0], hp=100))
        ra.commit("create")
        rb.wait_for(lambda g: "cube" in g.nodes, 5)

        def hammer(r, n, delta):
            for _ in range(n):
                r.edit({"otype": "number.add", "key": "cube", "path": "hp", "value": delta})
                r.commit()

        ts = [threading.Thread(target=hammer, args=(ra, 50, -1)),
              threading.Thread(target=hammer, args=(rb, 30, 2))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ra.edit({"otype": "vector3.set", "key": "cube", "path": "position", "value": [1, 2, 3]})
        rb.edit({"otype": "vector3.set", "key": "cube", "path": "position", "value": [4, 5, 6]})
        ra.commit()
        rb.commit()
        ra.wait_acked(5)
        rb.wait_acked(5)
        final_hp = 100 - 50 + 60
        for r in (ra, rb):
            r.wait_for(lambda g: g.nodes["cube"].get_property("hp") == final_hp, 5)
        # both position sets are acked, so the server has the final (LWW) value; every
        # replica converges to it whatever order the two broadcasts arrived in
        pa = app.rtc.graph.nodes["cube"].get_property("position")
        for r in (ra, rb):
            r.wait_for(lambda g: g.nodes["cube"].get_property("position") == pa, 5)
        assert app.rtc.graph.nodes["cube"].get_property("hp") == final_hp
        # the mirror: the shared scene holds the converged node under the rtc group
        assert wait_until(lambda: (app.scene.graph.find("cube") or {}).get("hp") == final_hp)
        assert app.scene.graph.find("vuer-sync-rtc")["children"][0]["key"] == "cube"
        seen_hp = None
        for _ in range(400):
            m = recv_msg(viewer)
            for n in m["data"].get("nodes", []) if isinstance(m["data"], dict) else []:
                if n.get("key") == "cube" and "hp" in n:
                    seen_hp = n["hp"]
                for c in n.get("children", []):
                    if c.get("key") == "cube":
                        seen_hp = c.get("hp", seen_hp)
            if seen_hp == final_hp:
                break
        assert seen_hp == final_hp
        assert pa in ([1, 2, 3], [4, 5, 6])
    viewer.close()


def test_late_joiner_gets_state_and_leaving_is_clean(app):
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as a:
        ra = a.rtc("alice").join()
        for i in range(20):
            ra.edit(insert(f"n{i}", i=i))
            ra.commit()
        ra.wait_acked(5)
        with VuerClient(f"ws://127.0.0.1:{app.port}") as late:
            rl = late.rtc("late").join()
            assert sorted(rl.graph.nodes) == sorted(f"n{i}" for i in range(20))
            rl.edit({"otype": "node.remove", "key": "", "path": "children", "value": "n3"})
            rl.commit()
            ra.wait_for(lambda g: g.nodes["n3"].deleted, 5)  # a tombstone
            assert "n3" not in ra.graph.live_nodes() and "n3" not in ra.graph.reachable()
            # the mirror into app.scene renders live nodes only
            assert wait_until(lambda: app.scene.graph.find("n3") is None)
            assert app.scene.graph.find("n4") is not None
        assert wait_until(lambda: len(app.rtc.members) == 1)


def test_bad_rtc_messages_get_an_error_and_harm_nobody(app):
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as a, \
            VuerClient(f"ws://127.0.0.1:{app.port}") as bad:
        ra = a.rtc("alice").join()
        bad.send(ClientEvent(etype="RTC", value={"mtype": "crdt", "msg": {"nonsense": 1}}))
        bad.send(ClientEvent(etype="RTC", value={"mtype": "whatever"}))
        bad.send(ClientEvent(etype="RTC", value=[1, 2]))
        replies = [bad.recv(timeout=5) for _ in range(3)]
        assert [r.data["mtype"] for r in replies] == ["error"] * 3
        ra.edit(insert("ok"))
        ra.commit()
        ra.wait_acked(5)
        assert "ok" in app.rtc.graph.nodes
