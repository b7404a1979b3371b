"""A client that rejoins a room with a non-empty store (``RtcClient.join()`` again) while
the relay compacted its journal past what the client had received."""

from __future__ import annotations

import random
from typing import Any, Dict, List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtc_strategies import any_op, check_invariants
from test_rtc_relay import STEP_OWN, check_room_converges, random_step
from test_rtc_relay import Room as RelayRoom

from vuer_sync.rtc import RelayCore, create_graph, get_unacked_messages, pack, to_wire, unpack


def ins(key: str, parent: str = "", **props: Any) -> dict:
    return {"otype": "node.insert", "key": parent, "path": "children",
            "value": dict({"key": key}, **props)}


def add(key: str, path: str, v: float) -> dict:
    return {"otype": "number.add", "key": key, "path": path, "value": v}


class Room:
    """Stores behind one RelayCore; ``online[name]`` False drops what the store sends."""

    def __init__(self) -> None:
        self.relay = RelayCore(compact_every=1)
        self.stores: Dict[str, Any] = {}
        self.online: Dict[str, bool] = {}
        self.sent: Dict[str, List[Any]] = {}

    def add(self, name: str, **options: Any) -> Any:
        self.sent[name] = []
        self.online[name] = True
        store = create_graph(name, on_send=lambda m: self._submit(name, m), **options)
        self.stores[name] = store
        store.receive_wire(unpack(pack(self.relay.join(conn=name))))
        return store

    def _submit(self, name: str, msg: Any) -> None:
        self.sent[name].append(msg)
        if not self.online[name]:
            return  # the connection is gone: lost on the way
        res = self.relay.submit(unpack(pack({"mtype": "crdt", "msg": to_wire(msg)})), conn=name)
        self.stores[name].receive_wire(unpack(pack(res.reply)))
        if res.broadcast:
            for other, store in self.stores.items():
                if other != name and self.online[other]:
                    store.receive_wire(unpack(pack(res.broadcast)))

    def disconnect(self, name: str) -> None:
        self.online[name] = False
        env = self.relay.leave(name)
        if env:
            for other, store in self.stores.items():
                if self.online[other]:
                    store.receive_wire(env)

    def rejoin(self, name: str) -> Any:
        """What ``RtcClient.join()`` does: get ``state``, then re-send what is unacked."""
        self.online[name] = True
        store = self.stores[name]
        store.receive_wire(unpack(pack(self.relay.join(conn=name))))
        store.retry()
        return store


def canon(store: Any) -> Dict[str, Any]:
    return store.get_state().graph.canonical(True)


def test_rejoin_after_the_relay_compacted_past_missed_messages():
    room = Room()
    a = room.add("alice", undo_window=10)
    b = room.add("bob", undo_window=1)
    a.edit(ins("n", v=0))
    a.commit()
    b.edit(add("n", "v", 1))
    b.commit()
    a.heartbeat(seal=True)  # lets the relay bake alice's messages too
    assert canon(a) == canon(b)
    seq_before = a.get_state().seq

    room.disconnect("alice")
    a.edit(add("n", "v", 1000))  # committed offline: never reaches the relay
    m_off = a.commit("offline")
    a.edit(ins("a_node", w=1))
    a.commit()
    a.edit(add("n", "v", 5))  # still pending when alice comes back
    lt_offline = a.get_state().lt
    for i in range(6):  # bob goes on; the relay bakes his messages and trims its tail
        b.edit(ins(f"b{i}", x=i) if i < 3 else add("n", "v", 10))
        b.commit()
    b.heartbeat(seal=True)
    state = room.relay.join()
    assert len(state["journal"]) <= 1  # bob's edits are in the snapshot only
    assert "b2" in [row[0] for row in state["snapshot"]["nodes"]]

    room.rejoin("alice")
    g = a.get_state().graph
    assert g.msgs[m_off.id].lt > state["stable"] > m_off.lt  # re-stamped above the snapshot
    assert g.msgs[m_off.id].seq == m_off.seq
    # alice sees bob's edits, keeps her offline messages and her pending edit ...
    assert {"b0", "b1", "b2", "a_node"} <= set(g.nodes)
    assert g.nodes["n"].get_property("v") == 0 + 1 + 1000 + 30 + 5
    assert [op["value"] for op in a.get_state().edits.ops] == [5]
    # ... and her offline messages reached bob through retry()
    assert not get_unacked_messages(a.get_state())
    assert b.get_state().graph.nodes["n"].get_property("v") == 1031
    assert a.get_state().seq == seq_before + 2 and a.get_state().lt >= lt_offline
    m = a.commit()
    assert m is not None and m.seq == seq_before + 3 and m.lt > a.get_state().graph.lt - 1
    assert canon(a) == canon(b)
    assert canon(a)["nodes"]["n"]["props"]["v"] == 1036
    # a newcomer agrees, and so do undo/redo of alice's (rejoined) messages
    c = room.add("carol")
    assert canon(c) == canon(a)
    assert a.undo() is not None  # the pending edit, committed above
    assert a.undo() is not None  # a_node
    assert a.undo() is not None  # the offline +1000
    assert canon(a) == canon(b) == canon(c)
    assert canon(a)["nodes"]["n"]["props"]["v"] == 31
    assert "a_node" not in canon(a)["nodes"]
    assert a.redo() is not None
    assert canon(a)["nodes"]["n"]["props"]["v"] == 1031
    assert canon(a) == canon(b) == canon(c)
    assert m_off.id in a.get_state().graph.msgs
    for s in (a, b, c):
        check_invariants(s)
        s.compact()
        assert s.get_state().graph.stats["below_horizon"] == 0
    assert canon(a) == canon(b) == canon(c)


def test_rejoin_drops_messages_the_relay_already_has():
    """Messages the relay received but whose ack was lost are in the state: not re-sent
    as new, not applied twice."""
    room = Room()
    a = room.add("alice")
    b = room.add("bob")
    a.edit(ins("n", v=0))
    a.commit()
    a.edit(add("n", "v", 7))
    m = a.commit()
    a.get_state().unacked[m.id] = a.get_state().graph.msgs[m.id]  # the ack got lost
    a.get_state().graph.msgs[m.id].acked = False
    for _ in range(3):
        b.edit(add("n", "v", 1))
        b.commit()
    room.rejoin("alice")
    assert not get_unacked_messages(a.get_state())
    assert canon(a) == canon(b)
    assert canon(a)["nodes"]["n"]["props"]["v"] == 10


def test_rejoin_without_leave_and_offline_undo():
    """The relay did not retire alice (no leave), so it baked nothing past her; her offline
    messages are re-stamped above bob's newer ones; an offline undo of an acked message
    still works after the rejoin."""
    room = Room()
    a = room.add("alice")
    b = room.add("bob", undo_window=1)
    a.edit(ins("n", v=0))
    a.commit()
    a.edit(add("n", "v", 3))
    m3 = a.commit()
    room.online["alice"] = False  # the connection dropped, the relay did not notice yet
    assert a.undo() is not None  # undo m3, offline
    a.edit(add("n", "v", 100))
    m_off = a.commit()
    for _ in range(4):
        b.edit(add("n", "v", 1))
        b.commit()
    lt_bob = b.get_state().lt
    room.rejoin("alice")
    assert a.get_state().graph.msgs[m_off.id].lt > lt_bob > m_off.lt
    assert not get_unacked_messages(a.get_state())
    assert canon(a) == canon(b)
    assert canon(a)["nodes"]["n"]["props"]["v"] == 104
    assert a.redo() is not None and a.get_state().redo_stack == []
    assert canon(a) == canon(b)
    assert canon(a)["nodes"]["n"]["props"]["v"] == 107
    assert m3.id in a.get_state().graph.msgs


class FlakyRoom(RelayRoom):
    """The relay property test's room, where a client may lose its connection (the relay
    retires it, in-flight envelopes are lost), edit offline and rejoin with its store."""

    def __init__(self, rnd: random.Random) -> None:
        super().__init__(rnd)
        self.offline: set = set()

    def disconnect(self, i: int) -> None:
        self.offline.add(i)
        self.up[i].clear()
        self.down[i].clear()
        env = self.relay.leave(i)
        if env:
            for j, q in self.down.items():
                if j not in self.offline:
                    q.append(env)

    def reconnect(self, i: int) -> None:
        self.offline.discard(i)
        self.up[i].clear()  # what it sent while away went nowhere
        self.stores[i].receive_wire(unpack(pack(self.relay.join(conn=i))))
        self.stores[i].retry()

    def pump_up(self, i: int) -> None:
        if i not in self.offline:
            super().pump_up(i)
            for j in self.offline:  # nothing reaches a client that is away
                self.down[j].clear()

    def pump_down(self, i: int) -> None:
        if i not in self.offline:
            super().pump_down(i)

    def leave(self, i: int) -> None:
        self.offline.discard(i)
        super().leave(i)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 2**20), ops=st.lists(any_op, min_size=10, max_size=60))
def test_room_converges_with_clients_that_drop_and_rejoin(seed, ops):
    rnd = random.Random(seed)
    room = FlakyRoom(rnd)
    for _ in range(3):
        room.join()
    for op in ops:
        s, x = random_step(room, rnd, op, compact_below=0.22)
        if STEP_OWN <= x < 0.37:
            j = rnd.choice(list(room.stores))
            if j in room.offline:
                room.reconnect(j)
            elif len(room.offline) + 1 < len(room.stores):
                room.disconnect(j)
    for j in list(room.offline):
        room.reconnect(j)
    check_room_converges(room)


def test_rejoin_keeps_lt_when_nothing_newer_happened():
    room = Room()
    a = room.add("alice")
    b = room.add("bob")
    a.edit(ins("n", v=0))
    a.commit()
    room.disconnect("alice")
    a.edit(add("n", "v", 2))
    m = a.commit()
    room.rejoin("alice")
    assert a.get_state().graph.msgs[m.id].lt == m.lt
    assert canon(a) == canon(b) and canon(b)["nodes"]["n"]["props"]["v"] == 2


def test_pending_edit_survives_a_state():
    """A store that holds only a pending edit when a ``state`` arrives: the edit is
    re-applied on the rebuilt graph, its effect shows and its commit reaches the others."""
    room = Room()
    b = room.add("bob")
    a = create_graph("alice", on_send=lambda m: room._submit("alice", m))  # noqa: SLF001
    room.stores["alice"], room.online["alice"], room.sent["alice"] = a, False, []
    a.edit({"otype": "node.remove", "key": "", "path": "children", "value": "n"})
    b.edit(ins("n", v=1))
    b.commit()
    room.rejoin("alice")
    assert a.get_state().graph.nodes["n"].deleted
    a.commit()
    assert canon(a) == canon(b) and canon(b)["nodes"]["n"]["deleted"]
