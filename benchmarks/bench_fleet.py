"""The fleet on Redis (issue #19, "Benchmarks"), side by side in one run, on loopback:

1. **latency**, producer call to viewer receipt (p50, p99): ``one_process`` (producer
   ``app.scene.update @ ...`` and a raw websocket viewer on one node, no fleet) against
   ``fleet`` (producer on node A, viewer on node B, separate processes, one Redis) and the
   anchor ``socketio_redis`` (python-socketio's ``RedisManager``, threading mode: ``emit`` to
   the room on node A, viewer on node B). The send time (``time.monotonic_ns()``,
   CLOCK_MONOTONIC: one clock for every process of the machine) travels in the message and
   is compared on receipt. 3000 probes paced at 400 Hz (smoke: 150 at 300 Hz), so nothing
   waits behind anything else; the p99 is then the 30th slowest, not one of a few. An
   update merged away by latest-wins coalescing (a node fell behind) counts with the time
   until the newer update that carries its value arrived, so merging never hides a slow one.
2. **throughput**: 3 nodes x N raw viewers each; a publisher-only process (vuer_sync
   ``Fleet(snapshots=False)``, write-only: the nodes write the snapshots; socketio: a
   ``write_only`` ``RedisManager``, its documented way of emitting from an external process)
   sends updates of 100 nodes round robin as fast as it can for a few seconds; delivered
   updates per second per viewer over a window after a warm-up (min and mean over viewers,
   and their sum), the publisher's own rate, the fleet's coalescing (``Fleet.stats``:
   ``ops``, ``coalesced``, ``entries``; the nodes' clients' outbox coalescing,
   ``app.stats``), how stale the newest update a viewer had at the end of the window was,
   how long the backlog took to drain after the publisher stopped, and whether every parsing
   viewer ended with the publisher's last value of every node.
3. the anchor in the same run (the ``socketio_redis`` columns of 1 and 2): a socket.io
   server in threading mode (``socketio.Server(client_manager=RedisManager(url),
   async_mode="threading")``, ``socketio.WSGIApp`` served by Werkzeug's threaded server
   with simple-websocket, as socketio's docs describe); every client joins the room on
   connect.
4. **late join** (vuer_sync only): a room whose history is 100k operations (smoke: 10k): a
   ``Fleet`` upserts 1000 nodes (smoke: 100), then updates each of them 99 times, flushing
   every round (so nothing coalesces), while a node of the room runs (it writes the
   snapshots, every second here, and trims the stream); once a snapshot covers the whole
   history, a new node starts: the time from its ``Vuer(...)`` to its first viewer's
   ``SET`` (the current scene, checked), against a room of 1000 (smoke: 100) operations
   only. The node's process is already running with ``vuer_sync`` and ``redis`` imported
   (about 70 ms the first time, whatever the room holds).

The viewers, in this process (one ``selectors`` thread for all, as the suite's
``MultiReader``; its CPU time is reported): the suite's ``RawPeer`` for vuer_sync, and for
socket.io the same raw websocket peer speaking engine.io v4 (the ``/socket.io/`` upgrade,
``40`` to join the namespace): a ``socketio.Client`` costs tens of microseconds per message
in Python and would be what is measured. One viewer per node parses payloads (latency, the
drain marker); the others only count frames.

Every repetition (``--reps``, interleaved: the implementations alternate their order) starts
its own nodes; the whole run starts one ``redis-server`` (``vuer_sync.fleet.LocalRedis``: a
free port, a temp dir, no persistence) and stops it at the end. A figure is the median over
the repetitions, with their min and max. Writes ``benchmarks/out/fleet.json``
(``--smoke``: ``fleet-smoke.json``; ``--out DIR`` elsewhere).

Without ``redis-server`` (or the ``redis`` module) the run writes a JSON saying so and exits
0, except under ``CI=true``, where it fails; the same for python-socketio (the anchor).

Usage::

    python benchmarks/bench_fleet.py [--smoke] [--reps 3] [--viewers 20] [--out DIR]
                                     [--parts latency,throughput,late_join]

Ablations (environment of the run): ``BENCH_FLEET_DIRECT=0``, producers never write to Redis
themselves (the publisher thread always does); ``BENCH_FLEET_DELIVER=0``, a node's consumer
thread never writes to its clients itself (every delivery through the I/O loop).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import msgpack

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from common import (  # noqa: E402
    HOST,
    FrameCounter,
    RawPeer,
    close_all,
    open_peers,
    percentile,
    raise_nofile,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
IMPLS = ("one_process", "fleet", "socketio_redis")
SIO_ROOM = "lab"

# -- the processes under test (``--role node`` / ``--role pub``) ------------------------------


_PIPE: Dict[str, Any] = {}


def _own_stdout() -> None:
    """(Subprocesses.) Keep stdout for the JSON replies; anything else printed (the
    server's banner, logs) goes to stderr."""
    _PIPE["out"] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def _reply(obj: Dict[str, Any]) -> None:
    out = _PIPE["out"]
    out.write(json.dumps(obj, default=str) + "\n")
    out.flush()


def _vuer_node(a: argparse.Namespace, cmd: Dict[str, Any], state: Dict[str, Any]) -> Any:
    from vuer_sync.schemas import Box

    app = state.get("app")
    op = cmd["cmd"]
    if op == "start":
        from vuer_sync import Vuer

        t0 = time.monotonic_ns()
        app = Vuer(port=0, fleet=a.url or None, room=a.room, max_connections=4096)
        if app.fleet is not None and a.snapshot_interval:
            app.fleet.snapshot_interval = a.snapshot_interval
        if app.fleet is not None and os.environ.get("BENCH_FLEET_DIRECT") == "0":
            app.fleet.direct = False  # an ablation: producers never write to Redis themselves
        if app.fleet is not None and os.environ.get("BENCH_FLEET_DELIVER") == "0":
            app.fleet.direct_delivery = 0  # an ablation: every delivery through the I/O loop
        app.start(block=False)
        state["app"] = app
        return {"port": app.port, "t0_ns": t0, "started_ns": time.monotonic_ns(),
                "stats": app.fleet.stats if app.fleet is not None else None}
    if op == "clients":
        return {"clients": len(app.sessions)}
    if op == "probe":  # paced updates carrying their send time
        app.scene.upsert @ Box(key="probe")
        app.scene.flush(10)
        period = 1.0 / cmd["rate"]
        nxt = time.perf_counter()
        sent_ns = []
        for i in range(cmd["n"]):
            nxt += period
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.monotonic_ns()
            sent_ns.append(t0)
            app.scene.update @ {"key": "probe", "t0": t0, "seq": i}
        app.scene.flush(30)
        return {"sent": cmd["n"], "sent_ns": sent_ns}
    if op == "stats":
        st = app.stats
        return {"fleet": app.fleet.stats if app.fleet is not None else None,
                "clients": {k: st.get(k) for k in ("sent", "coalesced", "queued", "sessions")}}
    raise ValueError(op)


def _sio_node(a: argparse.Namespace, cmd: Dict[str, Any], state: Dict[str, Any]) -> Any:
    op = cmd["cmd"]
    if op == "start":
        import logging

        import socketio
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        t0 = time.monotonic_ns()
        mgr = socketio.RedisManager(a.url, channel=f"socketio-{a.room}")
        # long engine.io ping interval: the counting viewers do not parse payloads, so they
        # could not answer engine.io's text-frame pings (a run lasts seconds, not minutes)
        sio = socketio.Server(client_manager=mgr, async_mode="threading",
                              ping_interval=600, ping_timeout=600)
        clients = state["clients"] = set()

        @sio.event
        def connect(sid: str, environ: Any, auth: Any = None) -> None:
            sio.enter_room(sid, SIO_ROOM)
            clients.add(sid)

        @sio.event
        def disconnect(sid: str, *args: Any) -> None:
            clients.discard(sid)

        srv = make_server(HOST, 0, socketio.WSGIApp(sio), threaded=True)
        threading.Thread(target=srv.serve_forever, name="wsgi", daemon=True).start()
        state.update(sio=sio, srv=srv)
        return {"port": srv.server_port, "t0_ns": t0, "started_ns": time.monotonic_ns()}
    sio = state["sio"]
    if op == "clients":
        return {"clients": len(state["clients"])}
    if op == "probe":
        period = 1.0 / cmd["rate"]
        nxt = time.perf_counter()
        sent_ns = []
        for i in range(cmd["n"]):
            nxt += period
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.monotonic_ns()
            sent_ns.append(t0)
            sio.emit("u", {"key": "probe", "t0": t0, "seq": i}, room=SIO_ROOM)
        return {"sent": cmd["n"], "sent_ns": sent_ns}
    if op == "stats":
        return {}
    raise ValueError(op)


def _burst(send: Callable[[int, str], None], keys: int, seconds: float, max_ops: int
           ) -> Tuple[int, float]:
    """As many updates as possible for ``seconds`` (at most ``max_ops``), round robin over
    ``keys`` nodes; returns (ops, elapsed s)."""
    names = [f"n{i}" for i in range(keys)]
    t0 = time.perf_counter()
    end = t0 + seconds
    i = 0
    while i < max_ops:
        send(i, names[i % keys])
        i += 1
        if not i & 63 and time.perf_counter() >= end:
            break
    return i, time.perf_counter() - t0


def _publisher(a: argparse.Namespace) -> None:
    """A publisher-only process: ``Fleet`` or a write-only socketio ``RedisManager``."""
    mono = time.monotonic_ns
    if a.kind == "vuer":
        from vuer_sync import Fleet
        from vuer_sync.schemas import Box

        fleet = Fleet(a.url, room=a.room, snapshots=False)  # write-only, as socket.io's
        upd = fleet.update

        def send(i: int, key: str) -> None:
            upd @ {"key": key, "t0": mono(), "seq": i}

        def setup(keys: int) -> None:
            for k in range(keys):
                fleet.upsert @ Box(key=f"n{k}")
            fleet.flush(30)

        def done(n: int) -> Dict[str, Any]:
            fleet.update @ {"key": "done", "t0": mono(), "seq": n}
            fleet.flush(60)
            return fleet.stats

        close: Callable[[], None] = fleet.close
    else:
        import socketio

        mgr = socketio.RedisManager(a.url, channel=f"socketio-{a.room}", write_only=True)

        def send(i: int, key: str) -> None:
            mgr.emit("u", {"key": key, "t0": mono(), "seq": i}, room=SIO_ROOM, namespace="/")

        def setup(keys: int) -> None:
            pass

        def done(n: int) -> Dict[str, Any]:
            mgr.emit("u", {"key": "done", "t0": mono(), "seq": n}, room=SIO_ROOM,
                     namespace="/")
            return {}

        def close() -> None:
            pass

    _reply({"hello": os.getpid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "setup":
            setup(cmd["keys"])
            _reply({"ok": True})
        elif cmd["cmd"] == "burst":
            start = time.monotonic_ns()
            n, el = _burst(send, cmd["keys"], cmd["seconds"], cmd["max_ops"])
            end = time.monotonic_ns()
            stats = done(n)
            _reply({"ops": n, "elapsed_s": el, "ops_per_s": n / el, "start_ns": start,
                    "end_ns": end, "flushed_ns": time.monotonic_ns(), "stats": stats})
    close()
    _reply({"bye": True})


def _node(a: argparse.Namespace) -> None:
    handler = _vuer_node if a.kind == "vuer" else _sio_node
    state: Dict[str, Any] = {}
    if a.kind == "vuer":  # imported before the late join's clock starts (constant costs)
        import redis  # noqa: F401

        import vuer_sync.schemas  # noqa: F401
        from vuer_sync import Vuer  # noqa: F401
    _reply({"hello": os.getpid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            _reply({"ok": handler(a, cmd, state)})
        except Exception as e:  # reported to the driver, which raises it
            _reply({"error": f"{type(e).__name__}: {e}"})
    app = state.get("app")
    if app is not None:
        app.stop(2.0)
    if state.get("srv") is not None:
        state["srv"].shutdown()
    _reply({"bye": True})


# -- the driver's side of those processes ---------------------------------------------------


class Proc:
    """One ``--role`` subprocess of this script, driven by JSON lines."""

    def __init__(self, role: str, kind: str, url: str, room: str, **extra: Any):
        argv = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--kind", kind,
                "--url", url, "--room", room]
        for k, v in extra.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE.parent), env.get("PYTHONPATH", "")) if p)
        self.name = f"{role}/{kind}/{room}"
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        self._lines: List[str] = []
        self._cv = threading.Condition()
        self._err: List[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()
        self.hello = self.reply(60)

    def _pump(self, f: Any, out: bool) -> None:
        for line in f:
            if out:
                with self._cv:
                    self._lines.append(line)
                    self._cv.notify_all()
            else:
                self._err.append(line)
                del self._err[:-40]
        if out:
            with self._cv:
                self._cv.notify_all()

    def send(self, cmd: str, **kw: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(dict(kw, cmd=cmd)) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not self._lines:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name}: no reply within {timeout} s (exit "
                                       f"{self.proc.poll()}): {''.join(self._err)[-1500:]}")
                self._cv.wait(min(left, 0.5))
            out = json.loads(self._lines.pop(0))
        if "error" in out:
            raise RuntimeError(f"{self.name}: {out['error']}")
        return out

    def call(self, cmd: str, timeout: float = 60.0, **kw: Any) -> Any:
        self.send(cmd, **kw)
        return self.reply(timeout).get("ok")

    def cpu_s(self) -> float:
        import psutil

        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return float("nan")

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass


def start_nodes(kind: str, url: str, room: str, n: int, **extra: Any) -> List[Proc]:
    procs: List[Proc] = []
    try:
        for _ in range(n):
            procs.append(Proc("node", kind, url, room, **extra))
        for p in procs:
            p.port = p.call("start", 60)["port"]  # type: ignore[attr-defined]
    except Exception:
        for p in procs:
            p.close()
        raise
    return procs


def stop_all(procs: List[Proc]) -> None:
    for p in procs:  # all asked to quit first: they stop side by side
        if p.proc.poll() is None:
            try:
                p.send("quit")
            except (OSError, ValueError):
                pass
    for p in procs:
        p.close()


# -- viewers ---------------------------------------------------------------------------------


def sio_peers(port: int, n: int, timeout: float = 30.0) -> List[RawPeer]:
    """``n`` raw engine.io v4 websocket peers on ``/socket.io/``, each joined to the default
    namespace (``40``); the server puts each in the room when it connects."""
    peers: List[RawPeer] = []
    try:
        for _ in range(n):
            sock = socket.create_connection((HOST, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                          f"Host: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            deadline = time.monotonic() + timeout
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk or time.monotonic() > deadline:
                    raise ConnectionError(f"socket.io handshake failed: {head[:200]!r}")
                head += chunk
            status, _, rest = head.partition(b"\r\n\r\n")
            if b" 101 " not in status.split(b"\r\n", 1)[0] + b" ":
                raise ConnectionError(f"socket.io upgrade refused: {status[:200]!r}")
            peer = RawPeer.adopt(sock, port, rest)
            peer.send(b"40", opcode=1)
            peers.append(peer)
    except Exception:
        close_all(peers)
        raise
    return peers


def vuer_peers(port: int, n: int) -> List[RawPeer]:
    peers, info = open_peers(port, n, timeout=60)
    if len(peers) != n:
        close_all(peers)
        raise ConnectionError(f"only {len(peers)} of {n} viewers connected: {info}")
    return peers


def t0_of(payload: bytes, sio: bool) -> Optional[Tuple[int, int, str]]:
    """(t0 ns, seq, key) of an update message, or None."""
    if sio:
        if not payload.startswith(b'42["u"'):
            return None
        node = json.loads(payload[2:])[1]
    else:
        if b"UPDATE" not in payload:
            return None
        msg = msgpack.unpackb(payload, raw=False)
        nodes = msg.get("data", {}).get("nodes") or [{}]
        node = nodes[0]
    if "t0" not in node:
        return None
    return int(node["t0"]), int(node.get("seq", -1)), str(node.get("key"))


class Readers:
    """One thread draining many peers (``selectors``), as the suite's ``MultiReader``, with
    payloads parsed for the peers given an ``on_message``; ``cpu_s``: its thread's CPU."""

    def __init__(self, peers: List[RawPeer],
                 on_message: Optional[Dict[int, Callable[[bytes], None]]] = None):
        self.peers = peers
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self.cpu_s = 0.0
        for i, p in enumerate(peers):
            p.counter = FrameCounter(on_message=(on_message or {}).get(i),
                                     on_control=p._on_control)
            if p.leftover:
                p.counter.feed(memoryview(p.leftover))
                p.leftover = b""
            p.sock.setblocking(False)
            self._sel.register(p.sock, selectors.EVENT_READ, p)
        self._thread = threading.Thread(target=self._run, name="bench-fleet-readers",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(1 << 18)
        mv = memoryview(buf)
        c0 = time.thread_time()
        try:
            while not self._stop.is_set():
                for key, _ in self._sel.select(0.05):
                    p: RawPeer = key.data
                    try:
                        n = p.sock.recv_into(mv)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        n = 0
                    if n == 0:
                        p.counter.closed = True
                        self._sel.unregister(p.sock)
                        continue
                    p.counter.feed(mv[:n])
                self.cpu_s = time.thread_time() - c0
        finally:
            self.cpu_s = time.thread_time() - c0

    def counts(self) -> List[int]:
        return [p.counter.messages for p in self.peers]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sel.close()
        for p in self.peers:
            try:
                p.sock.setblocking(True)
            except OSError:
                pass


def wait_clients(nodes: List[Proc], n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while node.call("clients")["clients"] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name}: fewer than {n} clients after {timeout} s")
            time.sleep(0.02)


# -- 1. latency ------------------------------------------------------------------------------


def latency_once(impl: str, url: str, room: str, n: int, rate: float) -> Dict[str, Any]:
    sio = impl == "socketio_redis"
    kind = "sio" if sio else "vuer"
    nodes = start_nodes(kind, "" if impl == "one_process" else url, room,
                        1 if impl == "one_process" else 2)
    producer, host = nodes[0], nodes[-1]
    arrived: Dict[int, int] = {}  # seq -> receipt time (ns)

    def on_msg(payload: bytes) -> None:
        now = time.monotonic_ns()
        got = t0_of(payload, sio)
        if got is not None and got[2] == "probe" and got[1] >= 0:
            arrived.setdefault(got[1], now)

    peer: Optional[RawPeer] = None
    try:
        peer = sio_peers(host.port, 1)[0] if sio else vuer_peers(host.port, 1)[0]  # type: ignore[attr-defined]
        peer.start_reader(on_msg)
        wait_clients([host], 1)
        time.sleep(0.2)
        sent_ns = producer.call("probe", 60 + n / rate, n=n, rate=rate)["sent_ns"]
        deadline = time.monotonic() + 10
        while n - 1 not in arrived and time.monotonic() < deadline:  # the last is never merged
            time.sleep(0.01)
        stats = producer.call("stats")
        host_stats = host.call("stats") if host is not producer else stats
    finally:
        if peer is not None:
            peer.close()
        stop_all(nodes)
    lat, merged = update_latencies(sent_ns, arrived)
    v = sorted(x / 1e6 for x in lat)
    return {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99),
            "max_ms": v[-1] if v else float("nan"), "sent": n, "received": len(arrived),
            "merged": merged, "lost": n - len(lat),
            "producer_stats": stats,
            # the viewer's node: its outbox may merge two probes queued at once (not a loss)
            "viewer_node_outbox_coalesced": (host_stats.get("clients") or {}).get("coalesced")}


def update_latencies(sent_ns: List[int], arrived: Dict[int, int]) -> Tuple[List[int], int]:
    """The latency of every update: its own receipt, or for one merged away (latest-wins
    coalescing, when a node fell behind) the receipt of the first newer one, which carries
    its value. Returns (latencies in ns, how many were merged away); an update with nothing
    newer received is lost and has none.

    >>> update_latencies([0, 10, 20, 30], {0: 5, 2: 40})
    ([5, 30, 20], 1)
    """
    out: List[int] = []
    merged = 0
    first_after: Optional[int] = None
    for seq in range(len(sent_ns) - 1, -1, -1):  # newest first: the next receipt so far
        if seq in arrived:
            first_after = arrived[seq]
        elif first_after is not None:
            merged += 1
        else:
            continue
        out.append(first_after - sent_ns[seq])
    out.reverse()
    return out, merged


# -- 2 + 3. throughput -----------------------------------------------------------------------


def throughput_once(impl: str, url: str, room: str, n_nodes: int, viewers: int, keys: int,
                    warmup: float, window: float, max_ops: int, drain_timeout: float
                    ) -> Dict[str, Any]:

    sio = impl == "socketio_redis"
    kind = "sio" if sio else "vuer"
    nodes = start_nodes(kind, url, room, n_nodes)
    pub: Optional[Proc] = None
    peers: List[RawPeer] = []
    readers: Optional[Readers] = None
    try:
        pub = Proc("pub", kind, url, room)
        pub.call("setup", 60, keys=keys)
        for node in nodes:
            peers += sio_peers(node.port, viewers) if sio else vuer_peers(node.port, viewers)  # type: ignore[attr-defined]
        wait_clients(nodes, viewers)
        probes = {i * viewers: i for i in range(n_nodes)}  # one parsing viewer per node
        seen: Dict[int, List[bytes]] = {i: [] for i in range(n_nodes)}  # parsed afterwards
        done_at: Dict[int, int] = {}

        def probe(i: int) -> Callable[[bytes], None]:
            got = seen[i].append

            def on_msg(payload: bytes) -> None:
                got(payload)
                if b"done" in payload and i not in done_at:
                    done_at[i] = time.monotonic_ns()
            return on_msg

        readers = Readers(peers, {k: probe(v) for k, v in probes.items()})
        time.sleep(0.3)
        redis_pid = _redis_pid()
        watched = [n.proc.pid for n in nodes] + [pub.proc.pid] + ([redis_pid] if redis_pid
                                                                  else [])
        pub.send("burst", keys=keys, seconds=warmup + window + 0.3, max_ops=max_ops)
        time.sleep(warmup)
        cpu_a = [_cpu(pid) for pid in watched]
        rcpu_a = readers.cpu_s
        c_a, t_a = readers.counts(), time.monotonic()
        time.sleep(window)
        c_b, t_b = readers.counts(), time.monotonic()
        lag = None if sio else _stream_lag_ms(url, room, nodes)
        t_b_ns = time.monotonic_ns()
        cpu_b = [_cpu(pid) for pid in watched]
        rcpu_b = readers.cpu_s
        at_b = {i: len(seen[i]) for i in range(n_nodes)}
        res = pub.reply(120)
        deadline = time.monotonic() + drain_timeout
        while len(done_at) < n_nodes and time.monotonic() < deadline:
            time.sleep(0.01)
        drain = ([(done_at[i] - res["end_ns"]) / 1e9 for i in range(n_nodes)]
                 if len(done_at) == n_nodes else None)
        node_stats = [n.call("stats") for n in nodes]
    finally:
        if readers is not None:
            readers.stop()
        close_all(peers)
        if pub is not None:
            pub.close()
        stop_all(nodes)
    stale, converged, probe_updates = [], [], []
    n_ops = res["ops"]
    want = {f"n{k}": max(range(k, n_ops, keys)) for k in range(min(keys, n_ops))}
    for i in range(n_nodes):  # the newest update at the window's end; the final state
        parsed = [t0_of(p, sio) for p in seen[i]]
        before = [g for g in parsed[:at_b[i]] if g is not None]
        stale.append((t_b_ns - before[-1][0]) / 1e6 if before else float("nan"))
        final: Dict[str, int] = {}
        for g in parsed:
            if g is not None and g[2] in want:
                final[g[2]] = g[1]
        converged.append(final == want)
        probe_updates.append(sum(1 for g in parsed if g is not None and g[2] in want))
    dt = t_b - t_a
    per = sorted((b - a) / dt for a, b in zip(c_a, c_b))
    span = dt
    cpu = [(b - a) / span * 100 for a, b in zip(cpu_a, cpu_b)]
    out: Dict[str, Any] = {
        "per_viewer_min": per[0], "per_viewer_mean": sum(per) / len(per),
        "per_viewer_max": per[-1], "all_viewers": sum(per), "viewers": len(per),
        "publisher_ops_per_s": res["ops_per_s"], "publisher_ops": res["ops"],
        "stale_at_end_ms_max": max(stale),
        "drain_s_max": max(drain) if drain is not None else None,
        "drained": drain is not None,
        # fleet: how far behind the room's stream the slowest node's consumer was at the end
        "node_stream_lag_ms_max": lag,
        # the nodes' CPU time per update delivered to a viewer (all viewers)
        "node_cpu_us_per_update": (sum(cpu[:n_nodes]) / 100 * 1e6 / sum(per)
                                   if sum(per) else None),
        # every parsing viewer's last value of every node is the publisher's last one
        "converged": all(converged),
        # updates a parsing viewer got over the whole burst (socket.io: every emit)
        "probe_viewer_updates": probe_updates,
        "cpu_pct_nodes": sum(cpu[:n_nodes]), "cpu_pct_publisher": cpu[n_nodes],
        "cpu_pct_redis": cpu[n_nodes + 1] if len(cpu) > n_nodes + 1 else None,
        "cpu_pct_viewers": (rcpu_b - rcpu_a) / span * 100,
        "publisher_stats": res.get("stats"),
        "node_stats": node_stats,
    }
    if not sio:
        st = res["stats"]
        out["fleet_ops"] = st.get("ops")
        out["fleet_coalesced"] = st.get("coalesced")
        out["fleet_entries"] = st.get("entries")
        out["nodes_applied_ops"] = [s["fleet"]["applied_ops"] for s in node_stats]
        out["client_outbox_coalesced"] = sum(s["clients"]["coalesced"] or 0
                                             for s in node_stats)
    return out


_REDIS: Dict[str, Any] = {}


def _stream_lag_ms(url: str, room: str, nodes: List[Proc]) -> Optional[float]:
    """The room stream's newest entry against the slowest node's applied id (the ms part
    of stream ids), now."""
    import redis as redis_mod

    from vuer_sync.fleet.entry import RoomKeys
    from vuer_sync.fleet.link import stream_id

    r = redis_mod.Redis.from_url(url)
    try:
        top = r.xrevrange(RoomKeys(room).log, count=1)
    finally:
        r.close()
    if not top:
        return None
    head = stream_id(top[0][0])[0]
    applied = [stream_id(n.call("stats")["fleet"]["applied_id"])[0] for n in nodes]
    return float(max(head - a for a in applied))


def _redis_pid() -> Optional[int]:
    srv = _REDIS.get("server")
    return srv.proc.pid if srv is not None and srv.proc is not None else None


def _cpu(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


# -- 4. late join ----------------------------------------------------------------------------


def late_join_once(url: str, room: str, scene: int, history: int) -> Dict[str, Any]:
    import redis as redis_mod

    from vuer_sync import Fleet
    from vuer_sync.fleet.entry import RoomKeys
    from vuer_sync.fleet.link import stream_id
    from vuer_sync.schemas import Box

    keys = RoomKeys(room)
    r = redis_mod.Redis.from_url(url)
    keeper = start_nodes("vuer", url, room, 1, snapshot_interval=1.0)
    joiner: Optional[Proc] = None
    peer: Optional[RawPeer] = None
    try:
        t_write = time.monotonic()
        with Fleet(url, room=room, snapshots=False) as fleet:  # the node writes snapshots
            for k in range(scene):
                fleet.upsert @ Box(key=f"n{k}", position=[0, k, 0])
            fleet.flush(60)
            rounds = max(0, history // scene - 1)
            for rnd in range(1, rounds + 1):
                for k in range(scene):
                    fleet.update @ {"key": f"n{k}", "position": [rnd, k, 0]}
                fleet.flush(60)  # one round in flight at most: nothing coalesces
            last = fleet.link.flush(60)
            pstats = fleet.stats
        write_s = time.monotonic() - t_write
        # the snapshot covers everything (written by the keeper: 1 s interval)
        deadline = time.monotonic() + 60
        while True:
            sid = r.hget(keys.snapshot, "id")
            if sid is not None and last is not None and stream_id(sid) >= stream_id(last):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no snapshot covering {last} within 60 s")
            time.sleep(0.05)
        xlen = r.xlen(keys.log)
        snap_bytes = len(r.hget(keys.snapshot, "data") or b"")
        joiner = Proc("node", "vuer", url, room)
        got: Dict[str, Any] = {}
        ev = threading.Event()

        def on_msg(payload: bytes) -> None:
            if "t" not in got:
                got["t"] = time.monotonic_ns()
                got["payload"] = payload
                ev.set()

        joiner.send("start")
        started = joiner.reply(60)["ok"]
        peer = RawPeer(started["port"], init=True)
        peer.start_reader(on_msg)
        ev.wait(30)
        if "t" not in got:
            raise TimeoutError("the late node's viewer got nothing within 30 s")
        msg = msgpack.unpackb(got["payload"], raw=False)
        children = (msg.get("data") or {}).get("children") or []
        positions = {c.get("key"): c.get("position") for c in children}
        want_x = float(rounds)
        ok = (msg.get("etype") == "SET" and len(children) == scene and
              all(p is not None and abs(float(p[0]) - want_x) < 1e-6
                  for p in positions.values()))
        jstats = joiner.call("stats")["fleet"]
    finally:
        if peer is not None:
            peer.close()
        if joiner is not None:
            joiner.close()
        stop_all(keeper)
        r.delete(keys.log, keys.snapshot)
        r.close()
    return {"first_set_ms": (got["t"] - started["t0_ns"]) / 1e6,
            "node_start_ms": (started["started_ns"] - started["t0_ns"]) / 1e6,
            "history_ops": scene + rounds * scene, "scene_nodes": scene,
            "set_ok": ok, "set_bytes": len(got["payload"]), "snapshot_bytes": snap_bytes,
            "stream_len_at_join": xlen, "write_s": write_s,
            "publisher": {k: pstats.get(k) for k in ("ops", "coalesced", "entries")},
            "joiner": {k: jstats.get(k) for k in ("snapshots_loaded", "applied_entries",
                                                    "applied_ops")}}


# -- the run ---------------------------------------------------------------------------------


def med(runs: List[Dict[str, Any]], key: str) -> Dict[str, Any]:
    xs = [r[key] for r in runs if isinstance(r.get(key), (int, float))
          and not isinstance(r.get(key), bool)]
    if not xs:
        return {"median": None, "min": None, "max": None, "runs": [r.get(key) for r in runs]}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def ratio(a: Any, b: Any) -> Optional[float]:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def missing(what: str) -> Optional[str]:
    import shutil

    if what == "redis":
        if shutil.which("redis-server") is None:
            return "redis-server is not on PATH (apt-get install redis-server)"
        try:
            import redis  # noqa: F401
        except ImportError as e:
            return f"the redis module is not importable ({e}): pip install redis"
        return None
    try:
        import simple_websocket  # noqa: F401
        import socketio  # noqa: F401
        import werkzeug  # noqa: F401
    except ImportError as e:
        return f"python-socketio's threading server is not importable ({e}): pip install " \
               "'python-socketio>=5' simple-websocket werkzeug"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--viewers", type=int, default=20, help="viewers per node (3 nodes)")
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--parts", default="latency,throughput,late_join",
                    help="which measurements (comma-separated; the JSON is named after them "
                         "when not all are run)")
    ap.add_argument("--role", choices=["node", "pub"], help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="vuer", help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    ap.add_argument("--room", default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--snapshot-interval", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--switch-interval", type=float, default=0.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role:
        _own_stdout()
        if a.switch_interval:
            sys.setswitchinterval(a.switch_interval)
    if a.role == "node":
        _node(a)
        return 0
    if a.role == "pub":
        _publisher(a)
        return 0

    P = dict(reps=1, lat_n=150, lat_rate=300.0, nodes=3, viewers=3, keys=100, warmup=0.3,
             window=1.0, max_ops=200_000, drain_timeout=5.0, scene=100, history=10_000) \
        if a.smoke else \
        dict(reps=max(1, a.reps), lat_n=3000, lat_rate=400.0, nodes=3, viewers=a.viewers,
             keys=100, warmup=1.0, window=3.0, max_ops=2_000_000, drain_timeout=15.0,
             scene=1000, history=100_000)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = {x.strip() for x in a.parts.split(",") if x.strip()}
    stem = "fleet" if parts >= {"latency", "throughput", "late_join"} else \
        "fleet-" + "-".join(sorted(parts))
    path = out_dir / (f"{stem}-smoke.json" if a.smoke else f"{stem}.json")
    result: Dict[str, Any] = {"mode": "smoke" if a.smoke else "full", "params": P}
    why = missing("redis")
    if why is not None:
        result["status"] = "skipped"
        result["reason"] = why
        path.write_text(json.dumps(result, indent=1))
        print(f"bench_fleet: {why}" + ("; required under CI=true" if IN_CI else "; skipped"))
        return 1 if IN_CI else 0
    sio_why = missing("socketio")
    if sio_why is not None and IN_CI:
        print(f"bench_fleet: {sio_why}; required under CI=true")
        return 1
    raise_nofile(4096)
    from vuer_sync.fleet import LocalRedis

    impls = [i for i in IMPLS if i != "socketio_redis" or sio_why is None]
    t_start = time.monotonic()
    result["loadavg_start"] = list(os.getloadavg())  # a shared machine: note the load
    redis_srv = LocalRedis().start()
    _REDIS["server"] = redis_srv
    lat: Dict[str, List[Dict[str, Any]]] = {i: [] for i in impls}
    thr: Dict[str, List[Dict[str, Any]]] = {i: [] for i in impls if i != "one_process"}
    late: Dict[str, List[Dict[str, Any]]] = {"history": [], "scene_only": []}
    try:
        url = redis_srv.url
        for rep in range(P["reps"]):
            order = impls if rep % 2 == 0 else impls[::-1]
            for impl in (order if "latency" in parts else []):
                r = latency_once(impl, url, f"lat-{impl}-{rep}", P["lat_n"], P["lat_rate"])
                lat[impl].append(r)
                print(f"rep {rep} latency {impl}: p50 {r['p50_ms']:.3f} ms p99 "
                      f"{r['p99_ms']:.3f} ms ({r['received']}/{r['sent']} received, "
                      f"{r['merged']} merged, {r['lost']} lost)", flush=True)
            for impl in [i for i in order if i in thr and "throughput" in parts]:
                r = throughput_once(impl, url, f"thr-{impl}-{rep}", P["nodes"], P["viewers"],
                                    P["keys"], P["warmup"], P["window"], P["max_ops"],
                                    P["drain_timeout"])
                thr[impl].append(r)
                print(f"rep {rep} throughput {impl}: {r['all_viewers']:.0f} msgs/s to "
                      f"{r['viewers']} viewers (min {r['per_viewer_min']:.0f}/viewer), "
                      f"publisher {r['publisher_ops_per_s']:.0f} ops/s, stale "
                      f"{r['stale_at_end_ms_max']:.1f} ms, drain {r['drain_s_max']}", flush=True)
            for variant in (() if "late_join" not in parts else
                            ("history", "scene_only") if rep % 2 == 0
                            else ("scene_only", "history")):
                hist = P["history"] if variant == "history" else P["scene"]
                r = late_join_once(url, f"late-{variant}-{rep}", P["scene"], hist)
                late[variant].append(r)
                print(f"rep {rep} late join {variant} ({r['history_ops']} ops, "
                      f"{r['scene_nodes']} nodes): first SET {r['first_set_ms']:.1f} ms "
                      f"(stream {r['stream_len_at_join']} entries, ok {r['set_ok']})",
                      flush=True)
    finally:
        redis_srv.stop()
    result.update(summarize(lat, thr, late, P, sio_why))
    result["raw"] = {"latency": lat, "throughput": thr, "late_join": late}
    result["elapsed_s"] = time.monotonic() - t_start
    result["loadavg_end"] = list(os.getloadavg())
    path.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({"goals": result["goals"]}, indent=1))
    print(f"wrote {path} in {result['elapsed_s']:.0f} s")
    return 0


def summarize(lat: Dict[str, List[Dict[str, Any]]], thr: Dict[str, List[Dict[str, Any]]],
              late: Dict[str, List[Dict[str, Any]]], P: Dict[str, Any],
              sio_why: Optional[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"latency": {}, "throughput": {}, "late_join": {}}
    for impl, runs in lat.items():
        out["latency"][impl] = {k: med(runs, k)["median"] for k in ("p50_ms", "p99_ms")}
        out["latency"][impl].update(
            spread={k: [med(runs, k)["min"], med(runs, k)["max"]] for k in ("p50_ms", "p99_ms")},
            received=[f"{r['received']}/{r['sent']}" for r in runs],
            # merged away by latest-wins coalescing: timed to the newer update that carried them
            merged=[r["merged"] for r in runs], lost=[r["lost"] for r in runs],
            viewer_node_outbox_coalesced=[r["viewer_node_outbox_coalesced"] for r in runs])
    for impl, runs in thr.items():
        keys = ("all_viewers", "per_viewer_min", "per_viewer_mean", "publisher_ops_per_s",
                "stale_at_end_ms_max", "drain_s_max", "cpu_pct_nodes", "cpu_pct_publisher",
                "cpu_pct_redis", "cpu_pct_viewers", "node_cpu_us_per_update",
                "node_stream_lag_ms_max")
        d: Dict[str, Any] = {k: med(runs, k)["median"] for k in keys}
        d["spread"] = {k: [med(runs, k)["min"], med(runs, k)["max"]]
                       for k in ("all_viewers", "per_viewer_min")}
        d["drained"] = [r["drained"] for r in runs]
        d["converged"] = [r["converged"] for r in runs]
        d["updates_of_ops_per_parsing_viewer"] = [
            f"{min(r['probe_viewer_updates'])}/{r['publisher_ops']}" for r in runs]
        if impl == "fleet":
            for k in ("fleet_ops", "fleet_coalesced", "fleet_entries", "client_outbox_coalesced"):
                d[k] = med(runs, k)["median"]
            ops = d["fleet_ops"] or 0
            d["fleet_coalesced_pct"] = 100.0 * (d["fleet_coalesced"] or 0) / ops if ops else None
        out["throughput"][impl] = d
    for variant, runs in late.items():
        out["late_join"][variant] = {k: med(runs, k)["median"]
                                     for k in ("first_set_ms", "node_start_ms",
                                               "stream_len_at_join", "set_bytes")}
        out["late_join"][variant]["spread_first_set_ms"] = [med(runs, "first_set_ms")["min"],
                                                            med(runs, "first_set_ms")["max"]]
        out["late_join"][variant]["history_ops"] = runs[0]["history_ops"] if runs else None
        out["late_join"][variant]["scene_nodes"] = runs[0]["scene_nodes"] if runs else None
        out["late_join"][variant]["set_ok"] = all(r["set_ok"] for r in runs)
        out["late_join"][variant]["tail_entries_replayed"] = [
            r["joiner"]["applied_entries"] for r in runs]
        out["late_join"][variant]["history_stream_entries"] = [
            r["publisher"]["entries"] for r in runs]
    L, T, J = out["latency"], out["throughput"], out["late_join"]
    fl, one = L.get("fleet", {}), L.get("one_process", {})
    sio = L.get("socketio_redis", {})
    tf, ts = T.get("fleet", {}), T.get("socketio_redis", {})
    out["ratios"] = {
        "latency_p50_fleet_over_one_process": ratio(fl.get("p50_ms"), one.get("p50_ms")),
        "latency_p99_socketio_over_fleet": ratio(sio.get("p99_ms"), fl.get("p99_ms")),
        "latency_p50_socketio_over_fleet": ratio(sio.get("p50_ms"), fl.get("p50_ms")),
        "throughput_fleet_over_socketio": ratio(tf.get("all_viewers"), ts.get("all_viewers")),
        "throughput_min_viewer_fleet_over_socketio": ratio(tf.get("per_viewer_min"),
                                                           ts.get("per_viewer_min")),
        "node_cpu_per_update_socketio_over_fleet": ratio(ts.get("node_cpu_us_per_update"),
                                                         tf.get("node_cpu_us_per_update")),
        "late_join_history_over_scene_only": ratio(J["history"].get("first_set_ms"),
                                                   J["scene_only"].get("first_set_ms")),
    }
    R = out["ratios"]

    def goal(text: str, ok: Optional[bool], evidence: str) -> Dict[str, Any]:
        return {"goal": text, "met": ok, "evidence": evidence}

    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    p50 = fl.get("p50_ms")
    rt, rl = R["throughput_fleet_over_socketio"], R["latency_p99_socketio_over_fleet"]
    rj = R["late_join_history_over_scene_only"]
    anchor = "" if sio_why is None else f" (anchor not run: {sio_why})"
    out["goals"] = [
        goal("fleet latency p50 <= 1 ms on loopback", p50 <= 1.0 if num(p50) else None,
             f"fleet p50 {_f(p50)} ms, p99 {_f(fl.get('p99_ms'))} ms; one process p50 "
             f"{_f(one.get('p50_ms'))} ms, p99 {_f(one.get('p99_ms'))} ms"),
        goal("delivered throughput >= 2x python-socketio RedisManager's",
             rt >= 2.0 if num(rt) else None,
             f"{_f(tf.get('all_viewers'))} vs {_f(ts.get('all_viewers'))} updates/s to all "
             f"{P['nodes']}x{P['viewers']} viewers ({_f(rt)}x; worst viewer "
             f"{_f(R['throughput_min_viewer_fleet_over_socketio'])}x; the nodes' CPU per "
             f"delivered update {_f(tf.get('node_cpu_us_per_update'))} vs "
             f"{_f(ts.get('node_cpu_us_per_update'))} µs; fleet coalesced "
             f"{_f(tf.get('fleet_coalesced_pct'))}% at the publisher; socket.io's publisher "
             f"{_f(ts.get('publisher_ops_per_s'))} emits/s; a viewer's newest update "
             f"{_f(tf.get('stale_at_end_ms_max'))} vs {_f(ts.get('stale_at_end_ms_max'))} ms "
             f"old at the end, the slowest node {_f(tf.get('node_stream_lag_ms_max'))} ms "
             f"behind the stream){anchor}"),
        goal("fleet p99 latency no worse than python-socketio RedisManager's",
             rl >= 1.0 if num(rl) else None,
             f"p99 {_f(fl.get('p99_ms'))} vs {_f(sio.get('p99_ms'))} ms{anchor}"),
        goal("late join proportional to the scene, not the history (about equal)",
             (rj <= 1.5 and J["history"]["set_ok"] and J["scene_only"]["set_ok"])
             if num(rj) else None,
             f"first SET {_f(J['history'].get('first_set_ms'))} ms after "
             f"{J['history'].get('history_ops')} ops vs {_f(J['scene_only'].get('first_set_ms'))}"
             f" ms after {J['scene_only'].get('history_ops')} ops ({_f(rj)}x), "
             f"{J['history'].get('scene_nodes')} nodes"),
    ]
    return out


def _f(v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return str(v)
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


if __name__ == "__main__":
    sys.exit(main())
