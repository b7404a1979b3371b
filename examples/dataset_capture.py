"""Dataset capture: render an object from N camera poses on a circle, write PNGs and poses.

    python examples/dataset_capture.py --headless --pages 2 --n 200 --out captures/
    python examples/dataset_capture.py --headless --n 200 --out captures/ --resume   # finish it
    python examples/dataset_capture.py --n 36 --out captures/    # then open the printed URL

The poses are spread over ``--pages`` headless Chromium pages (or, without ``--headless``,
over the browsers connected when the capture starts) by ``vuer_sync.capture.RenderPool``:
each page always has a request in flight, and each frame carries a colour tag that proves it
was drawn from its own pose (a stale frame is rendered again; the tag is cropped away). The
output directory gets ``images/00000.png ...`` (``depth/...`` with ``--depth png16|npy``),
``transforms.json`` in the NeRF / instant-ngp convention (``camera_angle_x``, ``fl_x``,
``fl_y``, ``cx``, ``cy``, ``w``, ``h``; per frame ``file_path`` and the camera-to-world
``transform_matrix``, OpenGL/three.js camera: -Z forward, +Y up), and ``capture.json`` (the
settings, for ``--resume``). Each frame entry also keeps this example's earlier fields
(``file``, ``position``, ``wxyz``, ``look_at``; top-level ``intrinsics``).

``--headless`` starts Debian's Chromium through Playwright (``pip install
"vuer-sync[capture]"`` and ``apt-get install chromium``; no ``playwright install`` needed:
``--chromium`` points at the binary), offline, with software WebGL; both are checked before
the server starts. ``vuer-sync capture examples/dataset_capture.py:scene`` does the same
from the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Optional, Sequence

from vuer_sync import Vuer
from vuer_sync.capture import RenderPool, capture, circle_poses, headless_problem
from vuer_sync.capture.command import add_arguments
from vuer_sync.capture.command import run as run_headless
from vuer_sync.schemas import Box, DefaultScene, Sphere, TorusKnot


def scene() -> DefaultScene:
    """An object to capture: a flat red box with a lit sphere and torus knot around it."""
    return DefaultScene(
        Box(key="box", args=[1.2, 1.2, 1.2], position=[0, 0.6, 0], materialType="basic",
            material={"color": "red"}),
        Sphere(key="sphere", args=[0.5, 32, 16], position=[1.6, 0.5, 0.4],
               materialType="standard", material={"color": "#2a9d8f"}),
        TorusKnot(key="knot", args=[0.4, 0.12, 128, 16], position=[-1.5, 0.9, -0.6],
                  materialType="standard", material={"color": "#e9c46a"}),
    )


def intrinsics(width: int, height: int, fov_y_deg: float) -> dict:
    """Pinhole intrinsics in pixels for a vertical field of view (square pixels)."""
    fy = (height / 2) / math.tan(math.radians(fov_y_deg) / 2)
    return {"width": width, "height": height, "fov_y_deg": fov_y_deg,
            "fx": fy, "fy": fy, "cx": width / 2, "cy": height / 2}


def add_legacy_fields(args: argparse.Namespace) -> None:
    """This example's earlier transforms.json fields, next to the NeRF ones."""
    path = args.out / "transforms.json"
    meta = json.loads(path.read_text())
    meta["intrinsics"] = intrinsics(args.width, args.height, args.fov)
    for f, pose in zip(meta["frames"], circle_poses(args.n, args.radius, args.elevation,
                                                    args.target)):
        f.update(file=f["file_path"], position=list(pose.position), wxyz=list(pose.wxyz),
                 look_at=list(args.target))
    path.write_text(json.dumps(meta, indent=1))


def capture_from_browsers(args: argparse.Namespace) -> int:
    """Without --headless: the browsers connected when the capture starts render it."""
    app = Vuer(port=args.port if args.port is not None else 8012)
    app.start(block=False)
    try:
        app.scene.set @ scene()
        print(f"Open http://127.0.0.1:{app.port}/ in a browser to start the capture.",
              flush=True)
        app.wait_for_session(args.wait, client="browser")
        sessions = [s for s in app.sessions if s.init is not None]
        pool = RenderPool(sessions, width=args.width, height=args.height, fov=args.fov,
                          near=args.near, far=args.far, depth=args.depth is not None,
                          quality=args.quality, timeout=args.timeout)
        poses = circle_poses(args.n, args.radius, args.elevation, args.target)
        res = capture(pool, poses, args.out, resume=args.resume,
                      depth_format=args.depth or "png16", progress=True)
        print(f"wrote {res['rendered']} frames and transforms.json to {args.out}")
        return 0
    finally:
        app.stop()


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    p.add_argument("--headless", action="store_true", help="start headless Chromium here")
    p.add_argument("--port", type=int, default=None, help="without --headless: default 8012")
    p.add_argument("--wait", type=float, default=300.0, help="seconds to wait for a browser")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    if args.headless:
        problem = headless_problem(args.chromium or "/usr/bin/chromium")
        if problem:
            sys.exit(f"dataset_capture.py: {problem}")
        rc = run_headless(args, scene=scene())
    else:
        rc = capture_from_browsers(args)
    if rc == 0:
        add_legacy_fields(args)
    if rc:
        sys.exit(rc)


if __name__ == "__main__":
    main()
