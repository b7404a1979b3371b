"""Freshness proof for posed frames: a colour tag, drawn in the frame, that names the pose.

The Vuer web client's answer to ``GRAB_RENDER`` carries no camera matrix, no frame counter
and no render timestamp (``value = {dpr, width, height, frame[, depthFrame]}``; its ``ts`` is
the time of the answer, not of the pose). So the evidence is put in the picture itself: the
capture camera renders ``strip`` extra rows above and below the requested image (same focal
length, so the cropped middle is exactly the requested pinhole image), and four small flat
squares sit in the top strip, just beyond the near plane, in colours that encode the pose's
serial number on that page. The squares and the camera move in the same ``UPSERT``, so one
React commit applies both; a frame drawn before that commit shows the previous serial (or
no tag at all, since the squares are placed for the new pose), and is rejected. The strips
are cropped away: the tag never reaches the dataset.

Pure: numbers and arrays in, numbers, dicts and arrays out.

>>> g = TagGeometry(160, 120, fov=50.0)
>>> g.render_height, round(g.render_fov, 3)
(152, 61.137)
>>> img = np.zeros((152, 160, 3), np.uint8)
>>> paint_tag(img, g, 1234)
>>> read_tag(img, g)
1234
>>> check_tag(img, g, 1233)
False
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "CELLS", "CODES", "STRIP", "TagGeometry", "check_tag", "crop", "digits", "paint_tag",
    "read_tag", "tag_nodes",
]

STRIP = 16  # rows added above and below: one JPEG MCU row, so the tag never bleeds down
CELLS = 4  # coloured squares, each STRIP x STRIP pixels, from column STRIP on
BASE = 7  # colours per square: the 7 non-black corners of the RGB cube
CODES = BASE ** CELLS  # serials are taken modulo this (2401)


def digits(serial: int) -> List[int]:
    """The base-7 digits (most significant first) of ``serial % CODES``.

    >>> digits(8)
    [0, 0, 1, 1]
    """
    s = int(serial) % CODES
    out = []
    for _ in range(CELLS):
        out.append(s % BASE)
        s //= BASE
    return out[::-1]


def _rgb(digit: int) -> Tuple[int, int, int]:
    bits = digit + 1  # 1..7: never black, so an empty strip never reads as a code
    return (255 * (bits & 1), 255 * ((bits >> 1) & 1), 255 * ((bits >> 2) & 1))


class TagGeometry:
    """Where the tag goes for one capture configuration: ``width x height`` requested with
    vertical field of view ``fov`` (degrees); the camera renders ``width x render_height``
    with ``render_fov``, the same focal length ``fy`` in pixels."""

    def __init__(self, width: int, height: int, fov: float, near: float = 0.1):
        if width < STRIP * (CELLS + 2):
            raise ValueError(f"capture width must be at least {STRIP * (CELLS + 2)} pixels "
                             f"(the freshness tag needs it), got {width}")
        if height < 1 or not 0 < fov < 180:
            raise ValueError(f"bad capture size or fov: {height=}, {fov=}")
        self.width, self.height, self.fov, self.near = int(width), int(height), float(fov), \
            float(near)
        self.fy = (self.height / 2) / math.tan(math.radians(self.fov) / 2)
        self.render_height = self.height + 2 * STRIP
        self.render_fov = math.degrees(2 * math.atan((self.render_height / 2) / self.fy))
        self.distance = 1.5 * self.near  # just beyond the near plane: in front of the scene

    def cell_centres(self, scale: float = 1.0) -> List[Tuple[float, float]]:
        """Pixel ``(column, row)`` centres of the squares in a frame ``scale`` times the
        render size (a browser with ``devicePixelRatio`` 2 answers twice as large)."""
        return [(scale * STRIP * (1.5 + j), scale * STRIP / 2) for j in range(CELLS)]

    def camera_points(self) -> List[Tuple[float, float, float]]:
        """The squares' centres in camera coordinates (three.js: -Z forward, +Y up)."""
        d = self.distance
        out = []
        for u, v in self.cell_centres():
            x = (u - self.width / 2) / self.fy * d
            y = (self.render_height / 2 - v) / self.fy * d
            out.append((x, y, -d))
        return out

    def cell_size(self) -> float:
        """World size of one square: 3/4 of a strip, so its edges stay inside its block."""
        return 0.75 * STRIP / self.fy * self.distance


def _rotate(wxyz: Sequence[float], v: Sequence[float]) -> np.ndarray:
    w, x, y, z = (float(c) for c in wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    r = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    return r @ np.asarray(v, dtype=float)


def tag_nodes(geom: TagGeometry, serial: int, position: Sequence[float],
              wxyz: Sequence[float], rotation: Sequence[float], key: str) -> List[Dict[str, Any]]:
    """The squares as scene nodes (wire maps) for a camera at ``position``/``wxyz``
    (``rotation``: the same orientation as three.js Euler angles), keys ``key-0`` ...

    >>> nodes = tag_nodes(TagGeometry(160, 120, 50), 0, [0, 0, 5], [1, 0, 0, 0], [0, 0, 0], "t")
    >>> [n["key"] for n in nodes], nodes[0]["material"]["color"]
    (['t-0', 't-1', 't-2', 't-3'], '#ff0000')
    """
    size = geom.cell_size()
    p = np.asarray(position, dtype=float)
    nodes = []
    for j, (pt, dg) in enumerate(zip(geom.camera_points(), digits(serial))):
        world = p + _rotate(wxyz, pt)
        r, g, b = _rgb(dg)
        nodes.append({
            "key": f"{key}-{j}", "tag": "Plane", "args": [size, size],
            "position": [float(c) for c in world], "rotation": [float(c) for c in rotation],
            "materialType": "basic",
            "material": {"color": f"#{r:02x}{g:02x}{b:02x}", "toneMapped": False},
        })
    return nodes


def read_tag(frame: np.ndarray, geom: TagGeometry) -> Optional[int]:
    """The serial the frame's tag shows (``None``: no clear tag). ``frame``: the full
    rendered ``(render_height * s, width * s, 3)`` image, any scale ``s``."""
    scale = frame.shape[1] / geom.width
    half = max(1, round(scale * STRIP / 6))
    value = 0
    for u, v in geom.cell_centres(scale):
        c, r = int(u), int(v)
        patch = frame[max(0, r - half):r + half, max(0, c - half):c + half, :3]
        if patch.size == 0:
            return None
        mean = patch.reshape(-1, patch.shape[-1]).mean(axis=0)
        if np.any((mean > 70) & (mean < 150)):
            return None  # not a clear corner of the colour cube
        bits = int(mean[0] >= 150) | int(mean[1] >= 150) << 1 | int(mean[2] >= 150) << 2
        if bits == 0:
            return None
        value = value * BASE + (bits - 1)
    return value


def check_tag(frame: np.ndarray, geom: TagGeometry, serial: int) -> bool:
    """True when the frame shows the tag of ``serial`` (modulo :data:`CODES`)."""
    return read_tag(frame, geom) == int(serial) % CODES


def paint_tag(frame: np.ndarray, geom: TagGeometry, serial: int) -> None:
    """Draw the tag of ``serial`` into ``frame`` in place (for tests of :func:`read_tag`)."""
    for (u, _), dg in zip(geom.cell_centres(), digits(serial)):
        c = int(u - STRIP / 2)
        frame[2:STRIP - 2, c + 2:c + STRIP - 2] = _rgb(dg)


def crop(frame: np.ndarray, geom: TagGeometry) -> np.ndarray:
    """The requested ``height`` rows of a rendered frame (the strips cut off), resized to
    ``height x width`` when the browser answered at another scale."""
    scale = frame.shape[1] / geom.width
    top = round(scale * STRIP)
    rows = round(scale * geom.height)
    out = frame[top:top + rows]
    if out.shape[0] != geom.height or out.shape[1] != geom.width:
        from PIL import Image

        bilinear = getattr(Image, "Resampling", Image).BILINEAR
        out = np.asarray(Image.fromarray(np.ascontiguousarray(out)).resize(
            (geom.width, geom.height), bilinear))
    return np.ascontiguousarray(out)
