"""The server side of the side-by-side benchmarks: one process per server under test.

    python benchmarks/bench_agent.py vuer_sync|vuer|viser [OPTIONS_JSON]

Started and driven by ``run.py`` (through :class:`common.Agent`), not by hand. It starts the
server on 127.0.0.1, prints ``@@{"port": ...}`` on the protocol pipe, then executes JSON
commands read from stdin one at a time and answers each with one ``@@{...}`` line. Everything
the server libraries print goes to stderr (the agent's log file), never to the protocol pipe.

Commands run *inside the server process*, the way a user's code would: ``session.upsert @``
from a plain thread for vuer_sync and viser, from a coroutine on the server's event loop for
Vuer 0.1.6 (whose ``session.upsert`` is synchronous but whose queue is drained by that loop).
Timings taken here are producer-side (call cost, RPC round trip, loop lateness); CPU time and
RSS are read by the driver from /proc.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

from common import (
    control_loop,
    free_port,
    raise_nofile,
    summarize_ns,
    summarize_s,
    wait_port,
)

logger = logging.getLogger("benchmarks.agent")

#: Vuer 0.1.6's per-session deques default to maxlen=100 and silently drop the oldest
#: entries; the benchmarks raise it so that Vuer drops nothing (both the send and the receive
#: deque use this length).
VUER_QUEUE_LEN = 10_000_000

pc_ns = time.perf_counter_ns


def _x(i: int) -> float:
    """A position coordinate that always changes by >= 1e-3 relative (so viser's
    ``np.allclose`` early return never skips an update)."""
    return 1.0 + (i % 500) * 0.01


def _point_cloud_arrays(size: int):
    import numpy as np

    n = max(1, size // 9)  # float16 xyz (6 B) + uint8 rgb (3 B) per point
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((n, 3)).astype(np.float16)
    cols = rng.integers(0, 255, (n, 3), dtype=np.uint8)
    return pts, cols


class _Armed:
    """Counts client events of one etype until ``n`` arrived (c->s rows)."""

    def __init__(self) -> None:
        self.etype: Optional[str] = None
        self.n = 0
        self.count = 0
        self.nbytes = 0
        self.t_first = 0.0
        self.t_done = 0.0
        self.done = threading.Event()

    def arm(self, etype: str, n: int) -> None:
        self.done.clear()
        self.count = 0
        self.nbytes = 0
        self.t_first = self.t_done = 0.0
        self.n = n
        self.etype = etype

    def hit(self, etype: str, value: Any) -> None:
        if etype != self.etype:
            return
        if not self.count:
            self.t_first = time.monotonic()
        self.count += 1
        if isinstance(value, (bytes, bytearray)):
            self.nbytes += len(value)
        if self.count >= self.n and not self.done.is_set():
            self.t_done = time.monotonic()
            self.done.set()

    def wait(self, timeout: float) -> Dict[str, Any]:
        ok = self.done.wait(timeout)
        return {"ok": ok, "count": self.count, "bytes": self.nbytes, "t_first": self.t_first,
                "t_done": self.t_done}


def _lateness_while(duration: float, switch: Optional[float], stop: threading.Event,
                    sent: List[int], start: Optional[Callable[[], Any]] = None,
                    finish: Optional[Callable[[], Any]] = None) -> Dict[str, Any]:
    """Run the 1 kHz loop (optionally with another GIL switch interval) while ``start``ed
    streaming goes on; then ``stop`` it and ``finish`` (join) it."""
    old = sys.getswitchinterval()
    if switch:
        sys.setswitchinterval(switch)
    try:
        if start is not None:
            start()
            time.sleep(0.05)
        late = control_loop(duration)
    finally:
        stop.set()
        if finish is not None:
            finish()
        sys.setswitchinterval(old)
    return {"late": summarize_s(late), "messages": sent[0]}


class _PoseTimes:
    """Preallocated (and touched) storage for per-call timings, so that recording them does
    not show up as server RSS growth."""

    def __init__(self, capacity: int):
        import numpy as np

        self.a = np.ones(capacity, dtype=np.int64)
        self.n = 0

    def summary(self, scale: float = 1.0) -> Dict[str, float]:
        """As ``summarize_ns``, computed in numpy: a list of half a million Python floats
        would leave pymalloc arenas behind and show up as *server* RSS growth."""
        import numpy as np

        if not self.n:
            return {"n": 0}
        v = self.a[: self.n].astype("float64") / scale
        median, p99 = np.percentile(v, [50, 99])  # linear, as common.percentile
        return {"n": int(self.n), "median_us": float(median) / 1e3,
                "p99_us": float(p99) / 1e3, "mean_us": float(v.mean()) / 1e3,
                "max_us": float(v.max()) / 1e3}


# -- vuer_sync --------------------------------------------------------------------------------


class SyncAgent:
    impl = "vuer_sync"

    def __init__(self, **vuer_kw: Any) -> None:
        from vuer_sync import Vuer

        self.app = Vuer(port=0, **vuer_kw)  # vuer_kw: run.py's variants (e.g. io_threads=0)
        self.app.start(block=False)
        self.port = self.app.port
        self.armed = _Armed()
        self.app.add_handler("BENCH", self._on_event)
        self.app.add_handler("UPLOAD", self._on_event)
        self.big: Any = None
        self.pose: Optional[_PoseTimes] = None

    def _on_event(self, ev: Any, session: Any) -> None:
        self.armed.hit(ev.etype, ev.value)

    def _sessions(self) -> List[Any]:
        return [s for s in self.app.sessions if s.init is not None and not s.closed]

    def _session(self) -> Any:
        ss = self._sessions()
        if not ss:
            raise RuntimeError("no connected session")
        return ss[-1]

    def cmd_wait_clients(self, n: int, wait: float = 20.0) -> Dict[str, Any]:
        deadline = time.monotonic() + wait
        while len(self._sessions()) != n and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"clients": len(self._sessions())}

    def cmd_producer_cost(self, n: int, distinct: bool = False) -> Dict[str, Any]:
        from vuer_sync.schemas import Box

        s = self._session()
        times = [0] * n
        for i in range(-n // 10, n):  # the first tenth warms up, unrecorded
            x = _x(i)
            key = f"b{i}" if distinct else "box"  # distinct: nothing can coalesce
            t0 = pc_ns()
            s.upsert @ Box(key=key, position=[x, 0.5, 0.0])
            dt = pc_ns() - t0
            if i >= 0:
                times[i] = dt
        s.flush(60)
        return {"cost": summarize_ns(times), "stats": s.stats}

    def cmd_send_small(self, n: int) -> Dict[str, Any]:
        from vuer_sync.schemas import Box

        s = self._session()
        t0 = time.monotonic()
        for i in range(n):
            s.upsert @ Box(key=f"b{i}", position=[i * 1e-3, 0.0, 0.0])
        t_enq = time.monotonic()
        s.flush(120)
        return {"t0": t0, "t_enqueued": t_enq, "t_flushed": time.monotonic(), "stats": s.stats}

    def cmd_arm(self, etype: str, n: int) -> Dict[str, Any]:
        self.armed.arm(etype, n)
        return {"armed": True}

    def cmd_wait_armed(self, wait: float) -> Dict[str, Any]:
        return self.armed.wait(wait)

    def cmd_rpc(self, n: int) -> Dict[str, Any]:
        s = self._session()
        times = []
        for i in range(-max(1, n // 10), n):
            t0 = pc_ns()
            s.grab_render(ttl=5.0)
            if i >= 0:
                times.append(pc_ns() - t0)
        return {"rtt": summarize_ns(times)}

    def cmd_prepare_big(self, size: int) -> Dict[str, Any]:
        from vuer_sync.schemas import PointCloud

        pts, cols = _point_cloud_arrays(size)
        self.big = PointCloud(key="pc", vertices=pts.tobytes(), colors=cols.tobytes(), size=0.01)
        return {"payload": len(self.big.vertices) + len(self.big.colors)}

    def cmd_send_big(self, k: int) -> Dict[str, Any]:
        s = self._session()
        t0 = time.monotonic()
        for i in range(k):
            self.big.key = f"pc{i}"
            s.upsert @ self.big
        t_enq = time.monotonic()
        s.flush(300)
        return {"t0": t0, "t_enqueued": t_enq, "t_flushed": time.monotonic()}

    def cmd_lateness(self, duration: float, stream: bool, switch: Optional[float] = None
                     ) -> Dict[str, Any]:
        stop = threading.Event()
        sent = [0]
        s = self._session() if stream else None

        def streamer() -> None:
            while not stop.is_set():
                self.big.key = "pc_stream"
                s.upsert @ self.big
                s.flush(60)
                sent[0] += 1

        t = threading.Thread(target=streamer, daemon=True)
        return _lateness_while(duration, switch, stop, sent, t.start if stream else None,
                               (lambda: t.join(30)) if stream else None)

    def cmd_broadcast(self, hz: float, duration: float) -> Dict[str, Any]:
        from vuer_sync.schemas import Box

        scene = self.app.scene
        scene.upsert @ Box(key="bbox", position=[0.0, 0.0, 0.0])
        before = self.app.stats
        ticks = _paced(hz, duration, lambda i: scene.update @ Box(key="bbox",
                                                                   position=[_x(i), 0.0, 0.0]))
        after = self.app.stats
        # updates merged in a viewer's outbox (that viewer was behind): the server's share of
        # what the viewers did not receive (the rest would be the client's)
        return {"ticks": ticks, "coalesced": after.get("coalesced", 0) - before.get("coalesced", 0)}

    def cmd_pose_prepare(self, nodes: int, capacity: int) -> Dict[str, Any]:
        from vuer_sync.schemas import Box

        for j in range(nodes):
            self.app.scene.upsert @ Box(key=f"n{j}", position=[1.0, j * 0.01, 0.0])
        self.pose = _PoseTimes(capacity)
        return {"ok": True}

    def cmd_pose_run(self, nodes: int, hz: float, duration: float, batch: bool,
                     columnar: bool = False) -> Dict[str, Any]:
        import numpy as np

        from vuer_sync.schemas import Box

        scene = self.app.scene
        keys = [f"n{j}" for j in range(nodes)]
        ys = [j * 0.01 for j in range(nodes)]
        pt = self.pose
        assert pt is not None
        a = pt.a
        cap = len(a)
        base = np.zeros((nodes, 3))
        base[:, 1] = ys

        def tick(i: int) -> None:
            x = _x(i)
            if columnar:  # the same update as the batch below, from arrays: scene.poses()
                t0 = pc_ns()
                pos = base.copy()
                pos[:, 0] = x
                scene.poses(keys, pos)
                if pt.n < cap:
                    a[pt.n] = pc_ns() - t0
                    pt.n += 1
                return
            if batch:
                t0 = pc_ns()
                scene.update @ [Box(key=keys[j], position=[x, ys[j], 0.0]) for j in range(nodes)]
                if pt.n < cap:
                    a[pt.n] = pc_ns() - t0
                    pt.n += 1
                return
            for j in range(nodes):
                t0 = pc_ns()
                scene.update @ Box(key=keys[j], position=[x, ys[j], 0.0])
                if pt.n < cap:
                    a[pt.n] = pc_ns() - t0
                    pt.n += 1

        return _pose_result(pt, _paced(hz, duration, tick), nodes, batch, duration,
                            extra={"stats": self.app.stats})

    def cmd_stats(self) -> Dict[str, Any]:
        return {"stats": self.app.stats}

    def cmd_greet(self) -> Dict[str, Any]:
        """Make the server send something to every new client: a non-empty ``app.scene``
        goes to each client as one ``SET`` when it connects."""
        from vuer_sync.schemas import Box

        self.app.scene.upsert @ Box(key="greet", position=[0.0, 0.0, 0.0])
        return {"ok": True}

    def stop(self) -> None:
        self.app.stop()


def _paced(hz: float, duration: float, fn: Callable[[int], Any]) -> int:
    """Call ``fn(i)`` at ``hz`` (absolute schedule; when behind, go on without sleeping)
    for ``duration`` s; returns the number of ticks."""
    period = 1.0 / hz
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < duration:
        fn(i)
        i += 1
        delay = t0 + i * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return i


def _pose_result(pt: _PoseTimes, ticks: int, nodes: int, batch: bool, duration: float,
                 extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    t_end = time.monotonic()
    last = ticks - 1
    out = {
        "ticks": ticks,
        "calls": pt.n,
        "pose_updates": ticks * nodes,
        "final_x": _x(last),
        "t_end": t_end,
        "per_call": pt.summary(),
        "per_pose": pt.summary(nodes if batch else 1),
        "updates_per_s": ticks * nodes / duration,
    }
    if extra:
        out.update(extra)
    return out


# -- Vuer 0.1.6 -------------------------------------------------------------------------------


class VuerAgent:
    impl = "vuer"

    def __init__(self, queue_len: int = VUER_QUEUE_LEN, compress: bool = True) -> None:
        from vuer import Vuer

        if not compress:  # aiohttp's compress=False: no permessage-deflate with browsers
            import functools

            import vuer.base
            import vuer.server

            vuer.server.websocket_handler = functools.partial(  # type: ignore[assignment]
                vuer.base.websocket_handler, compress=False)
        self.port = free_port()
        self.app = Vuer(host="127.0.0.1", port=self.port, queue_len=queue_len)
        self.sessions: List[Any] = []
        self.armed = _Armed()
        self.big: Any = None
        self.pose: Optional[_PoseTimes] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.greet = False

        async def main(session: Any) -> None:
            self.sessions.append(session)
            if self.greet:  # cmd_greet: a box to every client, once its INIT arrived
                from vuer.schemas import Box

                session.upsert @ Box(key="greet", position=[0.0, 0.0, 0.0])
            try:
                await session.forever()
            finally:
                self.sessions.remove(session)

        self.app.spawn(main)

        async def on_event(ev: Any, session: Any) -> None:
            self.armed.hit(ev.etype, ev.value)

        self.app.add_handler("BENCH", on_event)
        self.app.add_handler("UPLOAD", on_event)
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            self.app.start()  # run_until_complete(site.start()) + run_forever()

        self.thread = threading.Thread(target=serve, name="vuer-loop", daemon=True)
        self.thread.start()
        ready.wait(10)
        wait_port(self.port)

    def _run(self, coro: Any, timeout: float = 600.0) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _session(self) -> Any:
        if not self.sessions:
            raise RuntimeError("no connected session")
        return self.sessions[-1]

    @staticmethod
    async def _drain(sessions: List[Any], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while any(s.uplink_queue for s in sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.0005)

    def cmd_wait_clients(self, n: int, wait: float = 20.0) -> Dict[str, Any]:
        deadline = time.monotonic() + wait
        while len(self.sessions) != n and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"clients": len(self.sessions)}

    def cmd_producer_cost(self, n: int, distinct: bool = False) -> Dict[str, Any]:
        from vuer.schemas import Box

        async def run() -> Dict[str, Any]:
            s = self._session()
            times = [0] * n
            for i in range(-n // 10, n):
                x = _x(i)
                key = f"b{i}" if distinct else "box"
                t0 = pc_ns()
                s.upsert @ Box(key=key, position=[x, 0.5, 0.0])
                dt = pc_ns() - t0
                if i >= 0:
                    times[i] = dt
                if i % 100 == 99:
                    await asyncio.sleep(0)  # let the uplink task send
            await self._drain([s])
            return {"cost": summarize_ns(times)}

        return self._run(run())

    def cmd_send_small(self, n: int) -> Dict[str, Any]:
        from vuer.schemas import Box

        async def run() -> Dict[str, Any]:
            s = self._session()
            t0 = time.monotonic()
            for i in range(n):
                s.upsert @ Box(key=f"b{i}", position=[i * 1e-3, 0.0, 0.0])
                if i % 100 == 99:
                    await asyncio.sleep(0)
            t_enq = time.monotonic()
            await self._drain([s])
            return {"t0": t0, "t_enqueued": t_enq, "t_flushed": time.monotonic()}

        return self._run(run())

    def cmd_arm(self, etype: str, n: int) -> Dict[str, Any]:
        self.armed.arm(etype, n)
        return {"armed": True}

    def cmd_wait_armed(self, wait: float) -> Dict[str, Any]:
        return self.armed.wait(wait)

    def cmd_rpc(self, n: int) -> Dict[str, Any]:
        async def run() -> Dict[str, Any]:
            s = self._session()
            times = []
            for i in range(-max(1, n // 10), n):
                t0 = pc_ns()
                await s.grab_render(ttl=5.0)
                if i >= 0:
                    times.append(pc_ns() - t0)
            return {"rtt": summarize_ns(times)}

        return self._run(run())

    def cmd_prepare_big(self, size: int) -> Dict[str, Any]:
        from vuer.schemas import PointCloud

        pts, cols = _point_cloud_arrays(size)
        self.big = PointCloud(key="pc", vertices=pts, colors=cols, size=0.01)
        return {"payload": len(self.big.vertices) + len(self.big.colors)}

    def cmd_send_big(self, k: int) -> Dict[str, Any]:
        async def run() -> Dict[str, Any]:
            s = self._session()
            t0 = time.monotonic()
            for i in range(k):
                self.big.key = f"pc{i}"
                s.upsert @ self.big
                await asyncio.sleep(0)
            t_enq = time.monotonic()
            await self._drain([s], 300)
            return {"t0": t0, "t_enqueued": t_enq, "t_flushed": time.monotonic()}

        return self._run(run())

    def cmd_lateness(self, duration: float, stream: bool, switch: Optional[float] = None
                     ) -> Dict[str, Any]:
        stop = threading.Event()
        sent = [0]

        async def streamer() -> None:
            s = self._session()
            while not stop.is_set():
                self.big.key = "pc_stream"
                s.upsert @ self.big
                sent[0] += 1
                await self._drain([s], 60)

        futs: List[Any] = []

        def start() -> None:
            assert self.loop is not None
            futs.append(asyncio.run_coroutine_threadsafe(streamer(), self.loop))

        return _lateness_while(duration, switch, stop, sent, start if stream else None,
                               lambda: [f.result(60) for f in futs])

    def cmd_broadcast(self, hz: float, duration: float) -> Dict[str, Any]:
        from vuer.schemas import Box

        async def run() -> Dict[str, Any]:
            period = 1.0 / hz
            t0 = time.perf_counter()
            i = 0
            while time.perf_counter() - t0 < duration:
                b = Box(key="bbox", position=[_x(i), 0.0, 0.0])
                for s in list(self.sessions):
                    s.upsert @ b
                i += 1
                await asyncio.sleep(max(0.0, t0 + i * period - time.perf_counter()))
            return {"ticks": i}

        return self._run(run())

    def cmd_pose_prepare(self, nodes: int, capacity: int) -> Dict[str, Any]:
        from vuer.schemas import Box

        async def run() -> None:
            for s in list(self.sessions):
                for j in range(nodes):
                    s.upsert @ Box(key=f"n{j}", position=[1.0, j * 0.01, 0.0])

        self._run(run())
        self.pose = _PoseTimes(capacity)
        return {"ok": True}

    def cmd_pose_run(self, nodes: int, hz: float, duration: float, batch: bool
                     ) -> Dict[str, Any]:
        """Vuer has no broadcast: each pose update goes to every session (timed together)."""
        from vuer.schemas import Box

        keys = [f"n{j}" for j in range(nodes)]
        ys = [j * 0.01 for j in range(nodes)]
        pt = self.pose
        assert pt is not None
        a = pt.a
        cap = len(a)

        async def run() -> int:
            sessions = list(self.sessions)
            period = 1.0 / hz
            t0 = time.perf_counter()
            i = 0
            while time.perf_counter() - t0 < duration:
                x = _x(i)
                if batch:
                    t = pc_ns()
                    boxes = [Box(key=keys[j], position=[x, ys[j], 0.0]) for j in range(nodes)]
                    for s in sessions:
                        s.update @ boxes
                    if pt.n < cap:
                        a[pt.n] = pc_ns() - t
                        pt.n += 1
                else:
                    for j in range(nodes):
                        t = pc_ns()
                        b = Box(key=keys[j], position=[x, ys[j], 0.0])
                        for s in sessions:
                            s.update @ b
                        if pt.n < cap:
                            a[pt.n] = pc_ns() - t
                            pt.n += 1
                i += 1
                await asyncio.sleep(max(0.0, t0 + i * period - time.perf_counter()))
            return i

        ticks = self._run(run())
        backlog = sum(len(s.uplink_queue) for s in self.sessions)
        return _pose_result(pt, ticks, nodes, batch, duration,
                            extra={"uplink_backlog": backlog})

    def cmd_greet(self) -> Dict[str, Any]:
        """Make the server send something to every new client: its spawned handler (which
        Vuer 0.1.6 starts when the client's INIT arrives) upserts a box."""
        self.greet = True
        return {"ok": True}

    def stop(self) -> None:
        loop = self.loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self.thread.join(15)


# -- viser 1.1 --------------------------------------------------------------------------------


class ViserAgent:
    impl = "viser"

    def __init__(self) -> None:
        import viser

        self.server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
        self.port = self.server.get_port()
        self.big: Any = None
        self.frames: List[Any] = []
        self.pose: Optional[_PoseTimes] = None

    def _clients(self) -> int:
        ws = getattr(self.server, "_websock_server", None)
        live = getattr(ws, "_live_connections", None)
        return len(live) if live is not None else -1

    def cmd_wait_clients(self, n: int, wait: float = 20.0) -> Dict[str, Any]:
        deadline = time.monotonic() + wait
        while self._clients() not in (n, -1) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._clients() == -1:
            time.sleep(0.5)
        return {"clients": self._clients()}

    def cmd_producer_cost(self, n: int, distinct: bool = False) -> Dict[str, Any]:
        box = self.server.scene.add_box("/box", position=(1.0, 0.5, 0.0))
        boxes = [box] * (n + n // 10 + 1)
        if distinct:  # one handle per call, made before the timed loop
            boxes = [self.server.scene.add_box(f"/d/b{i}", position=(1.0, 0.5, 0.0))
                     for i in range(len(boxes))]
            self.server.flush()
        times = [0] * n
        for i in range(-n // 10, n):
            pos = (_x(i), 0.5, 0.0)
            handle = boxes[i]
            t0 = pc_ns()
            handle.position = pos
            dt = pc_ns() - t0
            if i >= 0:
                times[i] = dt
        self.server.flush()
        add = []
        for i in range(min(n, 2000)):
            t0 = pc_ns()
            self.server.scene.add_box(f"/boxes/b{i}", position=(_x(i), 0.5, 0.0))
            add.append(pc_ns() - t0)
        return {"cost": summarize_ns(times), "add_box": summarize_ns(add)}

    def cmd_prepare_big(self, size: int) -> Dict[str, Any]:
        self.big = _point_cloud_arrays(size)
        pts, cols = self.big
        return {"payload": pts.nbytes + cols.nbytes}

    def _add_cloud(self, name: str) -> None:
        pts, cols = self.big
        self.server.scene.add_point_cloud(name, points=pts, colors=cols, point_size=0.01,
                                          precision="float16")

    def cmd_send_big(self, k: int) -> Dict[str, Any]:
        t0 = time.monotonic()
        for i in range(k):
            self._add_cloud(f"/pc{i}")
        self.server.flush()
        return {"t0": t0, "t_enqueued": time.monotonic()}

    def cmd_lateness(self, duration: float, stream: bool, switch: Optional[float] = None
                     ) -> Dict[str, Any]:
        stop = threading.Event()
        sent = [0]

        def streamer() -> None:
            # viser has no "until written": offer a cloud every 10 ms (it coalesces by name)
            while not stop.is_set():
                self._add_cloud("/pc_stream")
                sent[0] += 1
                stop.wait(0.01)

        t = threading.Thread(target=streamer, daemon=True)
        return _lateness_while(duration, switch, stop, sent, t.start if stream else None,
                               (lambda: t.join(30)) if stream else None)

    def cmd_broadcast(self, hz: float, duration: float) -> Dict[str, Any]:
        box = self.server.scene.add_box("/bbox")

        def tick(i: int) -> None:
            box.position = (_x(i), 0.0, 0.0)

        return {"ticks": _paced(hz, duration, tick)}

    def cmd_pose_prepare(self, nodes: int, capacity: int) -> Dict[str, Any]:
        self.frames = [self.server.scene.add_frame(f"/n{j}", position=(1.0, j * 0.01, 0.0))
                       for j in range(nodes)]
        self.pose = _PoseTimes(capacity)
        return {"ok": True}

    def cmd_pose_run(self, nodes: int, hz: float, duration: float, batch: bool
                     ) -> Dict[str, Any]:
        frames = self.frames
        ys = [j * 0.01 for j in range(nodes)]
        pt = self.pose
        assert pt is not None
        a = pt.a
        cap = len(a)

        def tick(i: int) -> None:
            x = _x(i)
            if batch:  # viser has no multi-node update: one atomic() block per tick
                t0 = pc_ns()
                with self.server.atomic():
                    for j in range(nodes):
                        frames[j].position = (x, ys[j], 0.0)
                if pt.n < cap:
                    a[pt.n] = pc_ns() - t0
                    pt.n += 1
                return
            for j in range(nodes):
                t0 = pc_ns()
                frames[j].position = (x, ys[j], 0.0)
                if pt.n < cap:
                    a[pt.n] = pc_ns() - t0
                    pt.n += 1

        ticks = _paced(hz, duration, tick)
        self.server.flush()
        return _pose_result(pt, ticks, nodes, batch, duration)

    def cmd_reset(self) -> Dict[str, Any]:
        """Forget the scene: viser replays its whole persistent state (every point cloud sent
        so far) to each new client, which would leak one row's data into the next."""
        self.server.scene.reset()
        self.server.flush()
        return {"ok": True}

    def cmd_greet(self) -> Dict[str, Any]:
        """Make the server send something to every new client: viser replays its scene
        state (here one box) to each client when it connects."""
        self.server.scene.add_box("/greet", position=(0.0, 0.0, 0.0))
        self.server.flush()
        return {"ok": True}

    def stop(self) -> None:
        self.server.stop()


AGENTS = {"vuer_sync": SyncAgent, "vuer": VuerAgent, "viser": ViserAgent}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def main() -> None:
    impl = sys.argv[1]
    # the protocol pipe is a private copy of fd 1; fd 1 itself now goes to stderr (the log)
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def reply(obj: Dict[str, Any]) -> None:
        proto.write("@@" + json.dumps(_jsonable(obj)) + "\n")
        proto.flush()

    opts = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    nofile = opts.pop("nofile", None)
    if nofile:  # before the server starts (vuer_sync sizes its default max_connections by it)
        raise_nofile(int(nofile))
    agent = AGENTS[impl](**opts)
    mod = sys.modules.get(impl)
    reply({"port": agent.port, "pid": os.getpid(), "impl": impl,
           "module": getattr(mod, "__file__", None)})
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "cpu":  # CPU time of this whole process, in ns steps (not clock ticks)
            reply({"cpu": time.process_time()})
            continue
        if cmd == "quit":
            try:
                agent.stop()
            finally:
                reply({"ok": True})
            break
        fn = getattr(agent, "cmd_" + cmd, None)
        if fn is None:
            reply({"na": f"{impl} has no '{cmd}'"})
            continue
        try:
            reply(fn(**msg) or {})
        except Exception as e:
            logger.exception("command %s failed", cmd)
            reply({"error": f"{cmd}: {type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()})
    proto.close()


if __name__ == "__main__":
    main()
