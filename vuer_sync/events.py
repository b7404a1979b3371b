"""Vuer events: what the server sends (``ServerEvent`` and its catalogue) and what clients send.

Wire shapes are identical to Vuer 0.1.6 (see ``reference/vuer-wire-protocol.md`` section 3):
server events are ``{"ts", "data", "etype", ...extra top-level keys}``, client events are
``{"ts", "etype", "value", ...extra keys}``.

>>> from vuer_sync.events import ClientEvent, Update
>>> class Hello(ClientEvent):
...     etype = "HELLO"
>>> ev = Hello(value={"msg": "hi"})
>>> ev == "HELLO", ev.serialize()["value"]
(True, {'msg': 'hi'})
>>> Update({"key": "box", "color": "blue"}).serialize()["data"]
{'nodes': [{'key': 'box', 'color': 'blue'}]}
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from . import codec
from .codec import normalize_ts
from .schemas.base import Element

__all__ = [
    "INIT",
    "Add",
    "ClientEvent",
    "End",
    "Event",
    "Frame",
    "GetWebXRMesh",
    "GrabRender",
    "HapticActuatorPulse",
    "InitEvent",
    "MjRender",
    "MjStep",
    "Noop",
    "NullEvent",
    "ReceivedEvents",
    "Remove",
    "ServerEvent",
    "ServerRPC",
    "Set",
    "Update",
    "Upsert",
    "serialize",
    "summarize",
]

INIT = "INIT"
_MISSING = object()
_UNCHANGED = frozenset({dict, str, int, float, bool, type(None), bytes})


def serialize(x: Any) -> Any:
    """Vuer's ``serializer``: elements to dicts; lists/tuples element-wise; the rest unchanged."""
    if type(x) in _UNCHANGED:
        return x
    if not isinstance(x, type):
        ser = getattr(x, "serialize", None) or getattr(x, "_serialize", None)  # ours or vuer's
        if ser is not None and callable(ser):
            return ser()
    if isinstance(x, (list, tuple)):
        return [serialize(i) for i in x]
    return x


def _short(x: Any, budget: int) -> str:
    """``repr(x)`` built piece by piece, giving up once ``budget`` characters are used."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return f"<{len(x)} bytes>" if len(x) > 16 else repr(bytes(x))
    if isinstance(x, dict):
        parts: List[str] = []
        used = 2
        for k, v in x.items():
            if used > budget:
                parts.append("...")
                break
            part = f"{k!r}: {_short(v, budget - used)}"
            parts.append(part)
            used += len(part) + 2
        return "{" + ", ".join(parts) + "}"
    if isinstance(x, (list, tuple)):
        items: List[str] = []
        used = 2
        for v in x:
            if used > budget:
                items.append(f"... {len(x)} items")
                break
            items.append(_short(v, budget - used))
            used += len(items[-1]) + 2
        inner = ", ".join(items)
        return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    shape = getattr(x, "shape", None)
    if shape is not None and not isinstance(x, type) and getattr(x, "ndim", False):
        return f"<array shape={tuple(shape)} dtype={getattr(x, 'dtype', '?')}>"
    r = repr(x)
    return r if len(r) <= max(budget, 16) else r[:max(budget, 16)] + "..."


def summarize(x: Any, limit: int = 120) -> str:
    """A short one-line ``repr`` of an event's value or data, for printing and logs:
    ``bytes`` are counted, arrays shown by shape, long containers cut with ``...``.

    >>> summarize({"frame": b"x" * 100000, "pose": [1, 2, 3]})
    "{'frame': <100000 bytes>, 'pose': [1, 2, 3]}"
    >>> len(summarize(list(range(1000)))) < 140
    True
    """
    out = _short(x, limit)
    return out if len(out) <= limit + 20 else out[:limit] + "..."


class Event:
    """Base of all events; ``event == "ETYPE"`` compares the event type."""

    etype: str = "EVENT"
    ts: float

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.etype == other
        return self is other

    def __hash__(self) -> int:
        return id(self)


class ClientEvent(Event):
    """An event sent by a client (browser or :class:`~vuer_sync.VuerClient`) to the server.

    Subclass it with a class attribute ``etype`` (and optionally a default ``value``)::

        class SetPosition(ClientEvent):
            etype = "SET_POSITION"
            value = [0, 0, 0]

    On the server, ``ts`` is normalised to float epoch seconds whatever unit it arrived in,
    and every extra key of the message (``key``, ``uuid``...) becomes an attribute.
    """

    etype: str = "CLIENT_EVENT"
    value: Any = None

    def __init__(self, etype: Optional[str] = None, ts: Optional[float] = None, **kwargs: Any):
        if etype is not None:
            self.etype = etype
        self.ts = time.time() if ts is None else ts
        for k, v in kwargs.items():
            setattr(self, k, v)

    @classmethod
    def from_dict(cls, msg: Dict[str, Any], now: Optional[float] = None) -> ClientEvent:
        """Build an event from a decoded message map (``ts`` normalised to seconds)."""
        ev = cls.__new__(cls)
        d = ev.__dict__
        d.update(msg)
        d["ts"] = normalize_ts(msg.get("ts"), now)
        return ev

    def serialize(self) -> Dict[str, Any]:
        """The message map as Vuer's client sends it (``ts`` float seconds until encoded)."""
        out: Dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if not k.startswith("_"):
                out[k] = v
        out["etype"] = self.etype
        out["value"] = serialize(self.value)
        return out

    def __repr__(self) -> str:
        """``client<ETYPE>(value summary)``; a message with ``data`` and no ``value`` (a
        server message read by a :class:`~vuer_sync.VuerClient`) shows ``data=...``.

        >>> ClientEvent.from_dict({"etype": "SET", "data": {"tag": "Scene", "key": "s"}})
        client<SET>(data={'tag': 'Scene', 'key': 's'})
        >>> ClientEvent("UPLOAD", value={"file": b"x" * 5000})
        client<UPLOAD>({'file': <5000 bytes>})
        """
        d = self.__dict__
        if "value" not in d and "data" in d:
            return f"client<{self.etype}>(data={summarize(d['data'])})"
        return f"client<{self.etype}>({summarize(self.value)})"

    __str__ = __repr__


class InitEvent(ClientEvent):
    """The first event of every connection; its ``value`` describes the client."""

    etype = INIT


class NullEvent(ClientEvent):
    """Sent into a ``bind`` generator after each ``Frame``'s delay (etype ``NULL``)."""

    etype = "NULL"


class ReceivedEvents:
    """The newest events a session received (Vuer's ``downlink_queue``): at most ``maxlen``
    events of at most ``max_bytes`` together (their sizes on the wire; the newest event is
    kept whatever its size). Older events make room and are counted in ``dropped``: a client
    sending large uploads to a session that never reads this buffer holds ``max_bytes`` of
    them, not ``maxlen``. Safe to append from one thread while others take.

    >>> buf = ReceivedEvents(maxlen=3, max_bytes=100)
    >>> for i in range(4):
    ...     buf.append(ClientEvent(etype="E", value=i), size=10)
    >>> [e.value for e in buf], buf.dropped
    ([1, 2, 3], 1)
    >>> buf.append(ClientEvent(etype="BIG", value=b"x"), size=75)
    >>> [e.etype for e in buf], buf.nbytes, buf.dropped
    (['E', 'E', 'BIG'], 95, 2)
    >>> buf.append(ClientEvent(etype="HUGE", value=b"x"), size=200)  # the newest stays
    >>> [e.etype for e in buf], buf.nbytes, buf.dropped
    (['HUGE'], 200, 5)
    """

    def __init__(self, maxlen: int, max_bytes: int) -> None:
        if maxlen < 1 or max_bytes < 0:
            raise ValueError("maxlen must be at least 1 and max_bytes not negative")
        self.maxlen = int(maxlen)
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.dropped = 0
        self._items: Deque[Tuple[ClientEvent, int]] = deque()
        self._lock = threading.Lock()

    def append(self, ev: ClientEvent, size: int = 0) -> None:
        """Keep ``ev`` (``size``: its bytes on the wire), dropping the oldest to make room."""
        with self._lock:
            items = self._items
            items.append((ev, size))
            self.nbytes += size
            while len(items) > self.maxlen or (self.nbytes > self.max_bytes
                                               and len(items) > 1):
                self.nbytes -= items.popleft()[1]
                self.dropped += 1

    def popleft(self) -> ClientEvent:
        """The oldest event, taken out (``IndexError`` when empty)."""
        with self._lock:
            ev, size = self._items.popleft()
            self.nbytes -= size
            return ev

    def pop(self) -> ClientEvent:
        """The newest event, taken out (``IndexError`` when empty)."""
        with self._lock:
            ev, size = self._items.pop()
            self.nbytes -= size
            return ev

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[ClientEvent]:
        with self._lock:
            items = [ev for ev, _ in self._items]
        return iter(items)


class ServerEvent(Event):
    """An event sent by the server to a client: ``{"ts", "data", "etype", ...extras}``.

    A subclass may define ``redundancy_key(self) -> str | None`` (viser's idea): while a
    message with that key is still queued for a client, a newer one replaces it.
    """

    etype: str = "SERVER_EVENT"

    def __init__(self, data: Any = None, ts: Optional[float] = None, etype: Optional[str] = None,
                 **kwargs: Any):
        self.ts = time.time() if ts is None else ts
        self.data = data
        if etype is not None:
            self.etype = etype
        for k, v in kwargs.items():
            setattr(self, k, v)

    def serialize(self) -> Dict[str, Any]:
        """The message map as Vuer sends it (``ts`` float seconds until encoded)."""
        out = {k: v for k, v in self.__dict__.items() if k[:1] != "_"}
        out["data"] = serialize(self.data)
        out["etype"] = self.etype
        return out

    def __repr__(self) -> str:
        """``server<ETYPE>(data summary)`` (long data is shortened, bytes are counted)."""
        return f"server<{self.etype}>({summarize(self.data)})"


def _items(elements: Iterable[Any]) -> List[Any]:
    out: List[Any] = []
    for e in elements:
        if isinstance(e, (list, tuple)):
            out.extend(e)
        else:
            out.append(e)
    return out


def _not_a_node(e: Any, op: str) -> TypeError:
    """The error for something that is not a scene node, with a hint for the likely mix-up."""
    shown = repr(e)
    shown = shown if len(shown) <= 60 else shown[:60] + "..."
    if isinstance(e, dict):
        return TypeError(f"{op} takes elements or dicts with a 'key' (the node to change), "
                         f"got a dict without one: {shown}")
    hint = ""
    if isinstance(e, str):
        hint = f" (a key alone: to remove that node, use remove @ {shown})"
    return TypeError(f"{op} takes scene elements such as Box(key=...) (or dicts with a "
                     f"'key'), got {type(e).__name__} {shown}{hint}")


def _nodes(elements: Iterable[Any], op: str) -> Tuple[List[Any], Optional[bool]]:
    """Elements serialized now (a snapshot of their props at call time, and plain dicts
    the outbox can coalesce by key); dicts with a ``key`` are passed through as Vuer does.
    Anything else (a bare key string, a number, ``None``) raises ``TypeError`` naming
    ``op``: the web client would get a node it cannot place.

    Also returns whether a large ``bytes`` value is among them: ``False`` when every node
    is one of our elements and none has one, ``None`` when unknown (dicts, vuer's elements).
    """
    seen = codec.large_seen()
    known = True
    out = []
    for e in _items(elements):
        if isinstance(e, Element):
            out.append(e.serialize())
        elif isinstance(e, dict):
            if "key" not in e:
                raise _not_a_node(e, op)
            known = False
            out.append(e)
        elif not isinstance(e, type) and callable(getattr(e, "_serialize", None)):
            known = False  # an element of the real vuer package
            out.append(serialize(e))
        else:
            raise _not_a_node(e, op)
    if not known:
        return out, None
    return out, codec.large_seen() != seen


class Set(ServerEvent):
    """Replace the scene: ``session.set @ Scene(...)``."""

    etype = "SET"

    def __init__(self, data: Any, **kwargs: Any):
        super().__init__(data, **kwargs)


class Add(ServerEvent):
    """Append elements to a parent (``to`` = a node key or a container name; ``None`` = root)."""

    etype = "ADD"

    def __init__(self, *elements: Any, to: Optional[str] = None, **kwargs: Any):
        nodes, self._large = _nodes(elements, "add")
        super().__init__({"nodes": nodes, "to": to}, **kwargs)


class Upsert(ServerEvent):
    """Merge into existing nodes by key, or append them.

    ``strict`` is sent as a top-level key (Vuer 0.1.6 drops it; the web client ignores it).
    """

    etype = "UPSERT"

    def __init__(self, *elements: Any, to: Optional[str] = None, strict: bool = False,
                 **kwargs: Any):
        nodes, self._large = _nodes(elements, "upsert")
        super().__init__({"nodes": nodes, "to": to}, strict=strict, **kwargs)


class Update(ServerEvent):
    """Shallow-merge props into existing nodes (unknown keys are ignored by the web client)."""

    etype = "UPDATE"

    def __init__(self, *elements: Any, strict: bool = False, **kwargs: Any):
        nodes, self._large = _nodes(elements, "update")
        super().__init__({"nodes": nodes}, strict=strict, **kwargs)


class Remove(ServerEvent):
    """Remove nodes by key: ``session.remove @ "box"`` or ``@ ["a", "b"]``."""

    etype = "REMOVE"

    def __init__(self, *keys: Any, **kwargs: Any):
        flat = _items(keys)
        for k in flat:
            if not isinstance(k, str):
                raise TypeError(f"Remove takes node keys (str), got {type(k).__name__}")
        super().__init__({"keys": flat}, **kwargs)


class HapticActuatorPulse(ServerEvent):
    """Pulse the XR controllers' haptic actuators: ``{"strength": 0..1, "duration": ms}``."""

    etype = "HAPTIC_ACTUATOR_PULSE"

    def __init__(self, left: Optional[Dict[str, Any]] = None,
                 right: Optional[Dict[str, Any]] = None, **kwargs: Any):
        super().__init__({"left": left, "right": right}, **kwargs)


class Noop(ServerEvent):
    """Nothing is sent (meaningful as a ``bind`` generator's yield)."""

    etype = "NOOP"

    def __init__(self, **kwargs: Any):
        super().__init__(None, **kwargs)


class End(ServerEvent):
    """Vuer's ``TERMINATE`` event (ignored by the web client)."""

    etype = "TERMINATE"

    def __init__(self, **kwargs: Any):
        super().__init__(None, **kwargs)


class Frame(ServerEvent):
    """``bind`` mode: send ``event``, wait ``1 / frame_rate`` s, then send a ``NULL`` event in.

    Never sent on the wire itself.
    """

    etype = "FRAME"

    def __init__(self, event: ServerEvent, frame_rate: float = 60, **kwargs: Any):
        super().__init__(event, **kwargs)
        self.frame_rate = frame_rate


class _RequestIds:
    """Request ids in the UUID text form: a random prefix per process (drawn again in a
    forked child) and a counter, so making one costs no system call (``uuid4`` reads 16
    random bytes from the kernel: about 5 µs of an RPC round trip on a loaded machine)."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        h = os.urandom(10).hex()
        self.prefix = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{'89ab'[int(h[15], 16) & 3]}{h[16:19]}-"
        self.counter = itertools.count(int.from_bytes(os.urandom(5), "big"))

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


_request_ids = _RequestIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_request_ids.reseed)


def request_id() -> str:
    """A new RPC request id, unique in this process (and, with overwhelming odds, across
    processes): ``xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx``.

    >>> a, b = request_id(), request_id()
    >>> a != b and len(a) == 36 and a[14] == "4"
    True
    """
    return _request_ids.next()


class ServerRPC(ServerEvent):
    """A request the client answers with an event whose ``etype`` is this request's ``rtype``.

    ``rtype`` is ``"<ETYPE>_RESPONSE@<uuid>"``, computed here and sent on the wire (Vuer's own
    ``ServerRPC`` leaves it unformatted, so custom RPCs never resolve there).

    >>> class Ping(ServerRPC):
    ...     etype = "PING"
    >>> r = Ping({"n": 1}, uuid="u1")
    >>> r.rtype
    'PING_RESPONSE@u1'
    """

    etype = "RPC"

    def __init__(self, data: Any = None, uuid: Optional[str] = None, key: Any = _MISSING,
                 **kwargs: Any):
        self.uuid = uuid or request_id()
        super().__init__(data if data is not None else {}, **kwargs)
        if key is not _MISSING:
            self.key = key
        self.rtype = f"{self.etype}_RESPONSE@{self.uuid}"


class GrabRender(ServerRPC):
    """Ask the browser for a rendered frame (answered by the ``GrabRender`` element, or a
    ``CameraView(stream="ondemand")`` with the same key). ``data`` carries ``quality`` and
    ``downsample``; ``subsample`` is accepted as an alias of ``downsample``."""

    etype = "GRAB_RENDER"

    def __init__(self, key: str = "DEFAULT", uuid: Optional[str] = None, **params: Any):
        if "subsample" in params:
            sub = params.pop("subsample")
            params.setdefault("downsample", sub)
        super().__init__(params, uuid=uuid, key=key)


class GetWebXRMesh(ServerRPC):
    """Ask ``WebXRMesh`` components for the meshes detected in an AR session."""

    etype = "GET_WEBXR_MESH"

    def __init__(self, key: str = "webxr-mesh", uuid: Optional[str] = None, **params: Any):
        super().__init__(params, uuid=uuid, key=key)


class MjStep(ServerRPC):
    """Step a MuJoCo simulation in the browser."""

    etype = "MJ_STEP"

    def __init__(self, key: str = "DEFAULT", uuid: Optional[str] = None, **params: Any):
        super().__init__(params, uuid=uuid, key=key)


class MjRender(ServerRPC):
    """Render a MuJoCo camera in the browser."""

    etype = "MJ_RENDER"

    def __init__(self, key: str = "DEFAULT", uuid: Optional[str] = None, **params: Any):
        super().__init__(params, uuid=uuid, key=key)
