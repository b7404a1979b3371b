"""The scene root: :class:`Scene`, :class:`DefaultScene` and :func:`scene_for_set`."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .base import BlockElement, Element, _as_list
from .components import (
    CameraPreviewOverlay,
    CameraPreviewThumbs,
    Gamepad,
    Grid,
    Hands,
    HemisphereLightStage,
    MotionControllers,
    SceneCamera,
    SceneCameraControl,
)

__all__ = ["Scene", "DefaultScene", "scene_for_set", "SCENE_LISTS", "DEFAULT_BG_CHILDREN"]

#: the Scene's child lists; the web client's SET shallow-merges these into its store
SCENE_LISTS: Tuple[str, ...] = ("children", "rawChildren", "bgChildren", "htmlChildren")

# optional top-level props, sent only when not None (background: only when truthy)
_OPTIONAL = ("toneMapping", "toneMappingExposure", "frameloop", "camPosition", "camRotation")


class Scene(BlockElement):
    """The root of a Vuer scene, sent with ``SET``.

    ``children`` are the scene's nodes; ``bgChildren`` are background helpers
    (lights, grid, cameras, input); ``rawChildren`` are rendered outside the
    scene's wrappers; ``htmlChildren`` are DOM overlays. ``up`` is always sent.

    Empty lists are omitted, exactly as vuer does. Because the web client merges a
    ``SET`` shallowly into its scene store, an omitted list keeps its old content:
    ``set @ Scene()`` after a populated scene does not clear it (wire-protocol bug
    #18). Use ``scene.serialize(explicit_lists=True)`` or :func:`scene_for_set` to
    send every list explicitly (``[]`` when empty).

    >>> from vuer_sync.schemas import Box, Scene
    >>> Scene(Box(key="b"), key="s").serialize()
    {'children': [{'key': 'b', 'tag': 'Box'}], 'key': 's', 'tag': 'Scene', 'up': [0, 1, 0]}
    >>> Scene(key="s").serialize(explicit_lists=True)["bgChildren"]
    []
    """

    tag = "Scene"
    _child_lists = SCENE_LISTS

    def __init__(
        self,
        *children: Any,
        rawChildren: Any = None,
        htmlChildren: Optional[Sequence[Any]] = None,
        bgChildren: Optional[Sequence[Any]] = None,
        up: Sequence[float] = (0, 1, 0),
        background: Any = None,
        toneMapping: Optional[str] = None,
        toneMappingExposure: Optional[float] = None,
        frameloop: Optional[str] = None,
        camPosition: Optional[Sequence[float]] = None,
        camRotation: Optional[Sequence[float]] = None,
        key: Optional[str] = None,
        **props: Any,
    ) -> None:
        super().__init__(*children, key=key, up=list(up) if isinstance(up, tuple) else up,
                         **props)
        d = self.__dict__
        d["bgChildren"] = _as_list(bgChildren)
        d["rawChildren"] = _as_list(rawChildren)
        d["htmlChildren"] = _as_list(htmlChildren)
        if isinstance(rawChildren, list) and not rawChildren:
            self._mark_explicit("rawChildren")  # vuer sends rawChildren=[] as []
        if background:
            d["background"] = background
        values = (toneMapping, toneMappingExposure, frameloop, camPosition, camRotation)
        for name, value in zip(_OPTIONAL, values):
            if value is not None:
                d[name] = value


#: DefaultScene's background children, in order: (class, props)
DEFAULT_BG_CHILDREN: Tuple[Tuple[type, Dict[str, Any]], ...] = (
    (HemisphereLightStage, {"key": "light-stage"}),
    (Gamepad, {"key": "gamepad-0", "index": 0}),
    (Hands, {"fps": 30, "stream": True, "key": "hands"}),
    (MotionControllers, {"fps": 30, "stream": True, "key": "motion-controllers"}),
    (SceneCamera, {"key": "SceneCamera", "position": [0, 5, 10]}),
    (SceneCameraControl, {"key": "SceneCameraControl", "makeDefault": True}),
    (CameraPreviewThumbs, {"key": "CameraPreviewThumbs"}),
    (CameraPreviewOverlay, {"key": "CameraPreviewOverlay"}),
)


class DefaultScene(Scene):
    """A :class:`Scene` with vuer's default background children.

    ``bgChildren`` = ``Grid(key="grid")`` (unless ``grid=False``), then
    :data:`DEFAULT_BG_CHILDREN` (light stage, gamepad, hands, motion controllers,
    scene camera and its control, camera previews), then the user's
    ``bgChildren``. Note that the web client does not stream ``CAMERA_MOVE`` for
    this camera control (no ``stream=True``), and ``GrabRender`` is not included:
    add ``GrabRender()`` yourself to use ``grab_render``.

    >>> from vuer_sync.schemas import Box, DefaultScene, GrabRender
    >>> d = DefaultScene(Box(key="box"), GrabRender(), grid=False).serialize()
    >>> [c["key"] for c in d["children"]], d["bgChildren"][0]["key"]
    (['box', 'DEFAULT'], 'light-stage')
    """

    def __init__(
        self,
        *children: Any,
        rawChildren: Any = None,
        htmlChildren: Optional[Sequence[Any]] = None,
        bgChildren: Optional[Sequence[Any]] = None,
        up: Sequence[float] = (0, 1, 0),
        grid: bool = True,
        **props: Any,
    ) -> None:
        bg: List[Any] = [Grid(key="grid")] if grid else []
        bg += [cls(**copy.deepcopy(kw)) for cls, kw in DEFAULT_BG_CHILDREN]
        bg += _as_list(bgChildren)
        super().__init__(*children, rawChildren=rawChildren, htmlChildren=htmlChildren,
                         bgChildren=bg, up=up, **props)


def scene_for_set(scene: Any) -> Dict[str, Any]:
    """Return the wire dict of ``scene`` with every Scene list present (``[]`` when
    empty), so that a ``SET`` really replaces the client's scene (bug #18).

    ``scene`` may be one of our elements, an element of the real ``vuer`` package
    (anything with ``_serialize``), or an already-serialized dict (copied, not
    modified). Missing lists are appended at the end of the dict.

    >>> scene_for_set({"key": "s", "tag": "Scene", "up": [0, 1, 0]})["children"]
    []
    """
    if isinstance(scene, Element):
        out = scene.serialize(explicit_lists=True)
    elif isinstance(scene, dict):
        out = dict(scene)
    elif callable(getattr(scene, "_serialize", None)):  # a vuer element: vuer serializes it
        from vuer.serdes import serializer

        out = dict(serializer(scene))
    else:
        raise TypeError(f"expected a Scene element or dict, got {type(scene).__name__}")
    for name in SCENE_LISTS:
        out.setdefault(name, [])
    return out
