"""Operation catalogue: validation, the property-register apply/rollback rules, and the
edit-buffer merge rule.

Every property op is folded into its ``(key, path)`` register in the documented total
order (see :mod:`vuer_sync.rtc.graph`).  A handler gets the current value (or
:data:`MISSING`) and returns ``(new_value, inverse)``, :data:`REJECT` (the op does not fit
the value's current type, or is malformed: it is skipped, identically on every replica) or
:data:`NOCHANGE`.  ``*.set`` ops may change the type of a path; every other op requires the
current value to have its dtype (or be missing, then the listed default is used).

>>> new, inv = apply_value(5, {"otype": "number.add", "value": 2}, "m:1/0", False)
>>> new
7
>>> apply_value("x", {"otype": "number.add", "value": 2}, "m:1/0", False) is REJECT
True
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Tuple

from .common import MISSING, NOCHANGE, REJECT
from .text import TEXT_OTYPES, text_apply, text_rollback
from .values import as_color, as_vector, is_num, json_copy

__all__ = [
    "INV_MISSING",
    "KEEP_WHEN_EXCLUDED",
    "MERGEABLE",
    "META_OTYPES",
    "NODE_OTYPES",
    "OTYPES",
    "TEXT_OTYPES",
    "VALUE_OTYPES",
    "VECTOR_OTYPES",
    "apply_value",
    "atoms_tuple",
    "hot_op",
    "merge_values",
    "normalize_op",
    "quat_mul",
    "rollback_value",
    "untracked_inv",
]

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: shared inverse "the property had no value" (saves a tuple per first write)
INV_MISSING = ("v", MISSING)

Handler = Callable[[Any, Dict[str, Any]], Any]


def _num_ok(r: Any) -> Any:
    if type(r) is int:
        return r if _INT_MIN <= r <= _INT_MAX else REJECT
    return r if math.isfinite(r) else REJECT


def quat_mul(a: List[Any], b: List[Any]) -> List[Any]:
    """Hamilton product ``a * b`` of ``[x, y, z, w]`` quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return [
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ]


# -- value checks per dtype (shared by edit-time validation and apply) -------------------
def _chk_num(v: Any) -> Any:
    return v if is_num(v) else REJECT


def _chk_vec(n: int) -> Callable[[Any], Any]:
    def chk(v: Any) -> Any:
        r = as_vector(v, n)
        return REJECT if r is None else r

    return chk


def _chk_str(v: Any) -> Any:
    return v if type(v) is str else REJECT


def _chk_bool(v: Any) -> Any:
    return v if type(v) is bool else REJECT


def _chk_color(v: Any) -> Any:
    r = as_color(v)
    return REJECT if r is None else r


def _chk_list(v: Any) -> Any:
    return json_copy(v) if type(v) in (list, tuple) else REJECT


def _chk_dict(v: Any) -> Any:
    return json_copy(v) if type(v) is dict else REJECT


_VEC3, _VEC4 = _chk_vec(3), _chk_vec(4)

#: otype -> value check for every property op that carries a typed ``value``.
VALUE_CHECK: Dict[str, Callable[[Any], Any]] = {
    "number.set": _chk_num,
    "number.add": _chk_num,
    "number.multiply": _chk_num,
    "number.min": _chk_num,
    "number.max": _chk_num,
    "vector3.set": _VEC3,
    "vector3.add": _VEC3,
    "vector3.multiply": _VEC3,
    "euler.set": _VEC3,
    "euler.add": _VEC3,
    "quaternion.set": _VEC4,
    "quaternion.multiply": _VEC4,
    "string.set": _chk_str,
    "string.concat": _chk_str,
    "boolean.set": _chk_bool,
    "boolean.or": _chk_bool,
    "boolean.and": _chk_bool,
    "color.set": _chk_color,
    "color.blend": _chk_color,
    "array.set": _chk_list,
    "array.push": json_copy,
    "array.remove": json_copy,
    "array.union": _chk_list,
    "object.set": _chk_dict,
    "object.merge": _chk_dict,
}

VALUE_OTYPES = frozenset(VALUE_CHECK)
NODE_OTYPES = frozenset({"node.insert", "node.remove", "node.move"})
META_OTYPES = frozenset({"meta.undo", "meta.redo", "meta.seal"})
#: Every otype accepted by :meth:`GraphStore.edit` (meta ops come from undo()/redo()).
OTYPES = VALUE_OTYPES | NODE_OTYPES | TEXT_OTYPES
#: Ops that still do something when their message is undone (hidden text characters).
KEEP_WHEN_EXCLUDED = frozenset({"text.insert", "text.replace"})


def _is_vec(v: Any, n: int) -> bool:
    return type(v) is list and len(v) == n and all(is_num(x) for x in v)


# -- handlers -------------------------------------------------------------------------
def _replace(check: Callable[[Any], Any]) -> Handler:
    def h(cur: Any, op: Dict[str, Any]) -> Any:
        v = check(op.get("value"))
        if v is REJECT:
            return REJECT
        return v, (INV_MISSING if cur is MISSING else ("v", cur))

    return h


def _numeric(default: Any, fn: Callable[[Any, Any], Any]) -> Handler:
    def h(cur: Any, op: Dict[str, Any]) -> Any:
        v = op.get("value")
        if not is_num(v):
            return REJECT
        if cur is MISSING:
            base = v if default is None else default
        elif is_num(cur):
            base = cur
        else:
            return REJECT
        r = _num_ok(fn(base, v))
        return REJECT if r is REJECT else (r, ("v", cur))

    return h


def _vector(n: int, default: List[Any], fn: Callable[[List[Any], List[Any]], List[Any]]) -> Handler:
    def h(cur: Any, op: Dict[str, Any]) -> Any:
        v = as_vector(op.get("value"), n)
        if v is None:
            return REJECT
        if cur is MISSING:
            base = default
        elif _is_vec(cur, n):
            base = cur
        else:
            return REJECT
        r = fn(base, v)
        if any(_num_ok(x) is REJECT for x in r):
            return REJECT
        return r, ("v", cur)

    return h


def _bool(default: bool, fn: Callable[[bool, bool], bool]) -> Handler:
    def h(cur: Any, op: Dict[str, Any]) -> Any:
        v = op.get("value")
        if type(v) is not bool:
            return REJECT
        if cur is MISSING:
            cur_v = default
        elif type(cur) is bool:
            cur_v = cur
        else:
            return REJECT
        return fn(cur_v, v), ("v", cur)

    return h


def _concat(cur: Any, op: Dict[str, Any]) -> Any:
    v, sep = op.get("value"), op.get("separator", "")
    if type(v) is not str or type(sep) is not str:
        return REJECT
    if cur is MISSING:
        return v, ("v", MISSING)
    if type(cur) is not str:
        return REJECT
    return (cur + sep + v if cur else v), ("trunc", len(cur))


def _blend(cur: Any, op: Dict[str, Any]) -> Any:
    v = as_color(op.get("value"))
    alpha = op.get("alpha", 0.5)
    if v is None or not is_num(alpha) or not 0 <= alpha <= 1:
        return REJECT
    if cur is MISSING:
        return v, ("v", MISSING)
    c = as_color(cur)
    if c is None:
        return REJECT
    out = "#"
    for i in (1, 3, 5):
        a, b = int(c[i : i + 2], 16), int(v[i : i + 2], 16)
        x = math.floor(a * (1 - alpha) + b * alpha + 0.5)
        out += f"{min(max(x, 0), 255):02x}"
    return out, ("v", cur)


def _push(cur: Any, op: Dict[str, Any]) -> Any:
    v = json_copy(op.get("value"))
    if v is REJECT:
        return REJECT
    if cur is MISSING:
        return [v], ("v", MISSING)
    if type(cur) is not list:
        return REJECT
    cur.append(v)
    return cur, ("pop",)


def _remove(cur: Any, op: Dict[str, Any]) -> Any:
    """``array.remove``: drop *every* element equal to ``value``, exactly as vuer-rtc 0.0.2
    (``[x for x in current if x != value]``, Python equality: ``1 == 1.0 == True``).  There
    is no first-only variant (it could not be expressed on the vuer-rtc wire)."""
    v = op.get("value")
    if cur is MISSING:
        return NOCHANGE
    if type(cur) is not list:
        return REJECT
    hits = [i for i, x in enumerate(cur) if x == v]
    if not hits:
        return NOCHANGE
    removed = [(i, cur[i]) for i in hits]
    for i in reversed(hits):
        del cur[i]
    return cur, ("ins", removed)


def _union(cur: Any, op: Dict[str, Any]) -> Any:
    v = _chk_list(op.get("value"))
    if v is REJECT:
        return REJECT
    if cur is MISSING:
        cur, inv = [], ("v", MISSING)
    elif type(cur) is list:
        inv = ("trunc", len(cur))
    else:
        return REJECT
    for x in v:  # vuer-rtc: ``if elem not in merged`` (Python equality)
        if x not in cur:
            cur.append(x)
    return cur, inv


def _deep_merge(d: Dict[str, Any], v: Dict[str, Any], changes: List[Tuple[Any, ...]]) -> None:
    for k, nv in v.items():
        old = d.get(k, MISSING)
        if type(old) is dict and type(nv) is dict:
            _deep_merge(old, nv, changes)
        else:
            changes.append((d, k, old))
            d[k] = nv  # nv is already a private copy


def _merge(cur: Any, op: Dict[str, Any]) -> Any:
    v = _chk_dict(op.get("value"))
    if v is REJECT:
        return REJECT
    if cur is MISSING:
        return v, ("v", MISSING)
    if type(cur) is not dict:
        return REJECT
    changes: List[Tuple[Any, ...]] = []
    _deep_merge(cur, v, changes)
    return cur, ("obj", changes)


def _init(cur: Any, op: Dict[str, Any]) -> Any:
    if cur is not MISSING:
        return NOCHANGE
    v = json_copy(op.get("value"))
    return REJECT if v is REJECT else (v, INV_MISSING)


def _vadd(a: List[Any], b: List[Any]) -> List[Any]:
    return [x + y for x, y in zip(a, b)]


def _vmul(a: List[Any], b: List[Any]) -> List[Any]:
    return [x * y for x, y in zip(a, b)]


HANDLERS: Dict[str, Handler] = {
    "number.add": _numeric(0, lambda a, b: a + b),
    "number.multiply": _numeric(1, lambda a, b: a * b),
    "number.min": _numeric(None, min),
    "number.max": _numeric(None, max),
    "vector3.add": _vector(3, [0, 0, 0], _vadd),
    "vector3.multiply": _vector(3, [1, 1, 1], _vmul),
    "euler.add": _vector(3, [0, 0, 0], _vadd),
    "quaternion.multiply": _vector(4, [0, 0, 0, 1], quat_mul),
    "string.concat": _concat,
    "boolean.or": _bool(False, lambda a, b: a or b),
    "boolean.and": _bool(True, lambda a, b: a and b),
    "color.blend": _blend,
    "array.push": _push,
    "array.remove": _remove,
    "array.union": _union,
    "object.merge": _merge,
    "prop.init": _init,
}
for _ot in VALUE_OTYPES:
    if _ot.endswith(".set"):
        HANDLERS[_ot] = _replace(VALUE_CHECK[_ot])


def apply_value(cur: Any, op: Dict[str, Any], prefix: str, excluded: bool) -> Any:
    """Apply one property op to ``cur``; see the module docstring for the result."""
    ot = op.get("otype")
    if ot in TEXT_OTYPES:
        return text_apply(cur, op, prefix, excluded)
    if excluded:
        return NOCHANGE
    h = HANDLERS.get(ot)  # type: ignore[arg-type]
    if h is None:
        return REJECT
    return h(cur, op)


_ATOMS = frozenset((int, float, str, bool, type(None)))


def untracked_inv(inv: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """``inv`` in a form the cyclic GC need not track, when there is one: the old value of
    a ``("v", list)`` inverse whose items are all atoms (a vector, a color, a list of
    numbers) is kept in one flat tuple, ``("vt", *items)``, which CPython stops tracking at
    its first collection; the old list itself can then be freed. An inverse lives as long
    as its journal entry: this spares the GC's full collections two objects per entry of
    a long journal (rollback gives back an equal, new list).

    >>> import gc
    >>> inv = untracked_inv(("v", [1.0, 2.0, 3.0]))
    >>> inv, rollback_value([0, 0, 0], inv)
    (('vt', 1.0, 2.0, 3.0), [1.0, 2.0, 3.0])
    >>> _ = gc.collect(); gc.is_tracked(inv)
    False
    >>> untracked_inv(("v", [[1], 2]))  # a nested list is kept as it is
    ('v', [[1], 2])
    """
    if inv[0] != "v" or type(inv[1]) is not list:
        return inv
    atoms = _ATOMS
    for x in inv[1]:
        if type(x) not in atoms:
            return inv
    return ("vt", *inv[1])


#: Ops whose ``value`` is a vector: their handlers read a tuple exactly as the equal list.
VECTOR_OTYPES = frozenset(ot for ot, chk in VALUE_CHECK.items() if chk in (_VEC3, _VEC4))


def atoms_tuple(v: Any) -> Any:
    """``tuple(v)`` if ``v`` is a list of atoms (numbers, strings, ``None``), else ``None``.

    >>> atoms_tuple([1, 2.5, "x"]), atoms_tuple([[1]]), atoms_tuple("ab")
    ((1, 2.5, 'x'), None, None)
    """
    if type(v) is not list:
        return None
    atoms = _ATOMS
    for x in v:
        if type(x) not in atoms:
            return None
    return tuple(v)


def hot_op(op: Any) -> Any:
    """The form of a property op a register keeps for as long as its journal entry lives:
    ``op`` itself (a dict of atoms is never tracked by the cyclic GC), or for a vector op
    (:data:`VECTOR_OTYPES`) whose value is a list, ``("vec", otype, *value)``: one flat
    tuple of atoms, which the GC stops tracking at its first collection, where a dict
    holding a tuple or a list is tracked until a full one (and a nested tuple would be one
    more new object for each collection of the young generation to walk). The register
    applies it as ``{"otype": otype, "value": op[2:]}`` (its handler reads a tuple as the
    equal list).

    >>> op = {"otype": "vector3.set", "key": "n", "path": "p", "value": [1, 2, 3]}
    >>> hot_op(op), apply_value(None, {"otype": "vector3.set", "value": (1, 2, 3)}, "", 0)
    (('vec', 'vector3.set', 1, 2, 3), ([1, 2, 3], ('v', None)))
    """
    v = op.get("value")
    if type(v) is list:
        ot = op.get("otype")
        if ot in VECTOR_OTYPES:
            return ("vec", ot, *v)
    return op


def rollback_value(cur: Any, inv: Tuple[Any, ...]) -> Any:
    """Undo the effect recorded by ``inv`` and return the restored value."""
    kind = inv[0]
    if kind == "v":
        return inv[1]
    if kind == "vt":
        return list(inv[1:])
    if kind == "pop":
        cur.pop()
    elif kind == "ins":
        for i, x in inv[1]:
            cur.insert(i, x)
    elif kind == "trunc":
        if type(cur) is str:
            return cur[: inv[1]]
        del cur[inv[1] :]
    elif kind == "obj":
        for d, k, old in reversed(inv[1]):
            if old is MISSING:
                del d[k]
            else:
                d[k] = old
    else:
        return text_rollback(cur, inv)
    return cur


# -- edit buffer merge rule -------------------------------------------------------------
#: Additive ops that the edit buffer folds together when they are *adjacent* and target
#: the same ``key:path`` (the result is the same op with the combined value).
MERGEABLE: Dict[str, Callable[[Any, Any], Any]] = {
    "number.add": lambda a, b: a + b,
    "number.multiply": lambda a, b: a * b,
    "vector3.add": _vadd,
    "euler.add": _vadd,
    "quaternion.multiply": quat_mul,
}


def merge_values(otype: str, a: Any, b: Any) -> Any:
    """Combined value of two adjacent mergeable ops, or :data:`REJECT` if not mergeable."""
    fn = MERGEABLE.get(otype)
    if fn is None:
        return REJECT
    chk = VALUE_CHECK[otype]
    a, b = chk(a), chk(b)
    if a is REJECT or b is REJECT:
        return REJECT
    r = fn(a, b)
    if isinstance(r, list):
        return r if all(_num_ok(x) is not REJECT for x in r) else REJECT
    return _num_ok(r)


# -- local op normalisation -------------------------------------------------------------
def normalize_op(op: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate a locally issued op and return a private, ``otype``-spelled copy.

    Raises ``ValueError`` for malformed ops (unknown otype, wrong value type...), so
    mistakes surface at :meth:`GraphStore.edit` instead of being silently rejected later.

    >>> normalize_op({"ot": "number.set", "key": "n", "path": "x", "value": 1})
    {'key': 'n', 'path': 'x', 'value': 1, 'otype': 'number.set'}
    """
    if type(op) is not dict and not isinstance(op, Mapping):  # (typing's isinstance: slow)
        raise ValueError(f"an op must be a dict, got {type(op).__name__}")
    out = {k: v for k, v in op.items() if k not in ("ot", "otype")}
    ot = op.get("otype", op.get("ot"))
    out["otype"] = ot
    if ot in META_OTYPES:
        raise ValueError(f"{ot} is issued by undo()/redo(), not edit()")
    if ot not in OTYPES:
        raise ValueError(f"unknown otype {ot!r}")
    if ot in NODE_OTYPES:
        out.setdefault("path", "children")
    if type(out.get("key")) is not str or type(out.get("path")) is not str:
        raise ValueError(f"{ot}: 'key' and 'path' must be strings")
    if "value" in out:
        v = json_copy(out["value"])
        if v is REJECT:
            raise ValueError(f"{ot}: value is not a JSON value (or has NaN/inf)")
        out["value"] = v
    chk = VALUE_CHECK.get(ot)
    if chk is not None and chk(out.get("value")) is REJECT:
        raise ValueError(f"{ot}: invalid value {out.get('value')!r}")
    if ot == "array.remove" and out.pop("all", True) is not True:
        raise ValueError(
            "array.remove removes every equal element (as vuer-rtc does); "
            "there is no first-only variant"
        )
    if ot == "color.blend":
        alpha = out.get("alpha", 0.5)
        if not is_num(alpha) or not 0 <= alpha <= 1:
            raise ValueError("color.blend: alpha must be a number in [0, 1]")
    if ot == "node.insert":
        v = out.get("value")
        if type(v) is not dict or type(v.get("key")) is not str or not v["key"]:
            raise ValueError("node.insert: value must be a dict with a non-empty 'key'")
    elif ot == "node.remove":
        if type(out.get("value")) is not str:
            raise ValueError("node.remove: value must be the child key")
    elif ot == "node.move":
        v = out.get("value")
        if (
            type(v) is not dict
            or type(v.get("nodeKey")) is not str
            or type(v.get("newParent")) is not str
        ):
            raise ValueError("node.move: value must be {'nodeKey': str, 'newParent': str}")
    elif ot in ("text.insert", "text.replace") and type(out.get("value")) is not str:
        raise ValueError(f"{ot}: value must be a string")
    return out
