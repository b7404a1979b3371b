"""HAND_MOVE / CONTROLLER_MOVE parsing: joint order, column-major layout, states, untracked
sides, malformed input (pure, no sockets)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import msgpack
import numpy as np
import pytest

from vuer_sync import codec
from vuer_sync.xr import (
    BUTTONS,
    HAND_JOINTS,
    JOINT,
    matrix_from_wire,
    parse_controllers,
    parse_hands,
)

from .wire import (
    UNDEFINED,
    controller_move,
    controller_state,
    hand_move,
    hand_poses,
    js_matrix,
    pack,
    wrist_pose,
)
from conftest import require

RECORDING = Path(__file__).resolve().parent / "hand_move.msgpack"


def decoded(msg):
    """A map through the bytes the web client sends and our codec."""
    return codec.decode(pack(msg))


def test_joint_order_is_the_web_clients():
    vuer = require("vuer")
    build = Path(vuer.__file__).parent / "client_build" / "assets"
    found = None
    for js in build.rglob("*.js"):
        m = re.search(r"HAND_JOINT_KEYS=\[([^\]]*)\]", js.read_text(errors="replace"))
        if m:
            found = tuple(re.findall(r'"([^"]+)"', m.group(1)))
            break
    assert found == HAND_JOINTS
    assert len(HAND_JOINTS) == 25 and JOINT["wrist"] == 0 and JOINT["pinky-finger-tip"] == 24


def test_column_major_wire_to_row_major_arrays():
    # a rotation about Z by 90 degrees and a translation, as WebXR's Float32Array holds it
    wire = [0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 1, 0, 0.5, 1.25, -2, 1]
    m = matrix_from_wire(wire)[0]
    assert m.dtype == np.float32 and m.shape == (4, 4) and not m.flags.writeable
    assert m[:3, 3].tolist() == [0.5, 1.25, -2.0]  # translation in the last column
    assert m @ np.array([1, 0, 0, 0], np.float32) == pytest.approx([0, 1, 0, 0])  # x -> y
    assert m[3].tolist() == [0, 0, 0, 1]


def test_hand_sample_arrays_states_and_untracked_side():
    right = hand_poses(wrist_pose(0.5), curl=0.4, pinch=1.0)
    msg = decoded(hand_move(1796500000.5, None, right))
    assert msg["value"]["left"] is None and msg["value"]["leftState"] == {}  # `undefined`
    s = parse_hands(msg["value"], seq=1, ts=codec.normalize_ts(msg["ts"]), key=msg["key"])
    assert s.left is None and s.left_state is None and s.wrist("left") is None
    assert s.right.shape == (25, 4, 4) and s.right.dtype == np.float32
    assert not s.right.flags.writeable
    assert np.allclose(s.right, right, atol=1e-6)  # same joints, same order, row-major
    assert np.allclose(s.wrist("right"), right[0], atol=1e-6)
    assert s.ts == 1796500000.5 and s.key == "hands"
    st = s.right_state
    tips = np.linalg.norm(right[JOINT["thumb-tip"], :3, 3] - right[JOINT["index-finger-tip"],
                                                                     :3, 3])
    assert st.pinch is True and st.pinch_value == pytest.approx(tips, abs=1e-6)
    assert st.squeeze is False and st.squeeze_value > 0.07
    for j in range(25):  # every joint a rigid transform
        r = s.right[j, :3, :3].astype(np.float64)
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-5) and math.isclose(
            np.linalg.det(r), 1.0, abs_tol=1e-5)


def test_recording_is_the_web_clients_wire_format():
    data = RECORDING.read_bytes()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    frames = list(unpacker)
    assert len(frames) == 60
    for f in frames:
        assert list(f) == ["ts", "etype", "key", "value"] and f["etype"] == "HAND_MOVE"
        assert list(f["value"]) == ["left", "leftState", "right", "rightState"]
        assert isinstance(f["ts"], float) and 1.7e9 < f["ts"] < 1.9e9  # float seconds
        for side in ("left", "right"):
            v = f["value"][side]
            assert v == UNDEFINED or (len(v) == 400 and all(
                type(x) is int or type(x) is float for x in v))
            if v == UNDEFINED:
                assert f["value"][side + "State"] == {}
            else:
                assert list(f["value"][side + "State"]) == [
                    "pinch", "pinchValue", "squeeze", "squeezeValue", "tap", "tapValue"]
    # integral numbers travel as msgpack ints, the others as float64 (msgpackr's choice)
    assert b"\xcb" in data and b"\xd4\x00\x00" in data


def test_controller_sample_pose_buttons_axes():
    pose = wrist_pose(0.1)
    st = controller_state(trigger=0.8, squeeze=0.2, a=True, stick=(0.5, -0.25),
                          touchpad="touched")
    msg = decoded(controller_move(1796500000.0, None, pose, right_state=st))
    s = parse_controllers(msg["value"], seq=1, ts=1.0)
    assert s.left is None and s.left_state is None
    assert s.right.shape == (4, 4) and s.right.dtype == np.float32
    assert np.allclose(s.right, pose, atol=1e-6)
    r = s.right_state
    assert BUTTONS == ("trigger", "squeeze", "touchpad", "thumbstick", "a", "b")
    assert r.buttons.tolist() == [1, 0, 0, 0, 1, 0] and r.buttons.dtype == np.float32
    assert r.trigger and r.a and not r.b and r.touchpad_touched and not r.touchpad
    assert r.trigger_value == pytest.approx(0.8) and r.squeeze_value == pytest.approx(0.2)
    assert r.axes.tolist() == [0, 0, 0.5, -0.25]


@pytest.mark.parametrize("bad", [
    {"right": [0.0] * 399},
    {"right": [float("nan")] * 400},
    {"right": ["x"] * 400},
    {"right": {"a": 1}},
    [1, 2, 3],
])
def test_malformed_hand_values_raise(bad):
    with pytest.raises(ValueError):
        parse_hands(bad, seq=1, ts=0.0)


def test_js_matrix_round_trip():
    m = wrist_pose(0.3)
    assert np.allclose(matrix_from_wire(js_matrix(m))[0], m, atol=1e-6)
