"""A client that rejoins a room with a non-empty store (``RtcClient.join()`` again) while
the relay compacted its journal past what the client had received; and the old copy of a
message it re-stamped then, still in flight on its previous connection, reaching the relay
before the re-stamped one (the client re-keys its copy to the relay's ``lt``)."""

from __future__ import annotations

import random
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
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
    """The relay property test's room, where a client may lose its connection, edit
    offline and rejoin with its store, on a new connection. Half the time the relay
    notices at once (it retires the connection; what was in flight on it is lost); else
    what was in flight on it *straggles*: it reaches the relay later (the relay's handler
    of the old connection had it buffered), maybe after the client rejoined and re-sent
    it re-stamped, and only then does the old connection leave."""

    def __init__(self, rnd: random.Random) -> None:
        super().__init__(rnd)
        self.offline: set = set()
        self.stragglers: List[Tuple[Any, List[Any]]] = []  # (old connection, envelopes)
        self.generation = 0

    def _to_online(self, env: Any, but: Any = None) -> None:
        for j, q in self.down.items():
            if j not in self.offline and j != but:
                q.append(env)

    def disconnect(self, i: int) -> None:
        self.offline.add(i)
        if self.up[i] and self.rnd.random() < 0.5:
            self.stragglers.append((self.conn[i], list(self.up[i])))
        else:
            env = self.relay.leave(self.conn[i])
            if env:
                self._to_online(env)
        self.up[i].clear()
        self.down[i].clear()

    def reconnect(self, i: int) -> None:
        self.offline.discard(i)
        self.up[i].clear()  # what it sent while away went nowhere
        self.generation += 1
        self.conn[i] = (i, self.generation)
        self.stores[i].receive_wire(unpack(pack(self.relay.join(conn=self.conn[i]))))
        self.stores[i].retry()

    def straggle(self) -> None:
        """The oldest straggling envelope reaches the relay on its old connection: the
        reply is lost with that connection, the broadcast reaches every online client;
        the old connection leaves after its last one."""
        if not self.stragglers:
            return
        conn, envs = self.stragglers[0]
        res = self.relay.submit(envs.pop(0), conn=conn)
        if res.broadcast:
            self._to_online(res.broadcast)
        if not envs:
            self.stragglers.pop(0)
            env = self.relay.leave(conn)
            if env:
                self._to_online(env)

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


_PUSH = {"otype": "array.push", "key": "a", "path": "array", "value": 0}
_REMOVE = {"otype": "node.remove", "key": "", "path": "children", "value": "a"}
_TEXT = {"key": "a", "path": "t", "otype": "text.init"}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 2**20), ops=st.lists(any_op, min_size=10, max_size=60))
# c1's messages straggle on its old connection and get to the relay after it rejoined and
# re-stamped them: it diverged (one array.push short) before it re-keyed them
@example(seed=566, ops=[_PUSH] * 4 + [_REMOVE] * 3 + [_TEXT] * 7 + [_PUSH] * 6 + [_REMOVE])
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
        elif x < 0.47:
            room.straggle()
    for j in list(room.offline):
        room.reconnect(j)
    for _ in range(sum(len(envs) for _, envs in room.stragglers)):
        room.straggle()
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


# -- the old copy of a re-stamped message reaches the relay first ----------------------------


def sset(key: str, path: str, v: str) -> dict:
    return {"otype": "string.set", "key": key, "path": path, "value": v}


class Wires:
    """A RelayCore whose connections the test drives by hand. What a store sends waits in
    its outbox until the test submits it, on a connection id of the test's choice; the
    relay's reply goes to the store that holds that connection id now (nobody: lost) and
    its broadcast to the holders of every other one."""

    def __init__(self) -> None:
        self.relay = RelayCore(compact_every=1)
        self.holder: Dict[str, Any] = {}  # connection id -> the store at its client end
        self.outbox: Dict[str, List[Dict[str, Any]]] = {}

    def add(self, name: str, conn: str, **options: Any) -> Any:
        box: List[Dict[str, Any]] = []
        self.outbox[name] = box
        store = create_graph(name, on_send=lambda m: box.append(to_wire(m)), **options)
        self.connect(store, conn)
        return store

    def connect(self, store: Any, conn: str) -> None:
        """``conn`` joins: its store gets the relay's ``state``."""
        self.holder[conn] = store
        store.receive_wire(unpack(pack(self.relay.join(conn=conn))))

    def take(self, name: str) -> List[Dict[str, Any]]:
        """What the store sent since the last take (the test submits it later, or never)."""
        sent, self.outbox[name][:] = list(self.outbox[name]), []
        return sent

    def submit(self, wire_msg: Dict[str, Any], conn: str) -> Any:
        res = self.relay.submit(unpack(pack({"mtype": "crdt", "msg": wire_msg})), conn=conn)
        to = self.holder.get(conn)
        if to is not None:
            to.receive_wire(unpack(pack(res.reply)))
        if res.broadcast:
            for other, store in list(self.holder.items()):
                if other != conn:
                    store.receive_wire(unpack(pack(res.broadcast)))
        return res

    def flush(self, name: str, conn: str) -> None:
        for m in self.take(name):
            self.submit(m, conn)


def owner(store: Any) -> Any:
    return store.get_state().graph.nodes["n"].get_property("owner")


@pytest.mark.parametrize("variant", ["broadcast", "ack", "same_conn", "baked"])
def test_old_copy_of_a_restamped_message_reaching_the_relay_first(variant):
    """Alice's edit is in flight on her old connection when she rejoins on a new one; the
    ``state`` holds Bob's concurrent edit of the same property, which sorts after hers, so
    her unacknowledged edit is re-stamped above it. Then the OLD copy reaches the relay
    first (its handler of the old connection had it buffered): the relay holds it, and
    broadcasts it, at the old ``lt``, where Bob's edit wins; the re-stamped copy is a
    duplicate. Alice learns the relay's ``lt`` from (``broadcast``) the broadcast of the
    old copy, (``ack``) the ack of the re-stamped copy alone, (``same_conn``) the ack of
    the old copy when both connections have one id, (``baked``) the broadcast when the
    relay baked the message before the duplicate came, so that the duplicate's ack
    cannot tell it; she re-keys her copy there and every replica agrees (before the fix
    she kept her own ``lt`` and her edit: "alice" against everybody's "bob")."""
    w = Wires()
    a = w.add("alice", "a1")
    b = w.add("bob", "b", undo_window=1)
    a.edit(ins("n", owner="nobody", hp=0))
    a.commit()
    w.flush("alice", "a1")
    a.heartbeat(seal=True)  # the insert becomes final: the relay bakes it
    w.flush("alice", "a1")
    b.heartbeat(seal=True)
    w.flush("bob", "b")
    assert "n" in w.relay.baked.nodes and len(w.relay.tail) == 1  # bob's seal is not yet

    a.edit(sset("n", "owner", "alice"))
    a.edit(add("n", "hp", 1))
    m_old = a.commit()
    if variant == "baked":
        a.heartbeat(seal=True)  # in flight too: once it is in, m_old is final
    in_flight = w.take("alice")  # buffered in the relay's handler of a1
    del w.holder["a1"]  # alice's end of a1 is gone; the relay does not know yet
    b.edit(sset("n", "owner", "bob"))
    m_b = b.commit()
    w.flush("bob", "b")
    assert m_b.key > m_old.key  # bob's edit wins over alice's old copy

    new_conn = "a1" if variant == "same_conn" else "a2"
    w.connect(a, new_conn)
    rec = a.get_state().graph.msgs[m_old.id]
    assert rec.lt > m_b.lt >= m_old.lt and rec.seq == m_old.seq  # re-stamped above bob
    a.retry()
    restamped = w.take("alice")
    assert [m["id"] for m in restamped] == [m["id"] for m in in_flight]
    assert (owner(a), owner(b)) == ("alice", "bob")  # they disagree until the relay says
    a.edit(add("n", "hp", 10))  # pending on top while the re-key moves what is below

    if variant == "ack":  # alice misses the broadcast: the duplicate's ack must do
        del w.holder["a2"]
    old_results = [w.submit(m, "a1") for m in in_flight]  # the old copies get there first
    if variant == "ack":
        w.holder["a2"] = a
        assert owner(a) == "alice"
    else:
        assert owner(a) == "bob"  # re-keyed by the broadcast or by the old copy's ack
    assert all(res.broadcast is not None for res in old_results)  # accepted, old lt
    assert [res.reply.get("lt") for res in old_results] == [m["lt"] for m in in_flight]
    if variant == "baked":
        assert m_old.id not in w.relay.tail  # baked: its lt is gone from the relay
    else:
        assert w.relay.tail[m_old.id][1].lt == m_old.lt
    for m in restamped:  # then the re-stamped copies: duplicates
        res = w.submit(m, new_conn)
        assert res.broadcast is None
        if m["id"] == m_old.id:
            assert res.reply.get("lt") == (None if variant == "baked" else m_old.lt)
    assert (owner(a), owner(b)) == ("bob", "bob")
    if variant != "same_conn":
        w.relay.leave("a1")

    assert a.get_state().graph.msgs[m_old.id].lt == m_old.lt
    assert a.get_state().lt >= rec.lt  # the clock never goes back
    assert not get_unacked_messages(a.get_state())
    assert a.get_state().graph.nodes["n"].get_property("hp") == 11
    assert a.commit().lt > rec.lt  # the pending edit
    w.flush("alice", new_conn)
    c = w.add("carol", "c")
    assert canon(a) == canon(b) == canon(c)
    assert (owner(a), owner(c)) == ("bob", "bob")
    assert a.get_state().graph.nodes["n"].get_property("hp") == 11
    if variant != "baked":  # undo the re-keyed message: still everybody agrees
        assert a.undo() is not None and a.undo() is not None
        w.flush("alice", new_conn)
        assert canon(a) == canon(b) == canon(c)
        assert a.get_state().graph.nodes["n"].get_property("hp") == 0
    for s in (a, b, c):
        check_invariants(s)
        s.heartbeat(seal=True)
    w.flush("alice", new_conn)
    w.flush("bob", "b")
    w.flush("carol", "c")
    for s in (a, b, c):
        s.compact()
        assert s.get_state().graph.stats["below_horizon"] == 0
    assert canon(a) == canon(b) == canon(c)
    assert a.get_state().graph.stats["rekeyed"] == len(in_flight)
