"""The ``@``-able scene operations shared by sessions and the shared scene.

``target.upsert @ Box(key="box")`` and ``target.upsert(Box(key="box"), to="parent")`` both
build an event and hand it to the target's ``send``, except for the hot path of high-rate
producers: ``upsert @ element`` / ``update @ element`` with one of our elements builds the
wire map, the frame and the coalescing key directly (:func:`node_message`), with no event
object, and hands them to the target's ``_send_node_message``. Both paths put the same bytes
on the wire.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .. import codec
from ..coalesce import MergeInfo, node_merge_info
from ..events import Add, Remove, ServerEvent, Set, Update, Upsert
from ..poses import Poses, encode_poses
from ..schemas import Element, Scene, scene_for_set

__all__ = ["At", "SceneOps", "check_scene", "encode_event", "message_of", "node_message",
           "set_event"]


def check_scene(scene: Any) -> None:
    """``TypeError`` unless ``scene`` is a whole scene: a :class:`~vuer_sync.schemas.Scene`
    (``DefaultScene`` included), vuer's ``Scene``, or a scene map (tag ``"Scene"`` or none).

    The web client takes a ``SET`` of anything else (``set @ Box(...)``) as a scene with no
    children and shows an empty page, so this is said here, in the caller.

    >>> from vuer_sync.schemas import Box
    >>> try:
    ...     check_scene(Box(key="box"))
    ... except TypeError as e:
    ...     print(str(e)[:72])
    set takes the whole scene: a Scene or DefaultScene (e.g. set @ DefaultSc
    """
    if isinstance(scene, Scene):
        return
    if isinstance(scene, dict):
        tag = scene.get("tag", "Scene")
        if tag == "Scene":
            return
        what = f"a {tag!r} map"
    elif isinstance(scene, Element):
        what = f"{type(scene).__name__}(key={scene.key!r})"
    elif not isinstance(scene, type) and callable(getattr(scene, "_serialize", None)):
        if getattr(scene, "tag", None) == "Scene":  # vuer's Scene / DefaultScene
            return
        what = f"vuer's {type(scene).__name__}"
    else:
        shown = repr(scene)
        what = f"{type(scene).__name__} {shown if len(shown) <= 60 else shown[:60] + '...'}"
    raise TypeError(f"set takes the whole scene: a Scene or DefaultScene (e.g. "
                    f"set @ DefaultScene(box)), got {what}; to add or change one node use "
                    f"upsert @ box")


def set_event(scene: Any) -> Set:
    """A ``SET`` whose scene lists are explicit, so the web client's shallow merge replaces
    them (Vuer omits empty lists, so ``set @ Scene()`` does not clear a populated scene).
    Anything but a whole scene raises ``TypeError`` (:func:`check_scene`)."""
    check_scene(scene)
    return Set(scene_for_set(scene))


class At:
    """``op @ x`` is ``op(x)``; ``op(*xs, **kw)`` builds an event and sends it.

    ``fast``: the etype (``"UPSERT"``/``"UPDATE"``) whose ``@ element`` form skips the
    event object (see the module docstring).
    """

    __slots__ = ("_build", "_fast", "_target")

    def __init__(self, target: SceneOps, build: Callable[..., ServerEvent],
                 fast: Optional[str] = None):
        self._target = target
        self._build = build
        self._fast = fast

    def __matmul__(self, x: Any) -> None:
        if self._fast is not None and isinstance(x, Element):
            self._target._send_node_message(*node_message(self._fast, x))
        else:
            self._target.send(self._build(x))

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self._target.send(self._build(*args, **kwargs))


class SceneOps:
    """Mixin: ``set/add/upsert/update/remove`` in ``@`` and call forms over ``self.send``.

    Every operation enqueues and returns at once, in order. ``set`` takes one scene
    (a ``Scene``/``DefaultScene``); ``add``/``upsert``/``update`` take elements or dicts
    with a ``key`` (or lists of them), ``add``/``upsert`` take ``to=``, ``upsert``/``update``
    take ``strict=``; ``remove`` takes keys. Anything else raises ``TypeError`` in the
    caller (``set @ Box(...)``, ``upsert @ "box"``), before anything is queued.
    """

    def send(self, event: ServerEvent) -> None:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def _send_node_message(self, msg: Dict[str, Any], payload: Any, info: MergeInfo) -> None:
        """Send what :func:`node_message` built (targets override this with a direct path)."""
        raise NotImplementedError  # pragma: no cover - provided by subclasses

    # made once per target, then plain attribute reads (a high-rate producer reads one per call)
    @functools.cached_property
    def set(self) -> At:
        return At(self, set_event)

    @functools.cached_property
    def add(self) -> At:
        return At(self, Add)

    @functools.cached_property
    def upsert(self) -> At:
        return At(self, Upsert, "UPSERT")

    @functools.cached_property
    def update(self) -> At:
        return At(self, Update, "UPDATE")

    @functools.cached_property
    def remove(self) -> At:
        return At(self, Remove)

    def __matmul__(self, event: ServerEvent) -> None:
        self.send(event)

    def poses(self, keys: Sequence[str], position: Any, quaternion: Optional[Any] = None
              ) -> None:
        """Move ``len(keys)`` existing nodes at once from columns: one ``UPDATE`` frame,
        encoded with no Python object per pose (:mod:`vuer_sync.poses`).

        ``position``: ``(N, 3)`` array-like; ``quaternion``: ``(N, 4)`` as ``[x, y, z, w]``
        (three.js order), or ``None`` to leave rotations as they are. Same bytes on the wire
        as ``update @ [Box(key=k, position=p, quaternion=q), ...]``, and it coalesces like
        it when the client is behind (latest pose wins). Sent as float32.

        >>> import numpy as np
        >>> from vuer_sync import Vuer
        >>> app = Vuer(port=0)
        >>> app.scene.poses(["link0", "link1"], np.zeros((2, 3)), np.tile([0, 0, 0, 1.0], (2, 1)))
        """
        self._send_poses(encode_poses(keys, position, quaternion))

    def _send_poses(self, poses: Poses) -> None:
        """Send what :meth:`poses` encoded (targets with a cheaper path override this)."""
        self._send_node_message(codec.unpack(poses.payload), poses.payload, poses.info)


def node_message(etype: str, element: Element) -> Tuple[Dict[str, Any], Any, MergeInfo]:
    """``(message map, frame payload, merge info)`` of ``Upsert(element)`` /
    ``Update(element)`` with no other arguments, built without the event object.

    The map is the one the event's ``serialize()`` gives (same keys, same order), so the
    frame is the same bytes.

    >>> from vuer_sync.schemas import Box
    >>> msg, payload, info = node_message("UPSERT", Box(key="b", position=[0, 1, 0]))
    >>> msg["data"]
    {'nodes': [{'key': 'b', 'tag': 'Box', 'position': [0, 1, 0]}], 'to': None}
    >>> msg["etype"], info[0]
    ('UPSERT', ('UPSERT', ('b',)))
    """
    seen = codec.large_seen()
    node = element.serialize()
    data = {"nodes": [node], "to": None} if etype == "UPSERT" else {"nodes": [node]}
    ts = time.time()
    msg: Dict[str, Any] = {"ts": int(ts * 1000), "data": data, "strict": False, "etype": etype}
    # packed with ts in integer ms as codec.encode does, without its copy of the map
    payload = codec.pack(msg) if codec.large_seen() == seen else codec.encode_parts(msg)
    msg["ts"] = ts  # the map keeps float seconds, as an event's serialize() gives
    return msg, payload, node_merge_info(etype, node)


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
