"""XR messages packed as the Vuer web client (0.0.102) packs them, and a synthetic hand.

The web client packs with msgpackr (``useRecords: false``): a JS number with an integral
value goes out as a msgpack int, any other number as float64, ``undefined`` as fixext1
type 0 (``d4 00 00``). Matrices come from ``XRPose.transform.matrix`` (a Float32Array:
float32 values widened to float64), 16 numbers per joint in column-major order.

``make_recording.py`` builds ``hand_move.msgpack`` (the fixture) with :func:`hand_frame`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import msgpack
import numpy as np

from vuer_sync.xr import HAND_JOINTS

UNDEFINED = msgpack.ExtType(0, b"\x00")  # what msgpackr writes for JS `undefined`


def _js_number(v: float) -> Any:
    f = float(np.float32(v))  # a Float32Array element read into a JS number
    return int(f) if f.is_integer() else f


def js_matrix(m: np.ndarray) -> List[Any]:
    """A ``(..., 4, 4)`` row-major array as the wire's column-major JS numbers."""
    a = np.asarray(m, dtype=np.float64).reshape(-1, 4, 4).transpose(0, 2, 1).reshape(-1)
    return [_js_number(v) for v in a]


def pack(msg: Dict[str, Any]) -> bytes:
    """One frame, as msgpackr sends it (float64 for non-integral numbers)."""
    return msgpack.packb(msg, use_bin_type=True, use_single_float=False)


def hand_state(poses: Optional[np.ndarray]) -> Dict[str, Any]:
    """``leftState``/``rightState`` as ``getHandLandmarks`` computes them ({} untracked)."""
    if poses is None:
        return {}
    j = {n: i for i, n in enumerate(HAND_JOINTS)}
    p = poses[:, :3, 3].astype(np.float32).astype(np.float64)
    pinch = float(np.linalg.norm(p[j["thumb-tip"]] - p[j["index-finger-tip"]]))
    squeeze = float(np.linalg.norm(p[j["middle-finger-tip"]]
                                   - p[j["middle-finger-phalanx-proximal"]]))
    return {"pinch": pinch < 0.01, "pinchValue": pinch, "squeeze": squeeze < 0.07,
            "squeezeValue": squeeze, "tap": pinch < 0.01, "tapValue": pinch}


def hand_move(ts: float, left: Optional[np.ndarray], right: Optional[np.ndarray],
              key: str = "hands") -> Dict[str, Any]:
    """A ``HAND_MOVE`` map: ``left``/``right`` are ``(25, 4, 4)`` row-major poses or
    ``None`` (tracking lost: ``undefined`` and an empty state, as the web client sends)."""
    value: Dict[str, Any] = {}
    for side, poses in (("left", left), ("right", right)):
        value[side] = UNDEFINED if poses is None else js_matrix(poses)
        value[side + "State"] = hand_state(poses)
    return {"ts": ts, "etype": "HAND_MOVE", "key": key, "value": value}


def controller_state(trigger: float = 0.0, squeeze: float = 0.0, a: bool = False,
                     b: bool = False, stick=(0.0, 0.0), touchpad: Any = False
                     ) -> Dict[str, Any]:
    """A ``leftState``/``rightState`` of ``CONTROLLER_MOVE`` (``getState`` minus the
    transform)."""
    return {"trigger": trigger > 0.5, "squeeze": squeeze > 0.5, "touchpad": touchpad,
            "thumbstick": False, "aButton": a, "bButton": b,
            "triggerValue": _js_number(trigger), "squeezeValue": _js_number(squeeze),
            "touchpadValue": [0, 0], "thumbstickValue": [_js_number(stick[0]),
                                                         _js_number(stick[1])]}


def controller_move(ts: float, left: Optional[np.ndarray], right: Optional[np.ndarray],
                    left_state: Optional[Dict[str, Any]] = None,
                    right_state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A ``CONTROLLER_MOVE`` map (``MotionControllers(left=True, right=True)``)."""
    value: Dict[str, Any] = {}
    for side, pose, st in (("left", left, left_state), ("right", right, right_state)):
        value[side] = UNDEFINED if pose is None else js_matrix(pose)
        value[side + "State"] = {} if pose is None else (st or controller_state())
    return {"ts": ts, "etype": "CONTROLLER_MOVE", "key": "motionControllers", "value": value}


# -- a synthetic hand: forward kinematics of 25 WebXR joints ----------------------------

# per finger: (metacarpal base offset in the wrist frame, bone lengths to the next joints)
_FINGERS = {
    "thumb": ((-0.022, -0.008, -0.020), (0.040, 0.032, 0.028)),
    "index-finger": ((-0.012, 0.0, -0.025), (0.065, 0.040, 0.024, 0.020)),
    "middle-finger": ((0.0, 0.0, -0.026), (0.063, 0.044, 0.027, 0.021)),
    "ring-finger": ((0.012, 0.0, -0.024), (0.058, 0.041, 0.026, 0.020)),
    "pinky-finger": ((0.022, -0.002, -0.020), (0.052, 0.032, 0.019, 0.018)),
}


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    r = np.eye(4)
    if axis == "x":
        r[1:3, 1:3] = [[c, -s], [s, c]]
    elif axis == "y":
        r[0, 0], r[0, 2], r[2, 0], r[2, 2] = c, s, -s, c
    else:
        r[0:2, 0:2] = [[c, -s], [s, c]]
    return r


def _move(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def hand_poses(wrist: np.ndarray, curl: float, pinch: float, side: str = "right"
               ) -> np.ndarray:
    """``(25, 4, 4)`` joint-to-world poses in :data:`HAND_JOINTS` order.

    ``wrist``: the wrist pose (palm down, fingers along its -Z, back of the hand +Y);
    ``curl`` 0..1 bends the middle, ring and pinky fingers; ``pinch`` 0..1 brings the
    thumb and index tips together (1: touching)."""
    mirror = -1.0 if side == "left" else 1.0
    out = np.zeros((25, 4, 4))
    out[0] = wrist
    i = 1
    tips = {}
    for finger, (base, lengths) in _FINGERS.items():
        t = wrist @ _move(mirror * base[0], base[1], base[2])
        if finger == "thumb":
            t = t @ _rot("y", mirror * (0.6 - 0.5 * pinch)) @ _rot("z", mirror * -0.5)
            bend = 0.15 + 0.55 * pinch
        elif finger == "index-finger":
            bend = 0.1 + 0.55 * pinch
        else:
            bend = 0.1 + 1.2 * curl
        for k, length in enumerate((0.0, *lengths)):
            t = t @ _move(0, 0, -length)
            if k > 0:
                t = t @ _rot("x", -bend * (0.6 if k == 1 else 1.0))
            out[i] = t
            i += 1
        tips[finger] = i - 1
    # close the last centimetres of a pinch exactly (the model's bones are not fitted)
    th, ix = tips["thumb"], tips["index-finger"]
    meet = (out[th, :3, 3] + out[ix, :3, 3]) / 2
    gap = out[ix, :3, 3] - out[th, :3, 3]
    gap *= 0.003 / max(float(np.linalg.norm(gap)), 1e-9)  # tips stop 6 mm apart
    for j, k, end in ((th, 1.0, meet - gap), (th - 1, 0.5, meet - gap),
                      (ix, 1.0, meet + gap), (ix - 1, 0.5, meet + gap)):
        out[j, :3, 3] += (end - out[j, :3, 3]) * (k * pinch ** 4)
    return out


def wrist_pose(t: float, side: str = "right") -> np.ndarray:
    """A wrist wandering in front of the user, in metres (WebXR local-floor: +Y up, the
    user looking along -Z), with ~1 mm of tracking jitter."""
    sgn = -1.0 if side == "left" else 1.0
    rng = np.random.default_rng(int(t * 1000) + (7 if side == "left" else 0))
    pos = np.array([sgn * 0.20 + 0.08 * math.sin(2 * math.pi * 0.4 * t),
                    1.05 + 0.05 * math.sin(2 * math.pi * 0.7 * t),
                    -0.35 + 0.06 * math.sin(2 * math.pi * 0.3 * t)])
    pos += rng.normal(0, 0.001, 3)
    r = _rot("y", sgn * 0.2 * math.sin(2 * math.pi * 0.25 * t)) @ \
        _rot("x", -0.3 + 0.15 * math.sin(2 * math.pi * 0.5 * t))
    r[:3, 3] = pos
    return r
