"""Rendered frames from the browser as numpy arrays (``session.get_render``).

Two paths, both answered by the real Vuer web client:

* no camera pose: the ``GrabRender`` element copies the main canvas (what the user sees);
* a camera pose: an off-screen ``CameraView(stream="ondemand")`` renders the scene from that
  pose into its own target, so the user's view does not move. The helper is sent into the
  scene's ``rawChildren`` with ``showCamera=False`` and ``monitor=False``: no camera gizmo,
  frustum or preview image appears in the user's canvas (the web client still lists it in
  its side panels).

The web client fixes a ``CameraView``'s ``fov``, size, ``near``/``far`` when it mounts (later
changes are ignored or distort the image) and gives each mounted one its own WebGL context,
which it never releases. So there is one helper camera per ``(width, height, fov, near, far,
depth)`` configuration, kept mounted and reused (only its pose changes between calls), at
most :data:`MAX_RENDER_CAMERAS` per session. A ``SET`` replaces the scene lists and with them
the helpers; re-adding one costs a new context, and Chrome drops the page's oldest context -
the user's own view - beyond 16 (:func:`keep_render_cameras` avoids that: this module
registers it with the session's core as a ``SET`` hook once it placed a helper camera).

The request travels behind every scene message sent before the call (one ordered outbox), and
the call waits ``settle`` seconds after the last message was written so the browser has drawn
it before the frame is copied (the ``GrabRender`` component copies whatever the canvas last
drew). When nothing at all was written since the previous frame of this session was answered,
there is nothing to wait for and the wait is skipped, so a capture loop that does not change
the scene is not slowed down.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import RPCTimeout
from ..events import GrabRender
from ..rpc import format_seconds

if TYPE_CHECKING:  # pragma: no cover
    from .session import VuerSession

__all__ = [
    "MAX_RENDER_CAMERAS", "RENDER_CAMERA_KEY", "decode_jpeg", "get_render",
    "keep_render_cameras", "look_at_wxyz", "wxyz_to_euler",
]

logger = logging.getLogger("vuer_sync.render")

RENDER_CAMERA_KEY = "vuer-sync-render-camera"  # the first helper camera; then "...-1", ...
MAX_RENDER_CAMERAS = 8  # helper camera configurations per session (one WebGL context each)
_REMOUNT_WARNING = 8  # helper re-adds after SETs before warning that the user's view may die
_MOUNT_TTL = 1.0  # first request after adding a responder element: retried at this interval


class RenderState:
    """What this module remembers about one session (``session.core.render_state``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cameras: Dict[tuple, str] = {}  # configuration -> helper key
        self.camera_props: Dict[str, Dict[str, Any]] = {}  # key -> props last sent
        self.camera_epoch: Dict[str, int] = {}  # key -> scene epoch it was last sent in
        self.remounts = 0  # helpers re-added after a SET dropped them
        self.quiet_at: Optional[int] = None  # written count when the last frame answered


def _state(session: VuerSession) -> RenderState:
    return session.core.render_state


def keep_render_cameras(session: VuerSession, msg: Dict[str, Any]) -> Dict[str, Any]:
    """Carry the helper cameras of ``get_render`` over a ``SET`` (a ``SET`` hook of the
    session's core, called with the wire map just before it is queued, which starts the next
    scene epoch).

    A ``SET`` replaces every scene list, which unmounts the helpers; re-adding one later
    costs the page a WebGL context that the web client never frees. Appending them (same
    key, same props) to the new scene's ``rawChildren`` keeps them mounted. ``msg`` is
    changed in place and returned; helpers the scene already lists are left alone.
    """
    st = _state(session)
    data = msg.get("data")
    if msg.get("etype") != "SET" or not isinstance(data, dict):
        return msg
    from ..schemas import CameraView

    with st.lock:
        if not st.camera_props:
            return msg
        raw = list(data.get("rawChildren") or [])
        present = {n.get("key") for n in raw if isinstance(n, dict)}
        for key, props in st.camera_props.items():
            if key not in present:
                raw.append(CameraView(key=key, **props).serialize())
            st.camera_epoch[key] = session.core.scene_epoch + 1  # the SET's epoch
        data["rawChildren"] = raw
    return msg


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
    data = frame if isinstance(frame, bytes) else bytes(frame)
    if data[:3] != b"\xff\xd8\xff":
        raise ValueError(f"value[{what!r}] is not a JPEG: {len(data)} bytes starting "
                         f"{data[:16]!r}")
    with Image.open(io.BytesIO(data)) as img:
        if img.mode != mode:
            img = img.convert(mode)
        else:
            img.load()
        return np.asarray(img)


def _field(ev: Any, what: str) -> Any:
    """``ev.value[what]``, or a ``ValueError`` naming what arrived instead of a map."""
    value = ev.value
    if not isinstance(value, dict):
        raise ValueError(f"expected a map with {what!r} in the {ev.etype} answer, got "
                         f"{type(value).__name__}: {repr(value)[:80]}")
    return value.get(what)


def _settle(session: VuerSession, settle: float, deadline: float) -> int:
    """Wait until what was sent is written, then until ``settle`` s after the last write,
    unless nothing was written since the last answered frame; return the written count."""
    session.flush(max(0.0, deadline - time.monotonic()))
    written = session.core.written()
    if _state(session).quiet_at == written:
        return written  # the last frame already showed everything sent so far
    wait = session.core.last_write + settle - time.monotonic()
    if wait > 0:
        session.wait_closed(wait)
    return written


def _answered(session: VuerSession, written: int) -> None:
    """After an answer: remember the written count if our request was the only frame written
    since the settle (then the next call may skip the wait); forget it otherwise."""
    now = session.core.written()
    _state(session).quiet_at = now if now == written + 1 else None


def _request(session: VuerSession, req_kwargs: dict, mounted: bool, deadline: float,
             timeout: float) -> Any:
    """Send GRAB_RENDER; if the responder was just added, retry while it mounts. A timeout
    names the caller's ``timeout`` (rounded), not what was left of it for the last try."""
    what = (f"get_render: no frame from session {session.id} within {format_seconds(timeout)} s "
            f"(is a browser with the Vuer web client showing this session's scene?)")
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RPCTimeout(what)
        ttl = left if mounted else min(left, _MOUNT_TTL)
        try:
            return session.rpc(GrabRender(**req_kwargs), ttl=ttl)
        except RPCTimeout as e:
            if mounted or time.monotonic() >= deadline:
                raise RPCTimeout(what) from e
            mounted = True  # give the freshly added element the rest of the time


def _place_camera(session: VuerSession, w: int, h: int, fov: float, near: float, far: float,
                  depth: bool, position: list, rotation: list) -> Tuple[str, bool]:
    """Send the helper camera for this configuration at this pose (unless it is already
    there); return its key and whether it was mounted before this call."""
    from ..schemas import CameraView

    st = _state(session)
    config = (w, h, fov, near, far, depth)
    with st.lock:
        key = st.cameras.get(config)
        if key is None:
            if len(st.cameras) >= MAX_RENDER_CAMERAS:
                raise RuntimeError(
                    f"get_render: this session already has {MAX_RENDER_CAMERAS} off-screen "
                    f"cameras, one per (width, height, fov, near, far, depth) "
                    f"configuration; the web client fixes those when a camera mounts and "
                    f"gives each one a WebGL context it never frees, and Chrome drops the "
                    f"page's oldest context (the user's own view) past 16. Reuse a "
                    f"configuration (crop or resize in Python), or reload the page.")
            key = RENDER_CAMERA_KEY if not st.cameras else f"{RENDER_CAMERA_KEY}-{len(st.cameras)}"
            st.cameras[config] = key
        props = dict(
            stream="ondemand", width=w, height=h, fov=fov, near=near, far=far,
            renderDepth=depth, downsample=1, showCamera=False, showFrustum=False,
            monitor=False, position=position, rotation=rotation,
        )
        epoch = session.core.scene_epoch
        mounted = st.camera_epoch.get(key) == epoch
        if mounted and st.camera_props.get(key) == props:
            return key, True
        if not mounted and key in st.camera_epoch:
            st.remounts += 1
            if st.remounts == _REMOUNT_WARNING:
                logger.warning(
                    "session %s: get_render re-added its off-screen camera %d times after "
                    "SETs; each costs the page a WebGL context and Chrome drops the user's "
                    "own view past 16", session.id, st.remounts)
        if not st.camera_props:  # the first helper: keep the helpers mounted across SETs
            session.core.add_set_hook(functools.partial(keep_render_cameras, session))
        session.upsert(CameraView(key=key, **props), to="rawChildren")
        st.camera_props[key] = props
        st.camera_epoch[key] = epoch
    return key, mounted


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
    """:meth:`VuerSession.get_render <vuer_sync.server.session.VuerSession.get_render>`
    (documented there)."""
    from ..schemas import GrabRender as GrabRenderElement

    core = session.core
    core.no_atomic("get_render()")
    deadline = time.monotonic() + timeout
    posed = position is not None or wxyz is not None or look_at is not None or fov is not None
    if posed or depth:
        pos = [float(v) for v in (position if position is not None else (0.0, 0.0, 5.0))]
        if look_at is not None:
            wxyz = look_at_wxyz(pos, look_at)
        rot = wxyz_to_euler(wxyz if wxyz is not None else (1.0, 0.0, 0.0, 0.0))
        w, h = int(width or 640), int(height or 480)
        key, mounted = _place_camera(session, w, h, float(fov if fov is not None else 50.0),
                                     float(near), float(far), bool(depth), pos, list(rot))
        written = _settle(session, settle, deadline)
        ev = _request(session, {"key": key, "quality": quality}, mounted, deadline, timeout)
        _answered(session, written)
        rgb = decode_jpeg(_field(ev, "frame"))
        if depth:
            d = decode_jpeg(_field(ev, "depthFrame"), "depthFrame", mode="L")
            return rgb, d
        return rgb
    mounted = core.grab_render_epoch == core.scene_epoch
    if not mounted:
        session.upsert @ GrabRenderElement()  # Vuer's grab_render times out without it
        core.grab_render_epoch = core.scene_epoch
    written = _settle(session, settle, deadline)
    ev = _request(session, {"quality": quality, "downsample": downsample}, mounted, deadline,
                  timeout)
    _answered(session, written)
    rgb = decode_jpeg(_field(ev, "frame"))
    if width is not None and height is not None and rgb.shape[:2] != (height, width):
        from PIL import Image

        bilinear = getattr(Image, "Resampling", Image).BILINEAR  # Pillow >= 9.1: Resampling
        rgb = np.asarray(Image.fromarray(rgb).resize((int(width), int(height)), bilinear))
    return rgb
