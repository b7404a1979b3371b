"""Dataset capture at scale (``docs/recipes/dataset-capture.md``): a render pool over many
browser sessions, pipelined, with each frame proven drawn from its own pose, written
resumably in the NeRF / instant-ngp layout.

    from vuer_sync.capture import HeadlessPages, RenderPool, capture, circle_poses

``pose``, ``layout`` (``transforms.json``, atomic writes, the resume scan) and ``tag`` (the
freshness tag) are pure; ``pool`` (the worker threads), ``dataset`` (the writer),
``headless`` (Playwright + Debian's chromium) and ``command`` (``vuer-sync capture``) are
the shells. Names are imported on first use, so ``vuer-sync`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import capture, capture_scene
    from .headless import HeadlessPages, headless_problem
    from .layout import Config
    from .pool import Frame, RenderPool
    from .pose import Pose, circle_poses

_WHERE = {"capture": "dataset", "capture_scene": "dataset", "HeadlessPages": "headless",
          "headless_problem": "headless", "Config": "layout", "Frame": "pool",
          "RenderPool": "pool", "Pose": "pose", "circle_poses": "pose"}

__all__ = ["Config", "Frame", "HeadlessPages", "Pose", "RenderPool", "capture",
           "capture_scene", "circle_poses", "headless_problem"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
