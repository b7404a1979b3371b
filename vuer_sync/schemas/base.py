"""The element model: :class:`Element` and how an element becomes a wire dict.

An element is a node of the Vuer scene tree. Its wire form is a plain dict
(``{"key": ..., "tag": ..., **props}``) that the web client turns into a React
component. The rules below reproduce ``vuer`` 0.1.6's ``Element._serialize()``
key for key and in the same order; the few deliberate differences are listed in
``docs/schemas.md``.
"""

from __future__ import annotations

import itertools
import numbers
import os
import threading
from pathlib import PurePath
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import numpy as np

from ..codec import LARGE_BINARY, note_large

__all__ = ["Element", "BlockElement", "SceneElement", "ModelNode", "to_wire", "auto_key",
           "check_transforms", "TRANSFORM_PROPS"]

# --------------------------------------------------------------------------- auto keys
# vuer uses a process-global counter ("0", "1", ...), which collides with user keys
# such as "1" (wire-protocol bug #21). Ours carry the tag, a random per-process
# prefix and a counter: "box-3f9a0c1e-0". A user key can only collide by spelling
# out this exact shape, and two processes collide only if their 32-bit prefixes do.
_AUTO_PREFIX = os.urandom(4).hex()
_auto_counter = itertools.count()
_auto_lock = threading.Lock()


def auto_key(tag: str) -> str:
    """Return a new process-unique key for an element of type ``tag``.

    >>> auto_key("Box").startswith("box-")
    True
    """
    with _auto_lock:
        n = next(_auto_counter)
    return f"{tag.lower()}-{_AUTO_PREFIX}-{n}"


# --------------------------------------------------------------------------- props
_PLAIN = frozenset({str, int, float, bool, type(None)})


def to_wire(value: Any) -> Any:
    """Convert one prop value to what msgpack can pack, recursively.

    numpy arrays and scalars (incl. ``np.bool_``) -> ``tolist()``; tuples -> lists;
    paths -> str; dicts recursed; bytes kept (msgpack bin); elements (ours, or any
    object with ``_serialize``) -> their serialized dict; sets -> lists.

    >>> import numpy as np
    >>> to_wire({"p": np.array([1.5, 2.0]), "ok": np.bool_(True), "t": (1, 2)})
    {'p': [1.5, 2.0], 'ok': True, 't': [1, 2]}
    """
    t = type(value)
    if t in _PLAIN:
        return value
    if t is bytes:
        if len(value) >= LARGE_BINARY:
            note_large()  # the message is sent with this value by reference
        return value
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        plain = _PLAIN  # positions, rotations, colours: no call per number
        return [v if type(v) in plain else to_wire(v) for v in value]
    if isinstance(value, Element):
        return value.serialize()
    if hasattr(value, "tolist"):  # numpy arrays / scalars, array.array, torch tensors
        return value.tolist()
    if isinstance(value, str):  # str subclasses (vuer's Url, str-Enums): their content
        return str.__str__(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return [to_wire(v) for v in value]
    ser = getattr(value, "_serialize", None)  # elements of the real vuer package
    if callable(ser):
        return ser()
    return value


# --------------------------------------------------------------------------- transforms
#: the transform props checked when an element is made: name -> accepted lengths
TRANSFORM_PROPS: Dict[str, Tuple[int, ...]] = {
    "position": (3,),  # [x, y, z]
    "rotation": (3,),  # Euler angles [x, y, z] in radians (three.js; an order string may follow)
    "scale": (3, 1),  # [x, y, z], or one number for all three (three.js setScalar)
    "quaternion": (4,),  # [x, y, z, w] (three.js order)
}
_TRANSFORM_HINT = {
    "position": "3 numbers [x, y, z]",
    "rotation": "3 numbers [x, y, z] (Euler angles, radians)",
    "scale": "3 numbers [x, y, z] or one number",
    "quaternion": "4 numbers [x, y, z, w]",
}
_NUMBER = frozenset({int, float})


def _is_number(v: Any) -> bool:
    return type(v) in _NUMBER or isinstance(v, numbers.Real)  # numpy scalars, bool, fractions


def _transform_ok(name: str, value: Any) -> bool:
    """Whether ``value`` has a shape the web client can apply to ``name``."""
    t = type(value)
    if t is list or t is tuple:
        n = len(value)
        if n == 4 and name == "rotation" and isinstance(value[3], str):
            value, n = value[:3], 3  # [x, y, z, "XYZ"]: three.js Euler with its order
        if n not in TRANSFORM_PROPS[name] or n == 1:
            return False
        for v in value:
            if type(v) not in _NUMBER and not _is_number(v):
                return False
        return True
    if value is None:
        return True  # not set: the client's default
    if t in _NUMBER or (t is not str and _is_number(value)):
        return name == "scale"
    shape = getattr(value, "shape", None)  # numpy arrays, torch tensors
    if shape is not None and hasattr(value, "tolist"):
        kind = getattr(getattr(value, "dtype", None), "kind", "f")
        if shape == () and kind in "biuf":
            return name == "scale"
        return len(shape) == 1 and shape[0] in TRANSFORM_PROPS[name] and shape[0] != 1 \
            and kind in "biuf"
    return False


#: (name, common length) of the transform props, for the fast path of check_transforms
_COMMON = (("position", 3), ("rotation", 3), ("scale", 3), ("quaternion", 4))


def check_transforms(element: Element, props: Dict[str, Any], _common: Any = _COMMON,
                     _number: Any = _NUMBER, _ndarray: Any = np.ndarray) -> None:
    """``ValueError`` naming the element and the prop when one of ``position``,
    ``rotation``, ``scale``, ``quaternion`` in ``props`` has the wrong shape (a string, two
    numbers, a 3x3 matrix...): the web client would drop the element silently.

    Accepted: a list, tuple or 1-D numpy array of numbers of the right length (see
    :data:`TRANSFORM_PROPS`), one number for ``scale``, ``None`` (not set). The common
    cases (plain ``int``/``float`` lists, float arrays) cost a few hundred nanoseconds.

    >>> from vuer_sync.schemas import Box
    >>> try:
    ...     Box(key="b", position="x")
    ... except ValueError as e:
    ...     print(e)
    Box(key='b'): position must be 3 numbers [x, y, z] (a list, tuple or numpy array), got str 'x'
    """
    for name, n in _common:
        value = props.get(name)
        if value is None:
            continue
        t = type(value)
        if t is list or t is tuple:  # the hot path: plain numbers, right length
            if len(value) == n and _number.issuperset(map(type, value)):
                continue
        elif t is _ndarray:
            if value.shape == (n,) and value.dtype.kind in "biuf":
                continue
        if not _transform_ok(name, value):
            _raise_transform(element, name, value)


def _raise_transform(element: Element, name: str, value: Any) -> None:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:60] + "..."
    shape = getattr(value, "shape", None)
    got = f"an array of shape {tuple(shape)}" if shape is not None else \
        f"{type(value).__name__} {shown}"
    raise ValueError(
        f"{type(element).__name__}(key={element.__dict__.get('key')!r}): {name} "
        f"must be {_TRANSFORM_HINT[name]} (a list, tuple or numpy array), got {got}")


def _child_to_wire(child: Any) -> Any:
    if isinstance(child, (str, dict)):
        return child  # verbatim, as vuer does
    if isinstance(child, Element):
        return child.serialize()
    return to_wire(child)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


# --------------------------------------------------------------------------- Element
class Element:
    """Base class of every Vuer component.

    ``Element(*children, key=None, **props)``: positional arguments are children,
    keyword arguments are props sent to the web client as they are (after
    :func:`to_wire`). The key defaults to the class's ``key`` (e.g.
    ``GrabRender.key == "DEFAULT"``) and otherwise to a fresh unique
    :func:`auto_key`. Class attributes other than ``tag`` and ``key`` are
    documentation of the client's defaults and are never sent.

    Props are plain instance attributes, so ``box.position = [0, 1, 0]`` followed
    by another ``upsert`` sends the new value. Attributes whose name starts with
    ``_`` are private and never sent.

    >>> from vuer_sync.schemas import Box, Group
    >>> g = Group(Box(key="b", args=(1, 2, 3)), key="g", position=[0, 1, 0])
    >>> g.serialize()["children"], g.serialize()["position"]
    ([{'key': 'b', 'tag': 'Box', 'args': [1, 2, 3]}], [0, 1, 0])
    """

    tag: ClassVar[str] = "div"
    key: Optional[str] = None
    children: List[Any]

    #: attributes holding lists of child elements; omitted from the wire when empty
    _child_lists: ClassVar[Tuple[str, ...]] = ("children",)

    def __init__(self, *children: Any, key: Optional[str] = None, **props: Any) -> None:
        d = self.__dict__
        # Attributes a subclass set before calling us (e.g. span.text) stay first,
        # as in vuer; so do positional children.
        pre = {k: v for k, v in d.items() if not k.startswith("_")} if d else {}
        if children:
            d["children"] = list(children)
            pre["children"] = d["children"]
        d["key"] = key or d.get("key") or type(self).key or auto_key(self.tag)
        d["tag"] = self.tag
        if "children" in props:
            if props["children"] is None:  # not given (vuer would send null)
                del props["children"]
            else:
                props["children"] = _as_list(props["children"])
                if not props["children"]:
                    self._mark_explicit("children")  # vuer sends `children=[]` as []
        if "position" in props or "rotation" in props or "scale" in props \
                or "quaternion" in props:
            check_transforms(self, props)  # a wrong shape would blank the element silently
        d.update(props)
        d.setdefault("children", [])
        if type(self).__post_init__ is not Element.__post_init__:  # skip the no-op hook
            self.__post_init__(**{**pre, **props})

    def __post_init__(self, **kwargs: Any) -> None:
        """Hook for subclasses, called with every prop once they are set."""

    def _mark_explicit(self, name: str) -> None:
        self.__dict__.setdefault("_explicit_empty", set()).add(name)

    def serialize(self, *, explicit_lists: bool = False) -> Dict[str, Any]:
        """Return the wire dict of this element (children serialized recursively).

        Empty child lists (``children``, and a Scene's ``bgChildren``,
        ``rawChildren``, ``htmlChildren``) are omitted, as vuer does, unless
        ``explicit_lists=True`` (applies to this element only, not to its
        descendants) or the empty list was passed explicitly as a keyword.
        """
        out: Dict[str, Any] = {}
        lists = self._child_lists
        explicit = self.__dict__.get("_explicit_empty", ())
        plain = _PLAIN
        for name, value in self.__dict__.items():
            if type(value) in plain:
                if name[:1] != "_":
                    out[name] = value
            elif name[:1] == "_":
                continue
            elif name in lists and isinstance(value, (list, tuple)):
                items = [_child_to_wire(c) for c in value if c is not None] if value else []
                if items or explicit_lists or name in explicit:
                    out[name] = items
            elif type(value) is list:  # positions, rotations, colours: a copy, no call
                for v in value:
                    if type(v) not in plain:
                        out[name] = to_wire(value)
                        break
                else:
                    out[name] = value[:]
            else:
                out[name] = to_wire(value)
        return out

    def _serialize(self) -> Dict[str, Any]:
        """Alias of :meth:`serialize`, for code written against vuer."""
        return self.serialize()

    def __repr__(self) -> str:
        props = ", ".join(
            f"{k}={v!r}" for k, v in self.__dict__.items()
            if not k.startswith("_") and k not in ("tag", "children")
        )
        n = len(self.__dict__.get("children") or ())
        return f"{type(self).__name__}({props}{f', <{n} children>' if n else ''})"


class BlockElement(Element):
    """An element that takes children (kept for parity with vuer's class tree)."""


class SceneElement(BlockElement):
    """Base class of 3D scene components."""


class ModelNode(SceneElement):
    """Base class of the model loaders (``Obj``, ``Glb``, ``Urdf``, ...)."""
