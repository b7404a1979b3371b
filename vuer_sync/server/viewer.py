"""``app.viewer()``: "whoever is watching now", followed across page reloads.

A session is one websocket connection: when the tab reloads, the headset sleeps or the Wi-Fi
drops, that session ends and every later call on it raises
:class:`~vuer_sync.errors.SessionClosed`. That is right inside a ``spawn`` function (one
function per connection); a robot loop outlives any one viewer. It publishes the scene to
``app.scene`` (replayed to every viewer that connects or reconnects), and for what needs one
viewer (a rendered frame, an RPC, an event from the user) it holds a :class:`CurrentViewer`:
a handle that sends each call to the newest connected client matching its INIT filters, and
when that client leaves mid-call, waits (bounded) for the next one and retries there.

>>> from vuer_sync import Vuer, VuerClient
>>> from vuer_sync.schemas import Box
>>> app = Vuer(port=0).start(block=False)
Vuer server (vuer_sync ...)
...
>>> viewer = app.viewer(client="python", timeout=5)   # Python clients stand in for tabs
>>> tab = VuerClient(f"ws://localhost:{app.port}").connect()
>>> viewer.upsert @ Box(key="marker", position=[0, 1, 0])  # waits for a viewer, then sends
>>> tab.recv(timeout=5).etype
'UPSERT'
>>> old = viewer.wait()
>>> tab.close()                                            # the tab reloads ...
>>> old.wait_closed(5)
True
>>> tab = VuerClient(f"ws://localhost:{app.port}").connect()
>>> viewer.upsert @ Box(key="marker", position=[0, 2, 0])  # ... the handle follows it
>>> tab.recv(timeout=5).data["nodes"][0]["position"]
[0, 2, 0]
>>> viewer.wait() is not old
True
>>> tab.close()
>>> app.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

import numpy as np

from ..coalesce import MergeInfo
from ..errors import RPCTimeout, SessionClosed
from ..events import ClientEvent, ServerEvent, ServerRPC
from ..rpc import format_seconds
from .ops import SceneOps
from .registry import matches

if TYPE_CHECKING:  # pragma: no cover
    from .app import Vuer
    from .session import VuerSession

__all__ = ["CurrentViewer"]

logger = logging.getLogger("vuer_sync.viewer")

T = TypeVar("T")


def _usable(session: VuerSession) -> bool:
    """Connected, past its INIT, and still accepting messages."""
    return session.init is not None and not session.closed and session.core.accepting()


class CurrentViewer(SceneOps):
    """The newest connected client whose INIT matches ``filters``, followed across reloads.

    Made by :meth:`Vuer.viewer <vuer_sync.server.app.Vuer.viewer>`. Every call goes to the
    newest matching session connected at that moment (a reloaded tab is a new session, so
    it is the newest one). When no such client is connected, the call waits for one; when
    the client leaves during the call (``SessionClosed``), the call is made again on the
    next one. Waiting is bounded:

    * calls with their own time limit (``rpc(ttl=)``, ``grab_render(ttl=)``,
      ``get_render(timeout=)``, ``till(timeout=)``) wait for a viewer, and retry, within
      that limit;
    * scene operations (``set/add/upsert/update/remove @ x``, ``send``) and ``till`` without
      a timeout wait up to ``timeout`` (the handle's, 30 s by default) for a viewer.

    At the end of that wait the call raises :class:`~vuer_sync.errors.SessionClosed` if a
    viewer left during it, else :class:`~vuer_sync.errors.RPCTimeout` (a ``TimeoutError``)
    saying which clients it waited for and for how long. Other errors (an ``RPCTimeout``
    from a viewer that is connected but does not answer, a bad frame) are raised as they
    are, with no retry. After ``app.stop()`` (or before ``app.start()``) every call raises
    ``SessionClosed`` at once.

    What was sent to one viewer is that viewer's own: a reloaded page does not get it again
    (``app.scene`` replays the shared scene to it). ``setup(session)``, if given, runs for
    each session the handle moves to, before anything else is sent to it: put there what
    every new viewer of this handle needs (a notification, a per-viewer overlay or cursor).
    It should use the session it is given, not the handle. A retried RPC is asked again of
    the new viewer (RPCs to a viewer are questions: a frame, a mesh). For anything else of a
    session (``camera``, ``add_notification``, ...), :attr:`session` is the current one.

    Thread-safe: any thread may use one handle.
    """

    def __init__(self, app: Vuer, *, timeout: float = 30.0,
                 setup: Optional[Callable[[VuerSession], Any]] = None,
                 filters: Optional[Dict[str, Any]] = None):
        self._app = app
        self.timeout = float(timeout)
        self.filters: Dict[str, Any] = dict(filters or {})
        self._setup = setup
        self._lock = threading.RLock()
        self._bound: Optional[VuerSession] = None  # the session setup() last completed for
        self._binding: Optional[VuerSession] = None  # the session setup() runs for now

    # -- which session ----------------------------------------------------------------------

    def _newest(self, exclude: List[VuerSession]) -> Optional[VuerSession]:
        candidates = self._app.sessions
        for s in reversed(candidates):  # connection order: the last one is the newest
            if (s not in exclude and _usable(s) and s.init is not None
                    and matches(s.init, self.filters)):
                return s
        return None

    @property
    def session(self) -> Optional[VuerSession]:
        """The session a call would go to now (the newest matching one), or ``None``."""
        return self._newest([])

    def _which(self) -> str:
        return f"client matching {self.filters}" if self.filters else "client"

    def _check_running(self) -> None:
        if not self._app.running:
            raise SessionClosed("the server is not running (app.start(block=False) starts "
                                "it; app.stop() ends every viewer)")

    def _await(self, what: str, deadline: float, limit: float, exclude: List[VuerSession],
               left: Optional[SessionClosed]) -> VuerSession:
        """The newest usable matching session, waiting until ``deadline`` for one."""
        cv = self._app.connections.cv
        with cv:
            while True:
                self._check_running()
                s = self._newest(exclude)
                if s is not None:
                    return s
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                cv.wait(wait)
        shown = format_seconds(limit)
        if left is not None:
            raise SessionClosed(f"{what}: the viewer left ({left}) and no other "
                                f"{self._which()} connected within {shown} s") from left
        raise RPCTimeout(f"{what}: no {self._which()} connected within {shown} s")

    def _bind(self, session: VuerSession) -> None:
        """Run ``setup`` once for each new session calls go to (before they go to it)."""
        if session is self._bound:
            return
        with self._lock:  # other threads wait here until setup is done for `session`
            if session is self._bound or session is self._binding:
                return  # done meanwhile, or setup itself using this handle
            if self._setup is not None:
                self._binding = session
                try:
                    self._setup(session)
                finally:
                    self._binding = None
            self._bound = session
        logger.debug("viewer %s: following session %s", self.filters or "(any)", session.id)

    def _call(self, what: str, fn: Callable[[VuerSession, Optional[float]], T],
              timeout: Optional[float]) -> T:
        """``fn(session, time_left)`` on the newest matching session, again on the next one
        if that session leaves during the call, all within ``timeout`` (``None``: no limit
        on the call itself; waiting for a viewer is then bounded by ``self.timeout``)."""
        limit = self.timeout if timeout is None else float(timeout)
        deadline = None if timeout is None else time.monotonic() + limit
        gone: List[VuerSession] = []
        left: Optional[SessionClosed] = None
        while True:
            self._check_running()
            session = self._newest(gone)
            if session is None:
                until = deadline if deadline is not None else time.monotonic() + limit
                session = self._await(what, until, limit, gone, left)
            try:
                self._bind(session)
                rest = None if deadline is None else max(0.05, deadline - time.monotonic())
                return fn(session, rest)
            except SessionClosed as e:
                if not self._app.running:
                    raise
                gone.append(session)
                left = e
                logger.info("viewer %s: session %s left during %s (%s); trying the next one",
                            self.filters or "(any)", session.id, what, e)

    def wait(self, timeout: Optional[float] = None) -> VuerSession:
        """Block until a matching client is connected; return the newest such session.

        ``timeout`` defaults to the handle's; ``RPCTimeout`` when it runs out.
        """
        limit = self.timeout if timeout is None else float(timeout)
        return self._call("wait()", lambda s, _: s, limit)

    # -- scene operations (SceneOps provides set/add/upsert/update/remove) -------------------

    def send(self, event: ServerEvent) -> None:
        """Enqueue one event for the current viewer (waiting up to ``timeout`` for one)."""
        self._call("send()", lambda s, _: s.send(event), None)

    def _send_node_message(self, msg: Dict[str, Any], payload: Any, info: MergeInfo) -> None:
        self._call(msg["etype"].lower(),
                   lambda s, _: s.core.send_encoded(payload, msg, None, info), None)

    def flush(self, timeout: Optional[float] = 10.0) -> None:
        """Block until the current viewer has been written everything sent to it so far
        (nothing to wait for when no viewer is connected, or when it leaves meanwhile)."""
        s = self.session
        if s is not None:
            try:
                s.flush(timeout)
            except SessionClosed:
                pass

    # -- blocking calls ---------------------------------------------------------------------

    def rpc(self, event: ServerRPC, ttl: Optional[float] = 2.0) -> ClientEvent:
        """:meth:`VuerSession.rpc <vuer_sync.server.session.VuerSession.rpc>` on the current
        viewer; asked again of the next one if it leaves before answering, within ``ttl``."""
        return self._call(f"{event.etype} request", lambda s, t: s.rpc(event, ttl=t), ttl)

    def grab_render(self, ttl: Optional[float] = 2.0, **kwargs: Any) -> ClientEvent:
        """Vuer's ``grab_render`` on the current viewer (retried as :meth:`rpc`)."""
        return self._call("grab_render()", lambda s, t: s.grab_render(ttl=t, **kwargs), ttl)

    def get_render(self, *args: Any, timeout: float = 10.0, **kwargs: Any
                   ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """A rendered frame (``uint8`` ``(H, W, 3)``, see
        :meth:`VuerSession.get_render <vuer_sync.server.session.VuerSession.get_render>`)
        from the current viewer; if it leaves mid-call, from the next one, all within
        ``timeout``. Needs a client that renders: follow ``client="browser"``."""
        return self._call("get_render()",
                          lambda s, t: s.get_render(*args, timeout=timeout if t is None else t,
                                                    **kwargs), timeout)

    def till(self, etype: str, timeout: Optional[float] = None) -> ClientEvent:
        """The next ``etype`` event from the current viewer (from the next one if it leaves
        while this waits). ``timeout=None`` waits as long as viewers keep coming back within
        the handle's ``timeout``."""
        return self._call(f"till({etype!r})", lambda s, t: s.till(etype, t), timeout)

    def __repr__(self) -> str:
        s = self.session
        return f"<CurrentViewer {self.filters or '(any client)'} -> {s!r}>"
