"""The fleet with real processes: three nodes (``node.py node``) and a publisher-only process
(``node.py publish``) on one real redis-server. Every wait is bounded; every process is
stopped (or killed) at the end."""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from vuer_sync.fleet import RoomKeys

from helpers import raw_client, recv_msg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE = str(HERE / "node.py")


def env() -> Dict[str, str]:
    e = dict(os.environ, PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p)
    for k in ("VUER_SYNC_FLEET", "VUER_SYNC_ROOM"):
        e.pop(k, None)
    return e


class Proc:
    """A node.py process: commands on stdin, answers read (bounded) from stdout."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, NODE, *args], env=env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.output: List[str] = []
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, word: str, timeout: float = 30) -> str:
        """The next output line starting with ``word`` (other lines are kept in output)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                line = ""
            if line is None or (not line and left <= 0):
                raise AssertionError(f"no {word!r} within {timeout} s:\n{''.join(self.output)}")
            if line.startswith(word):
                return line[len(word):].strip()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str, answer: str, timeout: float = 30) -> str:
        self.send(command)
        return self.expect(answer, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit", "BYE", 15)
                self.proc.wait(10)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._pump.join(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


class Fleet3:
    """Nodes started with node.py, stopped at the end whatever happens."""

    def __init__(self, url: str, room: str):
        self.url, self.room = url, room
        self.procs: List[Proc] = []

    def node(self, *extra: str) -> Proc:
        p = Proc("node", "--url", self.url, "--room", self.room, *extra)
        self.procs.append(p)
        p.port = int(p.expect("READY"))  # type: ignore[attr-defined]
        return p

    def publisher(self, prefix: str, n: int, seed: int) -> Proc:
        p = Proc("publish", "--url", self.url, "--room", self.room, "--prefix", prefix,
                 "--n", str(n), "--seed", str(seed))
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture
def fleet(redis_server):
    f = Fleet3(redis_server.url, "procs")
    try:
        yield f
    finally:
        f.close()


def last_id(redis_server) -> str:
    r = redis_server.client()
    try:
        top = r.xrevrange(RoomKeys("procs").log, count=1)
        return top[0][0].decode() if top else "0-0"
    finally:
        r.close()


def dump(p: Proc) -> Dict[str, Any]:
    return json.loads(p.ask("dump", "DUMP"))


def test_three_nodes_and_a_robot_converge_in_one_order(fleet, redis_server):
    seed = random.randrange(1 << 30)
    why = f"random seed {seed} (node.py produce)"
    # entry by entry: every node records every message, so their orders compare as they are
    # (with backlog merging, a node that fell behind records merged ones; test_fleet_backlog)
    nodes = [fleet.node("--snapshot-every", "5", "--snapshot-interval", "0.2", "--no-merge")
             for _ in range(3)]
    nodes[0].ask("set", "SET")
    robot = fleet.publisher("robot", 400, seed)  # concurrently with the three nodes
    for i, p in enumerate(nodes):
        p.send(f"produce n{i}- 300 {seed + i + 1}")
    for i, p in enumerate(nodes):
        p.expect(f"PRODUCED n{i}-", 60)
    stats = json.loads(robot.expect("PUBLISHED", 60))
    assert stats["ops"] >= 400 and stats["pending"] == 0, (why, stats)  # remove+add: 2
    end = last_id(redis_server)
    for p in nodes:
        p.ask(f"wait {end}", "APPLIED")
    dumps = [dump(p) for p in nodes]
    for d in dumps[1:]:
        assert d["scene"] == dumps[0]["scene"], why
        assert d["order"] == dumps[0]["order"], why  # the same interleaving everywhere
    shared = [m for m in dumps[0]["order"] if m[1] and m[1][0][0] == "shared"]
    writers = {m[1][0][2] for m in shared}
    assert {"robot", "n0-", "n1-", "n2-"} <= writers, (why, writers)
    # per-producer order kept: each producer's "shared" positions only grow
    for w in writers - {None}:
        xs = [m[1][0][1][0] for m in shared if m[1][0][2] == w]
        assert xs == sorted(xs), (why, w, xs)
    # a node that joins late loads the snapshot and the tail, and converges
    r = redis_server.client()
    try:
        deadline = time.monotonic() + 10  # the elected node snapshots the end (0.2 s)
        while r.hget(RoomKeys("procs").snapshot, "id") != end.encode() \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.hget(RoomKeys("procs").snapshot, "id") == end.encode(), why
    finally:
        r.close()
    late = fleet.node()
    late.ask(f"wait {end}", "APPLIED")
    d = dump(late)
    assert d["scene"] == dumps[0]["scene"], why
    assert sum(p["stats"]["leader"] for p in dumps) <= 1, why  # one lease holder
    assert d["stats"]["snapshots_loaded"] == 1, (why, d["stats"])


_NODE_LISTS = ("nodes", "children", "rawChildren", "htmlChildren", "bgChildren")


def _node_in(msg: Dict[str, Any], key: str) -> Optional[Dict[str, Any]]:
    """The node ``key`` wherever ``msg`` carries it: an update's ``nodes``, or the scene a
    ``SET`` replays to a client that joined after it (its ``children``, at any depth)."""
    todo = [msg.get("data")]
    while todo:
        x = todo.pop()
        if isinstance(x, list):
            todo.extend(x)
        elif isinstance(x, dict):
            if x.get("key") == key:
                return x
            todo.extend(v for k, v in x.items() if k in _NODE_LISTS)
    return None


def test_a_raw_client_on_node_b_sees_what_node_a_publishes(fleet):
    """Whichever way it reaches the client: an update after it joined, or the scene node B
    replays to it (when the entry got to B before the client's INIT did)."""
    a, b = fleet.node(), fleet.node()
    ws = raw_client(b.port)  # type: ignore[attr-defined]
    try:
        a.ask("upsert from_a 7", "UPSERTED")
        deadline = time.monotonic() + 10
        got = None
        while got is None and time.monotonic() < deadline:
            got = _node_in(recv_msg(ws), "from_a")
        assert got is not None and got["position"] == [7.0, 0, 0], got
    finally:
        ws.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_churn_of_nodes_publishers_and_clients_leaves_levels_flat(fleet, redis_server):
    """A long-lived node while other node processes, publishers and clients join and leave
    (bounded: 1 warm-up + 4 measured rounds): its threads, fds and RSS stay flat, and so do
    this process's (publishers and clients)."""
    from vuer_sync import Fleet
    from vuer_sync.schemas import Box

    a = fleet.node("--lease-ms", "600")

    def levels():
        return json.loads(a.ask("proc", "PROC"))

    def here():
        return threading.active_count(), len(os.listdir("/proc/self/fd"))

    def round_(i):
        b = fleet.node("--lease-ms", "600")
        clients = [raw_client(a.port) for _ in range(3)] + [raw_client(b.port)]
        try:
            with Fleet(redis_server.url, room="procs") as robot:
                robot.upsert @ Box(key=f"k{i % 3}", position=[i, 0, 0])
                robot.flush(5)
            b.ask(f"upsert b{i % 3} {i}", "UPSERTED")
            a.ask("sync", "SYNCED")
            assert levels()["sessions"] == 3
        finally:
            for ws in clients:
                ws.close()
            b.stop()
            fleet.procs.remove(b)

    for i in range(1):  # warm-up: imports, pools, caches
        round_(i)
    settled = lambda base: lambda: (levels()["sessions"] == 0  # noqa: E731
                                    and levels()["threads"] <= base["threads"]
                                    and levels()["fds"] <= base["fds"])
    assert wait_until_true(lambda: levels()["sessions"] == 0, 10)
    base, base_here = levels(), here()
    for i in range(1, 5):
        round_(i)
    # handler workers end after 5 s idle (WorkerPool): 20 s leaves room on a loaded machine
    if not wait_until_true(settled(base), 20):
        end = levels()
        raise AssertionError(f"the long-lived node did not settle: threads {end['threads']} "
                             f"vs {base['threads']}, fds {end['fds']} vs {base['fds']}; "
                             f"threads now {end['thread_names']}, before {base['thread_names']}; "
                             f"fds now {end['fd_kinds']}, before {base['fd_kinds']}")
    end = levels()
    print("churn levels of the long-lived node: before", base, "after", end)
    assert end["rss_kb"] <= base["rss_kb"] + 8 * 1024, (end, base)  # flat: no per-round growth
    assert wait_until_true(lambda: here()[0] <= base_here[0] and here()[1] <= base_here[1],
                           10), (here(), base_here)


def wait_until_true(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False
