"""JSON-like value validation, copying and comparison used by the op handlers.

Every value stored in the scene graph is a plain JSON/msgpack value: ``None``, ``bool``,
``int``, finite ``float``, ``str``, ``list`` and ``dict`` with ``str`` keys.  Tuples and
numpy arrays/scalars are converted on the way in; anything else makes the op invalid.
"""

from __future__ import annotations

import math
import re
from typing import Any, List, Optional

from .common import REJECT

__all__ = [
    "as_color",
    "as_vector",
    "is_num",
    "json_copy",
    "json_same",
]

_MAX_DEPTH = 64
_HEX6 = re.compile(r"^#[0-9a-fA-F]{6}$")
_HEX3 = re.compile(r"^#[0-9a-fA-F]{3}$")


def is_num(v: Any) -> bool:
    """True for a finite ``int``/``float`` that is not a ``bool``."""
    t = type(v)
    if t is int:
        return True
    if t is float:
        return math.isfinite(v)
    return False


def json_copy(v: Any, _depth: int = 0) -> Any:
    """Deep-copy ``v`` as a plain JSON value, or return :data:`REJECT` if it is not one.

    >>> json_copy((1, 2.5, {"a": [True]}))
    [1, 2.5, {'a': [True]}]
    >>> json_copy(float("nan")) is REJECT
    True
    """
    if _depth > _MAX_DEPTH:
        return REJECT
    t = type(v)
    if v is None or t is bool or t is str or t is int:
        return v
    if t is float:
        return v if math.isfinite(v) else REJECT
    if t is list or t is tuple:
        out: List[Any] = []
        for x in v:
            c = json_copy(x, _depth + 1)
            if c is REJECT:
                return REJECT
            out.append(c)
        return out
    if t is dict:
        d = {}
        for k, x in v.items():
            if type(k) is not str:
                return REJECT
            c = json_copy(x, _depth + 1)
            if c is REJECT:
                return REJECT
            d[k] = c
        return d
    # numpy arrays / scalars and other "array-likes" with tolist()/item()
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return json_copy(float(v), _depth)
    if isinstance(v, str):
        return str(v)
    tolist = getattr(v, "tolist", None)
    if callable(tolist):
        return json_copy(tolist(), _depth)
    return REJECT


def json_same(a: Any, b: Any) -> bool:
    """Structural equality that keeps ``True`` and ``1`` apart (``1 == 1.0`` still holds)."""
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in (int, float) and tb in (int, float):
        return a == b
    if ta is not tb:
        return False
    if ta is list:
        return len(a) == len(b) and all(json_same(x, y) for x, y in zip(a, b))
    if ta is dict:
        return a.keys() == b.keys() and all(json_same(a[k], b[k]) for k in a)
    return bool(a == b)


def as_vector(v: Any, n: int) -> Optional[List[Any]]:
    """``v`` as a fresh list of ``n`` finite numbers, else ``None``."""
    if type(v) not in (list, tuple):
        conv = json_copy(v)
        if type(conv) is not list:
            return None
        v = conv
    if len(v) != n:
        return None
    out = []
    for x in v:
        if not is_num(x):
            x = json_copy(x)
            if not is_num(x):
                return None
        out.append(x)
    return out


def as_color(v: Any) -> Optional[str]:
    """Normalise ``#rgb``/``#rrggbb`` (any case) to lowercase ``#rrggbb``; else ``None``."""
    if type(v) is not str:
        return None
    if _HEX6.match(v):
        return v.lower()
    if _HEX3.match(v):
        r, g, b = v[1], v[2], v[3]
        return f"#{r}{r}{g}{g}{b}{b}".lower()
    return None
