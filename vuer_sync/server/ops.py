"""The ``@``-able scene operations shared by sessions and the shared scene.

``target.upsert @ Box(key="box")`` and ``target.upsert(Box(key="box"), to="parent")`` both
build an event and hand it to the target's ``send``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from .. import codec
from ..events import Add, Remove, ServerEvent, Set, Update, Upsert
from ..schemas import scene_for_set

__all__ = ["At", "SceneOps", "encode_event", "message_of", "set_event"]


def set_event(scene: Any) -> Set:
    """A ``SET`` whose scene lists are explicit, so the web client's shallow merge replaces
    them (Vuer omits empty lists, so ``set @ Scene()`` does not clear a populated scene)."""
    return Set(scene_for_set(scene))


class At:
    """``op @ x`` is ``op(x)``; ``op(*xs, **kw)`` builds an event and sends it."""

    __slots__ = ("_build", "_send")

    def __init__(self, send: Callable[[ServerEvent], Any], build: Callable[..., ServerEvent]):
        self._send = send
        self._build = build

    def __matmul__(self, x: Any) -> None:
        self._send(self._build(x))

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self._send(self._build(*args, **kwargs))


class SceneOps:
    """Mixin: ``set/add/upsert/update/remove`` in ``@`` and call forms over ``self.send``.

    Every operation enqueues and returns at once, in order. ``set`` takes one scene;
    ``add``/``upsert`` take elements (or lists) and ``to=``; ``upsert``/``update`` take
    ``strict=``; ``remove`` takes keys.
    """

    def send(self, event: ServerEvent) -> None:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    @property
    def set(self) -> At:
        return At(self.send, set_event)

    @property
    def add(self) -> At:
        return At(self.send, Add)

    @property
    def upsert(self) -> At:
        return At(self.send, Upsert)

    @property
    def update(self) -> At:
        return At(self.send, Update)

    @property
    def remove(self) -> At:
        return At(self.send, Remove)

    def __matmul__(self, event: ServerEvent) -> None:
        self.send(event)


def encode_event(event: ServerEvent, msg: Dict[str, Any]) -> Any:
    """The frame payload of ``msg`` (``event``'s map): large ``bytes`` by reference
    (:func:`~vuer_sync.codec.encode_parts`), unless the event knows it has none."""
    if getattr(event, "_large", None) is False:
        return codec.encode(msg)
    return codec.encode_parts(msg)


def message_of(event: ServerEvent) -> Dict[str, Any]:
    """The wire map of a server event, checked for the events that are never sent."""
    if not isinstance(event, ServerEvent):
        raise TypeError(f"expected a ServerEvent, got {type(event).__name__}")
    if event.etype == "FRAME":
        raise TypeError("Frame is only meaningful as a bind() generator's yield")
    return event.serialize()
