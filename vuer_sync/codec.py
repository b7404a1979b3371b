"""One msgpack codec for the Vuer wire protocol, used by the server and the client.

Outbound messages are packed exactly as Vuer 0.1.6 packs them: one msgpack map per binary
websocket frame, floats as float32 (``use_single_float``; a message holding a float beyond
float32's range is sent with float64 instead of failing), ``ts`` as integer milliseconds,
``bytes``/``bytearray``/``memoryview`` as msgpack ``bin``, numpy arrays as nested lists and numpy
scalars (including ``np.bool_``, which crashes Vuer) as Python scalars.

:func:`encode_parts` produces the same bytes without copying large ``bytes`` values (point
clouds, images): it returns a :class:`Segments` of buffers that the transport writes with one
gather call, so a 12 MB message costs the producer's thread microseconds, not milliseconds of
copying with the GIL held.

Inbound messages are unpacked with ``raw=False``; JS ``undefined`` (msgpack ExtType 0) becomes
``None``; msgpack timestamps become float seconds; anything that is not one map with a string
``etype`` raises :class:`~vuer_sync.errors.ProtocolError`.

>>> from vuer_sync import codec
>>> data = codec.encode({"etype": "SET", "ts": 1.5, "data": {"x": 0.1}})
>>> msg = codec.decode(data)
>>> msg["etype"], msg["ts"]
('SET', 1500)
"""

from __future__ import annotations

import datetime
import math
import os
import threading
import time
from pathlib import PurePath
from typing import Any, Dict, List, Optional, Tuple, Union

import msgpack
import numpy as np

from .errors import ProtocolError

__all__ = [
    "LARGE_BINARY",
    "ProtocolError",
    "Segments",
    "decode",
    "encode",
    "encode_parts",
    "large_seen",
    "normalize_ts",
    "note_large",
    "pack",
    "to_wire_ts",
    "unpack",
]

_local = threading.local()


def _default(obj: Any) -> Any:
    """msgpack fallback for what it cannot pack natively (numpy, elements, paths)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):  # every numpy scalar, np.bool_ and np.str_ included
        return obj.item()
    serialize = getattr(obj, "serialize", None) or getattr(obj, "_serialize", None)
    if callable(serialize):  # schema elements (ours, or the vuer package's) in event data
        return serialize()
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"cannot serialize object of type {type(obj).__name__}")


def _packer() -> msgpack.Packer:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(
            use_single_float=True, use_bin_type=True, default=_default, autoreset=True
        )
    return packer


def _find_unpackable(obj: Any, path: str) -> str | None:
    """Return the field path of the first value msgpack cannot pack, or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, bytes, int, float, bool)) and k is not None:
                return f"{path}[{k!r}] (key)"
            sub = f"{path}.{k!s}" if path else str(k)
            found = _find_unpackable(v, sub)
            if found is not None:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _find_unpackable(v, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if obj is None or isinstance(obj, (str, bytes, bytearray, memoryview, int, float, bool)):
        return None
    try:
        converted = _default(obj)
    except TypeError:
        return path or "<root>"
    if converted is obj:
        return path or "<root>"
    return _find_unpackable(converted, path)


def pack(obj: Any) -> bytes:
    """Pack any value with Vuer's settings (float32, bin type, numpy fallback).

    Raises ``TypeError`` naming the offending field path, e.g. ``data.nodes[0].position``.
    """
    try:
        return _packer().pack(obj)
    except (TypeError, ValueError, OverflowError) as e:
        _local.packer = None  # a failed pack may leave the packer's buffer dirty
        if "float too large" in str(e):
            # a float beyond float32's range: send the message with float64 (both clients
            # accept it) rather than fail or turn the value into infinity
            return msgpack.packb(obj, use_bin_type=True, default=_default)
        where = _find_unpackable(obj, "")
        if where is None:
            raise TypeError(f"cannot serialize message: {e}") from None
        bad = _value_at(obj, where)
        raise TypeError(
            f"cannot serialize field {where!r}: value of type {type(bad).__name__} "
            f"({e})"
        ) from None


def _value_at(obj: Any, path: str) -> Any:
    """Best-effort lookup of the value a path from _find_unpackable names (for messages)."""
    import re

    cur = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        try:
            if part.startswith("["):
                cur = cur[int(part[1:-1])]
            elif isinstance(cur, dict):
                cur = cur[part]
            else:
                cur = _default(cur)[part]
        except Exception:
            return cur
    return cur


def to_wire_ts(ts: Any) -> Any:
    """Vuer sends ``ts`` as integer epoch milliseconds; convert float seconds to that."""
    if isinstance(ts, float):
        return int(ts * 1000)
    return ts


def encode(message: Dict[str, Any]) -> bytes:
    """Encode one outbound message map (server or client event) to the bytes of one frame.

    A float ``ts`` (seconds) is sent as integer milliseconds, as Vuer does.
    """
    ts = message.get("ts")
    if isinstance(ts, float):
        message = dict(message)
        message["ts"] = int(ts * 1000)
    return pack(message)


#: ``bytes`` values at least this long are referenced, not copied, by :func:`encode_parts`
LARGE_BINARY = 1 << 16
# lists of more nodes than this are not searched for large values (a 100-node pose update
# carries none; the search would cost more than it saves)
_MAX_SEARCHED_NODES = 16
# a large value's stand-in while the rest of the message is packed: msgpack writes it as
# bin8 of 16 bytes (c4 10 + token + index), found again in the packed bytes afterwards
_TOKEN = os.urandom(12)
_STANDIN = b"\xc4\x10" + _TOKEN


_large_seen = 0


def note_large() -> None:
    """Record that a large ``bytes`` value went into a message being built (serialisers
    call this, so that messages without any skip the search in :func:`encode_parts`)."""
    global _large_seen
    _large_seen += 1


def large_seen() -> int:
    """A counter :func:`note_large` increments: compare it before and after serialising."""
    return _large_seen


class Segments:
    """One encoded message as several buffers whose concatenation is the frame's payload.

    What :func:`encode_parts` returns when a message holds large ``bytes`` values: they are
    referenced (``bytes`` is immutable, so the queued message cannot change), not copied.
    ``len()`` is the payload's size; ``bytes()`` joins it (a copy); :func:`unpack` decodes
    it without joining.
    """

    __slots__ = ("large", "nbytes", "parts", "skeleton")

    def __init__(self, skeleton: bytes, large: List[bytes]):
        self.skeleton = skeleton  # the message packed with 16-byte stand-ins
        self.large = large
        parts: List[Any] = []
        view = memoryview(skeleton)
        pos = 0
        for i, blob in enumerate(large):
            at = skeleton.find(_STANDIN + i.to_bytes(4, "big"), pos)
            if at < 0:  # pragma: no cover - the packer always writes the stand-in
                raise AssertionError("stand-in not found in the packed message")
            parts += [view[pos:at], b"\xc6" + len(blob).to_bytes(4, "big"), blob]
            pos = at + len(_STANDIN) + 4
        parts.append(view[pos:])
        self.parts: Tuple[Any, ...] = tuple(parts)
        self.nbytes = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def __repr__(self) -> str:
        return f"Segments({self.nbytes} bytes, {len(self.large)} referenced)"


def _swap_large(d: Dict[Any, Any], large: List[bytes]) -> Optional[Dict[Any, Any]]:
    """A copy of ``d`` with stand-ins for its large ``bytes`` (searched in nested dicts and
    short lists of dicts: nodes and their children), or ``None`` if it has none."""
    out = None
    for k, v in d.items():
        t = type(v)
        new: Any = None
        if t is bytes:
            if len(v) >= LARGE_BINARY:
                new = _TOKEN + len(large).to_bytes(4, "big")
                large.append(v)
        elif t is dict:
            new = _swap_large(v, large)
        elif t is list and v and len(v) <= _MAX_SEARCHED_NODES and type(v[0]) is dict:
            for i, item in enumerate(v):
                sub = _swap_large(item, large) if type(item) is dict else None
                if sub is not None:
                    if new is None:
                        new = list(v)
                    new[i] = sub
        if new is not None:
            if out is None:
                out = dict(d)
            out[k] = new
    return out


def _restore_large(obj: Any, large: List[bytes]) -> Any:
    """Put the large values back in place of their stand-ins (in a decoded skeleton)."""
    if type(obj) is dict:
        for k, v in obj.items():
            t = type(v)
            if t is bytes:
                if len(v) == 16 and v.startswith(_TOKEN):
                    obj[k] = large[int.from_bytes(v[12:], "big")]
            elif (t is dict or t is list) and v:
                _restore_large(v, large)
    elif type(obj) is list and len(obj) <= _MAX_SEARCHED_NODES:
        for item in obj:
            if type(item) is dict:
                _restore_large(item, large)
    return obj


def encode_parts(message: Dict[str, Any]) -> Union[bytes, Segments]:
    """:func:`encode`, but large ``bytes`` values in ``data`` are referenced, not copied.

    Returns ``bytes`` when there are none, else a :class:`Segments` whose concatenation is
    exactly what :func:`encode` returns.

    >>> msg = {"etype": "UPSERT", "data": {"nodes": [{"key": "pc", "vertices": bytes(1 << 20)}]}}
    >>> seg = encode_parts(msg)
    >>> len(seg) == len(encode(msg)) and bytes(seg) == encode(msg)
    True
    >>> unpack(seg)["data"]["nodes"][0]["vertices"] is msg["data"]["nodes"][0]["vertices"]
    True
    """
    data = message.get("data")
    if type(data) is not dict:
        return encode(message)
    large: List[bytes] = []
    swapped = _swap_large(data, large)
    if swapped is None:
        return encode(message)
    for blob in large:
        if len(blob) >= 1 << 32:
            raise TypeError(f"a bytes value of {len(blob)} bytes is beyond msgpack's 4 GiB")
    return Segments(encode({**message, "data": swapped}), large)


def unpack(payload: Union[bytes, bytearray, memoryview, Segments]) -> Any:
    """Decode an outbound payload (``bytes`` or :class:`Segments`) as it was sent; large
    values of a :class:`Segments` come back as the very objects that were encoded."""
    if isinstance(payload, Segments):
        return _restore_large(
            msgpack.unpackb(payload.skeleton, raw=False, strict_map_key=False), payload.large)
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0:  # msgpackr encodes JS `undefined` as fixext1 type 0
        return None
    return msgpack.ExtType(code, data)


def normalize_ts(ts: Any, now: float | None = None) -> float:
    """Return ``ts`` as float epoch seconds, whatever unit it arrived in.

    Vuer's wire mixes integer milliseconds (Python peers), float seconds (the browser) and
    float milliseconds (``HEAD_MOVE``); some browser events carry no ``ts`` at all, in which
    case the receive time is used.

    >>> normalize_ts(1795315617546), normalize_ts(1795315617.546)
    (1795315617.546, 1795315617.546)
    """
    if type(ts) is int:  # integer milliseconds from Python peers: the common case
        return ts / 1000.0 if abs(ts) > 1e11 else float(ts)
    if isinstance(ts, datetime.datetime):
        return ts.timestamp()
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return time.time() if now is None else now
    if not math.isfinite(ts):
        return time.time() if now is None else now
    if abs(ts) > 1e11:  # epoch milliseconds (1e11 s is the year 5138)
        return ts / 1000.0
    return float(ts)


def decode(data: Any) -> Dict[str, Any]:
    """Decode one inbound frame into a message map with a string ``etype``.

    ``ts`` is left as it arrived (see :func:`normalize_ts`).

    Raises :class:`ProtocolError` with a clear message for text frames, truncated or trailing
    data, a payload that is not a map, a map without a string ``etype`` or with non-string keys.
    """
    if isinstance(data, str):
        raise ProtocolError("text frame: the Vuer protocol uses binary msgpack frames only")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ProtocolError("empty frame")
    try:
        msg = msgpack.unpackb(
            data, raw=False, ext_hook=_ext_hook, strict_map_key=True, timestamp=1
        )
    except msgpack.ExtraData:
        raise ProtocolError("trailing bytes after the msgpack map (one map per frame)") from None
    except (ValueError, msgpack.UnpackException, TypeError, RecursionError) as e:
        text = str(e)
        if "incomplete" in text or isinstance(e, msgpack.OutOfData):
            raise ProtocolError("truncated msgpack data") from None
        raise ProtocolError(f"malformed msgpack: {text}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"expected a msgpack map, got {type(msg).__name__}")
    for k in msg:
        if not isinstance(k, str):
            raise ProtocolError(f"message keys must be strings, got {k!r}")
    etype = msg.get("etype")
    if not isinstance(etype, str) or not etype:
        raise ProtocolError("message has no string 'etype'")
    return msg
