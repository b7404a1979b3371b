"""XR input streams as typed samples: ``HAND_MOVE`` and ``CONTROLLER_MOVE``, parsed (pure).

The Vuer web client streams them from a WebXR session when the scene has
``Hands(stream=True)`` or ``MotionControllers(stream=True, left=True, right=True)``.
This module turns one message ``value`` into an immutable sample of numpy arrays; the
threaded handles (``session.hands``, ``app.controllers``, ...) live in
:mod:`vuer_sync.server.xr`.

Wire format (web client 0.0.102, the ``vuer`` 0.1.6 wheel), read from its source:

* ``HAND_MOVE``: ``{"etype": "HAND_MOVE", "key": "hands", "ts": <float s>, "value":
  {"left": [400 numbers], "leftState": {...}, "right": [...], "rightState": {...}}}``.
  ``left`` is the 25 joints of :data:`HAND_JOINTS`, in that order, each a 4x4 joint-to-world
  matrix as 16 numbers in **column-major** order (WebXR/three.js: translation at 12, 13, 14).
  The state holds ``pinch``/``pinchValue`` (thumb tip to index tip distance in metres;
  ``pinch`` is ``pinchValue < 0.01``), ``squeeze``/``squeezeValue`` (middle finger tip to its
  proximal phalanx, ``squeeze`` below 0.07 m) and ``tap``/``tapValue`` (the same distance as
  pinch in this client). A side whose tracking is lost is sent as JS ``undefined`` (which
  the codec turns into ``None``) with an empty state ``{}``; a side never seen is absent.
* ``CONTROLLER_MOVE``: ``value: {"left": [16 numbers], "leftState": {...}, "right": ...}``:
  the target-ray pose, column-major, and the gamepad: ``trigger``, ``squeeze``,
  ``thumbstick``, ``aButton``, ``bButton`` (booleans, ``pressed``), ``touchpad``
  (``"pressed"``, ``"touched"`` or ``false``), ``triggerValue``, ``squeezeValue`` (0..1),
  ``touchpadValue`` and ``thumbstickValue`` (``[x, y]``, -1..1).

Here a side that is not tracked is ``None``, never the last pose seen.

>>> import numpy as np
>>> eye = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0.1, 0.2, 0.3, 1]   # column-major
>>> s = parse_hands({"right": eye * 25, "rightState": {"pinch": True, "pinchValue": 0.005}},
...                 seq=1, ts=0.0)
>>> s.right.shape, s.right.dtype, s.left is None
((25, 4, 4), dtype('float32'), True)
>>> [round(float(v), 2) for v in s.right[JOINT["wrist"], :3, 3]]   # translation column
[0.1, 0.2, 0.3]
>>> s.right_state.pinch
True
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = [
    "BUTTONS", "HAND_JOINTS", "JOINT", "ControllerSample", "ControllerState", "HandSample",
    "HandState", "matrix_from_wire", "matrix_to_wire", "parse_controllers", "parse_hands",
]

#: the 25 joints of a WebXR hand, in the order of the wire (the web client's
#: ``HAND_JOINT_KEYS``, the WebXR Hand Input order)
HAND_JOINTS: Tuple[str, ...] = (
    "wrist",
    "thumb-metacarpal", "thumb-phalanx-proximal", "thumb-phalanx-distal", "thumb-tip",
    "index-finger-metacarpal", "index-finger-phalanx-proximal",
    "index-finger-phalanx-intermediate", "index-finger-phalanx-distal", "index-finger-tip",
    "middle-finger-metacarpal", "middle-finger-phalanx-proximal",
    "middle-finger-phalanx-intermediate", "middle-finger-phalanx-distal", "middle-finger-tip",
    "ring-finger-metacarpal", "ring-finger-phalanx-proximal",
    "ring-finger-phalanx-intermediate", "ring-finger-phalanx-distal", "ring-finger-tip",
    "pinky-finger-metacarpal", "pinky-finger-phalanx-proximal",
    "pinky-finger-phalanx-intermediate", "pinky-finger-phalanx-distal", "pinky-finger-tip",
)
#: joint name -> index into a hand's ``(25, 4, 4)`` array
JOINT: Dict[str, int] = {name: i for i, name in enumerate(HAND_JOINTS)}
#: the order of :attr:`ControllerState.buttons`
BUTTONS: Tuple[str, ...] = ("trigger", "squeeze", "touchpad", "thumbstick", "a", "b")

_SIDES = ("left", "right")


def matrix_from_wire(flat: Any, n: int = 1) -> np.ndarray:
    """``n`` column-major 4x4 matrices (``16 * n`` numbers) as a float32 ``(n, 4, 4)`` array
    indexed ``[i, row, col]`` (row-major, translation in ``[i, :3, 3]``).

    Raises ``ValueError`` on a wrong count, non-numbers or non-finite values.
    """
    if not isinstance(flat, (list, tuple)) or len(flat) != 16 * n:
        got = len(flat) if isinstance(flat, (list, tuple)) else type(flat).__name__
        raise ValueError(f"expected {16 * n} numbers, got {got}")
    try:
        a = np.asarray(flat, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"not numbers: {e}") from None
    if not np.isfinite(a).all():
        raise ValueError("NaN or infinity in a pose")
    out = np.ascontiguousarray(a.reshape(n, 4, 4).transpose(0, 2, 1))
    out.flags.writeable = False
    return out


def matrix_to_wire(m: Any) -> list:
    """The inverse of :func:`matrix_from_wire`: ``(..., 4, 4)`` -> flat column-major list."""
    a = np.asarray(m, dtype=np.float64).reshape(-1, 4, 4)
    return [float(v) for v in a.transpose(0, 2, 1).reshape(-1)]


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return 0.0
    return float(v)


class HandState:
    """Pinch, squeeze and tap of one hand, as the web client measures them (distances in
    metres: smaller is tighter)."""

    __slots__ = ("pinch", "pinch_value", "squeeze", "squeeze_value", "tap", "tap_value")

    def __init__(self, pinch: bool = False, pinch_value: float = 0.0, squeeze: bool = False,
                 squeeze_value: float = 0.0, tap: bool = False, tap_value: float = 0.0):
        self.pinch = bool(pinch)
        self.pinch_value = float(pinch_value)
        self.squeeze = bool(squeeze)
        self.squeeze_value = float(squeeze_value)
        self.tap = bool(tap)
        self.tap_value = float(tap_value)

    @classmethod
    def from_wire(cls, d: Any) -> HandState:
        d = d if isinstance(d, Mapping) else {}
        return cls(d.get("pinch") is True, _num(d.get("pinchValue")),
                   d.get("squeeze") is True, _num(d.get("squeezeValue")),
                   d.get("tap") is True, _num(d.get("tapValue")))

    def __repr__(self) -> str:
        return (f"HandState(pinch={self.pinch} ({self.pinch_value:.3f} m), "
                f"squeeze={self.squeeze} ({self.squeeze_value:.3f} m))")


class HandSample:
    """One ``HAND_MOVE``: both hands' joint transforms, ``None`` for a side not tracked.

    ``left``/``right``: read-only float32 ``(25, 4, 4)``, ``[joint, row, col]`` in
    :data:`HAND_JOINTS` order, joint-to-world (the XR reference space: metres, +Y up).
    ``seq`` counts samples of this stream from 1; ``ts`` is the sender's time (epoch s),
    ``received`` this machine's ``time.time()`` when the message was dispatched.
    """

    __slots__ = ("key", "left", "left_state", "received", "right", "right_state", "seq", "ts")

    def __init__(self, seq: int, ts: float, received: float, key: Optional[str],
                 left: Optional[np.ndarray], left_state: Optional[HandState],
                 right: Optional[np.ndarray], right_state: Optional[HandState]):
        self.seq, self.ts, self.received, self.key = seq, ts, received, key
        self.left, self.left_state = left, left_state
        self.right, self.right_state = right, right_state

    def hand(self, side: str) -> Optional[np.ndarray]:
        """``left`` or ``right`` by name."""
        return self.left if side == "left" else self.right if side == "right" else _bad(side)

    def state(self, side: str) -> Optional[HandState]:
        return (self.left_state if side == "left" else self.right_state if side == "right"
                else _bad(side))

    def wrist(self, side: str) -> Optional[np.ndarray]:
        """The wrist's ``(4, 4)`` pose of ``side``, or ``None`` when that hand is not
        tracked."""
        h = self.hand(side)
        return None if h is None else h[0]

    def __repr__(self) -> str:
        return (f"<HandSample #{self.seq} left={'tracked' if self.left is not None else None} "
                f"right={'tracked' if self.right is not None else None}>")


class ControllerState:
    """Buttons and axes of one controller (WebXR ``xr-standard`` gamepad mapping).

    ``buttons``: float32 ``(6,)`` in :data:`BUTTONS` order, 1.0 when pressed (the analog
    trigger and grip are ``trigger_value``/``squeeze_value``, 0..1); ``axes``: float32
    ``(4,)``, touchpad x, y then thumbstick x, y (-1..1). ``touchpad_touched`` is true when
    the touchpad is touched or pressed.
    """

    __slots__ = ("a", "axes", "b", "buttons", "squeeze", "squeeze_value", "thumbstick",
                 "touchpad", "touchpad_touched", "trigger", "trigger_value")

    def __init__(self, d: Mapping[str, Any]):
        self.trigger = d.get("trigger") is True
        self.squeeze = d.get("squeeze") is True
        self.touchpad = d.get("touchpad") == "pressed"
        self.touchpad_touched = d.get("touchpad") in ("pressed", "touched")
        self.thumbstick = d.get("thumbstick") is True
        self.a = d.get("aButton") is True
        self.b = d.get("bButton") is True
        self.trigger_value = _num(d.get("triggerValue"))
        self.squeeze_value = _num(d.get("squeezeValue"))
        axes = [0.0] * 4
        for i, name in ((0, "touchpadValue"), (2, "thumbstickValue")):
            v = d.get(name)
            if isinstance(v, (list, tuple)) and len(v) == 2:
                axes[i], axes[i + 1] = _num(v[0]), _num(v[1])
        self.axes = np.array(axes, dtype=np.float32)
        self.axes.flags.writeable = False
        self.buttons = np.array([self.trigger, self.squeeze, self.touchpad, self.thumbstick,
                                 self.a, self.b], dtype=np.float32)
        self.buttons.flags.writeable = False

    def __repr__(self) -> str:
        pressed = [n for n, v in zip(BUTTONS, self.buttons) if v]
        return f"ControllerState(pressed={pressed}, trigger={self.trigger_value:.2f})"


class ControllerSample:
    """One ``CONTROLLER_MOVE``: per side a read-only float32 ``(4, 4)`` target-ray pose
    (row-major, controller-to-world) and its :class:`ControllerState`, or ``None`` when
    that controller is not tracked. ``seq``/``ts``/``received`` as in :class:`HandSample`."""

    __slots__ = ("key", "left", "left_state", "received", "right", "right_state", "seq", "ts")

    def __init__(self, seq: int, ts: float, received: float, key: Optional[str],
                 left: Optional[np.ndarray], left_state: Optional[ControllerState],
                 right: Optional[np.ndarray], right_state: Optional[ControllerState]):
        self.seq, self.ts, self.received, self.key = seq, ts, received, key
        self.left, self.left_state = left, left_state
        self.right, self.right_state = right, right_state

    def pose(self, side: str) -> Optional[np.ndarray]:
        return self.left if side == "left" else self.right if side == "right" else _bad(side)

    def state(self, side: str) -> Optional[ControllerState]:
        return (self.left_state if side == "left" else self.right_state if side == "right"
                else _bad(side))

    def __repr__(self) -> str:
        return (f"<ControllerSample #{self.seq} left={self.left_state} "
                f"right={self.right_state}>")


def _bad(side: str) -> Any:
    raise ValueError(f"side must be 'left' or 'right', not {side!r}")


def _value(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"value must be a map, got {type(value).__name__}")
    return value


def parse_hands(value: Any, seq: int, ts: float, received: float = 0.0,
                key: Optional[str] = None) -> HandSample:
    """A ``HAND_MOVE`` value as a :class:`HandSample`.

    A side is tracked when it holds 400 finite numbers; ``None``/absent is "not tracked";
    anything else raises ``ValueError`` (the caller drops and counts the message).
    """
    v = _value(value)
    out: Dict[str, Any] = {}
    for side in _SIDES:
        flat = v.get(side)
        if flat is None:
            out[side], out[side + "_state"] = None, None
            continue
        out[side] = matrix_from_wire(flat, len(HAND_JOINTS))
        out[side + "_state"] = HandState.from_wire(v.get(side + "State"))
    return HandSample(seq, ts, received, key, out["left"], out["left_state"],
                      out["right"], out["right_state"])


def parse_controllers(value: Any, seq: int, ts: float, received: float = 0.0,
                      key: Optional[str] = None) -> ControllerSample:
    """A ``CONTROLLER_MOVE`` value as a :class:`ControllerSample` (same rules as
    :func:`parse_hands`, with one 16-number pose per side)."""
    v = _value(value)
    out: Dict[str, Any] = {}
    for side in _SIDES:
        flat = v.get(side)
        if flat is None:
            out[side], out[side + "_state"] = None, None
            continue
        out[side] = matrix_from_wire(flat)[0]
        st = v.get(side + "State")
        out[side + "_state"] = ControllerState(st if isinstance(st, Mapping) else {})
    return ControllerSample(seq, ts, received, key, out["left"], out["left_state"],
                            out["right"], out["right_state"])
