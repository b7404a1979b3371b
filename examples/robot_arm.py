"""A 200 Hz robot-arm control loop: numpy forward kinematics, drawn with ``app.scene``.

    python examples/robot_arm.py                 # open http://localhost:8012/, Ctrl-C stops
    python examples/robot_arm.py --seconds 2 --port 0 --check     # bounded, as CI runs it

The loop never waits for the network: ``app.scene.update @ ...`` enqueues and returns; a
browser that cannot keep up at 200 Hz gets the latest pose (queued updates of the same links
are merged), never a growing backlog. ``--check`` connects a Python client in place of a
browser and verifies that the last pose it received is the last pose computed.
"""

from __future__ import annotations

import argparse
import math
import threading
import time

import numpy as np

from vuer_sync import Vuer, VuerClient
from vuer_sync.events import ServerEvent
from vuer_sync.schemas import Box, Cylinder, DefaultScene, Sphere

BASE_HEIGHT = 0.05
LINKS = (0.30, 0.35, 0.25)  # link lengths (m); Vuer is Y-up
AXES = ("y", "z", "z")  # base yaw, then shoulder and elbow pitch


def rotation(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "y":
        r = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    else:
        r = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    t = np.eye(4)
    t[:3, :3] = r
    return t


def translation(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def forward_kinematics(q) -> tuple:
    """World transforms (4x4) of each joint frame (the link extends along its +Y), and of
    the tool at the tip."""
    frames = []
    t = translation(0, BASE_HEIGHT, 0)
    for angle, axis, length in zip(q, AXES, LINKS):
        t = t @ rotation(axis, angle)
        frames.append(t)
        t = t @ translation(0, length, 0)
    return frames, t


def euler_xyz(r: np.ndarray) -> list:
    """A rotation matrix as three.js Euler angles (order XYZ)."""
    y = math.asin(max(-1.0, min(1.0, r[0, 2])))
    if abs(r[0, 2]) < 0.9999999:
        return [math.atan2(-r[1, 2], r[2, 2]), y, math.atan2(-r[0, 1], r[0, 0])]
    return [math.atan2(r[2, 1], r[1, 1]), y, 0.0]


def joint_targets(t: float) -> list:
    return [0.8 * t, 0.7 * math.sin(1.1 * t), 0.5 + 0.8 * math.sin(1.7 * t)]


def pose_update(q) -> list:
    """One UPDATE's nodes: every link's pose and the tool position."""
    frames, tool = forward_kinematics(q)
    nodes = []
    for i, (frame, length) in enumerate(zip(frames, LINKS)):
        center = frame @ np.array([0, length / 2, 0, 1])
        nodes.append({"key": f"link{i}", "position": center[:3],
                      "rotation": euler_xyz(frame[:3, :3])})
    nodes.append({"key": "tool", "position": tool[:3, 3]})
    return nodes


def build_scene() -> DefaultScene:
    colors = ["#4a90d9", "#e5a00d", "#5cb85c"]
    links = [Box(key=f"link{i}", args=[0.06, length, 0.06], materialType="standard",
                 material={"color": colors[i]}) for i, length in enumerate(LINKS)]
    return DefaultScene(
        Cylinder(key="base", args=[0.12, 0.14, BASE_HEIGHT, 32],
                 position=[0, BASE_HEIGHT / 2, 0], materialType="standard",
                 material={"color": "#888"}),
        *links,
        Sphere(key="tool", args=[0.04, 24, 12], materialType="standard",
               material={"color": "#d9534f"}),
    )


class PythonViewer:
    """A Python client standing in for a browser: remembers the last pose it received."""

    def __init__(self, port: int):
        self.client = VuerClient(f"ws://localhost:{port}").connect()
        self.messages = 0
        self.tool = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for ev in self.client:
            self.messages += 1
            if ev.etype == "UPDATE":
                for node in ev.data["nodes"]:
                    if node["key"] == "tool":
                        self.tool = node["position"]
            elif ev.etype == "DONE":
                self.done.set()
                return


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8012, help="0 = any free port")
    p.add_argument("--hz", type=float, default=200.0, help="control rate")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--check", action="store_true",
                   help="connect a Python client and verify what it received")
    args = p.parse_args()

    app = Vuer(port=args.port)
    app.scene.set @ build_scene()  # clients get the current scene when they connect
    app.start(block=False)
    viewer = None
    if args.check:
        viewer = PythonViewer(app.port)
        app.wait_for_session(timeout=10)

    period = 1.0 / args.hz
    steps = overruns = 0
    worst_call = 0.0
    t0 = next_t = time.monotonic()
    q = joint_targets(0.0)
    try:
        while args.seconds is None or time.monotonic() - t0 < args.seconds:
            q = joint_targets(time.monotonic() - t0)
            nodes = pose_update(q)
            c0 = time.perf_counter()
            app.scene.update @ nodes  # enqueue for every client, return at once
            worst_call = max(worst_call, time.perf_counter() - c0)
            steps += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # sleep to the next tick: no busy loop
            else:
                overruns += 1
                next_t = time.monotonic()  # fell behind: skip ahead, do not burst
    except KeyboardInterrupt:
        pass
    elapsed = time.monotonic() - t0
    ok = True
    try:
        if viewer is not None:
            app.broadcast(ServerEvent({"steps": steps}, etype="DONE"))
            app.flush(timeout=10)
            ok = viewer.done.wait(10)
            expected = forward_kinematics(q)[1][:3, 3]
            ok = ok and viewer.tool is not None and np.allclose(viewer.tool, expected,
                                                                atol=1e-4)
            viewer.client.close()
        stats = app.stats
    finally:
        app.stop()
    rate = steps / max(elapsed, 1e-9)
    print(f"{steps} steps in {elapsed:.2f} s ({rate:.0f} Hz, {overruns} overruns); "
          f"slowest update call {worst_call * 1e3:.2f} ms")
    print(f"sent {stats['sent']} messages, coalesced {stats['coalesced']}")
    if viewer is not None:
        print(f"python viewer received {viewer.messages} messages; final tool pose "
              f"{'matches' if ok else 'DOES NOT match'} the last one computed")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
