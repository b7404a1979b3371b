"""The render pool in real headless Chromium with the real Vuer web client: pose/frame
matching on two pages (with a CPU hog beside the browser), a page killed mid-run, resume
after an interrupted run, and the transforms.json layout loaded back.

Small and bounded: one server and two headless pages for the module, 160x120 frames, 12-24
poses per test, every wait bounded by the pool's timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vuer_sync.capture import HeadlessPages, RenderPool, capture
from vuer_sync.capture.pose import circle_poses
from vuer_sync.schemas import Box, DefaultScene

from browser import red_stats, require_chromium

pytestmark = pytest.mark.browser

W, H, FOV = 160, 120, 50.0
TARGET = np.array([0.0, 0.5, 0.0])


@pytest.fixture(scope="module")
def pages():
    require_chromium()
    from vuer_sync import Vuer

    app = Vuer(port=0)
    app.start(block=False)
    try:
        app.scene.set @ DefaultScene(bgChildren=[])
        with HeadlessPages(app, 2, timeout=60.0) as hp:
            yield app, hp
    finally:
        app.stop()


def offset(i: int) -> float:
    """The red box's sideways offset for pose ``i``: a different place for every pose."""
    return -1.0 + 2.0 * ((i * 0.6180339887) % 1.0)


def box_position(pose, i: int) -> np.ndarray:
    """The box goes ``offset(i)`` to the camera's right of the target."""
    fwd = TARGET - np.array(pose.position)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    return TARGET + offset(i) * right / np.linalg.norm(right)


def place_box(session, i, pose) -> None:
    session.upsert @ Box(key="pose-box", args=[0.3, 0.3, 0.3], materialType="basic",
                         material={"color": "red"}, position=box_position(pose, i).tolist())


def expected_cx(pose, i: int) -> float:
    """Where the box centre projects, as a fraction of the width (pinhole, fov FOV)."""
    fy = (H / 2) / np.tan(np.radians(FOV / 2))
    dist = np.linalg.norm(TARGET - np.array(pose.position))
    return 0.5 + offset(i) * fy / dist / W


def assert_shows_its_pose(rgb: np.ndarray, pose, i: int) -> None:
    s = red_stats(rgb)
    assert s["fraction"] > 0.002, f"pose {i}: no box in the frame"
    assert abs(s["cx"] - expected_cx(pose, i)) < 0.03, \
        f"pose {i}: box at {s['cx']:.3f} of the width, expected {expected_cx(pose, i):.3f}"


def poses(n: int):
    return circle_poses(n, radius=4.0, elevation=1.0, target=TARGET)


def test_every_frame_shows_its_own_pose_with_a_cpu_hog_beside(pages):
    app, hp = pages
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        ps = poses(24)
        pool = RenderPool(hp.sessions, width=W, height=H, fov=FOV, timeout=30.0,
                          prepare=place_box)
        got = list(pool.render(ps))
    finally:
        hog.kill()
        hog.wait(10)
    assert [f.index for f in got] == list(range(24))
    assert {f.session for f in got} == {s.id for s in hp.sessions}  # both pages worked
    for f in got:
        assert f.rgb.shape == (H, W, 3)
        assert_shows_its_pose(f.rgb, ps[f.index], f.index)
    assert pool.stats["frames"] == 24 and pool.stats["dead_sessions"] == 0


def test_a_frame_drawn_before_its_pose_arrived_is_rejected(pages):
    """The tag check itself, in the real browser: a frame asked for without sending the
    pose it should show (the previous pose is still drawn) is refused."""
    app, hp = pages
    session = hp.sessions[0]
    pool = RenderPool([session], width=W, height=H, fov=FOV, timeout=30.0)
    ps = poses(2)
    list(pool.render(ps[:1]))  # mounts the camera at pose 0 with some serial
    session.upsert(pool.pose_nodes(900, ps[0]), to="rawChildren")
    session.flush(5)
    answer = session.rpc(pool.request_event(), ttl=10)
    assert pool.decode(answer, 900, 0, ps[0], session.id) is not None  # drawn: accepted
    # pose 1 with serial 901 is never sent: the browser still shows 900
    assert pool.decode(answer, 901, 1, ps[1], session.id) is None
    answer = session.rpc(pool.request_event(), ttl=10)
    assert pool.decode(answer, 901, 1, ps[1], session.id) is None


def test_a_page_killed_mid_run_loses_and_duplicates_nothing(pages, tmp_path):
    app, hp = pages
    extra = hp.open(f"http://127.0.0.1:{app.port}/")  # a third page, to be killed
    ps = poses(16)
    # window=2: both pages always hold a pose, so the killed one dies with work in hand
    pool = RenderPool([hp.sessions[0], extra], width=W, height=H, fov=FOV, timeout=15.0,
                      prepare=place_box, window=2)
    seen, sessions = [], []
    for f in pool.render(ps):
        seen.append(f.index)
        sessions.append(f.session[:4])
        assert_shows_its_pose(f.rgb, ps[f.index], f.index)
        if len(seen) == 4:
            hp.kill(len(hp.browsers) - 1)
    assert seen == list(range(16))
    assert pool.stats["dead_sessions"] == 1, (pool.stats, sessions)
    assert pool.stats["rerendered"] >= 1  # what the dead page held was rendered elsewhere
    assert extra.id[:4] in sessions[:4] and extra.id[:4] not in sessions[5:]


def test_resume_after_an_interrupted_run_and_the_layout(pages, tmp_path):
    app, hp = pages
    ps = poses(12)

    def crash_at_9(session, i, pose):
        if i >= 9:
            raise RuntimeError("simulated crash")
        place_box(session, i, pose)

    first = RenderPool(hp.sessions, width=W, height=H, fov=FOV, depth=True, timeout=30.0,
                       prepare=crash_at_9)
    with pytest.raises(RuntimeError, match="every session died"):
        capture(first, ps, tmp_path)
    written = sorted(p.name for p in (tmp_path / "images").iterdir())
    # frames are written in pose order, and a dying worker may take up to two poses with
    # it: some first poses below 9 are on disk, as whole files
    assert 1 <= len(written) <= 9 and written == [f"{i:05d}.png" for i in range(len(written))]
    for name in written:
        Image.open(tmp_path / "images" / name).load()
    assert not (tmp_path / "transforms.json").exists()
    with pytest.raises(FileExistsError):
        capture(first, ps, tmp_path)  # no silent overwrite without resume

    second = RenderPool(hp.sessions, width=W, height=H, fov=FOV, depth=True, timeout=30.0,
                        prepare=place_box)
    res = capture(second, ps, tmp_path, resume=True)
    assert (res["rendered"], res["skipped"]) == (12 - len(written), len(written))
    assert second.stats["frames"] == 12 - len(written)

    t = json.loads((tmp_path / "transforms.json").read_text())
    assert (t["w"], t["h"]) == (W, H) and len(t["frames"]) == 12
    assert t["fl_y"] == pytest.approx((H / 2) / np.tan(np.radians(FOV / 2)))
    for i, (f, pose) in enumerate(zip(t["frames"], ps)):
        m = np.array(f["transform_matrix"])
        assert m[:3, 3] == pytest.approx(pose.position)
        assert -m[:3, 2] == pytest.approx((TARGET - pose.position) / np.linalg.norm(
            TARGET - pose.position), abs=1e-6)
        rgb = np.asarray(Image.open(tmp_path / f["file_path"]).convert("RGB"))
        assert_shows_its_pose(rgb, pose, i)  # both runs' frames: each its own pose
        depth = np.asarray(Image.open(tmp_path / f["depth_file_path"]))
        assert depth.dtype == np.uint16 and depth.shape == (H, W)
        box = (rgb[..., 0] > 150) & (rgb[..., 1] < 80)
        mm = depth[box & (depth > 0)] * t["integer_depth_scale"]
        dist = np.linalg.norm(TARGET - pose.position)  # the box is about this far
        assert abs(float(np.median(mm)) - dist) < 0.5, (i, float(np.median(mm)), dist)
