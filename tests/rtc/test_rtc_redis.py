"""The durable relay: ``app.rtc`` on a Redis Stream journal shared by several nodes.

Real ``redis-server`` (``tests/fleet``'s fixture: skipped locally without it, FAILED under
CI=true), real servers and clients on 127.0.0.1 port 0, real processes killed with SIGKILL.
Every wait is bounded; every server, client and process is stopped at the end."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import msgpack
import pytest
from fleet.fleet_redis import RedisServer, need_redis

from vuer_sync import Vuer, VuerClient
from vuer_sync.events import ClientEvent
from vuer_sync.fleet.rtc_journal import RedisRelayJournal, RtcKeys
from vuer_sync.rtc import (
    RelayCore,
    apply_record,
    crdt_envelope,
    create_graph,
    get_unacked_messages,
    pack,
    to_wire,
    unpack,
)

from conftest import wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE = str(HERE / "rtc_node.py")


@pytest.fixture
def redis_server(tmp_path):
    srv = RedisServer(need_redis(), tmp_path, appendonly=False).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def redis_aof(tmp_path):
    srv = RedisServer(need_redis(), tmp_path, appendonly=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def ins(key: str, **props: Any) -> Dict[str, Any]:
    return {"otype": "node.insert", "key": "", "path": "children",
            "value": dict({"key": key, "tag": "Box"}, **props)}


def add(key: str, path: str, v: float) -> Dict[str, Any]:
    return {"otype": "number.add", "key": key, "path": path, "value": v}


# -- pure: every node's relay agrees ---------------------------------------------------------


def _norm(fx: Any) -> Any:
    """Effects without what may differ between relays that baked at other times (an ack of
    a duplicate already baked may carry no serverSeq and no lt: :func:`_same_lt` checks
    the lt where both have it); ``state`` envelopes as graphs."""
    out = []
    for env in (fx.reply, fx.broadcast):
        if env is None:
            out.append(None)
        elif env.get("mtype") == "state":
            g = create_graph("probe", epoch="", initial_state=env).get_state().graph
            out.append(("state", env["serverSeq"], env.get("stable"), g.canonical()))
        elif env.get("mtype") == "ack":
            dup = fx.broadcast is None
            out.append({k: v for k, v in env.items()
                        if k != "serverSeq" and not (dup and k == "lt")})
        else:
            out.append(env)
    return out


def _same_lt(*effects: Any) -> None:
    """Acks of one record carry one lt, wherever they carry one."""
    lts = {fx.reply["lt"] for fx in effects
           if fx.reply is not None and fx.reply.get("mtype") == "ack" and "lt" in fx.reply}
    assert len(lts) <= 1, lts


@pytest.mark.parametrize("seed", range(4))
def test_relays_fed_one_journal_agree_after_dump_load_and_bake(seed):
    """Three relays get the same records: the first builds every joiner's ``state`` (it
    serves them), the second only admits them and is dumped and reloaded (through msgpack)
    at random points, the third bakes at random points. They say the same thing to
    everyone, at every record: what lets each node of a room run its own relay."""
    rnd = random.Random(seed)
    r1, r2, r3 = RelayCore(compact_every=7), RelayCore(compact_every=7), \
        RelayCore(compact_every=7)
    stores: Dict[str, Any] = {}
    records: List[Dict[str, Any]] = []
    sent: List[Any] = []

    def feed(rec: Dict[str, Any]) -> Any:
        nonlocal r2
        records.append(rec)
        f1 = apply_record(r1, rec, local=True)
        f2 = apply_record(r2, rec, local=False)
        f3 = apply_record(r3, rec, local=True)
        assert (r1.server_seq, r1.announced) == (r2.server_seq, r2.announced) \
            == (r3.server_seq, r3.announced)
        if rec["k"] != "join":  # r2 built no state for the joiner (it is not local there)
            assert _norm(f1) == _norm(f2)
        assert _norm(f1) == _norm(f3)
        _same_lt(f1, f2, f3)
        if f1.reply is not None and rec["c"] in stores:
            stores[rec["c"]].receive_wire(f1.reply)
        if f1.broadcast is not None:
            for c, s in stores.items():
                if c != f1.exclude:
                    s.receive_wire(f1.broadcast)
        if rnd.random() < 0.15:
            r2 = RelayCore.load(msgpack.unpackb(msgpack.packb(r2.dump(), use_bin_type=True),
                                                raw=False, strict_map_key=False))
        if rnd.random() < 0.2:
            r3.bake()
        return f1.reply

    for i in range(3):
        stores[f"c{i}"] = create_graph(f"c{i}", undo_window=rnd.choice([2, 5]),
                                       initial_state=feed({"k": "join", "c": f"c{i}"}))
    stores["c0"].edit(ins("shared", hp=0))
    feed({"k": "crdt", "c": "c0", "m": {"mtype": "crdt", "msg": to_wire(stores["c0"].commit())}})
    for step in range(120):
        c = rnd.choice(sorted(stores))
        s = stores[c]
        roll = rnd.random()
        if roll < 0.6:
            s.edit(add("shared", "hp", rnd.randint(1, 9)))
            msg = s.commit()
        elif roll < 0.7:
            s.edit(ins(f"{c}-{step}", v=step))
            msg = s.commit()
        elif roll < 0.8:
            msg = s.undo()
        elif roll < 0.85:
            msg = s.heartbeat(seal=True)
        elif roll < 0.9 and len(stores) > 2:
            feed({"k": "leave", "c": c})
            del stores[c]
            continue
        elif roll < 0.95:
            new = f"c{len(records)}"
            stores[new] = create_graph(new, undo_window=2,
                                       initial_state=feed({"k": "join", "c": new}))
            continue
        else:
            msg = s.commit()
        if msg is not None:
            env = {"mtype": "crdt", "msg": to_wire(msg)}
            feed({"k": "crdt", "c": c, "m": env})
            if rnd.random() < 0.1:  # a retry: written to the journal twice
                feed({"k": "crdt", "c": c, "m": env})
            sent.append((c, env))
        if sent and rnd.random() < 0.1:  # an old message again: acked with what is known
            c_old, env_old = rnd.choice(sent)
            if c_old in stores:
                feed({"k": "crdt", "c": c_old, "m": env_old})
    graphs = [s.get_state().graph.canonical() for s in stores.values()]
    assert all(g == graphs[0] for g in graphs)
    late = [create_graph("late", epoch="", initial_state=r.join()).get_state().graph.canonical()
            for r in (r1, r2, r3)]
    assert late == [graphs[0]] * 3
    assert r1.server_seq > 60 and len(graphs[0]["nodes"]) > 1


# -- in-process: two nodes on one real redis-server ------------------------------------------


def test_journal_choice():
    """No fleet and no option: the in-memory journal (today's relay); a bad choice is a
    clear error; ``"redis"`` needs a fleet."""
    app = Vuer(port=0)
    try:
        assert not app.rtc.durable and app.rtc.journal.node_id == ""
    finally:
        app.stop()
    for bad, words in (("bogus", "redis:// URL"), ("redis", "needs a fleet")):
        with pytest.raises(ValueError, match=words):
            Vuer(port=0, rtc_journal=bad).rtc  # noqa: B018 - the property builds the room



def test_a_room_waiting_on_redis_does_not_hold_the_server(no_thread_leak):
    """Making ``app.rtc`` connects to Redis and loads the room first; a Redis that does not
    answer (here a listener that never replies) holds that call, not the server: sessions
    still list and clients still connect meanwhile. When it gives up, the caller gets a
    clear ``ConnectionError``."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    app = Vuer(port=0, rtc_journal=url)
    app.start(block=False)
    outcome: Dict[str, Any] = {}

    def make_room() -> None:
        try:
            outcome["room"] = app.rtc
        except Exception as e:  # the expected end: Redis hung up
            outcome["error"] = e

    maker = threading.Thread(target=make_room, name="test-make-room")
    accepted: List[socket.socket] = []
    try:
        maker.start()
        silent.settimeout(10)
        accepted.append(silent.accept()[0])  # the journal is connecting: it waits for PONG
        t0 = time.monotonic()
        assert app.sessions == []
        with VuerClient(f"ws://127.0.0.1:{app.port}/", connect_timeout=10):
            assert wait_until(lambda: len(app.sessions) == 1, 10)
        assert time.monotonic() - t0 < 5 and maker.is_alive()  # still waiting on Redis
    finally:
        for c in accepted:
            c.close()  # Redis hangs up: the room gives up
        silent.close()
        maker.join(30)
        app.stop()
    assert not maker.is_alive()
    assert isinstance(outcome.get("error"), ConnectionError), outcome


def _node(url: str, room: str, snapshot_every: int = 1000) -> Vuer:
    app = Vuer(port=0, rtc_journal=url, room=room)
    app.start(block=False)
    app.rtc.journal.snapshot_every = snapshot_every
    return app


def test_two_nodes_serve_one_room_snapshots_trim_and_late_join(redis_server):
    url, room = redis_server.url, "duo"
    a, b = _node(url, room), _node(url, room)
    c: Optional[Vuer] = None
    clients: List[VuerClient] = []
    try:
        assert a.rtc.durable and b.rtc.durable and a.rtc.journal.node_id != b.rtc.journal.node_id
        for app in (a, a, b, b):
            cl = VuerClient(f"ws://127.0.0.1:{app.port}").connect()
            clients.append(cl)
        rtcs = [cl.rtc(f"u{i}").join() for i, cl in enumerate(clients)]
        rtcs[0].edit(ins("shared", hp=0))
        rtcs[0].commit()
        for r in rtcs:
            r.wait_for(lambda g: "shared" in g.nodes, timeout=10)
        # a malformed message is refused by its node and never reaches the journal
        clients[0].send(ClientEvent(etype="RTC", value={"mtype": "crdt", "msg": {"id": 3}}))
        deadline = time.monotonic() + 10
        while not rtcs[0].errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rtcs[0].errors and "bad message" in rtcs[0].errors[0]["error"]
        n = 40

        def work(i: int) -> None:
            r = rtcs[i]
            r.edit(ins(f"own{i}", tag="Box"))
            r.commit()
            for k in range(n):
                r.edit(add("shared", "hp", 1))
                r.edit(add(f"own{i}", "v", k))
                r.commit()
            r.wait_acked(20)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        want = 4 * n
        for r in rtcs:
            r.wait_for(lambda g: g.nodes["shared"].get_property("hp") == want, timeout=20)
        canon = rtcs[0].graph.canonical()
        assert all(r.graph.canonical() == canon for r in rtcs[1:])
        top = a.rtc.journal.sync(10)
        b.rtc.journal.wait_applied(top, 10)
        assert a.rtc.relay.server_seq == b.rtc.relay.server_seq == 1 + 4 + 4 * n
        assert a.rtc.graph.canonical() == b.rtc.graph.canonical() == canon

        # snapshots: the lease holder writes one; the next trims the stream behind it
        leader = a if a.rtc.journal.leader else b
        assert leader.rtc.journal.leader != (b if leader is a else a).rtc.journal.leader
        r = redis_server.client()
        total = r.xlen(RtcKeys(room).log)
        first = leader.rtc.journal.snapshot_now(10)
        assert first is not None
        rtcs[2].edit(add("shared", "hp", 1000))
        rtcs[2].commit()
        rtcs[2].wait_acked(10)
        leader.rtc.journal.sync(10)
        second = leader.rtc.journal.snapshot_now(10)
        assert second != first and r.xlen(RtcKeys(room).log) < total
        assert r.xrange(RtcKeys(room).log, count=1)[0][0].decode() >= first
        r.close()

        # a node that starts now loads the snapshot + tail; a client joining it sees it all
        c = _node(url, room)
        assert c.rtc.journal.stats["snapshots_loaded"] == 1
        assert '"shared"' in json.dumps(c.scene.snapshot())  # mirrored once, after loading
        c.rtc.journal.sync(10)
        late = VuerClient(f"ws://127.0.0.1:{c.port}").connect()
        clients.append(late)
        lr = late.rtc("late").join()
        assert lr.graph.nodes["shared"].get_property("hp") == want + 1000
        lr.edit(add("shared", "hp", 1))
        lr.commit()
        for x in rtcs:
            x.wait_for(lambda g: g.nodes["shared"].get_property("hp") == want + 1001, timeout=10)
        top = c.rtc.journal.sync(10)
        a.rtc.journal.wait_applied(top, 10)
        assert c.rtc.relay.server_seq == a.rtc.relay.server_seq == 1 + 4 + 4 * n + 2
        assert c.rtc.graph.canonical() == a.rtc.graph.canonical()
    finally:
        for cl in clients:
            cl.close()
        for app in (a, b, c):
            if app is not None:
                app.stop()


# -- a re-stamped message whose old copy is still on another node ---------------------------


class JournalNode:
    """One node of a room without a server: a RelayCore fed by its own RedisRelayJournal,
    handing what the relay says to the stores of the connections it serves, as
    ``RtcRoom.journal_apply`` does (the consumer thread calls it)."""

    def __init__(self, url: str, room: str, node_id: str) -> None:
        self.relay = RelayCore(compact_every=1)
        self.local: Dict[str, Any] = {}  # connection id -> store (None: its end is gone)
        self.members: List[str] = []  # local connections that joined
        self.acks: List[Dict[str, Any]] = []  # the acks it handed to its clients
        self.lock = threading.Lock()
        self.journal = RedisRelayJournal(url, room, node_id=node_id, block_ms=50)

    def journal_apply(self, record: Dict[str, Any]) -> None:
        conn = record.get("c")
        with self.lock:
            here = conn in self.local
            fx = apply_record(self.relay, record, local=here)
            if record.get("k") == "join" and here:
                self.members.append(conn)
            sends = [(conn, fx.reply)] if here and fx.reply is not None else []
            if fx.broadcast is not None:
                sends += [(c, fx.broadcast) for c in self.members if c != fx.exclude]
            stores = [(self.local.get(c), env) for c, env in sends]
        for store, env in stores:
            if store is not None:
                if env.get("mtype") == "ack":
                    self.acks.append(env)
                store.receive_wire(unpack(pack(env)))

    def journal_dump(self) -> bytes:
        with self.lock:
            return msgpack.packb(self.relay.dump(), use_bin_type=True)

    def journal_load(self, data: bytes) -> None:
        with self.lock:
            self.relay = RelayCore.load(msgpack.unpackb(data, raw=False, strict_map_key=False))

    def send(self, conn: str, msgs: List[Any]) -> None:
        for m in msgs:
            self.journal.append({"k": "crdt", "c": conn, "m": crdt_envelope(m)})


def test_old_copy_of_a_restamped_message_on_another_node_gets_there_first(redis_server):
    """Alice's edit is in node 1's handler of her connection when she rejoins through node
    2 and re-stamps it above Bob's concurrent edit; node 1 then writes the old copy to the
    stream before node 2 writes the re-stamped one. Every node's relay holds the old copy,
    at the old lt, and acks the re-stamped one as a duplicate with that lt; alice re-keys
    her copy and every replica agrees (before: "alice" on hers, "bob" everywhere else)."""
    url, room = redis_server.url, "race"
    n1, n2 = JournalNode(url, room, "n1"), JournalNode(url, room, "n2")
    outbox: Dict[str, List[Any]] = {"alice": [], "bob": [], "carol": []}

    def store(name: str) -> Any:
        return create_graph(name, on_send=outbox[name].append)

    def take(name: str) -> List[Any]:
        out, outbox[name][:] = list(outbox[name]), []
        return out

    def sync() -> None:
        """Every record appended so far is in the stream, and applied on both nodes."""
        for node in (n1, n2):
            deadline = time.monotonic() + 10
            while node.journal.stats["published"] < node.journal.stats["appended"]:
                assert time.monotonic() < deadline, node.journal.stats
                time.sleep(0.005)
        n2.journal.wait_applied(n1.journal.sync(10), 10)
        n1.journal.wait_applied(n2.journal.sync(10), 10)

    def join(node: JournalNode, conn: str, s: Any) -> None:
        node.local[conn] = s
        node.journal.append({"k": "join", "c": conn})
        sync()

    def owner(s: Any) -> Any:
        return s.get_state().graph.nodes["n"].get_property("owner")

    try:
        for node in (n1, n2):
            node.journal.start(node)
        a, b = store("alice"), store("bob")
        join(n1, "n1|a1", a)
        join(n2, "n2|b", b)
        a.edit(ins("n", owner="nobody"))
        a.commit()
        a.heartbeat(seal=True)
        n1.send("n1|a1", take("alice"))
        b.heartbeat(seal=True)
        n2.send("n2|b", take("bob"))
        sync()
        assert "n" in n1.relay.baked.nodes and "n" in n2.relay.baked.nodes

        a.edit({"otype": "string.set", "key": "n", "path": "owner", "value": "alice"})
        m_old = a.commit()
        in_flight = take("alice")  # in node 1's handler of n1|a1
        n1.local["n1|a1"] = None  # alice's end of it is gone
        b.edit({"otype": "string.set", "key": "n", "path": "owner", "value": "bob"})
        assert b.commit().key > m_old.key
        n2.send("n2|b", take("bob"))
        sync()

        join(n2, "n2|a2", a)  # alice rejoins through node 2: re-stamped above bob's edit
        assert a.get_state().graph.msgs[m_old.id].lt > m_old.lt
        a.retry()
        restamped = take("alice")
        assert (owner(a), owner(b)) == ("alice", "bob")
        n1.send("n1|a1", in_flight)  # node 1 writes the old copy first
        sync()
        assert (owner(a), owner(b)) == ("bob", "bob")  # re-keyed by the broadcast
        n2.send("n2|a2", restamped)
        n1.journal.append({"k": "leave", "c": "n1|a1"})
        sync()
        dup = [e for e in n2.acks if e["msgId"] == m_old.id]
        assert len(dup) == 1 and dup[0]["lt"] == m_old.lt  # node 2 acked the duplicate
        assert n1.relay.server_seq == n2.relay.server_seq
        assert not get_unacked_messages(a.get_state())
        c = store("carol")
        join(n1, "n1|c", c)
        assert a.get_state().graph.canonical(True) == b.get_state().graph.canonical(True) \
            == c.get_state().graph.canonical(True)
        assert owner(c) == "bob" and a.get_state().graph.stats["rekeyed"] == 1
    finally:
        for node in (n1, n2):
            node.journal.close()


# -- processes: a node killed with SIGKILL, Redis killed and restarted (AOF) -----------------


def _env() -> Dict[str, str]:
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p)
    for k in ("VUER_SYNC_FLEET", "VUER_SYNC_ROOM", "VUER_SYNC_RTC_JOURNAL"):
        e.pop(k, None)
    return e


class NodeProc:
    """An rtc_node.py process: commands on stdin, answers read (bounded) from stdout."""

    def __init__(self, url: str, room: str, port: int = 0):
        self.proc = subprocess.Popen(
            [sys.executable, NODE, "--url", url, "--room", room, "--port", str(port)],
            env=_env(), text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.output: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.expect("READY").split()
        self.port, durable = int(ready[0]), ready[1]
        assert durable == "1", "a fleet app's rtc room must use the Redis journal"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, word: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {word!r} within {timeout} s:\n{''.join(self.output)}")
            if line.startswith(word):
                return line[len(word):].strip()

    def ask(self, command: str, answer: str, timeout: float = 30) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(answer, timeout)

    def dump(self) -> Dict[str, Any]:
        self.ask("sync", "SYNCED")
        return json.loads(self.ask("dump", "DUMP"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit", "BYE", timeout=10)
                self.proc.wait(10)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def test_node_and_redis_crashes_lose_nothing_acked(redis_aof):
    url, room = redis_aof.url, "crash"
    procs: List[NodeProc] = []
    clients: List[VuerClient] = []
    try:
        na, nb = NodeProc(url, room), NodeProc(url, room)
        procs += [na, nb]
        ca = VuerClient(f"ws://127.0.0.1:{na.port}").connect()
        cb = VuerClient(f"ws://127.0.0.1:{nb.port}").connect()
        clients += [ca, cb]
        ra, rb = ca.rtc("alice").join(), cb.rtc("bob").join()
        ra.edit(ins("shared", hp=0))
        ra.commit()
        for k in range(20):
            (ra if k % 2 else rb).edit(add("shared", "hp", 1))
            (ra if k % 2 else rb).commit()
        ra.wait_acked(10)
        rb.wait_acked(10)
        rb.wait_for(lambda g: g.nodes["shared"].get_property("hp") == 20, timeout=10)
        for _ in range(10):  # sent to node A, which is killed while they may be in flight
            ra.edit(add("shared", "hp", 100))
            ra.commit()
        old_node = na.dump()["node"]
        na.kill()
        acked = 10 - len(get_unacked_messages(ra.get_state()))
        # node B has every message node A acked
        dump_b = nb.dump()
        assert any(c.startswith(old_node + "|") for c in dump_b["conns"])
        assert dump_b["graph"]["nodes"]["shared"]["props"]["hp"] >= 20 + 100 * acked
        # node A restarts on its port, loads the room from Redis; alice reconnects, rejoins
        # and re-sends what was not acked: nothing is lost, nothing counted twice
        na2 = NodeProc(url, room, port=na.port)
        procs.append(na2)
        assert na2.dump()["graph"] == nb.dump()["graph"]
        ca.connect()
        ra.join()
        ra.wait_acked(10)
        for r in (ra, rb):
            r.wait_for(lambda g: g.nodes["shared"].get_property("hp") == 1020, timeout=10)

        # Redis killed (SIGKILL) and restarted on its AOF: no ack while it is down
        redis_aof.kill()
        rb.edit(add("shared", "hp", 5))
        rb.commit()
        time.sleep(0.5)
        assert len(get_unacked_messages(rb.get_state())) == 1
        redis_aof.start(port=redis_aof.port)
        rb.wait_acked(15)
        ra.wait_for(lambda g: g.nodes["shared"].get_property("hp") == 1025, timeout=15)
        g_a, g_b = na2.dump(), nb.dump()
        assert g_a["graph"] == g_b["graph"] and g_a["seq"] == g_b["seq"]
        assert g_a["graph"]["nodes"]["shared"]["props"]["hp"] == 1025
        # the killed node's client was retired by the lease holder (its node is gone from
        # the fleet's presence): it no longer holds the room's horizon back
        deadline = time.monotonic() + 20
        while any(c.startswith(old_node + "|") for c in g_b["conns"]):
            assert time.monotonic() < deadline, g_b["conns"]
            time.sleep(0.2)
            g_b = nb.dump()
        assert any(c.startswith(g_a["node"] + "|") for c in g_b["conns"])
    finally:
        for cl in clients:
            cl.close()
        for p in procs:
            p.stop()
