"""The robotics anchors (issue 18): vuer_sync's producer call side by side with viser,
meshcat and rerun, the visualisers a robot-loop user chooses between.

    python benchmarks/bench_anchors.py [--smoke] [--reps 3] [--impls vuer_sync,viser,...]
                                       [--out DIR]

Three workloads, each in every implementation:

* ``same``: one object, ``--n`` calls (20000; smoke 300) back to back, the same key.
  vuer_sync ``app.scene.upsert @ Box(key="box", position=[x, 0.5, 0])``; viser
  ``frame.position = (x, 0.5, 0)``; meshcat ``vis["box"].set_transform(T)`` (one 4x4 whose
  ``T[0, 3] = x`` is stored in the timed call); rerun ``rr.log("box", rr.Transform3D(translation=
  [x, 0.5, 0]))``.
* ``distinct``: as ``same`` but every call another key (``d0``, ``d1``, ...): nothing is
  coalescible. The nodes exist before the timer where the library has nodes to create:
  vuer_sync's ``--n`` boxes come in one ``scene.set @ Scene(...)``, viser's ``--n`` frames
  from ``add_frame`` (both delivered before the timer); meshcat and rerun address a path each
  (their first write is all there is). vuer_sync's form ``create`` is the same calls on keys
  the scene does not hold yet (``c0``, ``c1``, ...): each ``upsert`` creates its node.
* ``tick100``: ``--nodes`` (100) poses per tick, paced at 1 kHz for ``--ticks`` ticks (2000;
  smoke 40), per form: vuer_sync ``calls`` (100 ``scene.update @ Box``), ``list``
  (``scene.update @ [100 Boxes]``) and, when ``app.scene`` has it, ``poses`` (the columnar
  ``scene.poses(keys, position=(N,3), quaternion=(N,4))``); viser ``calls`` (100 setters) and
  ``atomic`` (the same inside ``server.atomic()``); meshcat ``calls`` (100 ``set_transform``;
  meshcat has no batch form); rerun ``calls`` (100 ``rr.log``), ``instance_poses`` (one
  ``rr.log`` of ``rr.InstancePoses3D`` with 100 translations and quaternions) and
  ``send_columns`` (one ``rr.send_columns`` of the same, one time step). Arrays are filled
  before the timer; a per-call form builds its objects inside it.

Every loop stops early after ``--max-s`` seconds (meshcat's calls take ~0.4 ms each) and
reports the calls it made. Each implementation runs in a subprocess of its own (``--worker``),
so one library's threads do not disturb another's; the repetitions alternate the order of the
implementations (forwards, backwards, ...).

What reaches a consumer, measured in this (the driver) process, never in the producer's:

* vuer_sync and viser: a raw websocket peer (``common.RawPeer``) decodes every frame and
  keeps each node's newest x and when it came; the server's own counters give vuer_sync's
  frames sent and same-key messages coalesced.
* meshcat: its ZeroMQ REQ/REP answers every command (the call returns when
  ``meshcat-server`` acknowledged it), and the same raw peer on meshcat's websocket (the
  browser's side) decodes the ``set_transform`` frames the server forwards.
* rerun: the ``.rrd`` file sink, read back after the final flush with ``rerun.chunk.RrdReader``
  (rows per entity and the final translation).

"Lands" is the time from the end of the loop until the consumer has the final value of every
node of the workload (vuer_sync, viser, meshcat: at the peer; rerun: until
``flush()`` returned, which is also in its ``total_s``).

Vuer 0.1.6 is left out: its ``session.upsert`` must run on its event loop per session (rows 8a
and 8b of ``run.py`` already compare it on this workload).

meshcat 0.3.2's ``meshcat-server`` listens on every interface for its web port; here it is
started with that port bound to 127.0.0.1 (a subclass of its bridge), and the JSON records
the addresses it listens on (``info.meshcat_server_listens``).

Writes ``benchmarks/out/bench_anchors.json`` (``--smoke``: ``bench_anchors-smoke.json``):
per-repetition values, median and min/max per metric, and the issue's goals evaluated.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    HOST,
    RawPeer,
    decode_viser_frame,
    free_port,
    machine_info,
    stop_process,
    viser_subprotocol,
    wait_port,
)

logger = logging.getLogger("benchmarks.anchors")

IMPLS = ("vuer_sync", "viser", "meshcat", "rerun")
MODULES = {"vuer_sync": "vuer_sync", "viser": "viser", "meshcat": "meshcat", "rerun": "rerun"}
VARIANTS = {"vuer_sync": ("calls", "list", "poses"), "viser": ("calls", "atomic"),
            "meshcat": ("calls",), "rerun": ("calls", "instance_poses", "send_columns")}
DISTINCT = {"vuer_sync": ("one", "create")}
WORKLOADS = ("same", "distinct", "tick100")
pc_ns = time.perf_counter_ns


def _x(i: int) -> float:
    """The x of call/tick ``i``: never repeats within a run (so a stale value cannot pass
    for the final one), and changes by more than viser's ``np.allclose`` tolerance."""
    return 1.0 + i * 1e-3


def _distinct_keys(variant: str, n: int) -> List[str]:
    return [f"{'c' if variant == 'create' else 'd'}{i}" for i in range(n)]


def _tick_keys(variant: str, nodes: int) -> List[str]:
    return [f"{variant}_{j}" for j in range(nodes)]


# -- the producer (one subprocess per implementation) ----------------------------------------


def _times_summary(a: Any, n: int, scale: float = 1.0) -> Dict[str, float]:
    import numpy as np

    if n <= 0:
        return {"n": 0}
    v = a[:n].astype("float64") / scale
    med, p99 = np.percentile(v, [50, 99])
    return {"n": int(n), "median_us": float(med) / 1e3, "p99_us": float(p99) / 1e3,
            "mean_us": float(v.mean()) / 1e3, "max_us": float(v.max()) / 1e3}


def timed_calls(fn: Callable[[int], Any], n: int, max_s: float) -> Tuple[Any, int]:
    """``fn(i)`` for i < n back to back, each timed; stops after ``max_s`` s."""
    import numpy as np

    a = np.zeros(n, dtype=np.int64)
    deadline = time.perf_counter() + max_s
    done = n
    for i in range(n):
        t0 = pc_ns()
        fn(i)
        a[i] = pc_ns() - t0
        if not i & 63 and time.perf_counter() > deadline:
            done = i + 1
            break
    return a, done


def paced_ticks(fn: Callable[[int], Any], ticks: int, hz: float, max_s: float,
                before: Optional[Callable[[int], Any]] = None) -> Tuple[Any, int]:
    """``fn(i)`` at ``hz`` (absolute schedule; no sleep when behind), each tick timed;
    ``before(i)`` (untimed) fills the arrays; stops after ``max_s`` s."""
    import numpy as np

    a = np.zeros(ticks, dtype=np.int64)
    period = 1.0 / hz
    t0 = time.perf_counter()
    done = ticks
    for i in range(ticks):
        if before is not None:
            before(i)
        s = pc_ns()
        fn(i)
        a[i] = pc_ns() - s
        now = time.perf_counter()
        if now - t0 > max_s:
            done = i + 1
            break
        delay = t0 + (i + 1) * period - now
        if delay > 0:
            time.sleep(delay)
    return a, done


class _Producer:
    """One implementation's calls. ``port``: where a consumer peer connects (None: none)."""

    port: Optional[int] = None

    def __init__(self, p: Dict[str, Any]):
        import numpy as np

        self.p = p
        self.np = np

    def info(self) -> Dict[str, Any]:
        return {}

    def wait_clients(self, wait: float) -> Dict[str, Any]:
        return {"clients": 0}

    def prepare(self, workload: str, variant: str) -> Dict[str, Any]:
        return {}

    def begin(self, workload: str, variant: str) -> None:
        """Before the timed loop (rerun: a fresh file sink)."""

    def finish(self) -> Dict[str, Any]:
        """After the timed loop: anything producer-side (flush, counters)."""
        return {}

    def per_call(self, workload: str, variant: str) -> Callable[[int], Any]:
        raise NotImplementedError

    def final_keys(self, variant: str) -> List[str]:
        """The nodes a ``tick100`` form updates (at the consumer)."""
        return _tick_keys(variant, self.p["nodes"])

    def per_tick(self, variant: str) -> Tuple[Callable[[int], Any], Callable[[int], Any]]:
        raise NotImplementedError

    def arrays(self) -> Tuple[Any, Any, Callable[[int], None]]:
        """``(N,3)`` positions, ``(N,4)`` identity quaternions and a filler for tick i."""
        np = self.np
        n = self.p["nodes"]
        pos = np.zeros((n, 3), dtype=np.float64)
        pos[:, 1] = np.arange(n) * 0.01
        quat = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (n, 1))

        def fill(i: int) -> None:
            pos[:, 0] = _x(i)

        return pos, quat, fill

    def stop(self) -> None:
        pass


class SyncProducer(_Producer):
    def __init__(self, p: Dict[str, Any]):
        super().__init__(p)
        from vuer_sync import Vuer

        self.app = Vuer(port=0)
        self.app.start(block=False)
        self.port = self.app.port
        self.scene = self.app.scene
        self._stats0: Dict[str, Any] = {}

    def info(self) -> Dict[str, Any]:
        return {"has_poses": hasattr(self.scene, "poses")}

    def wait_clients(self, wait: float) -> Dict[str, Any]:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            live = [s for s in self.app.sessions if s.init is not None and not s.closed]
            if live:
                return {"clients": len(live)}
            time.sleep(0.01)
        return {"clients": 0}

    def prepare(self, workload: str, variant: str) -> Dict[str, Any]:
        from vuer_sync.schemas import Box

        if workload == "tick100":
            for j, k in enumerate(_tick_keys(variant, self.p["nodes"])):
                self.scene.upsert @ Box(key=k, position=[0.0, j * 0.01, 0.0])
        elif workload == "distinct" and variant == "one":  # one SET: the nodes exist
            from vuer_sync.schemas import Scene

            self.scene.set @ Scene(*[Box(key=k, position=[0.0, 0.5, 0.0])
                                     for k in _distinct_keys(variant, self.p["n"])])
        elif workload == "same":  # warm up the call path (not timed)
            for i in range(max(10, self.p["n"] // 10)):
                self.scene.upsert @ Box(key="warm", position=[_x(i), 0.5, 0.0])
        self.scene.flush(60)
        return {}

    def begin(self, workload: str, variant: str) -> None:
        self._stats0 = dict(self.app.stats)

    def finish(self) -> Dict[str, Any]:
        self.scene.flush(60)  # after t_end: "sent" counts frames written, all of them
        s1 = self.app.stats
        return {"sent": s1.get("sent", 0) - self._stats0.get("sent", 0),
                "coalesced": s1.get("coalesced", 0) - self._stats0.get("coalesced", 0)}

    def per_call(self, workload: str, variant: str) -> Callable[[int], Any]:
        from vuer_sync.schemas import Box

        scene = self.scene
        xs = [_x(i) for i in range(self.p["n"])]
        if workload == "same":
            return lambda i: scene.upsert @ Box(key="box", position=[xs[i], 0.5, 0.0])
        keys = _distinct_keys(variant, self.p["n"])
        return lambda i: scene.upsert @ Box(key=keys[i], position=[xs[i], 0.5, 0.0])

    def per_tick(self, variant: str) -> Tuple[Callable[[int], Any], Callable[[int], Any]]:
        from vuer_sync.schemas import Box

        scene = self.scene
        nodes = self.p["nodes"]
        keys = _tick_keys(variant, nodes)
        ys = [j * 0.01 for j in range(nodes)]
        pos, quat, fill = self.arrays()
        if variant == "poses":
            poses = scene.poses  # run only when app.scene has it (info()["has_poses"])
            return (lambda i: poses(keys, position=pos, quaternion=quat)), fill
        if variant == "list":
            return (lambda i: scene.update @ [Box(key=keys[j], position=[_x(i), ys[j], 0.0])
                                               for j in range(nodes)]), fill

        def calls(i: int) -> None:
            x = _x(i)
            for j in range(nodes):
                scene.update @ Box(key=keys[j], position=[x, ys[j], 0.0])

        return calls, fill

    def stop(self) -> None:
        self.app.stop()


class ViserProducer(_Producer):
    def __init__(self, p: Dict[str, Any]):
        super().__init__(p)
        import viser

        self.server = viser.ViserServer(host=HOST, port=0, verbose=False)
        self.port = self.server.get_port()
        self.frames: Dict[str, Any] = {}

    def _live(self) -> int:
        # get_clients() counts a client only after its first camera message, which a raw
        # peer never sends: count the websocket connections instead (as bench_agent.py)
        live = getattr(getattr(self.server, "_websock_server", None), "_live_connections", None)
        return len(live) if live is not None else len(self.server.get_clients())

    def wait_clients(self, wait: float) -> Dict[str, Any]:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            n = self._live()
            if n:
                return {"clients": n}
            time.sleep(0.01)
        return {"clients": 0}

    def _add(self, keys: List[str]) -> None:
        for j, k in enumerate(keys):
            self.frames[k] = self.server.scene.add_frame(f"/{k}", position=(0.0, j * 0.01, 0.0),
                                                         show_axes=False)
        self.server.flush()

    def prepare(self, workload: str, variant: str) -> Dict[str, Any]:
        if workload == "same":
            self._add(["box"])
        elif workload == "distinct":
            self._add(_distinct_keys(variant, self.p["n"]))
        else:
            self._add(_tick_keys(variant, self.p["nodes"]))
        return {}

    def finish(self) -> Dict[str, Any]:
        self.server.flush()
        return {}

    def per_call(self, workload: str, variant: str) -> Callable[[int], Any]:
        xs = [_x(i) for i in range(self.p["n"])]
        if workload == "same":
            box = self.frames["box"]

            def one(i: int) -> None:
                box.position = (xs[i], 0.5, 0.0)

            return one
        handles = [self.frames[k] for k in _distinct_keys(variant, self.p["n"])]

        def each(i: int) -> None:
            handles[i].position = (xs[i], 0.5, 0.0)

        return each

    def per_tick(self, variant: str) -> Tuple[Callable[[int], Any], Callable[[int], Any]]:
        nodes = self.p["nodes"]
        handles = [self.frames[k] for k in _tick_keys(variant, nodes)]
        ys = [j * 0.01 for j in range(nodes)]
        _, _, fill = self.arrays()
        server = self.server

        def calls(i: int) -> None:
            x = _x(i)
            for j in range(nodes):
                handles[j].position = (x, ys[j], 0.0)

        def atomic(i: int) -> None:
            with server.atomic():
                calls(i)

        return (atomic if variant == "atomic" else calls), fill

    def stop(self) -> None:
        self.server.stop()


#: meshcat 0.3.2's server, its web port bound to 127.0.0.1 (``app.listen(port)`` alone
#: listens on every interface); its ZeroMQ socket binds the URL given (127.0.0.1 here)
MESHCAT_SERVER = r"""
import os
import sys

import tornado.ioloop
from meshcat.servers.zmqserver import ZMQWebSocketBridge

class LocalBridge(ZMQWebSocketBridge):
    def make_app(self):
        app = super().make_app()
        listen = app.listen
        app.listen = lambda port, **kw: listen(port, address="127.0.0.1", **kw)
        return app

bridge = LocalBridge(zmq_url=sys.argv[1], port=int(sys.argv[2]))
print("zmq_url=" + bridge.zmq_url, flush=True)
print("web_url=" + bridge.web_url, flush=True)
parent = os.getppid()

def orphaned():  # the worker that started this server is gone: stop
    if os.getppid() != parent:
        bridge.ioloop.stop()

tornado.ioloop.PeriodicCallback(orphaned, 500).start()
bridge.run()
"""


class MeshcatProducer(_Producer):
    def __init__(self, p: Dict[str, Any]):
        super().__init__(p)
        import meshcat

        self.zmq_url = f"tcp://{HOST}:{free_port()}"
        web_port = free_port()
        self.server = subprocess.Popen(
            [sys.executable, "-u", "-c", MESHCAT_SERVER, self.zmq_url, str(web_port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.server.stdout is not None
        line = self.server.stdout.readline()
        if not line.startswith("zmq_url="):
            stop_process(self.server, 5)
            raise RuntimeError(f"meshcat-server did not start: {line!r}")
        wait_port(web_port)
        self.port = web_port
        self.vis = meshcat.Visualizer(zmq_url=self.zmq_url)
        self.T = self.np.eye(4)

    def info(self) -> Dict[str, Any]:
        import psutil

        listen = sorted({f"{c.laddr.ip}:{c.laddr.port}"
                         for c in psutil.Process(self.server.pid).net_connections("inet")
                         if c.status == psutil.CONN_LISTEN})
        return {"meshcat_server_listens": listen}

    def wait_clients(self, wait: float) -> Dict[str, Any]:
        # meshcat's "wait" answers once a websocket is connected
        return {"clients": 1 if self.vis.wait() == "ok" else 0}

    def per_call(self, workload: str, variant: str) -> Callable[[int], Any]:
        vis = self.vis
        T = self.T
        xs = [_x(i) for i in range(self.p["n"])]
        T[1, 3] = 0.5
        if workload == "same":
            def one(i: int) -> None:
                vis["box"].set_transform(T)
            return _meshcat_untimed(one, T, xs)
        keys = _distinct_keys(variant, self.p["n"])

        def each(i: int) -> None:
            vis[keys[i]].set_transform(T)

        return _meshcat_untimed(each, T, xs)

    def per_tick(self, variant: str) -> Tuple[Callable[[int], Any], Callable[[int], Any]]:
        nodes = self.p["nodes"]
        keys = _tick_keys(variant, nodes)
        np = self.np
        Ts = [np.eye(4) for _ in range(nodes)]
        for j, T in enumerate(Ts):
            T[1, 3] = j * 0.01
        vis = self.vis

        def fill(i: int) -> None:
            x = _x(i)
            for T in Ts:
                T[0, 3] = x

        def calls(i: int) -> None:
            for j in range(nodes):
                vis[keys[j]].set_transform(Ts[j])

        return calls, fill

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.vis.window.zmq_socket.close(linger=0)
        stop_process(self.server, 5)


def _meshcat_untimed(fn: Callable[[int], Any], T: Any, xs: List[float]) -> Callable[[int], Any]:
    """meshcat's call with ``T[0, 3] = x`` folded in: one float store (~50 ns) inside the
    timer, against meshcat's ZeroMQ round trip per call."""

    def call(i: int) -> None:
        T[0, 3] = xs[i]
        fn(i)

    return call


class RerunProducer(_Producer):
    def __init__(self, p: Dict[str, Any]):
        super().__init__(p)
        import rerun as rr

        self.rr = rr
        rr.init("bench_anchors", spawn=False)
        self.dir = Path(p["tmp"])
        self.path = ""
        self.rec: Any = None
        self.t_loop_end = 0.0

    def begin(self, workload: str, variant: str) -> None:
        rr = self.rr
        self.path = str(self.dir / f"{workload}_{variant}_{os.getpid()}.rrd")
        self.rec = rr.RecordingStream("bench_anchors")
        self.rec.save(self.path)
        rr.set_global_data_recording(self.rec)

    def finish(self) -> Dict[str, Any]:
        t0 = time.perf_counter()
        rec = self.rr.get_global_data_recording()
        assert rec is not None
        rec.flush()  # included in total_s
        flush_s = time.perf_counter() - t0
        self.rec.disconnect()  # closes the file (its footer); not timed
        return {"flush_ms": flush_s * 1e3, "rrd": self.path,
                "rrd_bytes": os.path.getsize(self.path)}

    def per_call(self, workload: str, variant: str) -> Callable[[int], Any]:
        rr = self.rr
        xs = [_x(i) for i in range(self.p["n"])]
        if workload == "same":
            return lambda i: rr.log("box", rr.Transform3D(translation=[xs[i], 0.5, 0.0]))
        keys = _distinct_keys(variant, self.p["n"])
        return lambda i: rr.log(keys[i], rr.Transform3D(translation=[xs[i], 0.5, 0.0]))

    def final_keys(self, variant: str) -> List[str]:
        if variant in ("instance_poses", "send_columns"):
            return _tick_keys(variant, 1)  # one entity, its 100 instances
        return super().final_keys(variant)

    def per_tick(self, variant: str) -> Tuple[Callable[[int], Any], Callable[[int], Any]]:
        rr = self.rr
        nodes = self.p["nodes"]
        pos, quat, fill = self.arrays()
        ent = _tick_keys(variant, 1)[0]
        if variant == "instance_poses":
            return (lambda i: rr.log(ent, rr.InstancePoses3D(translations=pos,
                                                             quaternions=quat))), fill
        if variant == "send_columns":
            def columns(i: int) -> None:
                rr.send_columns(ent, indexes=[rr.TimeColumn("tick", sequence=[i])],
                                columns=rr.InstancePoses3D.columns(
                                    translations=pos, quaternions=quat).partition([nodes]))
            return columns, fill
        keys = _tick_keys(variant, nodes)
        ys = [j * 0.01 for j in range(nodes)]

        def calls(i: int) -> None:
            x = _x(i)
            for j in range(nodes):
                rr.log(keys[j], rr.Transform3D(translation=[x, ys[j], 0.0]))

        return calls, fill

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.rr.disconnect()


PRODUCERS = {"vuer_sync": SyncProducer, "viser": ViserProducer, "meshcat": MeshcatProducer,
             "rerun": RerunProducer}


def run_workload(prod: _Producer, workload: str, variant: str) -> Dict[str, Any]:
    p = prod.p
    prod.begin(workload, variant)
    t_start = time.monotonic()
    if workload == "tick100":
        fn, fill = prod.per_tick(variant)
        a, done = paced_ticks(fn, p["ticks"], p["hz"], p["max_s"], fill)
        t_end = time.monotonic()
        out = {"per_call": _times_summary(a, done), "ticks": done,
               "per_pose": _times_summary(a, done, p["nodes"]), "poses": done * p["nodes"],
               "final_x": _x(done - 1), "final_keys": prod.final_keys(variant)}
    else:
        a, done = timed_calls(prod.per_call(workload, variant), p["n"], p["max_s"])
        t_end = time.monotonic()
        key = "box" if workload == "same" else _distinct_keys(variant, done)[-1]
        out = {"per_call": _times_summary(a, done), "calls": done, "poses": done,
               "final_x": _x(done - 1), "final_keys": [key]}
    out.update(prod.finish())
    t_done = time.monotonic()
    out.update({"workload": workload, "variant": variant, "t_end": t_end, "loop_s": t_end - t_start,
                "total_s": t_done - t_start})
    return out


def worker(impl: str, params: Dict[str, Any]) -> None:
    """The producer process: ``@@{json}`` replies on a private copy of stdout; whatever the
    libraries print goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    def reply(obj: Dict[str, Any]) -> None:
        proto.write("@@" + json.dumps(obj, default=str) + "\n")
        proto.flush()

    try:
        prod = PRODUCERS[impl](params)
    except Exception as e:
        reply({"error": f"{impl} did not start: {type(e).__name__}: {e}"})
        return
    try:
        reply({"port": prod.port, "pid": os.getpid(), **prod.info()})
        for line in sys.stdin:
            if not line.strip():
                continue
            msg = json.loads(line)
            cmd = msg.pop("cmd")
            if cmd == "quit":
                break
            try:
                if cmd == "wait_clients":
                    reply(prod.wait_clients(msg.get("wait", 20.0)))
                elif cmd == "prepare":
                    reply(prod.prepare(msg["workload"], msg["variant"]))
                elif cmd == "run":
                    reply(run_workload(prod, msg["workload"], msg["variant"]))
                else:
                    reply({"error": f"unknown command {cmd}"})
            except Exception as e:
                logger.exception("%s %s failed", impl, cmd)
                reply({"error": f"{cmd}: {type(e).__name__}: {e}"})
    finally:
        prod.stop()
        reply({"ok": True})
        proto.close()


# -- the driver and its consumers --------------------------------------------------------------


class Watcher:
    """Decodes every frame a consumer peer receives; keeps each node's newest x and when it
    came, and counts frames and pose updates."""

    def __init__(self, impl: str):
        import msgpack

        self.impl = impl
        self.unpackb = msgpack.unpackb
        self.last: Dict[str, Tuple[float, float]] = {}
        self.frames = 0
        self.updates = 0
        self.last_rx = 0.0

    def __call__(self, payload: bytes) -> None:
        now = time.monotonic()
        self.frames += 1
        self.last_rx = now
        if self.impl == "viser":
            for m in decode_viser_frame(payload):
                if m.get("type") == "SetPositionMessage":
                    self.last[m["name"].lstrip("/")] = (float(m["position"][0]), now)
                    self.updates += 1
            return
        m = self.unpackb(payload, raw=False, strict_map_key=False)
        if not isinstance(m, dict):
            return
        if self.impl == "meshcat":
            if m.get("type") == "set_transform":
                self.last[m["path"].rsplit("/", 1)[-1]] = (float(m["matrix"][12]), now)
                self.updates += 1
            return
        if m.get("etype") not in ("UPDATE", "UPSERT"):
            return
        for nd in m.get("data", {}).get("nodes", []):
            if isinstance(nd, dict) and "position" in nd:
                self.last[str(nd.get("key"))] = (float(nd["position"][0]), now)
                self.updates += 1

    def has(self, key: str, x: float) -> bool:
        v = self.last.get(key)
        return v is not None and abs(v[0] - x) < 1e-4

    def quiet(self, period: float, timeout: float) -> None:
        """Until nothing arrived for ``period`` s (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.monotonic() - max(self.last_rx, 0.0) >= period:
                return
            time.sleep(period / 4)


class Worker:
    """``bench_anchors.py --worker IMPL`` in a subprocess; JSON lines both ways."""

    def __init__(self, impl: str, params: Dict[str, Any], log: Any):
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE.parent), env.get("PYTHONPATH", "")) if p)
        self.impl = impl
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", impl,
             "--params", json.dumps(params)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
            env=env, cwd=str(HERE))
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def reply(self, timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.impl}: no reply within {timeout} s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.impl} worker exited (rc={self.proc.poll()})")
            if line.startswith("@@"):
                msg = json.loads(line[2:])
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg

    def call(self, cmd: str, timeout: float = 120.0, **kw: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        return self.reply(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("quit", timeout=20)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, 5)
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()


def read_rrd(path: str, keys: List[str], final_x: float, distinct: bool) -> Dict[str, Any]:
    """rerun's consumer: rows per entity in the ``.rrd`` file and whether every key's last
    translation is the final one."""
    import warnings

    from rerun.chunk import RrdReader

    rows = 0
    instances = 0
    last: Dict[str, Any] = {}
    wanted = {"/" + k for k in keys}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ch in RrdReader(path).stream():
            ent = ch.entity_path
            if ent.startswith("/__"):
                continue
            rb = ch.to_record_batch()
            cols = [n for n in rb.schema.names if "translation" in n]
            if not cols:
                continue
            rows += ch.num_rows
            col = rb.column(cols[0])
            instances += sum(len(v) for v in col.to_pylist() if v)
            if ent in wanted or distinct:
                last[ent] = col[-1].as_py()
    ok = 0
    for k in keys:
        v = last.get("/" + k)
        if v and all(abs(t[0] - final_x) < 1e-4 for t in v):
            ok += 1
    return {"rows": rows, "poses": instances, "final_ok": ok == len(keys),
            "entities": len(last) if distinct else None}


def measure_impl(impl: str, params: Dict[str, Any], log_dir: Path) -> Dict[str, Any]:
    """One repetition of every workload in one fresh producer process."""
    res: Dict[str, Any] = {}
    with open(log_dir / f"anchors_{impl}.log", "a", encoding="utf-8") as log:
        w = Worker(impl, params, log)
        peer = None
        try:
            hello = w.reply(90)
            res["info"] = {k: v for k, v in hello.items() if k not in ("port", "pid")}
            watcher = Watcher(impl)
            if hello.get("port"):
                kw: Dict[str, Any] = {}
                if impl == "viser":
                    kw = {"subprotocol": viser_subprotocol(), "init": False}
                elif impl == "meshcat":
                    kw = {"init": False}
                peer = RawPeer(hello["port"], **kw)
                peer.start_reader(watcher)
                got = w.call("wait_clients", wait=30, timeout=60)
                if not got.get("clients"):
                    raise RuntimeError(f"{impl}: the consumer peer is not a client")
            variants = [v for v in VARIANTS[impl] if v != "poses" or hello.get("has_poses")]
            plan = ([("same", "one")] + [("distinct", v) for v in DISTINCT.get(impl, ("one",))]
                    + [("tick100", v) for v in variants])
            for workload, variant in plan:
                w.call("prepare", workload=workload, variant=variant, timeout=300)
                if peer is not None:
                    watcher.quiet(0.2, 60)
                f0, u0 = watcher.frames, watcher.updates
                r = w.call("run", workload=workload, variant=variant,
                           timeout=params["max_s"] * 3 + 120)
                r.update(consume(impl, watcher, r, peer is not None))
                r["consumer_frames"] = watcher.frames - f0 if peer is not None else None
                r["consumer_updates"] = watcher.updates - u0 if peer is not None else r.pop(
                    "rrd_poses", None)
                res.setdefault(workload, {})[variant] = r
        except Exception as e:
            logger.error("%s failed: %s", impl, e)
            res["error"] = f"{type(e).__name__}: {e}"
        finally:
            if peer is not None:
                peer.close()
            w.close()
    return res


def consume(impl: str, watcher: Watcher, r: Dict[str, Any], live: bool) -> Dict[str, Any]:
    """After a run: until the consumer has every final value (bounded), and how late."""
    keys, fx, t_end = r.pop("final_keys"), r["final_x"], r["t_end"]
    if not live:  # rerun: the file, after the flush that run_workload timed
        got = read_rrd(r["rrd"], keys, fx, r["workload"] == "distinct")
        return {"landed": got["final_ok"], "land_ms": r.get("flush_ms"),
                "consumer_rows": got["rows"], "rrd_poses": got["poses"],
                "consumer_entities": got["entities"]}
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and not all(watcher.has(k, fx) for k in keys):
        time.sleep(0.001)
    landed = all(watcher.has(k, fx) for k in keys)
    out: Dict[str, Any] = {"landed": landed, "land_ms": (
        max(max(0.0, watcher.last[k][1] - t_end) for k in keys) * 1e3 if landed else None)}
    if r["workload"] == "distinct":  # distinct: how many nodes are current
        made = _distinct_keys(r["variant"], r["calls"])
        out["consumer_nodes_final"] = sum(watcher.has(k, _x(i)) for i, k in enumerate(made))
    return out


# -- statistics and goals -----------------------------------------------------------------------

#: the per-repetition numbers aggregated (median, min, max)
METRICS = ("call_median_us", "call_p99_us", "per_pose_us", "calls", "sent", "coalesced",
           "consumer_frames", "consumer_updates", "consumer_rows", "land_ms", "loop_s",
           "flush_ms", "total_s", "rrd_bytes")


def flat_metrics(r: Dict[str, Any]) -> Dict[str, Any]:
    out = {"call_median_us": r["per_call"].get("median_us"),
           "call_p99_us": r["per_call"].get("p99_us"),
           "calls": r.get("calls", r.get("ticks"))}
    if "per_pose" in r:
        out["per_pose_us"] = r["per_pose"].get("median_us")
    for k in METRICS:
        if k not in out and isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool):
            out[k] = r[k]
    out["landed"] = r.get("landed")
    return out


def aggregate(runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    rows: Dict[str, Any] = {}
    for impl, reps in runs.items():
        for rep in reps:
            for workload in WORKLOADS:
                for variant, r in rep.get(workload, {}).items():
                    slot = rows.setdefault(workload, {}).setdefault(impl, {}).setdefault(
                        variant, {"reps": []})
                    slot["reps"].append(flat_metrics(r))
    for workload in rows.values():
        for variants in workload.values():
            for slot in variants.values():
                reps = slot["reps"]
                for m in METRICS:
                    vals = [x[m] for x in reps if isinstance(x.get(m), (int, float))]
                    if vals:
                        slot[m] = {"median": statistics.median(vals), "min": min(vals),
                                   "max": max(vals)}
                slot["landed"] = f"{sum(bool(x.get('landed')) for x in reps)}/{len(reps)}"
    return rows


def _med(rows: Dict[str, Any], workload: str, impl: str, variant: str, metric: str
         ) -> Optional[float]:
    v = rows.get(workload, {}).get(impl, {}).get(variant, {}).get(metric)
    return v["median"] if isinstance(v, dict) else None


def evaluate_goals(rows: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Issue 18's goals for this section, from the medians."""
    goals = []
    for workload in ("same", "distinct"):
        ours = _med(rows, workload, "vuer_sync", "one", "call_median_us")
        others = {i: _med(rows, workload, i, "one", "call_median_us")
                  for i in IMPLS if i != "vuer_sync"}
        known = {k: v for k, v in others.items() if v is not None}
        met = None if ours is None or not known else all(ours < v for v in known.values())
        goals.append({"goal": f"vuer_sync's producer call is the cheapest ({workload} key"
                              f"{'s' if workload == 'distinct' else ''})", "met": met,
                      "evidence": f"vuer_sync {_fmt(ours)} µs; " + ", ".join(
                          f"{k} {_fmt(v)} µs" for k, v in others.items())})
    batched = [v for v in (_med(rows, "tick100", "rerun", x, "per_pose_us")
                           for x in ("instance_poses", "send_columns")) if v is not None]
    ref = min(batched) if batched else None
    for variant in ("poses", "list"):
        ours = _med(rows, "tick100", "vuer_sync", variant, "per_pose_us")
        if ours is None:
            continue
        goals.append({"goal": f"100 poses per tick, per pose, at or below rerun's batched form "
                              f"(vuer_sync {variant})",
                      "met": None if ref is None else ours <= ref,
                      "evidence": f"vuer_sync {variant} {_fmt(ours)} µs per pose; rerun "
                                  f"batched {_fmt(ref)} µs"})
    return goals


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def print_table(rows: Dict[str, Any]) -> None:
    print(f"{'workload':9} {'impl':10} {'form':15} {'call µs med [min-max]':>26} "
          f"{'p99':>8} {'per pose':>9} {'calls':>7} {'consumer':>9} {'coalesced':>9} "
          f"{'lands ms':>9} landed")
    for workload in WORKLOADS:
        for impl in IMPLS:
            for variant, s in rows.get(workload, {}).get(impl, {}).items():
                def g(m: str, slot: Dict[str, Any] = s) -> str:
                    v = slot.get(m)
                    return _fmt(v["median"]) if isinstance(v, dict) else "-"

                cm = s.get("call_median_us")
                spread = f"[{_fmt(cm['min'])}-{_fmt(cm['max'])}]" if cm else ""
                cons = g("consumer_updates") if "consumer_updates" in s else g("consumer_rows")
                print(f"{workload:9} {impl:10} {variant:15} {g('call_median_us'):>10} "
                      f"{spread:>15} {g('call_p99_us'):>8} {g('per_pose_us'):>9} "
                      f"{g('calls'):>7} {cons:>9} {g('coalesced'):>9} {g('land_ms'):>9} "
                      f"{s['landed']}")


# -- main -----------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CI-sized (< 20 s)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (3; smoke 1)")
    ap.add_argument("--n", type=int, default=None, help="calls in 'same'/'distinct'")
    ap.add_argument("--ticks", type=int, default=None, help="ticks in 'tick100'")
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--hz", type=float, default=1000.0)
    ap.add_argument("--max-s", type=float, default=None, help="cap on one loop (s)")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, json.loads(a.params))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    smoke = a.smoke
    params = {"n": a.n or (300 if smoke else 20000), "ticks": a.ticks or (40 if smoke else 2000),
              "nodes": a.nodes, "hz": a.hz, "max_s": a.max_s or (1.0 if smoke else 8.0)}
    reps = a.reps or (1 if smoke else 3)
    impls = [i for i in a.impls.split(",") if i]
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "bench_anchors-smoke.json" if smoke else "bench_anchors.json"
    runs: Dict[str, List[Dict[str, Any]]] = {i: [] for i in impls}
    missing: Dict[str, str] = {}
    for impl in impls:  # found, not imported (the workers import them)
        if importlib.util.find_spec(MODULES[impl]) is None:
            missing[impl] = f"{MODULES[impl]} is not installed"
    order_log = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_anchors_") as tmp:
        params["tmp"] = tmp
        for rep in range(reps):
            order = [i for i in (impls if rep % 2 == 0 else impls[::-1]) if i not in missing]
            order_log.append(order)
            for impl in order:
                t1 = time.monotonic()
                r = measure_impl(impl, params, out_dir)
                print(f"rep {rep + 1}/{reps}: {impl} ({time.monotonic() - t1:.1f} s)", flush=True)
                runs[impl].append(r)
                for f in Path(tmp).glob("*.rrd"):  # read already; do not let them pile up
                    f.unlink()
    params.pop("tmp")
    rows = aggregate(runs)
    errors = {i: [r["error"] for r in rs if "error" in r] for i, rs in runs.items()}
    errors = {i: e for i, e in errors.items() if e}
    data: Dict[str, Any] = {"mode": "smoke" if smoke else "full", "params": params, "reps": reps,
            "order": order_log, "elapsed_s": time.monotonic() - t0,
            "machine": machine_info(), "missing": missing,
            "errors": errors, "rows": rows, "goals": evaluate_goals(rows), "runs": runs,
            "versions": {i: _dist_version(i) for i in impls}}
    (out_dir / name).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    print_table(rows)
    for g in data["goals"]:
        print(f"goal: {g['goal']}: {g['met']} ({g['evidence']})")
    print(f"wrote {out_dir / name}")
    if missing:
        print(f"missing: {missing}")
    if errors:
        print(f"errors: {errors}")
    ci = os.environ.get("CI", "").lower() == "true"
    return 1 if errors or (missing and ci) else 0


def _dist_version(impl: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"vuer_sync": "vuer-sync", "rerun": "rerun-sdk"}.get(impl, impl)
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
