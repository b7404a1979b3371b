"""Collaborative text register (an RGA sequence folded in the documented total order).

Each character has a globally unique, never reused id ``"<msg id>/<op index>.<offset>"``
(message ids are unique per session and sessions are unique per restart, see
:mod:`vuer_sync.rtc.store`).  ``text.insert`` names the id of the character to its left
(``anchor``, ``None`` = start of text).  Because every replica applies the ops of a text
in the same total order, each insert is placed immediately after its anchor; this is
deterministic, keeps concurrent inserts from interleaving and needs no tie-break rule.

* An insert whose anchor is unknown (its message has not arrived) is *parked*: it has no
  effect until the anchor's message arrives, which re-folds the register (fixes R14).
* An undone (excluded) insert still integrates its characters, hidden, so that later
  inserts anchored on them keep their place; redo makes them visible again (R16, R23).
* Deletes tombstone ids; a character is visible iff its insert is not undone and no
  applied delete covers it (reference counted, so undoing one of two overlapping deletes
  keeps it deleted).

>>> t = TextSeq()
>>> _ = t.integrate(None, "m:1/0", "helo", hidden=False)
>>> _ = t.integrate(t.anchor_at(3), "m:2/0", "l", hidden=False)
>>> t.text()
'hello'
"""

from __future__ import annotations

from itertools import compress
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from .common import MISSING, NOCHANGE, REJECT

__all__ = [
    "TEXT_OTYPES",
    "TextSeq",
    "decode_runs",
    "encode_runs",
    "resolve_text_op",
    "text_apply",
    "text_rollback",
]

TEXT_OTYPES = frozenset({"text.init", "text.insert", "text.delete", "text.replace"})
_MAX_RUN = 1_000_000


class TextSeq:
    """The character sequence of one text property (ids, chars and visibility)."""

    __slots__ = ("_cache", "_hint", "chars", "dead", "hidden", "ids", "present", "vis")

    def __init__(self) -> None:
        self.ids: List[str] = []
        self.chars: List[str] = []
        self.vis: List[bool] = []
        self.present: Set[str] = set()
        self.dead: Dict[str, int] = {}
        self.hidden: Set[str] = set()
        self._cache: Optional[str] = ""
        self._hint = 0

    # -- reading -----------------------------------------------------------------
    def text(self) -> str:
        """The visible string."""
        if self._cache is None:
            self._cache = "".join(compress(self.chars, self.vis))
        return self._cache

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"TextSeq({self.text()!r}, {len(self.ids)} items)"

    def to_list(self) -> List[List[Any]]:
        """``[[id, char, visible], ...]`` in document order (for canonical comparison)."""
        return [[i, c, v] for i, c, v in zip(self.ids, self.chars, self.vis)]

    def index_of(self, cid: str) -> int:
        h = self._hint
        ids = self.ids
        if 0 <= h < len(ids) and ids[h] == cid:
            return h
        return ids.index(cid)

    def _visible_indices(self) -> List[int]:
        return list(compress(range(len(self.vis)), self.vis))

    def anchor_at(self, pos: int) -> Optional[str]:
        """Id of the visible character left of visible position ``pos`` (None = start)."""
        if pos <= 0:
            return None
        vis = self._visible_indices()
        if not vis:
            return None
        return self.ids[vis[min(pos, len(vis)) - 1]]

    def ids_in_range(self, pos: int, length: int) -> List[str]:
        """Ids of the visible characters ``[pos, pos + length)``."""
        if length <= 0:
            return []
        vis = self._visible_indices()
        pos = max(pos, 0)
        return [self.ids[i] for i in vis[pos : pos + length]]

    # -- mutation (each returns an inverse record) ----------------------------------
    def integrate(
        self, anchor: Optional[str], prefix: str, content: str, hidden: bool
    ) -> Optional[Tuple[Any, ...]]:
        """Insert ``content`` right after ``anchor``; ``None`` if the anchor is unknown."""
        if anchor is None:
            idx = 0
        elif anchor in self.present:
            idx = self.index_of(anchor) + 1
        else:
            return None  # parked until the anchor arrives
        k = len(content)
        if k == 0:
            return ("tins", idx, 0)
        new = [f"{prefix}.{i}" for i in range(k)]
        if new[0] in self.present:
            return None  # duplicate ids: malformed, ignore deterministically
        self.ids[idx:idx] = new
        self.chars[idx:idx] = list(content)
        self.vis[idx:idx] = [not hidden] * k
        self.present.update(new)
        if hidden:
            self.hidden.update(new)
        self._hint = idx + k - 1
        self._cache = None
        return ("tins", idx, k)

    def unintegrate(self, idx: int, k: int) -> None:
        if k == 0:
            return
        gone = self.ids[idx : idx + k]
        del self.ids[idx : idx + k]
        del self.chars[idx : idx + k]
        del self.vis[idx : idx + k]
        self.present.difference_update(gone)
        self.hidden.difference_update(gone)
        self._hint = max(idx - 1, 0)
        self._cache = None

    def _locate(self, cids: Iterable[str]) -> List[Tuple[int, str]]:
        out: List[Tuple[int, str]] = []
        ids, present = self.ids, self.present
        j = -1
        for c in cids:
            if c not in present:
                continue
            j += 1
            if not (0 <= j < len(ids) and ids[j] == c):
                j = self.index_of(c)
            out.append((j, c))
        return out

    def delete(self, cids: Iterable[str]) -> Tuple[Any, ...]:
        """Tombstone the known ids among ``cids``."""
        hit: List[str] = []
        dead, hidden, vis = self.dead, self.hidden, self.vis
        for j, c in self._locate(cids):
            n = dead.get(c, 0) + 1
            dead[c] = n
            hit.append(c)
            if n == 1 and c not in hidden:
                vis[j] = False
        if hit:
            self._cache = None
        return ("tdel", hit)

    def undelete(self, hit: List[str]) -> None:
        dead, hidden, vis = self.dead, self.hidden, self.vis
        for j, c in self._locate(hit):
            n = dead[c] - 1
            if n:
                dead[c] = n
            else:
                del dead[c]
                if c not in hidden:
                    vis[j] = True
        if hit:
            self._cache = None

    def copy(self) -> TextSeq:
        t = TextSeq()
        t.ids, t.chars, t.vis = list(self.ids), list(self.chars), list(self.vis)
        t.present, t.dead, t.hidden = set(self.present), dict(self.dead), set(self.hidden)
        t._cache = self._cache
        return t

    @classmethod
    def from_lists(cls, ids: List[str], chars: str, vis: List[bool]) -> TextSeq:
        """Rebuild a baked sequence (invisible characters become permanent tombstones)."""
        t = cls()
        t.ids, t.chars, t.vis = list(ids), list(chars), [bool(v) for v in vis]
        t.present = set(t.ids)
        t.dead = {i: 1 for i, v in zip(t.ids, t.vis) if not v}
        t._cache = None
        return t


# -- id runs (compact encoding of deleted ids on the wire) -------------------------------
def encode_runs(ids: List[str]) -> List[Any]:
    """``["m:1/0.3", "m:1/0.4", "x"]`` -> ``[["m:1/0", 3, 2], "x"]``."""
    out: List[Any] = []
    for cid in ids:
        head, dot, tail = cid.rpartition(".")
        if dot and tail.isdigit():
            off = int(tail)
            last = out[-1] if out else None
            if type(last) is list and last[0] == head and last[1] + last[2] == off:
                last[2] += 1
            else:
                out.append([head, off, 1])
        else:
            out.append(cid)
    return out


def decode_runs(runs: Any) -> Optional[List[str]]:
    """Inverse of :func:`encode_runs`; ``None`` if malformed."""
    if type(runs) is not list:
        return None
    out: List[str] = []
    for r in runs:
        if type(r) is str:
            out.append(r)
        elif (
            type(r) is list
            and len(r) == 3
            and type(r[0]) is str
            and type(r[1]) is int
            and type(r[2]) is int
            and 0 <= r[1]
            and 0 <= r[2] <= _MAX_RUN
        ):
            out.extend(f"{r[0]}.{i}" for i in range(r[1], r[1] + r[2]))
        else:
            return None
        if len(out) > _MAX_RUN:
            return None
    return out


# -- op handlers (called by the property register) -------------------------------------
def _content(op: Dict[str, Any]) -> Optional[str]:
    v = op.get("value")
    if type(v) is str:
        return v
    # vuer-rtc 0.0.2 resolved form: value = [anchor, content]
    if type(v) is list and len(v) == 2 and type(v[1]) is str:
        return v[1]
    return None


def _int_field(op: Dict[str, Any], name: str) -> Optional[int]:
    v = op.get(name, 0)
    return v if type(v) is int and v >= 0 else None


def _anchor(seq: TextSeq, op: Dict[str, Any]) -> Any:
    if "anchor" in op:
        a = op["anchor"]
        return a if a is None or type(a) is str else REJECT
    pos = _int_field(op, "position")
    return REJECT if pos is None else seq.anchor_at(pos)


def _del_ids(seq: TextSeq, op: Dict[str, Any]) -> Optional[List[str]]:
    if "ids" in op:
        return decode_runs(op["ids"])
    pos, length = _int_field(op, "position"), _int_field(op, "length")
    if pos is None or length is None:
        return None
    return seq.ids_in_range(pos, length)


def text_apply(cur: Any, op: Dict[str, Any], prefix: str, excluded: bool) -> Any:
    """Apply a ``text.*`` op to the register value ``cur``.

    Returns ``(new_value, inverse)``, :data:`REJECT` or :data:`NOCHANGE`.  ``prefix`` is
    the id prefix for inserted characters; ``excluded`` is true when the op's message is
    undone (inserts integrate hidden characters, deletes do nothing).
    """
    ot = op.get("otype")
    if ot == "text.init":
        if isinstance(cur, TextSeq):
            return NOCHANGE  # idempotent: the first init in the total order wins (R15)
        v = op.get("value", MISSING)
        if v is MISSING or v is None:
            v = cur if type(cur) is str else ""
        if type(v) is not str:
            return REJECT
        seq = TextSeq()
        seq.integrate(None, prefix, v, hidden=False)
        return seq, ("v", cur)
    if not isinstance(cur, TextSeq):
        return REJECT
    if ot == "text.insert":
        content = _content(op)
        anchor = _anchor(cur, op)
        if content is None or anchor is REJECT:
            return REJECT
        inv = cur.integrate(anchor, prefix, content, hidden=excluded)
        return NOCHANGE if inv is None else (cur, inv)
    if ot == "text.delete":
        if excluded:
            return NOCHANGE
        ids = _del_ids(cur, op)
        if ids is None:
            return REJECT
        return cur, cur.delete(ids)
    if ot == "text.replace":
        content = _content(op)
        anchor = _anchor(cur, op)
        ids = _del_ids(cur, op)
        if content is None or anchor is REJECT or ids is None:
            return REJECT
        dinv = ("tdel", []) if excluded else cur.delete(ids)
        iinv = cur.integrate(anchor, prefix, content, hidden=excluded)
        return cur, ("trep", dinv, iinv)
    return REJECT


def text_rollback(cur: TextSeq, inv: Tuple[Any, ...]) -> TextSeq:
    kind = inv[0]
    if kind == "tins":
        cur.unintegrate(inv[1], inv[2])
    elif kind == "tdel":
        cur.undelete(inv[1])
    elif kind == "trep":
        if inv[2] is not None:
            cur.unintegrate(inv[2][1], inv[2][2])
        cur.undelete(inv[1][1])
    return cur


def resolve_text_op(seq: Any, op: Dict[str, Any]) -> Dict[str, Any]:
    """Turn a position-based local text op into the id-based form sent on the wire.

    ``seq`` is the current value of the target property (a :class:`TextSeq` or not).
    Adds ``anchor`` (insert/replace) and ``ids`` (delete/replace, run-encoded).
    """
    ot = op["otype"]
    if ot == "text.init" or not isinstance(seq, TextSeq):
        return op
    pos = op.get("position", 0)
    if type(pos) is not int or pos < 0:
        raise ValueError(f"{ot}: position must be a non-negative int")
    out = dict(op)
    if ot in ("text.insert", "text.replace"):
        out["anchor"] = seq.anchor_at(pos)
    if ot in ("text.delete", "text.replace"):
        length = op.get("length", 0)
        if type(length) is not int or length < 0:
            raise ValueError(f"{ot}: length must be a non-negative int")
        out["ids"] = encode_runs(seq.ids_in_range(pos, length))
    return out
