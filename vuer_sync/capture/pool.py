"""``RenderPool``: many render sessions, one pose sweep, frames back in pose order.

Each session gets a worker thread. A worker places the capture camera (and the freshness
tag, :mod:`vuer_sync.capture.tag`) at a pose, asks for the frame, and while the browser
renders and JPEG-encodes it, already queues the next pose behind the request: when the answer
arrives the next request goes out at once, and the answer is decoded and checked here while
the browser works on the next frame. A frame whose tag does not show its own pose is
rejected and its pose rendered again (``stats["stale"]``); a session that dies or times out
hands its poses back to the others (``stats["rerendered"]``). Every pose comes out exactly
once, in order.

Any object with the session render API counts: a :class:`~vuer_sync.server.session.VuerSession`
(a local headless page, a connected browser) is pipelined as above; an object with only
``upsert`` and ``rpc`` (a fleet session, ``app.fleet.session(sid)``) is asked one frame at a
time, with the same tag check::

    pool = RenderPool(app.sessions, width=640, height=480, fov=50)
    for frame in pool.render(circle_poses(100), progress=True):
        save(frame.index, frame.rgb)            # (480, 640, 3) uint8, pose order
"""

from __future__ import annotations

import heapq
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from ..errors import RPCTimeout, SessionClosed
from ..events import GrabRender
from ..server.render import decode_jpeg, wxyz_to_euler
from .pose import Pose, circle_poses
from .tag import TagGeometry, check_tag, crop, tag_nodes

__all__ = ["CAMERA_KEY", "Frame", "Pose", "RenderPool", "circle_poses"]  # Pose: re-exported

logger = logging.getLogger("vuer_sync.capture")

CAMERA_KEY = "vuer-sync-capture-camera"
TAG_KEY = "vuer-sync-capture-tag"
_MOUNT_TTL = 1.0  # first request on a session: retried at this interval while the camera mounts
_FAILURES = (RPCTimeout, SessionClosed, ConnectionError, TimeoutError, OSError)


@dataclass
class Frame:
    """One rendered pose: ``rgb`` ``(height, width, 3)`` uint8; ``depth`` ``(height,
    width)`` uint8 as the web client encodes it (``255 * (1 - (z - near) / (far - near))``,
    0 = nothing) or ``None``; ``session``: the id of the session that rendered it."""

    index: int
    pose: Pose
    rgb: np.ndarray
    depth: Optional[np.ndarray] = None
    session: str = ""
    attempts: int = 1


@dataclass
class _Job:
    """The shared state of one ``render()`` call: the poses left (a heap of ranks), the
    frames done, and who is still working. Everything under ``cond``."""

    order: List[int]
    window: int
    max_attempts: int
    cond: threading.Condition = field(default_factory=threading.Condition)
    pending: List[int] = field(default_factory=list)
    results: Dict[int, Frame] = field(default_factory=dict)
    attempts: Dict[int, int] = field(default_factory=dict)
    inflight: int = 0
    next_rank: int = 0
    live: int = 0
    stopped: bool = False
    error: Optional[BaseException] = None

    def __post_init__(self) -> None:
        self.pending = list(range(len(self.order)))

    def take(self, block: bool) -> Optional[int]:
        """The lowest rank left inside the window; ``None`` when there is none now (``block``
        waits while others still hold poses that may come back) or the job is over."""
        with self.cond:
            while True:
                if self.stopped or self.error is not None:
                    return None
                if self.pending and self.pending[0] < self.next_rank + self.window:
                    self.inflight += 1
                    return heapq.heappop(self.pending)
                if not block or (not self.pending and self.inflight == 0):
                    return None
                self.cond.wait()

    def done(self, rank: int, frame: Frame) -> None:
        with self.cond:
            frame.attempts = self.attempts.get(rank, 0) + 1
            self.results[rank] = frame
            self.inflight -= 1
            self.cond.notify_all()

    def requeue(self, rank: int, why: str) -> None:
        with self.cond:
            n = self.attempts[rank] = self.attempts.get(rank, 0) + 1
            self.inflight -= 1
            if n >= self.max_attempts and self.error is None:
                self.error = RuntimeError(
                    f"RenderPool: pose {self.order[rank]} failed {n} times (last: {why})")
            heapq.heappush(self.pending, rank)
            self.cond.notify_all()

    def worker_exit(self) -> None:
        with self.cond:
            self.live -= 1
            self.cond.notify_all()

    def result(self, rank: int) -> Frame:
        with self.cond:
            while rank not in self.results:
                if self.error is not None:
                    raise self.error
                if self.live <= 0:
                    raise RuntimeError(
                        f"RenderPool: every session died or left; {len(self.order) - rank} "
                        f"pose(s) not rendered")
                self.cond.wait()
            self.next_rank = rank + 1
            self.cond.notify_all()
            return self.results.pop(rank)

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


class _Worker:
    """One session's loop (a thread). Never touches another worker's session."""

    def __init__(self, pool: RenderPool, session: Any, job: _Job, poses: Sequence[Pose]):
        self.pool, self.session, self.job, self.poses = pool, session, job, poses
        self.sid = str(getattr(session, "id", session))
        self.serial = 0
        self.settle = 0.0  # grows when a frame came back stale, decays on fresh frames
        self.placed_at = 0.0
        self.held: List[int] = []
        self.pipelined = callable(getattr(session, "expect", None)) and callable(
            getattr(session, "send", None))

    def run(self) -> None:
        try:
            self.loop()
        except _FAILURES as e:
            self.pool.count("dead_sessions")
            logger.warning("capture: session %s failed (%s); its poses go to the others",
                           self.sid, e)
        except Exception:
            self.pool.count("dead_sessions")
            logger.exception("capture: session %s failed", self.sid)
        finally:
            for rank in self.held:
                self.pool.count("rerendered")
                self.job.requeue(rank, f"session {self.sid} failed")
            self.held.clear()
            self.job.worker_exit()

    # -- one pose -------------------------------------------------------------------------

    def place(self, rank: int) -> int:
        """Queue the scene changes of this pose, the camera and the tag; return its serial."""
        self.held.append(rank)
        index = self.job.order[rank]
        pose = self.poses[index]
        if self.pool.prepare is not None:
            self.pool.prepare(self.session, index, pose)
        self.serial += 1
        self.session.upsert(self.pool.pose_nodes(self.serial, pose), to="rawChildren")
        self.placed_at = time.monotonic()
        return self.serial

    def wait_settle(self) -> None:
        left = self.placed_at + self.settle - time.monotonic()
        if left > 0:
            time.sleep(left)

    def request(self) -> Any:
        """Send GRAB_RENDER for the capture camera; a waiter for its answer."""
        ev = self.pool.request_event()
        waiter = self.session.expect(ev.rtype)
        self.session.send(ev)
        return waiter

    def blocking_frame(self, ttl: float) -> Any:
        return self.session.rpc(self.pool.request_event(), ttl=ttl)

    def mount(self) -> Any:
        """The first answer on this session: retried while the camera mounts (before that,
        nobody answers), each try waiting twice as long as the last, so a slow first frame
        (shaders compiling on a busy CPU) still gets its answer."""
        deadline = time.monotonic() + max(self.pool.timeout, 60.0)
        ttl = _MOUNT_TTL
        while True:
            try:
                return self.blocking_frame(min(ttl, max(0.05, deadline - time.monotonic())))
            except RPCTimeout:
                if time.monotonic() >= deadline:
                    raise
                ttl *= 2

    def finish(self, rank: int, serial: int, answer: Any) -> None:
        """Decode and check one answer: the frame, or the pose back in the queue."""
        self.held.remove(rank)
        frame = self.pool.decode(answer, serial, self.job.order[rank],
                                 self.poses[self.job.order[rank]], self.sid)
        if frame is None:
            self.pool.count("stale")
            self.settle = min(0.25, max(0.005, 2 * self.settle))
            self.job.requeue(rank, "stale frame")
        else:
            self.settle *= 0.5
            self.job.done(rank, frame)

    # -- the loop -------------------------------------------------------------------------

    def loop(self) -> None:
        job = self.job
        cur = job.take(block=True)
        if cur is None:
            return
        serial = self.place(cur)
        self.finish(cur, serial, self.mount())
        timeout = self.pool.timeout
        while True:
            cur = job.take(block=True)
            if cur is None:
                return
            serial = self.place(cur)
            if not self.pipelined:
                self.wait_settle()
                self.finish(cur, serial, self.blocking_frame(timeout))
                continue
            self.wait_settle()
            waiter = self.request()
            while cur is not None:
                nxt = job.take(block=False)
                nxt_serial = self.place(nxt) if nxt is not None else 0
                answer = waiter.wait(timeout)  # the browser drew `cur`; `nxt` is queued
                if nxt is not None:
                    self.wait_settle()
                    waiter = self.request()  # out before we decode `cur`
                self.finish(cur, serial, answer)
                cur, serial = nxt, nxt_serial


class RenderPool:
    """Spread pose sweeps over render sessions (see the module's docstring).

    ``sessions``: anything with the session render API (``upsert`` + ``rpc``; with
    ``expect`` + ``send`` too, requests are pipelined). ``width``/``height``/``fov``
    (vertical, degrees)/``near``/``far``: the pinhole camera of every frame; ``depth``:
    also the depth image; ``quality``: JPEG quality of the browser's answer; ``timeout``:
    seconds for one frame before its session counts as dead; ``prepare(session, index,
    pose)``: called before each pose is placed, to change that session's scene per pose
    (domain randomisation, a pose label); ``window``: how far ahead of the consumer the
    sessions may run (frames held in memory).

    >>> RenderPool([], width=64)
    Traceback (most recent call last):
    ...
    ValueError: capture width must be at least 96 pixels (the freshness tag needs it), got 64
    """

    def __init__(self, sessions: Iterable[Any] = (), *, width: int = 640, height: int = 480,
                 fov: float = 50.0, near: float = 0.1, far: float = 20.0,
                 depth: bool = False, quality: float = 0.9, timeout: float = 10.0,
                 prepare: Optional[Callable[[Any, int, Pose], Any]] = None,
                 window: Optional[int] = None, max_attempts: int = 10):
        self.geom = TagGeometry(width, height, fov, near)
        self.sessions: List[Any] = list(sessions)
        self.width, self.height, self.fov = int(width), int(height), float(fov)
        self.near, self.far, self.depth = float(near), float(far), bool(depth)
        self.quality, self.timeout = float(quality), float(timeout)
        self.prepare = prepare
        self.window = window
        self.max_attempts = int(max_attempts)
        self._lock = threading.Lock()
        # one helper camera per configuration: the web client fixes its size, fov, clip
        # planes and depth target when it mounts
        self.camera_key = (f"{CAMERA_KEY}-{self.width}x{self.height}-{self.fov:g}-"
                           f"{self.near:g}-{self.far:g}{'-d' if self.depth else ''}")
        self.stats: Dict[str, int] = {"frames": 0, "stale": 0, "rerendered": 0,
                                      "dead_sessions": 0}

    def add(self, session: Any) -> None:
        """Render on this session too, from the next :meth:`render` call on."""
        self.sessions.append(session)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.stats[what] = self.stats.get(what, 0) + n

    def pose_nodes(self, serial: int, pose: Pose) -> List[Dict[str, Any]]:
        """The capture camera at ``pose`` and the tag of ``serial``, as wire maps."""
        rotation = list(wxyz_to_euler(pose.wxyz))
        g = self.geom
        camera = {
            "tag": "CameraView", "key": self.camera_key, "stream": "ondemand",
            "width": g.width, "height": g.render_height, "fov": g.render_fov,
            "near": self.near, "far": self.far, "renderDepth": self.depth, "downsample": 1,
            "showCamera": False, "showFrustum": False, "monitor": False,
            "position": [float(v) for v in pose.position], "rotation": rotation,
        }
        return [camera, *tag_nodes(g, serial, pose.position, pose.wxyz, rotation,
                                      f"{TAG_KEY}-{self.camera_key}")]

    def request_event(self) -> GrabRender:
        """A ``GRAB_RENDER`` request for the capture camera (a new ``uuid`` each time)."""
        return GrabRender(key=self.camera_key, quality=self.quality)

    def decode(self, answer: Any, serial: int, index: int, pose: Pose,
               sid: str) -> Optional[Frame]:
        """The frame of one answer, or ``None`` when its tag is not ``serial``'s."""
        value = answer.value if hasattr(answer, "value") else answer
        if not isinstance(value, dict):
            raise ValueError(f"capture: expected a map in the render answer, got "
                             f"{type(value).__name__}")
        full = decode_jpeg(value.get("frame"))
        if not check_tag(full, self.geom, serial):
            return None
        depth = None
        if self.depth:
            d = decode_jpeg(value.get("depthFrame"), "depthFrame", mode="L")
            depth = crop(d[..., None], self.geom)[..., 0] if d.ndim == 2 else crop(d, self.geom)
        return Frame(index, pose, crop(full, self.geom), depth, sid)

    def render(self, poses: Sequence[Pose], indices: Optional[Iterable[int]] = None,
               progress: bool = False) -> Iterator[Frame]:
        """Render ``poses`` (only those at ``indices``, default all) on every session; yield
        each :class:`Frame` in pose order. ``progress``: a one-line bar on stderr.

        Raises ``RuntimeError`` when every session died with poses left, or a pose failed
        ``max_attempts`` times. Leaving the loop early stops the workers."""
        order = list(range(len(poses)) if indices is None else indices)
        if not self.sessions:
            raise ValueError("RenderPool: no session to render on")
        window = self.window or 4 * len(self.sessions) + 8
        job = _Job(order, window, self.max_attempts)
        workers = [_Worker(self, s, job, poses) for s in self.sessions]
        job.live = len(workers)
        threads = [threading.Thread(target=w.run, name=f"vuer_sync-capture-{w.sid[:8]}",
                                    daemon=True) for w in workers]
        for t in threads:
            t.start()
        bar = _Progress(len(order)) if progress else None
        try:
            for rank in range(len(order)):
                frame = job.result(rank)
                self.count("frames")
                if bar is not None:
                    bar.update(rank + 1)
                yield frame
        finally:
            job.stop()
            if bar is not None:
                bar.close()
            deadline = time.monotonic() + self.timeout + 5
            for t in threads:  # bounded: a worker blocks at most `timeout` on one answer
                t.join(max(0.0, deadline - time.monotonic()))


class _Progress:
    """A one-line text progress bar on stderr: done/total, frames per second."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.width, self.started = total, width, time.monotonic()

    def update(self, done: int) -> None:
        filled = int(self.width * done / max(self.total, 1))
        rate = done / max(time.monotonic() - self.started, 1e-9)
        sys.stderr.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {done}/"
                         f"{self.total} {rate:.1f} frames/s")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()
