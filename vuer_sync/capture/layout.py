"""The on-disk layout of a capture: ``transforms.json`` in the NeRF / instant-ngp convention,
one PNG per pose, optional depth, written atomically, and the scan that resumes a run.

::

    out/
      capture.json        what was asked (size, fov, near/far, depth, every pose): a resumed
                          run must ask the same
      transforms.json     camera_angle_x/y, fl_x, fl_y, cx, cy, w, h, and per frame
                          file_path + transform_matrix (camera-to-world, OpenGL/three.js
                          camera: looks along -Z, +Y up; rows)
      images/00000.png    RGB, 8 bit
      depth/00000.png     depth, 16-bit PNG in millimetres (integer_depth_scale 0.001 m per
                          unit; 0 = nothing within far), or depth/00000.npy: float32 metres

Depth comes from the web client as an 8-bit image of the view-space depth between ``near``
and ``far`` (``v = 255 * (1 - (z - near) / (far - near))``), so its resolution is
``(far - near) / 255`` whatever the file format: a 16-bit PNG or ``.npy`` only keeps it in
metres. Pure, but for :func:`atomic_write` and :func:`scan_done`.

>>> t = transforms(Config(160, 120, 50.0), [Pose((0.0, 0.0, 5.0), (1.0, 0.0, 0.0, 0.0))])
>>> t["w"], t["h"], round(t["fl_y"], 2), t["frames"][0]["file_path"]
(160, 120, 128.67, 'images/00000.png')
>>> t["frames"][0]["transform_matrix"][2]
[0.0, 0.0, 1.0, 5.0]
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import numpy as np

from .pose import Pose

__all__ = [
    "DEPTH_FORMATS", "Config", "atomic_write", "camera_to_world", "depth_metres",
    "depth_path", "image_path", "manifest", "scan_done", "transforms",
]

DEPTH_FORMATS = ("png16", "npy")
DEPTH_SCALE = 0.001  # metres per unit of a 16-bit depth PNG


@dataclass(frozen=True)
class Config:
    """What a capture renders: image size, vertical ``fov`` (degrees), clip planes, and
    the depth file format (``None``: no depth)."""

    width: int
    height: int
    fov: float
    near: float = 0.1
    far: float = 20.0
    depth: Optional[str] = None

    def __post_init__(self) -> None:
        if self.depth is not None and self.depth not in DEPTH_FORMATS:
            raise ValueError(f"depth format must be one of {DEPTH_FORMATS}, got "
                             f"{self.depth!r}")


def image_path(i: int) -> str:
    return f"images/{i:05d}.png"


def depth_path(i: int, fmt: str) -> str:
    return f"depth/{i:05d}.{'npy' if fmt == 'npy' else 'png'}"


def camera_to_world(pose: Pose) -> List[List[float]]:
    """The 4x4 camera-to-world matrix (rows) of ``pose``.

    >>> camera_to_world(Pose((1.0, 2.0, 3.0), (1.0, 0.0, 0.0, 0.0)))[0]
    [1.0, 0.0, 0.0, 1.0]
    """
    w, x, y, z = pose.wxyz
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    rot = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return [[float(v) for v in rot[i]] + [float(pose.position[i])] for i in range(3)] + [
        [0.0, 0.0, 0.0, 1.0]]


def transforms(cfg: Config, poses: Sequence[Pose]) -> Dict[str, Any]:
    """``transforms.json`` for ``poses`` (every pose: one frame each)."""
    fy = (cfg.height / 2) / math.tan(math.radians(cfg.fov) / 2)
    out: Dict[str, Any] = {
        "camera_angle_x": 2 * math.atan((cfg.width / 2) / fy),
        "camera_angle_y": math.radians(cfg.fov),
        "fl_x": fy, "fl_y": fy, "cx": cfg.width / 2, "cy": cfg.height / 2,
        "w": cfg.width, "h": cfg.height,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "camera_convention": "OpenGL/three.js: the camera looks along -Z, +Y up; "
                             "transform_matrix is camera-to-world, rows",
    }
    if cfg.depth is not None:
        out["depth"] = {
            "format": cfg.depth, "near": cfg.near, "far": cfg.far,
            "resolution_m": (cfg.far - cfg.near) / 255,
            "units": ("16-bit PNG, millimetres: metres = value * integer_depth_scale; "
                      "0 = nothing within far") if cfg.depth == "png16" else
                     "float32 metres; 0 = nothing within far",
        }
        if cfg.depth == "png16":
            out["integer_depth_scale"] = DEPTH_SCALE
    frames = []
    for i, pose in enumerate(poses):
        f: Dict[str, Any] = {"file_path": image_path(i),
                             "transform_matrix": camera_to_world(pose)}
        if cfg.depth is not None:
            f["depth_file_path"] = depth_path(i, cfg.depth)
        frames.append(f)
    out["frames"] = frames
    return out


def manifest(cfg: Config, poses: Sequence[Pose]) -> Dict[str, Any]:
    """``capture.json``: the configuration and every pose (a resumed run must match)."""
    return {"config": asdict(cfg),
            "poses": [{"position": list(p.position), "wxyz": list(p.wxyz)} for p in poses]}


def depth_metres(d8: np.ndarray, near: float, far: float) -> np.ndarray:
    """The web client's 8-bit depth as float32 metres (0 where it shows nothing).

    >>> d = depth_metres(np.array([[255, 0, 128]], np.uint8), 0.1, 20.1)
    >>> [round(float(v), 2) for v in d[0]]
    [0.1, 0.0, 10.06]
    """
    v = d8.astype(np.float32)
    z = near + (1.0 - v / 255.0) * (far - near)
    return np.where(d8 > 0, z, 0.0).astype(np.float32)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent or complete: a
    temporary file in the same folder, flushed, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def scan_done(out: Path, n: int, depth: Optional[str]) -> Set[int]:
    """The poses whose files are all on disk (an interrupted run's leftover temporary
    files are removed). The RGB image is written last, so it marks a complete frame."""
    for folder in ("images", "depth"):
        for tmp in (out / folder).glob(".*.tmp") if (out / folder).is_dir() else ():
            tmp.unlink(missing_ok=True)
    done = set()
    for i in range(n):
        if not (out / image_path(i)).is_file():
            continue
        if depth is not None and not (out / depth_path(i, depth)).is_file():
            continue
        done.add(i)
    return done
