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

import time
import uuid as _uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

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
    "Remove",
    "ServerEvent",
    "ServerRPC",
    "Set",
    "Update",
    "Upsert",
    "serialize",
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
        return f"client<{self.etype}>({self.value!r})"


class InitEvent(ClientEvent):
    """The first event of every connection; its ``value`` describes the client."""

    etype = INIT


class NullEvent(ClientEvent):
    """Sent into a ``bind`` generator after each ``Frame``'s delay (etype ``NULL``)."""

    etype = "NULL"


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
        return f"server<{self.etype}>({self.data!r})"


def _items(elements: Iterable[Any]) -> List[Any]:
    out: List[Any] = []
    for e in elements:
        if isinstance(e, (list, tuple)):
            out.extend(e)
        else:
            out.append(e)
    return out


def _nodes(elements: Iterable[Any]) -> Tuple[List[Any], Optional[bool]]:
    """Elements serialized now (a snapshot of their props at call time, and plain dicts
    the outbox can coalesce by key); dicts are passed through as Vuer does.

    Also returns whether a large ``bytes`` value is among them: ``False`` when every node
    is one of our elements and none has one, ``None`` when unknown (dicts, vuer's elements).
    """
    seen = codec.large_seen()
    known = True
    out = []
    for e in _items(elements):
        if isinstance(e, Element):
            out.append(e.serialize())
        else:
            known = False
            out.append(serialize(e))
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
        nodes, self._large = _nodes(elements)
        super().__init__({"nodes": nodes, "to": to}, **kwargs)


class Upsert(ServerEvent):
    """Merge into existing nodes by key, or append them.

    ``strict`` is sent as a top-level key (Vuer 0.1.6 drops it; the web client ignores it).
    """

    etype = "UPSERT"

    def __init__(self, *elements: Any, to: Optional[str] = None, strict: bool = False,
                 **kwargs: Any):
        nodes, self._large = _nodes(elements)
        super().__init__({"nodes": nodes, "to": to}, strict=strict, **kwargs)


class Update(ServerEvent):
    """Shallow-merge props into existing nodes (unknown keys are ignored by the web client)."""

    etype = "UPDATE"

    def __init__(self, *elements: Any, strict: bool = False, **kwargs: Any):
        nodes, self._large = _nodes(elements)
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
        self.uuid = uuid or str(_uuid.uuid4())
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
