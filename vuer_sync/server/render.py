"""Rendered frames from the browser as numpy arrays (``session.get_render``).

Two paths, both answered by the real Vuer web client:

* no camera pose: the ``GrabRender`` element copies the main canvas (what the user sees);
* a camera pose: an off-screen ``CameraView(stream="ondemand")`` renders the scene from that
  pose into its own target, so the user's view does not move (the helper is sent with
  ``showCamera=False`` and ``monitor=False``: no camera gizmo, frustum or preview image
  appears in the user's canvas; the web client still lists it in its side panels).

The request travels behind every scene message sent before the call (one ordered outbox), and
the call waits ``settle`` seconds after the last message was written so the browser has drawn
it before the frame is copied (the ``GrabRender`` component copies whatever the canvas last
drew). When nothing at all was written since the previous frame of this session was answered,
there is nothing to wait for and the wait is skipped, so a capture loop that does not change
the scene is not slowed down.
"""

from __future__ import annotations

import io
import math
import time
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import RPCTimeout
from ..events import GrabRender

if TYPE_CHECKING:  # pragma: no cover
    from .session import VuerSession

__all__ = ["RENDER_CAMERA_KEY", "decode_jpeg", "get_render", "look_at_wxyz", "wxyz_to_euler"]

RENDER_CAMERA_KEY = "vuer-sync-render-camera"
_MOUNT_TTL = 1.0  # first request after adding a responder element: retried at this interval


def wxyz_to_euler(wxyz: Sequence[float]) -> Tuple[float, float, float]:
    """A unit quaternion ``(w, x, y, z)`` as three.js Euler angles in ``XYZ`` order."""
    w, x, y, z = (float(v) for v in wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    m11 = 1 - 2 * (y * y + z * z)
    m12 = 2 * (x * y - w * z)
    m13 = 2 * (x * z + w * y)
    m22 = 1 - 2 * (x * x + z * z)
    m23 = 2 * (y * z - w * x)
    m32 = 2 * (y * z + w * x)
    m33 = 1 - 2 * (x * x + y * y)
    ey = math.asin(max(-1.0, min(1.0, m13)))
    if abs(m13) < 0.9999999:
        return (math.atan2(-m23, m33), ey, math.atan2(-m12, m11))
    return (math.atan2(m32, m22), ey, 0.0)


def look_at_wxyz(position: Sequence[float], target: Sequence[float],
                 up: Sequence[float] = (0.0, 1.0, 0.0)) -> Tuple[float, float, float, float]:
    """The camera orientation ``(w, x, y, z)`` that looks from ``position`` at ``target``
    (three.js camera: looks along its local -Z with +Y up).

    >>> [round(v, 6) for v in look_at_wxyz([0, 0, 5], [0, 0, 0])]
    [1.0, 0.0, 0.0, 0.0]
    """
    p, t, u = (np.asarray(v, dtype=float) for v in (position, target, up))
    zaxis = p - t
    if not np.any(zaxis):
        raise ValueError("position and target are the same point")
    zaxis /= np.linalg.norm(zaxis)
    xaxis = np.cross(u, zaxis)
    if np.linalg.norm(xaxis) < 1e-9:  # looking along `up`: pick any perpendicular
        xaxis = np.cross([1.0, 0.0, 0.0] if abs(zaxis[0]) < 0.9 else [0.0, 0.0, 1.0], zaxis)
    xaxis /= np.linalg.norm(xaxis)
    yaxis = np.cross(zaxis, xaxis)
    m = np.stack([xaxis, yaxis, zaxis], axis=1)  # columns
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
    return tuple(float(v) for v in q)  # type: ignore[return-value]


def decode_jpeg(frame: Any, what: str = "frame", mode: str = "RGB") -> np.ndarray:
    """JPEG bytes from the browser to a ``uint8`` array; a clear error for anything else.

    >>> decode_jpeg(b"not a jpeg")
    Traceback (most recent call last):
    ...
    ValueError: value['frame'] is not a JPEG: 10 bytes starting b'not a jpeg'
    """
    from PIL import Image

    if not isinstance(frame, (bytes, bytearray, memoryview)):
        shown = repr(frame)[:80]
        raise ValueError(f"expected JPEG bytes in value[{what!r}], got "
                         f"{type(frame).__name__}: {shown}")
    data = bytes(frame)
    if data[:3] != b"\xff\xd8\xff":
        raise ValueError(f"value[{what!r}] is not a JPEG: {len(data)} bytes starting "
                         f"{data[:16]!r}")
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert(mode))


def _field(ev: Any, what: str) -> Any:
    """``ev.value[what]``, or a ``ValueError`` naming what arrived instead of a map."""
    value = ev.value
    if not isinstance(value, dict):
        raise ValueError(f"expected a map with {what!r} in the {ev.etype} answer, got "
                         f"{type(value).__name__}: {repr(value)[:80]}")
    return value.get(what)


def _written(session: VuerSession) -> int:
    """How many frames the session's sender has written so far."""
    return int(session._outbox.snapshot_stats()["sent"])


def _settle(session: VuerSession, settle: float, deadline: float) -> int:
    """Wait until what was sent is written, then until ``settle`` s after the last write,
    unless nothing was written since the last answered frame; return the written count."""
    session.flush(max(0.0, deadline - time.monotonic()))
    written = _written(session)
    if getattr(session, "_render_quiet_at", None) == written:
        return written  # the last frame already showed everything sent so far
    wait = session._last_write + settle - time.monotonic()
    if wait > 0:
        session._closed.wait(wait)
    return written


def _answered(session: VuerSession, written: int) -> None:
    """After an answer: remember the written count if our request was the only frame written
    since the settle (then the next call may skip the wait); forget it otherwise."""
    now = _written(session)
    session._render_quiet_at = now if now == written + 1 else None  # type: ignore[attr-defined]


def _request(session: VuerSession, req_kwargs: dict, mounted: bool, deadline: float) -> Any:
    """Send GRAB_RENDER; if the responder was just added, retry while it mounts."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RPCTimeout("get_render: no frame before the timeout (is a browser with the "
                             "Vuer web client connected to this session?)")
        ttl = left if mounted else min(left, _MOUNT_TTL)
        try:
            return session.rpc(GrabRender(**req_kwargs), ttl=ttl)
        except RPCTimeout:
            if mounted or time.monotonic() >= deadline:
                raise
            mounted = True  # give the freshly added element the rest of the time


def get_render(
    session: VuerSession,
    width: Optional[int] = None,
    height: Optional[int] = None,
    *,
    position: Optional[Sequence[float]] = None,
    wxyz: Optional[Sequence[float]] = None,
    look_at: Optional[Sequence[float]] = None,
    fov: Optional[float] = None,
    quality: float = 0.9,
    downsample: int = 1,
    depth: bool = False,
    near: float = 0.1,
    far: float = 100.0,
    timeout: float = 10.0,
    settle: float = 0.05,
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """See :meth:`VuerSession.get_render`."""
    from ..schemas import CameraView
    from ..schemas import GrabRender as GrabRenderElement

    deadline = time.monotonic() + timeout
    posed = position is not None or wxyz is not None or look_at is not None or fov is not None
    if posed or depth:
        pos = [float(v) for v in (position if position is not None else (0.0, 0.0, 5.0))]
        if look_at is not None:
            wxyz = look_at_wxyz(pos, look_at)
        rot = wxyz_to_euler(wxyz if wxyz is not None else (1.0, 0.0, 0.0, 0.0))
        w, h = int(width or 640), int(height or 480)
        # showCamera=False: no movable camera gizmo and frustum in the user's view (they
        # also cost ~150 ms of React work per pose change); monitor=False: no preview plane.
        props = dict(
            stream="ondemand", width=w, height=h, fov=float(fov if fov is not None else 50.0),
            position=pos, rotation=list(rot), near=near, far=far, renderDepth=bool(depth),
            downsample=1, showCamera=False, showFrustum=False, monitor=False,
        )
        mounted = session._render_camera_epoch == session._scene_epoch
        if not (mounted and getattr(session, "_render_camera_props", None) == props):
            session.upsert @ CameraView(key=RENDER_CAMERA_KEY, **props)
            session._render_camera_props = props  # type: ignore[attr-defined]
        session._render_camera_epoch = session._scene_epoch
        written = _settle(session, settle, deadline)
        ev = _request(session, {"key": RENDER_CAMERA_KEY, "quality": quality}, mounted,
                      deadline)
        _answered(session, written)
        rgb = decode_jpeg(_field(ev, "frame"))
        if depth:
            d = decode_jpeg(_field(ev, "depthFrame"), "depthFrame", mode="L")
            return rgb, d
        return rgb
    mounted = session._grab_render_epoch == session._scene_epoch
    if not mounted:
        session.upsert @ GrabRenderElement()  # Vuer's grab_render times out without it
        session._grab_render_epoch = session._scene_epoch
    written = _settle(session, settle, deadline)
    ev = _request(session, {"quality": quality, "downsample": downsample}, mounted, deadline)
    _answered(session, written)
    rgb = decode_jpeg(_field(ev, "frame"))
    if width is not None and height is not None and rgb.shape[:2] != (height, width):
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).resize((int(width), int(height)),
                                                     Image.BILINEAR))
    return rgb
