"""Vuer scene elements: the element model and vuer 0.1.6's component catalogue.

Every class of ``vuer.schemas`` (0.1.6) exists here under the same name, with the
same tag and the same wire encoding, so ``element.serialize()`` (alias
``_serialize()``) gives the dict vuer would send. See ``docs/schemas.md`` for the
serialization rules, the catalogue and the deliberate differences from vuer.

>>> from vuer_sync.schemas import Box, DefaultScene
>>> DefaultScene(Box(key="box", args=[1, 1, 1])).serialize()["children"]
[{'key': 'box', 'tag': 'Box', 'args': [1, 1, 1]}]
"""

from __future__ import annotations

from typing import Dict, List, Tuple, Type

from . import components as _components
from .base import BlockElement, Element, ModelNode, SceneElement
from .base import auto_key as auto_key
from .base import to_wire as to_wire
from .components import *  # noqa: F403 -- the generated catalogue (components.COMPONENTS)
from .encoding import IMAGE_FORMATS as IMAGE_FORMATS
from .scene import DEFAULT_BG_CHILDREN as DEFAULT_BG_CHILDREN
from .scene import SCENE_LISTS as SCENE_LISTS
from .scene import DefaultScene, Scene
from .scene import scene_for_set as scene_for_set

#: every element class name of vuer.schemas 0.1.6 (aliases ``Header`` and ``p`` included)
ELEMENT_NAMES: Tuple[str, ...] = (
    "Element", "BlockElement", "SceneElement", "ModelNode", *_components.COMPONENTS,
    "Scene", "DefaultScene",
)
#: name -> class, for every name in ELEMENT_NAMES
CATALOGUE: Dict[str, Type[Element]] = {
    **_components.CATALOGUE, "Element": Element, "BlockElement": BlockElement,
    "SceneElement": SceneElement, "ModelNode": ModelNode, "Scene": Scene,
    "DefaultScene": DefaultScene,
}

_HELPERS = (
    "scene_for_set", "SCENE_LISTS", "DEFAULT_BG_CHILDREN", "CATALOGUE", "ELEMENT_NAMES",
    "IMAGE_FORMATS", "auto_key", "to_wire",
)
__all__: List[str] = list(ELEMENT_NAMES + _HELPERS)
