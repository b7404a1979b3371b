"""Per-client handles (viser's ``ClientHandle`` ideas): the user's camera, notifications,
file downloads."""

from __future__ import annotations

import logging
import math
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from ..events import ServerEvent

if TYPE_CHECKING:  # pragma: no cover
    from ..events import ClientEvent
    from .session import VuerSession

logger = logging.getLogger("vuer_sync.handles")

__all__ = ["CameraHandle", "NotificationHandle", "run_javascript"]


def run_javascript(session: VuerSession, code: str, delay_ms: int = 0) -> None:
    """Run ``code`` in the web client (Vuer's ``TIMEOUT`` event, ``setTimeout(code, ms)``)."""
    session.send(ServerEvent({"timeout": int(delay_ms), "fn": code}, etype="TIMEOUT"))


class CameraHandle:
    """The user's viewport camera, kept from ``CAMERA_MOVE`` events.

    The web client streams them when the scene has ``SceneCameraControl(stream=True)`` (or
    ``OrbitControls(stream=True)``). ``position`` is ``(x, y, z)``, ``wxyz`` the orientation
    as ``(w, x, y, z)`` (three.js camera: looks along local -Z), ``fov`` vertical degrees,
    ``matrix`` the 4x4 camera-to-world matrix as 16 column-major floats.
    """

    def __init__(self, session: VuerSession):
        self._session = session
        self._lock = threading.Condition()
        self._callbacks: List[Callable[[CameraHandle], Any]] = []
        self.updates = 0
        self.position: Optional[List[float]] = None
        self.wxyz: Optional[List[float]] = None
        self.fov: Optional[float] = None
        self.aspect: Optional[float] = None
        self.near: Optional[float] = None
        self.far: Optional[float] = None
        self.width: Optional[int] = None
        self.height: Optional[int] = None
        self.matrix: Optional[List[float]] = None
        self.raw: Dict[str, Any] = {}

    def on_move(self, ev: ClientEvent) -> None:
        """A ``CAMERA_MOVE`` event (the session's dispatcher calls this on the reader thread):
        store the new state; callbacks go to the handler thread."""
        value: Dict[str, Any] = ev.value if isinstance(ev.value, dict) else {}
        inner = value.get("camera")
        cam: Dict[str, Any] = inner if isinstance(inner, dict) else value
        try:
            state = _parse_camera(cam)
        except (TypeError, ValueError) as e:
            logger.debug("ignored malformed CAMERA_MOVE: %s", e)
            return
        with self._lock:
            self.raw = cam
            for name, v in state.items():
                setattr(self, name, v)
            self.updates += 1
            self._lock.notify_all()
        for cb in list(self._callbacks):
            self._session.core.submit(cb, self)

    def on_update(self, fn: Callable[[CameraHandle], Any]) -> Callable[[CameraHandle], Any]:
        """Call ``fn(camera)`` (on the session's handler thread) after every camera move."""
        self._callbacks.append(fn)
        return fn

    def wait_for_update(self, timeout: Optional[float] = None, after: int = 0) -> bool:
        """Block until more than ``after`` camera updates arrived (default: the first)."""
        with self._lock:
            return self._lock.wait_for(lambda: self.updates > after or self._session.closed,
                                       timeout) and self.updates > after

    def move(self, position: Optional[Sequence[float]] = None,
             look_at: Optional[Sequence[float]] = None, fov: Optional[float] = None) -> None:
        """Move the user's view (the ``SceneCamera`` of a ``DefaultScene``)."""
        props: Dict[str, Any] = {"key": "SceneCamera"}
        if position is not None:
            props["position"] = [float(v) for v in position]
        if look_at is not None:
            props["lookAt"] = [float(v) for v in look_at]
        if fov is not None:
            props["fov"] = float(fov)
        self._session.update @ props

    def __repr__(self) -> str:
        return f"<CameraHandle position={self.position} wxyz={self.wxyz} fov={self.fov}>"


def _floats(v: Any, n: int) -> List[float]:
    if not isinstance(v, list) or len(v) != n:
        raise ValueError(f"expected {n} numbers, got {v!r:.40}")
    out = [float(x) for x in v]
    if not all(math.isfinite(x) for x in out):
        raise ValueError("NaN or infinity in camera state")
    return out


def _parse_camera(cam: Dict[str, Any]) -> Dict[str, Any]:
    """The camera fields of a CAMERA_MOVE value, validated (raises on malformed input)."""
    state: Dict[str, Any] = {}
    if "position" in cam:
        state["position"] = _floats(cam["position"], 3)
    if "quaternion" in cam:  # three.js order [x, y, z, w]
        x, y, z, w = _floats(cam["quaternion"], 4)
        state["wxyz"] = [w, x, y, z]
    for name in ("fov", "aspect", "near", "far"):
        if isinstance(cam.get(name), (int, float)) and not isinstance(cam[name], bool):
            state[name] = float(cam[name])
    for name in ("width", "height"):
        if isinstance(cam.get(name), (int, float)) and not isinstance(cam[name], bool):
            state[name] = int(cam[name])
    if "matrix" in cam:
        state["matrix"] = _floats(cam["matrix"], 16)
        state.setdefault("position", state["matrix"][12:15])
    return state


_DISMISS_JS = (
    "document.addEventListener('click', function (e) {"
    " var b = e.target.closest && e.target.closest('.vuer-sync-notification > button');"
    " if (b) { b.parentElement.style.display = 'none'; } }, true);"
)

_COLORS = {
    "dark": "#25262b", "gray": "#868e96", "red": "#fa5252", "pink": "#e64980",
    "grape": "#be4bdb", "violet": "#7950f2", "indigo": "#4c6ef5", "blue": "#228be6",
    "cyan": "#15aabf", "green": "#40c057", "lime": "#82c91e", "yellow": "#fab005",
    "orange": "#fd7e14", "teal": "#12b886",
}


class NotificationHandle:
    """A notification shown in the web client's HTML overlay (``htmlChildren``).

    Assigning ``title``, ``body``, ``loading``, ``with_close_button``, ``auto_close`` or
    ``color`` updates it live; :meth:`remove` takes it away, and so does ``auto_close``
    (milliseconds). The close button hides it in that page; the web client (0.0.102) does not
    report button clicks, so the server learns of it only from a client that sends ``CLICK``
    with the button's key.
    """

    _counter = 0
    _FIELDS = ("title", "body", "loading", "with_close_button", "auto_close", "color")

    def __init__(self, session: VuerSession, title: str, body: str, loading: bool = False,
                 with_close_button: bool = True, auto_close: Any = False,
                 color: Optional[str] = None):
        NotificationHandle._counter += 1
        self._session = session
        self.key = f"vuer-sync-notification-{NotificationHandle._counter}"
        self._ready = False
        self._removed = False
        self.title = title
        self.body = body
        self.loading = loading
        self.with_close_button = with_close_button
        self.auto_close = auto_close
        self.color = color
        self._ready = True
        core = session.core
        core.on_key("CLICK", f"{self.key}-close", lambda ev: self.remove())
        if with_close_button and not core.dismiss_installed:
            # the web client's Button does not send CLICK (client 0.0.102): dismiss in the page
            run_javascript(session, _DISMISS_JS)
            core.dismiss_installed = True
        session.add(self._element(), to="htmlChildren")
        self._arm_auto_close()

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in self._FIELDS and getattr(self, "_ready", False) and not self._removed:
            self._session.upsert(self._element(), to="htmlChildren")
            if name == "auto_close":
                self._arm_auto_close()

    def _element(self) -> Dict[str, Any]:
        accent = _COLORS.get(self.color or "", self.color or "#228be6")
        children: List[Any] = [
            {"key": f"{self.key}-title", "tag": "Div",
             "style": {"fontWeight": "bold", "marginBottom": "4px"},
             "children": [("⏳ " if self.loading else "") + str(self.title)]},
            {"key": f"{self.key}-body", "tag": "Div", "children": [str(self.body)]},
        ]
        if self.with_close_button:
            # the web client's Button renders its `value` as the label
            children.append({"key": f"{self.key}-close", "tag": "Button", "value": "\u00d7",
                             "style": {"position": "absolute", "top": "4px", "right": "6px"}})
        return {
            "key": self.key, "tag": "Div", "className": "vuer-sync-notification",
            # top centre: the web client has panels top left, on the right, and XR buttons
            # at the bottom centre
            "style": {"position": "fixed", "top": "16px", "left": "50%",
                      "transform": "translateX(-50%)", "zIndex": 10000,
                      "minWidth": "220px", "maxWidth": "360px", "padding": "10px 28px 10px 12px",
                      "background": "#1f2023", "color": "#f1f3f5", "borderRadius": "6px",
                      "borderLeft": f"4px solid {accent}", "fontFamily": "sans-serif",
                      "fontSize": "13px", "boxShadow": "0 2px 10px rgba(0,0,0,.35)"},
            "children": children,
        }

    def _arm_auto_close(self) -> None:
        ms = self.auto_close
        if ms is False or ms is None or isinstance(ms, bool):
            return
        session = self._session

        def later() -> None:
            if not session.wait_closed(float(ms) / 1000.0):
                self.remove()

        session.spawn_task(later, name=f"vuer-notification:{self.key[-6:]}")

    def remove(self) -> None:
        """Take the notification away (idempotent)."""
        if self._removed:
            return
        object.__setattr__(self, "_removed", True)
        self._session.core.drop_key("CLICK", f"{self.key}-close")
        if not self._session.closed:
            self._session.remove @ self.key

    @property
    def removed(self) -> bool:
        return self._removed


def file_download_js(url: str, filename: str) -> str:
    """JavaScript that makes the browser save ``url`` as ``filename``."""
    import json

    return (
        "(function(){var a=document.createElement('a');"
        f"a.href={json.dumps(url)};a.download={json.dumps(filename)};"
        "a.style.display='none';document.body.appendChild(a);a.click();"
        "setTimeout(function(){a.remove();},1000);})()"
    )

