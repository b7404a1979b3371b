"""The pure parts of the capture: the freshness tag through a real JPEG round trip, the
transforms.json layout, atomic writes and the resume scan, the job's exactly-once queue."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from vuer_sync.capture import layout
from vuer_sync.capture.pool import _Job  # noqa: F401  (the shared queue, tested directly)
from vuer_sync.capture.pose import Pose, circle_poses
from vuer_sync.capture.tag import CODES, TagGeometry, check_tag, crop, paint_tag, read_tag


def jpeg_round_trip(img: np.ndarray, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.mark.parametrize("serial", [0, 1, 6, 7, 1234, CODES - 1, CODES + 5])
def test_tag_survives_jpeg_and_names_only_its_serial(serial):
    g = TagGeometry(160, 120, 50.0)
    rng = np.random.default_rng(serial)
    img = rng.integers(0, 256, (g.render_height, 160, 3), dtype=np.uint8)  # busy scene
    paint_tag(img, g, serial)
    back = jpeg_round_trip(img)
    assert read_tag(back, g) == serial % CODES
    assert check_tag(back, g, serial)
    assert not check_tag(back, g, serial + 1) and not check_tag(back, g, serial - 1)


def test_no_tag_reads_as_none_and_crop_removes_the_strips():
    g = TagGeometry(160, 120, 50.0)
    img = np.zeros((g.render_height, 160, 3), np.uint8)
    assert read_tag(img, g) is None  # an untagged (black) strip is never a code
    img[16:136] = 200
    paint_tag(img, g, 42)
    out = crop(img, g)
    assert out.shape == (120, 160, 3) and (out == 200).all()
    big = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)  # a browser with DPR 2
    assert read_tag(big, g) == 42 and crop(big, g).shape == (120, 160, 3)


def test_render_fov_keeps_the_focal_length():
    g = TagGeometry(640, 480, 50.0)
    fy = 240 / math.tan(math.radians(25))
    assert g.fy == pytest.approx(fy)
    assert (g.render_height / 2) / math.tan(math.radians(g.render_fov) / 2) == pytest.approx(fy)


def test_transforms_json_matches_the_poses():
    poses = circle_poses(6, radius=3.0, elevation=1.0, target=(0, 0.5, 0))
    cfg = layout.Config(320, 240, 60.0, 0.1, 10.0, "png16")
    t = json.loads(json.dumps(layout.transforms(cfg, poses)))
    assert (t["w"], t["h"]) == (320, 240)
    assert t["fl_y"] == pytest.approx(120 / math.tan(math.radians(30)))
    assert t["camera_angle_x"] == pytest.approx(2 * math.atan(160 / t["fl_x"]))
    assert t["integer_depth_scale"] == 0.001 and t["depth"]["near"] == 0.1
    for i, (f, p) in enumerate(zip(t["frames"], poses)):
        m = np.array(f["transform_matrix"])
        assert f["file_path"] == f"images/{i:05d}.png"
        assert f["depth_file_path"] == f"depth/{i:05d}.png"
        assert m[:3, 3] == pytest.approx(p.position)
        assert m[:3, :3] @ m[:3, :3].T == pytest.approx(np.eye(3), abs=1e-9)
        forward = -m[:3, 2]  # the camera looks along -Z: at the target
        to_target = np.array([0, 0.5, 0]) - np.array(p.position)
        assert forward == pytest.approx(to_target / np.linalg.norm(to_target), abs=1e-9)


def test_atomic_write_and_resume_scan(tmp_path):
    layout.atomic_write(tmp_path / "images/00000.png", b"a")
    layout.atomic_write(tmp_path / "images/00002.png", b"c")
    layout.atomic_write(tmp_path / "depth/00002.png", b"d")
    (tmp_path / "images/.00001.png.x.tmp").write_bytes(b"half")  # a crash mid-write
    assert layout.scan_done(tmp_path, 3, None) == {0, 2}
    assert layout.scan_done(tmp_path, 3, "png16") == {2}  # frame 0 lacks its depth
    assert not list((tmp_path / "images").glob("*.tmp"))
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["00000.png",
                                                                       "00002.png"]


def test_depth_metres_and_pose_manifest():
    d = layout.depth_metres(np.array([[255, 1, 0]], np.uint8), 0.5, 10.5)
    assert d[0, 0] == pytest.approx(0.5) and d[0, 2] == 0
    assert d[0, 1] == pytest.approx(0.5 + 254 / 255 * 10, rel=1e-5)
    m = layout.manifest(layout.Config(96, 64, 40.0), [Pose((1.0, 2.0, 3.0), (1, 0, 0, 0))])
    assert m["poses"][0]["position"] == [1.0, 2.0, 3.0] and m["config"]["width"] == 96


def test_job_hands_out_every_rank_once_and_takes_failed_ones_back():
    job = _Job(order=[10, 11, 12, 13], window=2, max_attempts=3)
    job.live = 1
    a, b = job.take(False), job.take(False)
    assert (a, b) == (0, 1) and job.take(False) is None  # the window: 2 ahead of the reader
    job.requeue(a, "page died")
    assert job.take(False) == 0  # the lowest rank first
    from vuer_sync.capture.pool import Frame

    for r in (0, 1):
        job.done(r, Frame(job.order[r], Pose((0.0, 0.0, 0.0), (1, 0, 0, 0)),
                          np.zeros((1, 1, 3), np.uint8)))
    assert job.result(0).index == 10 and job.result(0 + 1).attempts == 1
    assert job.take(False) == 2 and job.take(False) == 3
    for _ in range(2):
        job.requeue(2, "stale")
        assert job.take(False) == 2
    job.requeue(2, "stale")  # the third failure of one pose ends the job
    with pytest.raises(RuntimeError, match="pose 12 failed 3 times"):
        job.result(2)
