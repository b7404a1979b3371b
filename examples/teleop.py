"""Teleoperation from a plain 100 Hz loop: pinch with the right hand and move it; a simulated
arm's end-effector target follows the wrist, relative to where the pinch began.

    python examples/teleop.py --lan                # a headset on the LAN (HTTPS + QR code)
    python examples/teleop.py                      # localhost (a Quest on USB: adb reverse)
    python examples/teleop.py --replay tests/teleop/hand_move.msgpack --port 0 --seconds 3

The loop never blocks on the network: ``app.hands.latest`` is the newest ``HAND_MOVE``
sample (a read-only ``(25, 4, 4)`` float32 array per hand, ``None`` when that hand is not
tracked), and ``app.scene.upsert @ ...`` enqueues. ``--replay FILE`` plays a recording of
``HAND_MOVE`` frames (the web client's exact bytes) into the server over a websocket, as a
headset would, so the example runs without one.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from typing import List, Optional

import msgpack
import numpy as np
import websocket

from vuer_sync import Vuer
from vuer_sync.schemas import Box, Cylinder, DefaultScene, Hands, Sphere

RATE = 100.0  # Hz, the control loop
LINKS = (0.35, 0.30)  # upper arm, forearm (m)
SHOULDER = np.array([0.0, 0.9, -0.6])  # the simulated arm's base, in front of the user
MAX_SPEED = 1.0  # m/s: how fast the simulated end effector may move


def ik(target: np.ndarray) -> List[float]:
    """Yaw, shoulder and elbow angles that put the arm's tip at ``target`` (clamped to its
    reach): two-link planar inverse kinematics in the plane of the yaw."""
    d = target - SHOULDER
    yaw = math.atan2(d[0], -d[2])
    horiz = math.hypot(d[0], d[2])
    r = min(math.hypot(horiz, d[1]), sum(LINKS) - 1e-6)
    a, b = LINKS
    cos_elbow = (r * r - a * a - b * b) / (2 * a * b)
    elbow = math.acos(max(-1.0, min(1.0, cos_elbow)))
    shoulder = math.atan2(d[1], horiz) + math.atan2(b * math.sin(elbow),
                                                    a + b * math.cos(elbow))
    return [yaw, shoulder, -elbow]


def fk(q: List[float]) -> List[np.ndarray]:
    """The joint positions (shoulder, elbow, tip) for angles ``q``."""
    yaw, shoulder, elbow = q
    fwd = np.array([math.sin(yaw), 0.0, -math.cos(yaw)])
    up = np.array([0.0, 1.0, 0.0])
    e = SHOULDER + LINKS[0] * (math.cos(shoulder) * fwd + math.sin(shoulder) * up)
    a2 = shoulder + elbow
    tip = e + LINKS[1] * (math.cos(a2) * fwd + math.sin(a2) * up)
    return [SHOULDER, e, tip]


def link(key: str, p0: np.ndarray, p1: np.ndarray, color: str) -> Cylinder:
    """A cylinder from ``p0`` to ``p1`` (three.js cylinders lie along their +Y)."""
    v = p1 - p0
    n = float(np.linalg.norm(v)) or 1e-9
    y = v / n
    axis = np.cross([0.0, 1.0, 0.0], y)
    s, c = float(np.linalg.norm(axis)), float(y[1])
    if s < 1e-9:
        q = [0.0, 0.0, 0.0, 1.0] if c > 0 else [1.0, 0.0, 0.0, 0.0]
    else:
        half = math.atan2(s, c) / 2
        axis = axis / s * math.sin(half)
        q = [float(axis[0]), float(axis[1]), float(axis[2]), math.cos(half)]
    mid = (p0 + p1) / 2
    return Cylinder(key=key, args=[0.02, 0.02, n, 12], position=[float(x) for x in mid],
                    quaternion=q, material={"color": color})


class Teleop:
    """The mapping: while the right hand pinches, target = target at pinch start + (wrist
    now - wrist at pinch start). Pure: :meth:`step` takes a sample, returns nothing."""

    def __init__(self) -> None:
        self.target = fk(ik(np.array([0.0, 1.0, -0.3])))[2].copy()
        self.anchor_wrist: Optional[np.ndarray] = None
        self.anchor_target = self.target.copy()
        self.engagements = 0
        self.tracked_steps = self.lost_steps = 0
        self.moved = 0.0  # metres the target moved while pinched

    def step(self, sample) -> None:
        wrist = None if sample is None else sample.wrist("right")
        if wrist is None:  # not tracked: hold the target, release the clutch
            self.lost_steps += sample is not None
            self.anchor_wrist = None
            return
        self.tracked_steps += 1
        pinching = sample.right_state is not None and sample.right_state.pinch
        pos = wrist[:3, 3].astype(np.float64)
        if not pinching:
            self.anchor_wrist = None
        elif self.anchor_wrist is None:  # the pinch begins: clutch in
            self.anchor_wrist, self.anchor_target = pos, self.target.copy()
            self.engagements += 1
        else:
            new = self.anchor_target + (pos - self.anchor_wrist)
            self.moved += float(np.linalg.norm(new - self.target))
            self.target = new


def replay(path: str, url: str, loops: int, stop: threading.Event) -> int:
    """Send the recorded frames to ``url`` at their recorded pace, as a headset would."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    frames = []
    with open(path, "rb") as f:
        data = f.read()
    unpacker.feed(data)
    offsets = []
    for _ in unpacker:  # each frame's own bytes, sent unchanged
        offsets.append(unpacker.tell())
    starts = [0, *offsets[:-1]]
    for a, b in zip(starts, offsets):
        frames.append(data[a:b])
    ts = [msgpack.unpackb(fr, raw=False, strict_map_key=False).get("ts", 0.0) for fr in frames]
    ws = websocket.create_connection(url, timeout=5, sslopt={"cert_reqs": 0})
    sent = 0
    try:
        ws.send_binary(msgpack.packb({"etype": "INIT", "ts": time.time(),
                                      "value": {"client": "replay"}}))
        for _ in range(loops):
            t0 = time.monotonic()
            for fr, t in zip(frames, ts):
                if stop.wait(max(0.0, t0 + (t - ts[0]) - time.monotonic())):
                    return sent
                ws.send_binary(fr)
                sent += 1
    finally:
        ws.close()
    return sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8012)
    ap.add_argument("--lan", action="store_true",
                    help="serve on every interface over HTTPS (self-signed), with a token")
    ap.add_argument("--replay", metavar="FILE", help="a HAND_MOVE recording to play")
    ap.add_argument("--loops", type=int, default=1, help="times to play --replay")
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after N s (0: Ctrl-C)")
    a = ap.parse_args()

    app = Vuer(host="0.0.0.0", port=a.port, tls="self-signed") if a.lan \
        else Vuer(port=a.port)
    app.start(block=False)
    scene = DefaultScene(
        Box(key="base", args=[0.2, 0.9, 0.2], position=[0, 0.45, -0.6],
            material={"color": "#666"}),
        Sphere(key="target", args=[0.03], position=[0, 1, -0.3],
               material={"color": "#4c6ef5", "transparent": True, "opacity": 0.6}),
        Sphere(key="tip", args=[0.025], position=[0, 1, -0.3], material={"color": "#fa5252"}),
        Sphere(key="wrist", args=[0.02], position=[0, -10, 0], material={"color": "#40c057"}),
    )
    for el in scene.bgChildren:  # DefaultScene streams hands at 30 Hz; headsets track at 90
        if isinstance(el, Hands):
            el.fps = 90
    app.scene.set @ scene
    stop = threading.Event()
    player = None
    result = {"sent": 0}
    if a.replay:
        scheme = "wss" if app.cert else "ws"
        url = f"{scheme}://127.0.0.1:{app.port}/" + (f"?token={app.token}" if app.token else "")

        def play() -> None:
            result["sent"] = replay(a.replay, url, a.loops, stop)

        player = threading.Thread(target=play, name="replay", daemon=True)
        player.start()

    teleop = Teleop()
    tip = teleop.target.copy()
    period, steps = 1.0 / RATE, 0
    t_end = time.monotonic() + a.seconds if a.seconds else math.inf
    next_t = time.monotonic()
    try:
        while time.monotonic() < t_end:
            sample = app.hands.latest  # never blocks; None before the first HAND_MOVE
            teleop.step(sample)
            # the simulated arm moves toward the target at a bounded speed
            d = teleop.target - tip
            n = float(np.linalg.norm(d))
            tip = tip + d * min(1.0, MAX_SPEED * period / n) if n > 1e-9 else tip
            q = ik(tip)
            s, e, p = fk(q)
            app.scene.upsert @ [
                Sphere(key="target", position=[float(x) for x in teleop.target]),
                Sphere(key="tip", position=[float(x) for x in p]),
                link("upper-arm", s, e, "#adb5bd"), link("forearm", e, p, "#adb5bd")]
            wrist = None if sample is None else sample.wrist("right")
            if wrist is not None:
                app.scene.upsert @ Sphere(key="wrist", position=[float(x) for x in wrist[:3, 3]])
            steps += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if player is not None:
            player.join(5)
        stats = app.hands.stats
        app.stop()
    elapsed = a.seconds or 0.0
    print(f"{steps} control steps" + (f" in {elapsed:.1f} s" if elapsed else ""))
    if a.replay:
        print(f"replayed {result['sent']} HAND_MOVE frames; received {stats['received']}, "
              f"replaced before read {stats['replaced_unread']}, right hand missing in "
              f"{stats['right_missing']}")
    print(f"pinches: {teleop.engagements}; target moved {teleop.moved:.3f} m while pinched; "
          f"right hand tracked in {teleop.tracked_steps} steps, lost in {teleop.lost_steps}")


if __name__ == "__main__":
    main()
