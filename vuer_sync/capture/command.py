"""``vuer-sync capture``: a pose sweep of a scene, rendered by headless pages, to disk.

    vuer-sync capture examples/dataset_capture.py:scene --n 200 --pages 2 --out captures/
    vuer-sync capture mypkg.scenes:kitchen --n 500 --depth png16 --resume --out kitchen/
    vuer-sync capture scene.json --n 100 --out captures/

``SCENE`` is a Python entry point, ``module:function`` or ``path/to/file.py:function``, whose
function returns the scene (a ``Scene``/``DefaultScene``), or a ``.json`` file holding a
scene's wire map (what ``Scene(...).serialize()`` gives). Poses: ``--n`` on a circle of
``--radius`` at height ``--elevation`` around ``--target``, looking at it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "load_scene", "run"]


def load_scene(spec: str) -> Any:
    """The scene named by ``spec`` (see the module's docstring)."""
    if spec.endswith(".json"):
        from ..events import Set

        return Set(json.loads(Path(spec).read_text()))
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"scene {spec!r}: expected module:function, file.py:function or a "
                         f".json file")
    if where.endswith(".py"):
        path = Path(where)
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ValueError(f"cannot load {where}")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)()


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``capture`` on an ``add_subparsers()`` object."""
    p = sub.add_parser("capture", help="render a pose sweep of a scene in headless pages "
                                       "to PNGs + transforms.json (NeRF layout)")
    add_arguments(p)
    p.add_argument("scene", help="module:function, file.py:function (returns the scene), "
                                 "or a scene .json")
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The capture options (shared with ``examples/dataset_capture.py``)."""
    p.add_argument("--out", type=Path, default=Path("captures"), help="output folder")
    p.add_argument("--n", type=int, default=12, help="number of poses on the circle")
    p.add_argument("--pages", type=int, default=2, help="headless pages rendering at once")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fov", type=float, default=50.0, help="vertical field of view, degrees")
    p.add_argument("--radius", type=float, default=5.0)
    p.add_argument("--elevation", type=float, default=2.5, help="camera height")
    p.add_argument("--target", type=float, nargs=3, default=[0.0, 0.6, 0.0],
                   help="the point every camera looks at")
    p.add_argument("--depth", choices=("png16", "npy"), default=None,
                   help="also write depth: 16-bit PNG in mm, or .npy float32 metres")
    p.add_argument("--near", type=float, default=0.1)
    p.add_argument("--far", type=float, default=20.0)
    p.add_argument("--quality", type=float, default=0.9, help="the browser's JPEG quality")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted capture in --out (same settings)")
    p.add_argument("--chromium", default=None, help="Chromium binary (default "
                                                     "/usr/bin/chromium or VUER_SYNC_CHROMIUM)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per frame at most")


def run(args: argparse.Namespace, scene: Any = None) -> int:
    """Run a parsed ``capture`` command; ``scene``: instead of ``args.scene``."""
    from .dataset import capture_scene
    from .headless import DEFAULT_CHROMIUM, headless_problem
    from .pose import circle_poses

    if args.n < 1 or args.pages < 1:
        print("vuer-sync capture: --n and --pages must be at least 1", file=sys.stderr)
        return 2
    problem = headless_problem(args.chromium or DEFAULT_CHROMIUM)
    if problem:
        print(f"vuer-sync capture: {problem}", file=sys.stderr)
        return 1
    if scene is None:
        scene = load_scene(args.scene)
    poses = circle_poses(args.n, args.radius, args.elevation, args.target)
    res = capture_scene(scene, poses, args.out, pages=args.pages, width=args.width,
                        height=args.height, fov=args.fov, near=args.near, far=args.far,
                        depth=args.depth, quality=args.quality, resume=args.resume,
                        progress=True, timeout=args.timeout, executable=args.chromium)
    stats = res["stats"]
    print(f"wrote {res['rendered']} frames ({res['skipped']} already there) and "
          f"transforms.json to {args.out} in {res['seconds']:.1f} s; "
          f"{stats['stale']} stale frame(s) caught and re-rendered, "
          f"{stats['dead_sessions']} page(s) lost")
    return 0
