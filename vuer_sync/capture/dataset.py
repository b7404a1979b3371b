"""Write a pose sweep to disk: :func:`capture` (any :class:`RenderPool`) and
:func:`capture_scene` (a scene, a server and headless pages of its own, all in one call).

    stats = capture(pool, circle_poses(500), Path("out"), resume=True, progress=True)

Frames are encoded and written by a few threads while the pool renders the next ones; each
file is written atomically (:func:`~vuer_sync.capture.layout.atomic_write`), the RGB image
last, so an interrupted run leaves only complete frames, and ``resume=True`` renders just the
poses whose files are missing. ``transforms.json`` is written (atomically) at the end.
"""

from __future__ import annotations

import io
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .layout import (
    DEPTH_SCALE,
    Config,
    atomic_write,
    depth_metres,
    depth_path,
    image_path,
    manifest,
    scan_done,
    transforms,
)
from .pool import Frame, RenderPool
from .pose import Pose

__all__ = ["capture", "capture_scene"]

logger = logging.getLogger("vuer_sync.capture")


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _write_frame(out: Path, cfg: Config, frame: Frame) -> None:
    """Depth first, then the RGB image: the image's presence marks a complete frame."""
    if cfg.depth is not None:
        if frame.depth is None:
            raise ValueError("capture: depth requested but the frame has none")
        metres = depth_metres(frame.depth, cfg.near, cfg.far)
        if cfg.depth == "npy":
            buf = io.BytesIO()
            np.save(buf, metres)
            data = buf.getvalue()
        else:
            data = _png(np.round(metres / DEPTH_SCALE).astype(np.uint16))
        atomic_write(out / depth_path(frame.index, cfg.depth), data)
    atomic_write(out / image_path(frame.index), _png(frame.rgb))


def capture(pool: RenderPool, poses: Sequence[Pose], out: Path, *, resume: bool = False,
            depth_format: str = "png16", progress: bool = False, writers: int = 2,
            extra: Optional[Callable[[int, Pose], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Render every pose of ``poses`` on ``pool`` into ``out`` (the layout of
    :mod:`vuer_sync.capture.layout`); return counts: ``rendered``, ``skipped`` (already on
    disk), ``seconds``, and the pool's ``stats``.

    A folder that already holds a capture raises ``FileExistsError`` unless ``resume`` is
    set, and a resumed capture must ask for the same size, camera and poses
    (``ValueError`` otherwise). ``extra(index, pose)``: more keys for that frame's entry
    in ``transforms.json`` (labels, the pose in another form)."""
    out = Path(out)
    cfg = Config(pool.width, pool.height, pool.fov, pool.near, pool.far,
                 depth_format if pool.depth else None)
    wanted = manifest(cfg, poses)
    mpath = out / "capture.json"
    if mpath.exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a capture (pass resume=True, "
                                  f"--resume, to finish it, or pick another folder)")
        if json.loads(mpath.read_text()) != json.loads(json.dumps(wanted)):
            raise ValueError(f"{out} holds a capture of other poses or another camera; "
                             f"resume only with the same settings")
    else:
        atomic_write(mpath, json.dumps(wanted).encode())
    done = scan_done(out, len(poses), cfg.depth) if resume else set()
    todo = [i for i in range(len(poses)) if i not in done]
    started = time.monotonic()
    pending: List[Future] = []
    with ThreadPoolExecutor(max(1, writers), thread_name_prefix="vuer_sync-capture-write") as ex:
        for frame in pool.render(poses, todo, progress=progress):
            pending.append(ex.submit(_write_frame, out, cfg, frame))
            if len(pending) > 4 * writers:  # bounded: frames waiting to be written
                pending.pop(0).result()
        for f in pending:
            f.result()
    meta = transforms(cfg, poses)
    if extra is not None:
        for i, (f, pose) in enumerate(zip(meta["frames"], poses)):
            f.update(extra(i, pose))
    atomic_write(out / "transforms.json", json.dumps(meta, indent=1).encode())
    return {"rendered": len(todo), "skipped": len(done),
            "seconds": time.monotonic() - started, "stats": dict(pool.stats)}


def capture_scene(scene: Any, poses: Sequence[Pose], out: Path, *, pages: int = 2,
                  width: int = 640, height: int = 480, fov: float = 50.0, near: float = 0.1,
                  far: float = 20.0, depth: Optional[str] = None, quality: float = 0.9,
                  resume: bool = False, progress: bool = False, timeout: float = 30.0,
                  executable: Optional[str] = None, port: int = 0,
                  extra: Optional[Callable[[int, Pose], Dict[str, Any]]] = None
                  ) -> Dict[str, Any]:
    """Serve ``scene`` (a ``Scene``/``DefaultScene``) on a server of its own, start
    ``pages`` headless Chromium pages on it, and :func:`capture` ``poses`` into ``out``.
    ``depth``: ``None``, ``"png16"`` or ``"npy"``. Everything is stopped on return."""
    from ..events import ServerEvent
    from ..server import Vuer
    from .headless import DEFAULT_CHROMIUM, HeadlessPages

    app = Vuer(port=port)
    app.start(block=False)
    try:
        if isinstance(scene, ServerEvent):  # a Set of a scene's wire map (a .json scene)
            app.scene.send(scene)
        else:
            app.scene.set @ scene
        with HeadlessPages(app, pages, executable=executable or DEFAULT_CHROMIUM) as hp:
            pool = RenderPool(hp.sessions, width=width, height=height, fov=fov, near=near,
                              far=far, depth=depth is not None, quality=quality,
                              timeout=timeout)
            return capture(pool, poses, out, resume=resume, depth_format=depth or "png16",
                           progress=progress, extra=extra)
    finally:
        app.stop()
