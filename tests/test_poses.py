"""Columnar pose updates (`scene.poses(keys, position, quaternion)`, `vuer_sync.poses`)."""

from __future__ import annotations

import numpy as np
import pytest

from vuer_sync import codec
from vuer_sync.coalesce import merge_info
from vuer_sync.outbox import Outbox
from vuer_sync.poses import PoseEncoder
from vuer_sync.scene import SceneMirror
from vuer_sync.schemas import Box, Scene

from conftest import wait_until
from helpers import raw_client, recv_msg

KEYS = [f"link{i}" for i in range(20)]


def _columns(seed: int, n: int = len(KEYS)):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return rng.uniform(-5, 5, size=(n, 3)), q / np.linalg.norm(q, axis=1, keepdims=True)


def test_same_bytes_and_merge_info_as_the_update_of_those_nodes():
    pos, quat = _columns(1)
    enc = PoseEncoder()
    for q in (quat, None):
        payload, info, keys, values = enc.encode(KEYS, pos, q)
        msg = codec.unpack(payload)
        nodes = [{"key": k, "position": pos[i].tolist(),
                  **({"quaternion": q[i].tolist()} if q is not None else {})}
                 for i, k in enumerate(KEYS)]
        ref = {"ts": msg["ts"] / 1000, "data": {"nodes": nodes}, "strict": False,
               "etype": "UPDATE"}
        assert payload == codec.encode(ref)  # byte for byte what codec packs (float32)
        assert info == merge_info(ref)
        assert keys == tuple(KEYS) and values.dtype == np.float32
    # the cached template gives fresh values on every call
    pos2, quat2 = _columns(2)
    got = codec.unpack(enc.encode(KEYS, pos2, quat2).payload)["data"]["nodes"]
    assert np.allclose([n["position"] for n in got], pos2, atol=1e-5)
    assert np.allclose([n["quaternion"] for n in got], quat2, atol=1e-6)


def test_bad_input_raises_before_anything_is_sent(app):
    pos, quat = _columns(3)
    with pytest.raises(ValueError, match=r"position must have shape \(20, 3\)"):
        app.scene.poses(KEYS, pos[:, :2], quat)
    with pytest.raises(ValueError, match="quaternion must have shape"):
        app.scene.poses(KEYS, pos, quat[:5])
    with pytest.raises(TypeError, match="keys must be strings"):
        app.scene.poses([1, 2], pos[:2])
    with pytest.raises(ValueError, match="distinct"):
        app.scene.poses(["a", "a"], pos[:2])
    assert not app.scene.graph.used  # nothing reached the scene


def test_graph_update_poses_matches_apply_of_the_message():
    pos, quat = _columns(4)
    a, b = SceneMirror(), SceneMirror()
    add = {"etype": "ADD", "data": {"nodes": [{"key": k, "tag": "Box", "color": "red"}
                                              for k in KEYS[:-1]]}}
    a.apply(add)
    b.apply(add)
    poses = PoseEncoder().encode(KEYS, pos, quat)  # the last key is not in the scene
    a.apply(codec.unpack(poses.payload))
    b.update_poses(poses.keys, poses.values)
    assert a.snapshot() == b.snapshot()
    assert b.find(KEYS[-1]) is None  # UPDATE never inserts
    # held lazily: a newer update of the same keys replaces it, one with fewer properties
    # (positions only) lands the older one first, and any other message lands it too
    enc = PoseEncoder()
    for update in (enc.encode(KEYS, pos * 2, quat), enc.encode(KEYS, pos + 1)):
        a.apply(codec.unpack(update.payload))
        b.update_poses(update.keys, update.values)
    color = {"etype": "UPDATE", "data": {"nodes": [{"key": KEYS[0], "color": "blue"}]}}
    a.apply(color)
    b.apply(color)
    assert a.snapshot() == b.snapshot()
    assert b.find(KEYS[1])["quaternion"] == a.find(KEYS[1])["quaternion"]  # kept, not lost


def test_app_scene_poses_reach_clients_and_late_joiners(app):
    app.start(block=False)
    app.scene.set @ Scene(*[Box(key=k) for k in KEYS])
    ws = raw_client(app.port)
    assert recv_msg(ws)["etype"] == "SET"
    pos, quat = _columns(5)
    app.scene.poses(KEYS, pos, quat)
    live = recv_msg(ws)
    assert live["etype"] == "UPDATE" and [n["key"] for n in live["data"]["nodes"]] == KEYS
    assert np.allclose([n["quaternion"] for n in live["data"]["nodes"]], quat, atol=1e-6)
    ws.close()
    late = raw_client(app.port)  # a reload: the scene as it is now, as one SET
    first = recv_msg(late)
    kids = {n["key"]: n for n in first["data"]["children"]}
    assert first["etype"] == "SET"
    assert np.allclose([kids[k]["position"] for k in KEYS], pos, atol=1e-5)
    assert kids[KEYS[0]]["tag"] == "Box"
    late.close()


def test_session_poses_coalesce_latest_wins_when_behind():
    """A client behind gets the last poses of a burst, merged, never a stale one."""
    ob = Outbox(encode=codec.encode, decode=codec.unpack)
    enc = PoseEncoder()
    sent = [_columns(10 + i) for i in range(50)]
    for pos, quat in sent:
        p = enc.encode(KEYS, pos, quat)
        ob.push(p.payload, None, None, p.info)
    batch = ob.take_batch()
    assert batch is not None and len(batch) == 1  # 50 updates of the same nodes: one frame
    nodes = codec.unpack(batch[0].payload)["data"]["nodes"]
    assert np.allclose([n["position"] for n in nodes], sent[-1][0], atol=1e-5)
    assert ob.snapshot_stats()["coalesced"] == 49


def test_session_poses_on_the_wire(app):
    got = {}

    @app.spawn
    def main(session):
        session.set @ Scene(*[Box(key=k) for k in KEYS])
        pos, _ = _columns(6)
        session.poses(KEYS, pos)
        got["pos"] = pos
        session.forever()

    app.start(block=False)
    ws = raw_client(app.port)
    assert recv_msg(ws)["etype"] == "SET"
    msg = recv_msg(ws)
    assert wait_until(lambda: "pos" in got, 5)
    assert msg["etype"] == "UPDATE"
    nodes = msg["data"]["nodes"]
    assert all(set(n) == {"key", "position"} for n in nodes)  # rotations left alone
    assert np.allclose([n["position"] for n in nodes], got["pos"], atol=1e-5)
    ws.close()
