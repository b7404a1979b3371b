"""RelayCore (pure server core) and wire envelopes."""

from __future__ import annotations

import random
from typing import Any, Dict, List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtc_strategies import any_op, check_invariants

from vuer_sync.rtc import (
    CRDTMessage,
    GraphStore,
    RelayCore,
    WireError,
    create_graph,
    pack,
    parse_message,
    to_wire,
    unpack,
)


def ins(key: str, parent: str = "", **props: Any) -> dict:
    return {"otype": "node.insert", "key": parent, "path": "children",
            "value": dict({"key": key}, **props)}


def test_sequence_ack_broadcast_and_dedupe():
    relay = RelayCore()
    a = create_graph("alice", epoch="")
    a.edit(ins("n", x=1))
    m = a.commit()
    r1 = relay.submit({"mtype": "crdt", "msg": m.to_dict()}, conn="A")
    assert r1.reply == {"mtype": "ack", "msgId": m.id, "serverSeq": 1,
                        "stable": r1.reply["stable"], "lt": m.lt}
    assert r1.broadcast["mtype"] == "broadcast" and r1.broadcast["serverSeq"] == 1
    assert parse_message(r1.broadcast["msg"]).ops == m.ops
    r2 = relay.submit({"mtype": "crdt", "msg": m.to_dict()}, conn="A")  # retry
    assert r2.broadcast is None and r2.reply["serverSeq"] == 1 and r2.reply["lt"] == m.lt
    a.edit({"otype": "number.add", "key": "n", "path": "x", "value": 1})
    r3 = relay.submit(a.commit(), conn="A")
    assert r3.server_seq == 2
    bad = relay.submit({"mtype": "crdt", "msg": {"id": 3}}, conn="A")
    assert bad.reply["mtype"] == "error" and bad.broadcast is None


def test_join_snapshot_plus_tail_and_stale_after_leave():
    relay = RelayCore(compact_every=1)
    a = create_graph("alice", epoch="", undo_window=1)
    b = create_graph("bob", epoch="", undo_window=1,
                     initial_state=relay.join(conn="B"))
    for i in range(6):
        a.edit(ins(f"n{i}", v=i) if i < 3 else {"otype": "number.add", "key": "n0",
                                                 "path": "v", "value": 10})
        res = relay.submit(a.commit(), conn="A")
        a.receive_wire(res.reply)
        b.receive_wire(res.broadcast)
    b.edit({"otype": "number.add", "key": "n1", "path": "v", "value": 100})
    rb = relay.submit(b.commit(), conn="B")
    b.receive_wire(rb.reply)
    a.receive_wire(rb.broadcast)
    state = relay.join(conn="C")
    assert state["mtype"] == "state" and state["serverSeq"] == 7
    assert len(state["snapshot"]["nodes"]) == 3  # the final prefix was baked ...
    assert 0 < len(state["journal"]) < 7  # ... the rest is the tail
    c = create_graph("carol", epoch="", initial_state=unpack(pack(state)))
    canon = a.get_state().graph.canonical(True)
    assert b.get_state().graph.canonical(True) == canon
    assert c.get_state().graph.canonical(True) == canon
    assert canon["nodes"]["n0"]["props"] == {"v": 30}
    assert canon["nodes"]["n1"]["props"] == {"v": 101}
    # alice leaves; everyone is told; a message from her old session below `stable` is stale
    retire = relay.leave("A")
    assert retire == {"mtype": "retire", "sids": ["alice"]}
    stale = CRDTMessage(id="ghost:1", client="ghost", lt=1, ops=[], seq=1)
    assert relay.submit(stale).reply["error"].startswith("stale")


def test_idle_session_stalls_compaction_until_heartbeat():
    relay = RelayCore(compact_every=1)
    a = create_graph("alice", epoch="")
    b = create_graph("bob", epoch="", undo_window=1)

    def send(store, msg, others):
        res = relay.submit(msg, conn=store.client)
        store.receive_wire(res.reply)
        for o in others:
            o.receive_wire(res.broadcast)

    a.edit(ins("n", v=0))
    send(a, a.commit(), [b])  # alice then goes idle, her message still undoable
    for _ in range(30):
        b.edit({"otype": "number.add", "key": "n", "path": "v", "value": 1})
        send(b, b.commit(), [a])
    assert len(relay.join()["journal"]) == 31  # nothing could be baked
    assert b.compact() == 0
    send(a, a.heartbeat(seal=True), [b])  # idle client: "I will not undo any of that"
    state = relay.join()
    assert len(state["journal"]) <= 2 and len(state["snapshot"]["nodes"]) == 1
    assert b.compact() >= 29
    c = create_graph("carol", initial_state=state)
    assert c.get_state().graph.nodes["n"].get_property("v") == 30
    assert a.undo() is None  # sealed: alice's history is final


def test_wire_spellings_roundtrip():
    m = CRDTMessage(id="a~x:1", client="a", lt=3, sid="a~x", seq=1, ts=2.5,
                    clock={"a~x": 1}, ops=[{"otype": "number.set", "key": "n", "path": "p",
                                             "value": 1}], desc="d")
    ours = to_wire(m)
    assert ours["ops"][0] == {"otype": "number.set", "key": "n", "path": "p", "value": 1}
    vr = to_wire(m, spelling="vuer-rtc")
    assert vr["ops"][0]["ot"] == "number.set" and "otype" not in vr["ops"][0]
    leg = to_wire(m, spelling="legacy")
    assert (leg["sessionId"], leg["lamportTime"], leg["timestamp"]) == ("a", 3, 2.5)
    for d in (ours, vr, leg):
        assert parse_message(unpack(pack(d))) == m
    try:
        parse_message({"client": "a", "lt": 1})
    except WireError:
        pass
    else:  # pragma: no cover
        raise AssertionError("missing id must raise")


class Room:
    """Clients behind one RelayCore with FIFO up/down links of random latency. Client
    ``i`` talks on the relay connection ``conn[i]`` (``i`` itself, unless a subclass
    gives a reconnecting client a new one)."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.relay = RelayCore(compact_every=rnd.choice([1, 3, 50]))
        self.stores: Dict[int, GraphStore] = {}
        self.up: Dict[int, List[Any]] = {}
        self.down: Dict[int, List[Any]] = {}
        self.conn: Dict[int, Any] = {}
        self.n = 0

    def join(self) -> None:
        i, self.n = self.n, self.n + 1
        self.up[i], self.down[i] = [], []
        self.conn[i] = i
        state = unpack(pack(self.relay.join(conn=i)))
        self.stores[i] = create_graph(f"c{i}", on_send=lambda m, i=i: self.up[i].append(
            {"mtype": "crdt", "msg": to_wire(m)}), undo_window=self.rnd.choice([1, 2, 50]),
            initial_state=state)

    def leave(self, i: int) -> None:
        env = self.relay.leave(self.conn[i])
        del self.stores[i], self.up[i], self.down[i]
        if env:
            for q in self.down.values():
                q.append(env)

    def pump_up(self, i: int) -> None:
        if self.up.get(i):
            res = self.relay.submit(self.up[i].pop(0), conn=self.conn[i])
            self.down[i].append(res.reply)
            if res.broadcast:
                for j, q in self.down.items():
                    if j != i:
                        q.append(res.broadcast)

    def pump_down(self, i: int) -> None:
        if self.down.get(i):
            self.stores[i].receive_wire(unpack(pack(self.down[i].pop(0))))

    def settle(self) -> None:
        for s in self.stores.values():
            s.commit()
        for _ in range(10_000):
            busy = [i for i in self.stores if self.up[i] or self.down[i]]
            if not busy:
                return
            for i in busy:
                self.pump_up(i)
                self.pump_down(i)
        raise AssertionError("room did not settle")


#: random_step's draws below this were its own (undo, redo, compact, heartbeat)
STEP_OWN = 0.27


def random_step(room: Any, rnd: random.Random, op: Dict[str, Any],
                compact_below: float = 0.25) -> Tuple[Any, float]:
    """One step of the room property tests: a random store edits ``op`` and commits it
    (7 times in 10), then up to 3 random pumps, up or down; then a draw ``x`` in [0, 1):
    below 0.08 the store undoes, below 0.12 it redoes, below ``compact_below`` it
    compacts, below :data:`STEP_OWN` it sends a heartbeat (sealing half the time).
    Returns the store and ``x`` (the caller picks its own actions from STEP_OWN up)."""
    s = room.stores[rnd.choice(list(room.stores))]
    s.edit(op)
    if rnd.random() < 0.7:
        s.commit()
    for _ in range(rnd.randint(0, 3)):
        j = rnd.choice(list(room.stores))
        (room.pump_up if rnd.random() < 0.5 else room.pump_down)(j)
    x = rnd.random()
    if x < 0.08:
        s.undo()
    elif x < 0.12:
        s.redo()
    elif x < compact_below:
        s.compact()
    elif x < STEP_OWN:
        s.heartbeat(seal=rnd.random() < 0.5)
    return s, x


def check_room_converges(room: Any) -> None:
    """The end of the room property tests: settle, compact everywhere, a late joiner
    (snapshot + tail), settle again; then every replica is equal, consistent, has nothing
    below its horizon and nothing unacknowledged."""
    room.settle()
    for s in room.stores.values():
        s.compact()
    room.join()
    room.settle()
    states = [s.get_state().graph.canonical(True) for s in room.stores.values()]
    assert all(c == states[0] for c in states[1:])
    for s in room.stores.values():
        check_invariants(s)
        assert s.get_state().graph.stats["below_horizon"] == 0
        assert not s.get_state().unacked


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, 2**20), ops=st.lists(any_op, min_size=10, max_size=60))
def test_room_converges_with_joins_leaves_and_compaction(seed, ops):
    rnd = random.Random(seed)
    room = Room(rnd)
    for _ in range(rnd.randint(2, 3)):
        room.join()
    for op in ops:
        s, x = random_step(room, rnd, op)
        if STEP_OWN <= x < 0.30:
            room.join()
        elif x < 0.32 and len(room.stores) > 2:
            victim = rnd.choice(list(room.stores))
            room.stores[victim].commit()
            for _ in range(50):  # drain its uplink before it goes
                room.pump_up(victim)
            room.leave(victim)
    check_room_converges(room)
