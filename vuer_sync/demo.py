"""The scene of ``vuer-sync demo``: what vuer_sync is for, in one view.

* a small robot arm: cylinders and boxes in a hierarchy of groups (base yaw, shoulder,
  elbow, wrist, gripper), its joints driven by a control loop thread that publishes on
  ``app.scene`` at ``hz`` (30 by default: one ``UPDATE`` per tick);
* a live point cloud (a rippling disc of ``points`` points, float16 vertices and uint8
  colors), a new frame every ``hz / cloud_hz`` ticks (10 a second by default);
* a camera frustum looking at the arm, with a thumbnail beside it of what that camera sees:
  rendered in the first connected browser by ``session.get_render(...)`` (off-screen, the
  user's own view does not move) and put back into the scene for everybody. With no browser
  there is no thumbnail; a browser that leaves is simply waited for again.

Everything goes through ``app.scene``, so every browser sees the same scene, and one that
connects later gets the current state first. The view (``SceneCamera``) is framed so the
objects fill most of it.

>>> from vuer_sync import Vuer
>>> app = Vuer(port=0)
>>> demo = Demo(app).start()        # the scene and its threads; no browser needed
>>> sorted(n["key"] for n in app.scene.snapshot()["children"])
['arm', 'cloud', 'frustum', 'thumbnail-frame']
>>> demo.stop(); app.stop()
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, List, Sequence

import numpy as np

from .errors import RPCTimeout, SessionClosed
from .schemas import (
    DEFAULT_BG_CHILDREN,
    Box,
    Cylinder,
    Frustum,
    Grid,
    Image,
    Plane,
    PointCloud,
    Scene,
    SceneCamera,
    Sphere,
    group,
)

__all__ = ["Demo", "demo_scene", "joint_angles", "VIEW_POSITION", "VIEW_TARGET", "VIEW_FOV",
           "THUMB_AT"]

logger = logging.getLogger("vuer_sync.demo")

#: where the user's view starts, and what it looks at (the objects fill the frame)
VIEW_POSITION = (0.05, 0.95, 1.5)
VIEW_TARGET = (-0.08, 0.4, 0.0)
VIEW_FOV = 50.0

ARM_AT = (-0.25, 0.0, -0.05)
LINKS = (0.34, 0.28)  # upper arm, forearm (m)
CLOUD_AT = (0.42, 0.0, 0.22)
CLOUD_RADIUS = 0.33

#: the demo camera (the frustum), what it looks at, and its image size
CAMERA_POSITION = (0.22, 0.78, 0.5)
CAMERA_TARGET = (-0.2, 0.4, -0.05)
CAMERA_FOV = 50.0
THUMB_SIZE = (192, 144)
THUMB_AT = (0.0, 0.9, -0.25)  # the thumbnail hangs beside the frustum
THUMB_HEIGHT = 0.34

_METAL = {"color": "#9aa3ad", "metalness": 0.4, "roughness": 0.45}


def _mat(color: str) -> dict:
    return {"color": color, "roughness": 0.5, "metalness": 0.1}


def joint_angles(t: float) -> List[float]:
    """The arm's joint angles (rad) at time ``t`` (s): base yaw, shoulder, elbow, wrist,
    gripper opening (m)."""
    return [
        0.7 * math.sin(0.45 * t),
        -0.55 + 0.3 * math.sin(0.9 * t),
        -0.9 + 0.4 * math.sin(1.3 * t + 0.6),
        -0.4 + 0.5 * math.sin(1.7 * t + 1.2),
        0.025 + 0.02 * math.sin(2.3 * t),
    ]


def _arm(q: Sequence[float]) -> group:
    """The arm as nested groups: each joint is a group whose rotation the loop updates."""
    yaw, shoulder, elbow, wrist, grip = q
    u, f = LINKS
    fingers = [
        Box(key=f"finger-{side}", args=[0.018, 0.07, 0.03],
            position=[sign * grip, 0.035, 0], materialType="standard",
            material=_mat("#f4f4f4"))
        for side, sign in (("l", -1), ("r", 1))
    ]
    gripper = group(
        Box(key="palm", args=[0.1, 0.025, 0.045], position=[0, 0.0125, 0],
            materialType="standard", material=_METAL),
        *fingers,
        key="j-wrist", position=[0, f, 0], rotation=[0, 0, wrist],
    )
    forearm = group(
        Sphere(key="elbow-joint", args=[0.045, 24, 16], materialType="standard",
               material=_METAL),
        Box(key="forearm", args=[0.075, f, 0.075], position=[0, f / 2, 0],
            materialType="standard", material=_mat("#f5a623")),
        Cylinder(key="wrist-joint", args=[0.035, 0.035, 0.07, 20], position=[0, f, 0],
                 rotation=[math.pi / 2, 0, 0], materialType="standard", material=_METAL),
        gripper,
        key="j-elbow", position=[0, u, 0], rotation=[0, 0, elbow],
    )
    upper = group(
        Cylinder(key="shoulder-joint", args=[0.055, 0.055, 0.1, 24],
                 rotation=[math.pi / 2, 0, 0], materialType="standard", material=_METAL),
        Box(key="upper-arm", args=[0.09, u, 0.09], position=[0, u / 2, 0],
            materialType="standard", material=_mat("#2f80ed")),
        forearm,
        key="j-shoulder", position=[0, 0.14, 0], rotation=[0, 0, shoulder],
    )
    turret = group(
        Cylinder(key="turret", args=[0.08, 0.1, 0.12, 32], position=[0, 0.06, 0],
                 materialType="standard", material=_mat("#3c4654")),
        upper,
        key="j-base", position=[0, 0.05, 0], rotation=[0, yaw, 0],
    )
    return group(
        Cylinder(key="arm-base", args=[0.16, 0.18, 0.05, 40], position=[0, 0.025, 0],
                 materialType="standard", material=_mat("#2b313a")),
        turret,
        key="arm", position=list(ARM_AT),
    )


def _joint_nodes(q: Sequence[float]) -> List[dict]:
    """One control tick: the joint groups' new rotations and the fingers' opening."""
    yaw, shoulder, elbow, wrist, grip = q
    return [
        {"key": "j-base", "rotation": [0.0, yaw, 0.0]},
        {"key": "j-shoulder", "rotation": [0.0, 0.0, shoulder]},
        {"key": "j-elbow", "rotation": [0.0, 0.0, elbow]},
        {"key": "j-wrist", "rotation": [0.0, 0.0, wrist]},
        {"key": "finger-l", "position": [-grip, 0.035, 0.0]},
        {"key": "finger-r", "position": [grip, 0.035, 0.0]},
    ]


class _Cloud:
    """A rippling disc of points around :data:`CLOUD_AT` (fixed x/z, moving heights)."""

    def __init__(self, points: int):
        rng = np.random.default_rng(7)
        r = CLOUD_RADIUS * np.sqrt(rng.random(points, dtype=np.float32))
        a = rng.random(points, dtype=np.float32) * np.float32(2 * np.pi)
        self.x = r * np.cos(a)
        self.z = r * np.sin(a)
        self.r = r / CLOUD_RADIUS

    def frame(self, t: float) -> PointCloud:
        y = 0.16 + 0.09 * np.sin(9.0 * self.r - 3.0 * t) * (1.2 - self.r)
        h = np.clip((y - 0.07) / 0.18, 0.0, 1.0)  # height -> blue, cyan, green, yellow, red
        colors = np.stack([np.clip(2 * h - 0.6, 0, 1), 1 - np.abs(2 * h - 1.1) ** 2,
                           np.clip(1.2 - 2.2 * h, 0, 1)], axis=1)
        vertices = np.stack([self.x, y, self.z], axis=1)
        return PointCloud(key="cloud", vertices=vertices, colors=colors, size=0.026,
                          position=list(CLOUD_AT))


def _facing(at: Sequence[float], viewer: Sequence[float]) -> Sequence[float]:
    """Euler angles that turn a plane at ``at`` (front face along its +Z) to ``viewer``."""
    from .server.render import look_at_wxyz, wxyz_to_euler

    a, v = np.asarray(at, float), np.asarray(viewer, float)
    return wxyz_to_euler(look_at_wxyz(a.tolist(), (2 * a - v).tolist()))  # looks along -Z


def _behind(at: Sequence[float], viewer: Sequence[float], d: float) -> List[float]:
    """``at`` moved ``d`` away from ``viewer`` (a frame just behind a picture)."""
    a, v = np.asarray(at, float), np.asarray(viewer, float)
    u = (a - v) / np.linalg.norm(a - v)
    return [float(x) for x in a + d * u]


def demo_scene(points: int = 6000) -> Scene:
    """The demo's scene at ``t = 0``: DefaultScene's background with the view framed on
    the objects."""
    from .server.render import look_at_wxyz, wxyz_to_euler

    bg: List[Any] = [Grid(key="grid")]
    for cls, kw in DEFAULT_BG_CHILDREN:
        if cls is SceneCamera:
            bg.append(SceneCamera(key=kw["key"], position=list(VIEW_POSITION),
                                  lookAt=list(VIEW_TARGET), fov=VIEW_FOV))
        else:
            bg.append(cls(**dict(kw)))
    rotation = list(wxyz_to_euler(look_at_wxyz(CAMERA_POSITION, CAMERA_TARGET)))
    view = list(_facing(THUMB_AT, VIEW_POSITION))
    w, h = THUMB_SIZE
    return Scene(
        _arm(joint_angles(0.0)),
        _Cloud(points).frame(0.0),
        Frustum(key="frustum", position=list(CAMERA_POSITION), rotation=rotation,
                fov=CAMERA_FOV, aspect=w / h, near=0.05, far=0.22, scale=1.0,
                showImagePlane=True, showFocalPlane=False, colorFrustum="#ffb400"),
        Plane(key="thumbnail-frame", args=[THUMB_HEIGHT * w / h + 0.02, THUMB_HEIGHT + 0.02],
              position=_behind(THUMB_AT, VIEW_POSITION, 0.005), rotation=view,
              materialType="basic", material={"color": "#ffb400"}),
        bgChildren=bg,
    )


class Demo:
    """Runs the demo on ``app.scene``: :meth:`start` sets the scene and starts the control
    loop and the thumbnail loop (threads ``vuer-demo-*``); :meth:`stop` ends them (bounded,
    whether or not a browser is connected)."""

    def __init__(self, app: Any, hz: float = 30.0, cloud_hz: float = 10.0,
                 points: int = 6000, thumb_hz: float = 2.0):
        self.app = app
        self.hz = float(hz)
        self.cloud_hz = float(cloud_hz)
        self.points = int(points)
        self.thumb_hz = float(thumb_hz)
        self.ticks = 0
        self.thumbnails = 0
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []

    def start(self) -> Demo:
        """Set the scene on ``app.scene`` and start the two loops; returns ``self``."""
        self.app.scene.set @ demo_scene(self.points)
        for name, target in (("control", self._control), ("thumbnail", self._thumbnail)):
            t = threading.Thread(target=target, name=f"vuer-demo-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Signal the loops and join them (``app.stop()`` first ends a pending render)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            logger.warning("demo threads still running: %s", [t.name for t in self._threads])

    # -- loops ------------------------------------------------------------------------------

    def _control(self) -> None:
        """The control loop: every tick, one ``UPDATE`` with the joints' new rotations (and,
        every ``hz / cloud_hz`` ticks, the point cloud's new frame) on ``app.scene``.

        One message per tick: the web client re-renders its whole scene for each message,
        which costs a browser on software WebGL 0.1 s or more (see ``docs/cli.md``)."""
        cloud = _Cloud(self.points)
        scene = self.app.scene
        period = 1.0 / self.hz
        cloud_every = max(1, round(self.hz / self.cloud_hz))
        t0 = next_t = time.monotonic()
        while not self._stop.is_set():
            t = time.monotonic() - t0
            nodes: List[Any] = _joint_nodes(joint_angles(t))
            if self.ticks % cloud_every == 0:
                nodes.append(cloud.frame(t))
            scene.update @ nodes  # enqueue for every client, return at once
            self.ticks += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind: skip ahead, do not burst
                next_t, delay = time.monotonic(), 0.0
            if self._stop.wait(delay):
                return

    def _thumbnail(self) -> None:
        """What the frustum's camera sees, rendered by the first browser, as an image."""
        w, h = THUMB_SIZE
        view = list(self._thumb_rotation())
        while not self._stop.is_set():
            try:
                session = self.app.wait_for_session(timeout=0.5, client="browser")
            except RPCTimeout:
                continue  # nobody is looking: no thumbnail
            try:
                rgb = session.get_render(w, h, position=list(CAMERA_POSITION),
                                         look_at=list(CAMERA_TARGET), fov=CAMERA_FOV,
                                         timeout=5.0)
            except (RPCTimeout, SessionClosed, ValueError) as e:
                logger.debug("demo thumbnail: %s", e)
                self._stop.wait(0.5)
                continue
            if self._stop.is_set():
                return
            self.app.scene.upsert @ Image(
                rgb, key="thumbnail", format="jpeg", quality=85, position=list(THUMB_AT),
                rotation=view, height=THUMB_HEIGHT, aspect=w / h, side=2)
            self.thumbnails += 1
            if self._stop.wait(1.0 / self.thumb_hz):
                return

    @staticmethod
    def _thumb_rotation() -> Sequence[float]:
        return _facing(THUMB_AT, VIEW_POSITION)
