"""Columnar pose updates: N node poses from numpy arrays into one ``UPDATE`` frame, with no
Python object per pose.

``scene.poses(keys, position=P, quaternion=Q)`` sends the same bytes as
``scene.update @ [Box(key=k, position=p, quaternion=q) ...]`` would for those properties
(one msgpack map per node: ``key``, ``position``, ``quaternion``; floats as float32, as
:mod:`vuer_sync.codec` packs them). For a set of keys seen before, the frame is a cached
template whose float slots numpy fills in one vectorised assignment: a robot publishing 100
link poses per tick costs well under a microsecond per pose in the caller's thread.

>>> import numpy as np
>>> from vuer_sync import codec
>>> enc = PoseEncoder()
>>> payload, info, keys, values = enc.encode(["a", "b"], np.zeros((2, 3)),
...                                          np.tile([0, 0, 0, 1.0], (2, 1)))
>>> msg = codec.unpack(payload)
>>> msg["etype"], msg["data"]["nodes"][1]
('UPDATE', {'key': 'b', 'position': [0.0, 0.0, 0.0], 'quaternion': [0.0, 0.0, 0.0, 1.0]})
>>> info[0]
('UPDATE', ('a', 'b'))
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import msgpack
import numpy as np

from .coalesce import MergeInfo, merge_info

__all__ = ["PoseEncoder", "Poses", "encode_poses"]

#: templates kept per encoder (distinct key sets); the oldest is dropped past this
MAX_TEMPLATES = 64

_F32 = b"\xca"  # msgpack float32 marker


class _Template:
    """The frame body for one tuple of keys: fixed bytes with float32 slots, and where the
    slots are (``index``: byte positions, in the order of the ``(N, 3|7)`` float array)."""

    __slots__ = ("body", "index", "info")

    def __init__(self, keys: Tuple[str, ...], with_quat: bool):
        parts: List[bytes] = []
        slots: List[int] = []
        pos = 0
        nfloat = 7 if with_quat else 3
        for k in keys:
            head = (b"\x83" if with_quat else b"\x82") + b"\xa3key" + msgpack.packb(k)
            parts.append(head)
            pos += len(head)
            fields = ((b"\xa8position\x93", 3), (b"\xaaquaternion\x94", 4))[:2 if with_quat
                                                                              else 1]
            for name, count in fields:
                parts.append(name)
                pos += len(name)
                for _ in range(count):
                    parts.append(_F32 + b"\0\0\0\0")
                    slots.extend(range(pos + 1, pos + 5))
                    pos += 5
        self.body = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()
        self.index = np.asarray(slots, dtype=np.intp)
        assert self.index.size == len(keys) * nfloat * 4
        sample = {"etype": "UPDATE", "data": {"nodes": [
            {"key": k, "position": 0, **({"quaternion": 0} if with_quat else {})}
            for k in keys]}}
        self.info: MergeInfo = merge_info(sample)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


_TAIL = b"\xa6strict\xc2\xa5etype\xa6UPDATE"


class Poses(NamedTuple):
    """One encoded columnar update: the frame, its merge info, and the values sent."""

    payload: bytes
    info: MergeInfo
    keys: Tuple[str, ...]
    #: ``(N, 3)`` or ``(N, 7)`` float32 (position, then quaternion): what clients get
    values: np.ndarray


class PoseEncoder:
    """Encodes columnar pose updates; thread-safe; caches one template per key tuple.

    >>> enc = PoseEncoder()
    >>> p = enc.encode(("x",), [[1, 2, 3]])
    >>> from vuer_sync import codec
    >>> codec.unpack(p.payload)["data"]["nodes"]
    [{'key': 'x', 'position': [1.0, 2.0, 3.0]}]
    """

    def __init__(self) -> None:
        self._templates: Dict[Tuple[Tuple[str, ...], bool], _Template] = {}
        self._lock = threading.Lock()

    def _template(self, keys: Tuple[str, ...], with_quat: bool) -> _Template:
        t = self._templates.get((keys, with_quat))
        if t is not None:
            return t
        for k in keys:
            if type(k) is not str:
                raise TypeError(f"poses: keys must be strings, got {type(k).__name__} {k!r}")
        if len(set(keys)) != len(keys):
            raise ValueError("poses: keys must be distinct")
        t = _Template(keys, with_quat)
        with self._lock:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.pop(next(iter(self._templates)))
            self._templates[(keys, with_quat)] = t
        return t

    def encode(self, keys: Sequence[str], position: Any,
               quaternion: Optional[Any] = None) -> Poses:
        """The frame (and merge info) of one ``UPDATE`` of ``len(keys)`` nodes.

        ``position``: ``(N, 3)``; ``quaternion``: ``(N, 4)`` in ``[x, y, z, w]`` (three.js
        order) or ``None`` to leave rotations alone. Anything array-like; sent as float32.
        Wrong shapes raise ``ValueError`` before anything is sent."""
        kt = keys if type(keys) is tuple else tuple(keys)
        n = len(kt)
        pos = np.asarray(position)
        if pos.shape != (n, 3):
            raise ValueError(f"poses: position must have shape ({n}, 3) for {n} keys, got "
                             f"{pos.shape}")
        with_quat = quaternion is not None
        t = self._template(kt, with_quat)
        if with_quat:
            q = np.asarray(quaternion)
            if q.shape != (n, 4):
                raise ValueError(f"poses: quaternion must have shape ({n}, 4) for {n} keys, "
                                 f"got {q.shape}")
            vals = np.empty((n, 7), dtype=">f4")
            vals[:, :3] = pos
            vals[:, 3:] = q
        else:
            vals = pos.astype(">f4")
        body = t.body.copy()
        body[t.index] = vals.view(np.uint8).ravel()
        head = (b"\x84\xa2ts" + msgpack.packb(int(time.time() * 1000))
                + b"\xa4data\x81\xa5nodes" + _array_header(n))
        return Poses(b"".join((head, body.tobytes(), _TAIL)), t.info, kt,
                     vals.astype(np.float32, copy=False))


_default = PoseEncoder()


def encode_poses(keys: Sequence[str], position: Any,
                 quaternion: Optional[Any] = None) -> Poses:
    """:meth:`PoseEncoder.encode` with a module-wide encoder."""
    return _default.encode(keys, position, quaternion)
