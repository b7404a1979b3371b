"""``Vuer``: the threaded server (Flask + flask-sock on Werkzeug, in a background thread)."""

from __future__ import annotations

import fnmatch
import inspect
import logging
import socket
import ssl
import struct
import threading
import time
import uuid
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from flask import Flask, Response, request
from flask_sock import Sock

from .. import codec
from .._threads import start_thread
from .._version import __version__
from ..errors import ProtocolError, SessionClosed
from ..events import INIT, ClientEvent, Frame, NullEvent, ServerEvent
from ..transport.budget import InboundBudget
from . import http
from .config import env_bool, env_int, env_str
from .serving import HttpServer, default_max_connections
from .session import VuerSession
from .shared import SharedScene
from .viewer import CurrentViewer

logger = logging.getLogger("vuer_sync.server")

__all__ = ["Vuer"]


def _hand_over_gil() -> None:
    """Let a thread just woken by an answer (an ``rpc()`` or ``till()`` caller) take the GIL
    now, rather than after this reader thread's way back into ``recv``.

    ``time.sleep(0)`` releases the GIL for a moment; the woken caller, already waiting for
    it, takes it. Measured on the RPC round trip benchmark (2 cores, loopback): p50 from
    ~150 to ~110 µs. Called only when a waiter was woken, never per message.
    """
    time.sleep(0)


Handler = Callable[[ClientEvent, VuerSession], Any]
DEFAULT_CORS = "https://vuer.ai,https://staging.vuer.ai,https://dash.ml"


class _NoReaderThread:
    """Given to simple-websocket as ``thread_class``: flask-sock does the routing and the
    handshake, then our transport reads the socket itself (no extra reader thread)."""

    def __init__(self, target: Any = None, **_: Any):
        self.name = "vuer-unused"

    def start(self) -> None:
        pass


def _check_plain(fn: Callable[..., Any], what: str) -> None:
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{what} must be a plain function in vuer_sync (blocking calls, no await): "
            f"{getattr(fn, '__qualname__', fn)} is async"
        )


_SUMMED = ("queued", "sent", "coalesced", "bytes_sent", "received", "bad_messages",
           "downlink_dropped")


def _add_stats(total: Dict[str, Any], st: Dict[str, Any]) -> None:
    for k in _SUMMED:
        total[k] = total.get(k, 0) + st.get(k, 0)
    dropped = total.setdefault("dropped", {})
    for reason, n in st.get("dropped", {}).items():
        dropped[reason] = dropped.get(reason, 0) + n


def _matches(init: ClientEvent, filters: Dict[str, Any]) -> bool:
    """Vuer's spawn filter: every ``k=pattern`` globs the INIT field ``k`` (which must exist)."""
    info = init.value if isinstance(init.value, dict) else {}
    return all(info.get(k) is not None and fnmatch.fnmatch(str(info.get(k)), str(p))
               for k, p in filters.items())


class Vuer:
    """The Vuer server as plain blocking Python.

    >>> from vuer_sync import Vuer
    >>> from vuer_sync.schemas import Box, DefaultScene
    >>> app = Vuer(port=0)
    >>> @app.spawn
    ... def main(session):
    ...     session.set @ DefaultScene(Box(key="box"))
    ...     session.forever()
    >>> _ = app.start(block=False)   # prints the banner, returns once the port is bound
    Vuer server (vuer_sync ...)
    ...
    >>> app.port > 0
    True
    >>> app.stop()

    Configuration follows Vuer 0.1.6 (keyword arguments, else environment variables, parsed
    to their types): ``host`` (``VUER_HOST``, default ``127.0.0.1``), ``port``
    (``VUER_PORT``, 8012; 0 picks a free port), ``cert``/``key``/``ca_cert``
    (``VUER_SSL_CERT``/``VUER_SSL_KEY``/``VUER_SSL_CA_CERT``; ``ca_cert`` requires client
    certificates), ``cors`` (``VUER_CORS``), ``workspace`` (``VUER_WORKSPACE``, alias
    ``static_root``), ``queue_len``, ``WEBSOCKET_MAX_SIZE`` (enforced: larger messages close
    the connection with 1009), ``REQUEST_MAX_SIZE``, ``domain``/``client_url``,
    ``verbose``, ``queries``. Our own: ``token`` (``VUER_TOKEN``), ``allowed_origins``,
    ``allowed_hosts`` (``VUER_SYNC_ALLOWED_HOSTS``: names this server may be reached by
    besides loopback names and IP addresses, the DNS-rebinding guard), ``ping_interval``,
    ``outbox_bytes``/``outbox_policy``/``outbox_timeout``, and the limits of
    ``docs/security.md``: ``header_timeout`` (10 s for a request head), ``init_timeout``
    (30 s for a websocket's ``INIT``), ``max_connections``, ``inbound_bytes`` (memory for
    incomplete inbound messages, all connections together).
    """

    def __init__(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        *,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        ca_cert: Optional[str] = None,
        cors: Optional[str] = None,
        workspace: Any = None,
        static_root: Any = None,
        queue_len: int = 100,
        WEBSOCKET_MAX_SIZE: Optional[int] = None,
        REQUEST_MAX_SIZE: Optional[int] = None,
        domain: Optional[str] = None,
        client_url: Optional[str] = None,
        verbose: Optional[bool] = None,
        queries: Optional[Dict[str, Any]] = None,
        token: Optional[str] = None,
        allowed_origins: Sequence[str] = (),
        ping_interval: Optional[float] = 20.0,
        send_timeout: float = 60.0,
        outbox_bytes: int = 256 << 20,
        outbox_policy: str = "block",
        outbox_timeout: float = 2.0,
        free_port: bool = False,
        allowed_hosts: Optional[Sequence[str]] = None,
        header_timeout: float = 10.0,
        init_timeout: Optional[float] = 30.0,
        max_connections: Optional[int] = None,
        inbound_bytes: Optional[int] = None,
        **unknown: Any,
    ):
        if unknown:
            raise TypeError(f"unknown Vuer option(s): {', '.join(sorted(unknown))}")
        self.host = host if host is not None else env_str("VUER_HOST", "127.0.0.1")
        self.port = int(port if port is not None else env_int("VUER_PORT", 8012))
        self.cert = cert if cert is not None else env_str("VUER_SSL_CERT")
        self.key = key if key is not None else env_str("VUER_SSL_KEY")
        self.ca_cert = ca_cert if ca_cert is not None else env_str("VUER_SSL_CA_CERT")
        self.cors = cors if cors is not None else env_str("VUER_CORS", DEFAULT_CORS)
        if static_root is not None and workspace is None:
            warnings.warn("static_root is deprecated; use workspace=", DeprecationWarning,
                          stacklevel=2)
            workspace = static_root
        self.workspace = workspace if workspace is not None else env_str("VUER_WORKSPACE", ".")
        self.queue_len = int(queue_len)
        self.WEBSOCKET_MAX_SIZE = int(
            WEBSOCKET_MAX_SIZE if WEBSOCKET_MAX_SIZE is not None
            else env_int("WEBSOCKET_MAX_SIZE", 2**28))
        self.REQUEST_MAX_SIZE = int(
            REQUEST_MAX_SIZE if REQUEST_MAX_SIZE is not None
            else env_int("REQUEST_MAX_SIZE", 2**28))
        self.domain = domain if domain is not None else env_str("VUER_DOMAIN", "https://vuer.ai")
        self.client_url = client_url
        self.verbose = verbose if verbose is not None else env_bool("VUER_VERBOSE", False)
        self.queries = dict(queries or {})
        self.token = token if token is not None else env_str("VUER_TOKEN")
        self.allowed_origins = [o.strip() for o in allowed_origins if o.strip()]
        self.ping_interval = ping_interval
        self.send_timeout = float(send_timeout)
        self.outbox_bytes = int(outbox_bytes)
        self.outbox_policy = outbox_policy
        self.outbox_timeout = float(outbox_timeout)
        if free_port:
            warnings.warn("free_port is ignored: vuer_sync never kills other processes; "
                          "use port=0 for a free port", stacklevel=2)
        if allowed_hosts is None:
            allowed_hosts = (env_str("VUER_SYNC_ALLOWED_HOSTS", "") or "").split(",")
        self.allowed_hosts = [h.strip() for h in allowed_hosts if h.strip()]
        if "*" in self.allowed_hosts and not self.token:
            raise ValueError("allowed_hosts=['*'] accepts requests for any host name, which "
                             "lets DNS-rebinding pages reach this server: it needs a token= "
                             "(or VUER_TOKEN) too")
        self.header_timeout = float(header_timeout)
        self.init_timeout = None if init_timeout is None else float(init_timeout)
        self.max_connections = int(max_connections) if max_connections is not None \
            else default_max_connections()
        self.inbound_bytes = int(inbound_bytes) if inbound_bytes is not None \
            else max(512 << 20, 2 * self.WEBSOCKET_MAX_SIZE)
        self._inbound_budget = InboundBudget(self.inbound_bytes)
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.token:
            logger.warning("binding %s without a token: anyone who can reach this port can "
                           "drive the scene (pass token= or set VUER_TOKEN)", self.host)

        self._handlers: Dict[str, Dict[int, Tuple[Handler, bool]]] = {}
        self._handler_ids = 0
        self._registered: Dict[type, List[Any]] = {}
        self._spawns: List[Tuple[Callable[[VuerSession], Any], Dict[str, Any]]] = []
        self._bind_fn: Optional[Callable[[VuerSession], Any]] = None
        self._lock = threading.RLock()
        self._session_cv = threading.Condition(self._lock)
        self._sessions: Dict[str, VuerSession] = {}
        self._threads: List[threading.Thread] = []
        self._server: Optional[HttpServer] = None
        self._stopped = threading.Event()
        self._on_connect: List[Callable[[VuerSession], Any]] = []
        self._on_disconnect: List[Callable[[VuerSession], Any]] = []
        self.client_root = http.client_build_dir()
        self.flask = self._make_flask()
        self.scene = SharedScene(self)
        self._rtc: Optional[Any] = None
        self._ended_stats: Dict[str, Any] = {"sessions_ended": 0}

    # -- configuration helpers ------------------------------------------------------------

    @property
    def ssl(self) -> str:
        return "s" if self.cert else ""

    def _ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        if self.ca_cert:
            ctx.load_verify_locations(self.ca_cert)
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def get_url(self, host: str = "localhost") -> str:
        """The hosted-client URL, as Vuer prints it: ``https://vuer.ai?ws=ws://host:port``."""
        base = self.client_url or self.domain
        url = f"{base}?ws=ws{self.ssl}://{host}:{self.port}"
        if self.token:
            url += f"/%3Ftoken%3D{self.token}"
        for k, v in self.queries.items():
            url += f"&{k}={v}"
        return url

    @property
    def local_url(self) -> str:
        """The offline web client served by this server."""
        url = f"http{self.ssl}://localhost:{self.port}/"
        if self.token:
            url += f"?ws=ws{self.ssl}://localhost:{self.port}/%3Ftoken%3D{self.token}"
        return url

    # -- registration ---------------------------------------------------------------------

    def add_handler(self, event_type: str, fn: Optional[Handler] = None, once: bool = False
                    ) -> Any:
        """Call ``fn(event, session)`` for every event of ``event_type``.

        Decorator or call form; returns a function that removes the handler (the decorator
        form returns the function itself, with ``.remove`` attached). Handlers run off the
        socket-reader thread, one at a time and in arrival order per session; an exception
        is logged and the session goes on.
        """

        def register(f: Handler) -> Callable[[], None]:
            _check_plain(f, "a handler")
            with self._lock:
                self._handler_ids += 1
                hid = self._handler_ids
                self._handlers.setdefault(event_type, {})[hid] = (f, once)

            def cleanup() -> None:
                with self._lock:
                    hs = self._handlers.get(event_type)
                    if hs is not None:
                        hs.pop(hid, None)
                        if not hs:
                            del self._handlers[event_type]

            return cleanup

        if fn is None:
            def decorator(f: Handler) -> Handler:
                f.remove = register(f)  # type: ignore[attr-defined]
                return f

            return decorator
        return register(fn)

    def register_handler(self, message_cls: type, callback: Callable[[VuerSession, Any], Any]
                         ) -> None:
        """viser-style: call ``callback(session, event)`` for every event of the
        ``ClientEvent`` subclass ``message_cls`` (matched by its ``etype``)."""
        etype = getattr(message_cls, "etype", None)
        if not isinstance(etype, str):
            raise TypeError("register_handler takes a ClientEvent subclass with an etype")
        cleanup = self.add_handler(etype, lambda ev, s: callback(s, ev))
        self._registered.setdefault(message_cls, []).append((callback, cleanup))

    def unregister_handler(self, message_cls: type,
                           callback: Optional[Callable[[VuerSession, Any], Any]] = None) -> None:
        """Remove ``callback`` (or every callback) registered for ``message_cls``."""
        kept = []
        for cb, cleanup in self._registered.pop(message_cls, []):
            if callback is None or cb is callback:
                cleanup()
            else:
                kept.append((cb, cleanup))
        if kept:
            self._registered[message_cls] = kept

    def spawn(self, fn: Optional[Callable[[VuerSession], Any]] = None, start: bool = False,
              **filters: Any) -> Any:
        """Run ``fn(session)`` on its own thread for each client whose INIT matches
        ``filters`` (glob patterns on INIT fields, e.g. ``client="python"``; first match
        wins). The session closes when ``fn`` returns; an exception is logged with its
        traceback and closes the socket with 1011. ``start=True`` starts the server and
        blocks, like Vuer."""

        def register(f: Callable[[VuerSession], Any]) -> Callable[[VuerSession], Any]:
            _check_plain(f, "a spawn function")
            self._spawns.append((f, filters))
            if start:
                self.start()
            return f

        if fn is None:
            return register
        return register(fn)

    def bind(self, fn: Optional[Callable[[VuerSession], Any]] = None, start: bool = False
             ) -> Any:
        """Generator mode: ``fn(session)`` yields server events; each received event is sent
        into it. ``yield Frame(ev, frame_rate)`` sends ``ev``, waits, then sends a ``NULL``
        event in. Handlers and RPC replies keep working (Vuer disables them here)."""

        def register(f: Callable[[VuerSession], Any]) -> Callable[[VuerSession], Any]:
            if not inspect.isgeneratorfunction(f):
                raise TypeError("bind() takes a generator function (def ...: yield ...)")
            self._bind_fn = f
            if start:
                self.start()
            return f

        if fn is None:
            return register
        return register(fn)

    def on_connect(self, fn: Callable[[VuerSession], Any]) -> Callable[[VuerSession], Any]:
        """Call ``fn(session)`` (on the session's handler thread) when a client connects."""
        self._on_connect.append(fn)
        return fn

    def on_disconnect(self, fn: Callable[[VuerSession], Any]) -> Callable[[VuerSession], Any]:
        """Call ``fn(session)`` after a client disconnected."""
        self._on_disconnect.append(fn)
        return fn

    def add_route(self, path: str, fn: Callable[..., Any], method: str = "GET",
                  content_type: str = "text/html") -> None:
        """Serve ``fn()`` (or ``fn(request)``) at ``path``; it may return str, bytes, a
        dict/list (JSON), a ``Path`` or a Flask ``Response``."""
        takes_request = len(inspect.signature(fn).parameters) > 0

        def view(**kwargs: Any) -> Response:
            result = fn(request, **kwargs) if takes_request else fn(**kwargs)
            return http.route_result(result, content_type)

        view.__name__ = f"user_route_{len(self.flask.url_map._rules)}"
        self.flask.add_url_rule(path, view.__name__, view, methods=[method.upper()])

    # -- sessions -------------------------------------------------------------------------

    @property
    def sessions(self) -> List[VuerSession]:
        """The connected sessions."""
        with self._lock:
            return list(self._sessions.values())

    def wait_for_session(self, timeout: Optional[float] = None, **filters: Any) -> VuerSession:
        """Block until a client whose INIT matches ``filters`` (glob patterns, e.g.
        ``client="browser"``) is connected; return its session (the oldest such).

        Raises :class:`~vuer_sync.errors.RPCTimeout` after ``timeout`` seconds. The session
        ends with its connection (a page reload is a new session): a loop that should outlive
        one viewer sends the scene to :attr:`scene` and uses :meth:`viewer` for the rest.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._session_cv:
            while True:
                for s in self._sessions.values():
                    if s.init is not None and not s.closed and _matches(s.init, filters):
                        return s
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    from ..errors import RPCTimeout

                    which = f" matching {filters}" if filters else ""
                    raise RPCTimeout(f"no client{which} connected within {timeout} s")
                self._session_cv.wait(left)

    def viewer(self, timeout: float = 30.0, setup: Optional[Callable[[VuerSession], Any]] = None,
               **filters: Any) -> CurrentViewer:
        """A handle on "whoever is watching now": every call goes to the newest connected
        client whose INIT matches ``filters`` (e.g. ``client="browser"``), and follows it
        across page reloads (see :class:`~vuer_sync.server.viewer.CurrentViewer`).

        ``viewer.upsert @ ...``, ``viewer.rpc(...)``, ``viewer.get_render()``,
        ``viewer.till(...)`` wait for a matching client when none is connected (up to
        ``timeout`` s, or the call's own ``ttl``/``timeout``) and, when it leaves mid-call,
        retry on the next one. ``setup(session)`` runs for each new session the handle
        moves to, before anything else is sent to it.

        >>> from vuer_sync import Vuer, VuerClient
        >>> with Vuer(port=0) as app:  # doctest: +ELLIPSIS
        ...     viewer = app.viewer(client="python", timeout=5)
        ...     with VuerClient(f"ws://localhost:{app.port}") as tab:
        ...         viewer.wait() is app.sessions[-1]
        Vuer server (vuer_sync ...)
        ...
        True
        """
        return CurrentViewer(self, timeout=timeout, setup=setup, filters=filters)

    def get_render(self, *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        """``get_render`` on a connected browser (the newest), waiting up to ``timeout`` s for
        one to connect (``RPCTimeout`` with a clear message if none does). If that browser
        leaves mid-call, the frame is asked of another one within ``timeout``; if none is
        connected by then, ``SessionClosed``. See :meth:`VuerSession.get_render` (the same
        as ``app.scene.get_render``)."""
        return self.viewer(client="browser").get_render(*args, timeout=timeout, **kwargs)

    def show(self, height: int = 400, width: str = "100%") -> None:
        """Display the web client inline in Jupyter (an IFrame of :attr:`local_url`); outside
        a notebook, open it in the default web browser. Starts the server if needed."""
        if self._server is None:
            self.start(block=False)
        try:
            from IPython import get_ipython
            from IPython.display import IFrame, display
        except ImportError:
            get_ipython = None  # type: ignore[assignment]
        if get_ipython is not None and get_ipython() is not None:
            display(IFrame(self.local_url, width=width, height=height))
            return None  # displayed once; returning the frame would show a second viewer
        import webbrowser

        webbrowser.open(self.local_url)
        return None

    @property
    def rtc(self) -> Any:
        """The collaborative scene graph room (:class:`~vuer_sync.server.rtc_room.RtcRoom`):
        relays ``vuer_sync.rtc`` edits between clients and mirrors the result into
        ``app.scene``. Created on first use (or on the first ``RTC`` event)."""
        if self._rtc is None:
            from .rtc_room import RtcRoom

            with self._lock:
                if self._rtc is None:
                    self._rtc = RtcRoom(self)
        return self._rtc

    def broadcast(self, event: ServerEvent, exclude: Optional[VuerSession] = None) -> None:
        """Send an event to every connected client (except ``exclude``); scene events also
        update the shared scene (same as ``app.scene.send``)."""
        self.scene.send(event, exclude=exclude)

    def flush(self, timeout: Optional[float] = 10.0) -> None:
        """Block until every client has been written everything queued for it so far."""
        for s in self.sessions:
            try:
                s.flush(timeout)
            except SessionClosed:
                pass

    @property
    def stats(self) -> Dict[str, Any]:
        """Totals over connected and ended sessions: sent, coalesced, bytes_sent, queued,
        received, bad_messages, dropped (by reason), plus ``sessions`` connected now."""
        with self._lock:
            total: Dict[str, Any] = {k: v for k, v in self._ended_stats.items()
                                     if k != "dropped"}
            total["dropped"] = dict(self._ended_stats.get("dropped", {}))
            live = list(self._sessions.values())
        for s in live:
            _add_stats(total, s.stats)
        total["sessions"] = len(live)
        return total

    def _count_ended(self, session: VuerSession) -> None:
        st = session.stats
        with self._lock:
            _add_stats(self._ended_stats, st)
            self._ended_stats["sessions_ended"] += 1

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, block: bool = True) -> Vuer:
        """Start serving. ``block=True`` (the default, like Vuer) serves until Ctrl-C or
        :meth:`stop`; ``block=False`` returns as soon as the port is bound."""
        if self._server is None:
            self._stopped.clear()
            server = HttpServer(self.flask, self.host, self.port, self._ssl_context(),
                                header_timeout=self.header_timeout,
                                max_connections=self.max_connections,
                                idle_timeout=max(self.header_timeout, self.send_timeout))
            self._server = server
            self.port = server.port
            server.start()
            self._banner()
        if block:
            try:
                while not self._stopped.wait(3600):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                self.stop()
        return self

    def run(self, *args: Any, **kwargs: Any) -> Vuer:
        """Deprecated alias of :meth:`start` (as in Vuer)."""
        warnings.warn("Vuer.run() is deprecated; use start()", DeprecationWarning, stacklevel=2)
        return self.start(*args, **kwargs)

    def stop(self, timeout: float = 1.0) -> None:
        """Close every websocket, stop listening, join our threads, free the port."""
        self.scene._stop_recordings()  # streamed app.scene.record(path=...) files finished
        server, self._server = self._server, None
        if server is None:
            return
        deadline = time.monotonic() + timeout
        server.stop()
        sessions = self.sessions
        for s in sessions:
            s._begin_close(1001, "server stopping", drain=False)
        close_by = time.monotonic() + timeout / 2  # time for the close handshakes
        for s in sessions:
            s._sender.join(max(0.0, close_by - time.monotonic()))
        for s in sessions:
            s._ws.abort()
        threads: List[threading.Thread] = []
        with self._lock:
            threads.extend(self._threads)
            self._threads.clear()
        for s in list(self._sessions.values()):
            threads.extend(s._threads_to_join())
        for t in threads:
            if t is threading.current_thread():
                continue
            t.join(max(0.0, deadline - time.monotonic()))
        server.close_connections(max(0.1, deadline - time.monotonic()))
        with self._lock:
            self._sessions.clear()
            self._session_cv.notify_all()
        self._stopped.set()
        alive = [t.name for t in threads if t.is_alive() and t is not threading.current_thread()]
        if alive:
            logger.warning("stop(): threads still running after %.1f s: %s", timeout, alive)

    def __enter__(self) -> Vuer:
        return self.start(block=False)

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _banner(self) -> None:
        lines = [
            f"Vuer server (vuer_sync {__version__})",
            "",
            f"Local:   {self.local_url}",
            f"Hosted:  {self.get_url()}",
        ]
        if self.client_root is None:
            lines.append("(web client not installed: pip install 'vuer-sync[viewer]')")
        lines += ["", "Ctrl-C to stop."]
        if self.verbose:  # as Vuer's verbose: every setting
            for name in ("host", "port", "cert", "key", "ca_cert", "cors", "workspace",
                         "queue_len", "WEBSOCKET_MAX_SIZE", "REQUEST_MAX_SIZE", "domain",
                         "client_url", "ping_interval", "send_timeout", "outbox_bytes",
                         "outbox_policy", "outbox_timeout", "allowed_origins"):
                lines.append(f"  {name} = {getattr(self, name)!r}")
            lines.append(f"  token = {'(set)' if self.token else None}")
        print("\n".join(lines) + "\n", flush=True)  # the one start-up banner

    # -- the websocket connection ---------------------------------------------------------

    def _make_flask(self) -> Flask:
        app = Flask("vuer_sync", static_folder=None)
        app.wsgi_app = http.HostGuard(  # type: ignore[method-assign]
            app.wsgi_app, lambda host: http.host_allowed(host, self.host, self.allowed_hosts))
        app.config["MAX_CONTENT_LENGTH"] = self.REQUEST_MAX_SIZE
        app.config["SOCK_SERVER_OPTIONS"] = {"thread_class": _NoReaderThread}
        sock = Sock(app)

        @app.before_request
        def gate() -> Optional[Response]:
            env = request.environ
            if env.get("HTTP_UPGRADE", "").lower() == "websocket":
                if not http.origin_allowed(env.get("HTTP_ORIGIN"), env.get("HTTP_HOST"),
                                           self.allowed_origins):
                    logger.warning("refused websocket from origin %r", env.get("HTTP_ORIGIN"))
                    return Response("origin not allowed\n", status=403, mimetype="text/plain")
                if not http.token_ok(self.token):
                    return Response("missing or wrong token\n", status=403,
                                    mimetype="text/plain")
                problem = http.handshake_problem(env)
                if problem:
                    return Response(f"bad websocket handshake: {problem}\n", status=400,
                                    mimetype="text/plain")
                env.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)  # never permessage-deflate
            return None

        @app.after_request
        def cors(resp: Response) -> Response:
            origin = request.headers.get("Origin")
            if origin and self._cors_allows(origin):
                resp.headers["Access-Control-Allow-Origin"] = origin
                resp.headers["Vary"] = "Origin"
            return resp

        @sock.route("/")
        def websocket(ws: Any) -> None:
            self._serve_websocket(ws)

        @app.route("/")
        def index() -> Response:
            if self.client_root is None:
                return Response(http.missing_client_page(self.port), mimetype="text/html")
            return http.file_response(self.client_root / "index.html")

        @app.route("/favicon.ico")
        def favicon() -> Response:  # ours (an SVG): no 404 in the page's console
            from .favicon import favicon_response

            return favicon_response()

        @app.route("/assets/<path:filename>")
        def assets(filename: str) -> Response:
            if self.client_root is None:
                return Response("web client not installed\n", status=404)
            return http.serve_from([self.client_root / "assets"], filename)

        @app.route("/workspace/<path:filename>")
        def workspace(filename: str) -> Response:
            if not http.token_ok(self.token):  # with a token, files need it too
                return Response("missing or wrong token\n", status=403, mimetype="text/plain")
            return http.serve_from(http.workspace_roots(self.workspace), filename)

        @app.route("/relay", methods=["POST"])
        def relay() -> Response:
            return self._relay()

        @app.route("/download/<token>/<path:filename>")
        def download(token: str, filename: str) -> Response:
            return self._serve_download(token)

        return app

    def _cors_allows(self, origin: str) -> bool:
        allowed = [o.strip() for o in (self.cors or "").split(",") if o.strip()]
        return "*" in allowed or origin in allowed or http.origin_allowed(
            origin, request.headers.get("Host"), self.allowed_origins)

    def _offer_download(self, filename: str, content: bytes, chunk_size: int) -> str:
        import secrets
        from urllib.parse import quote

        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._downloads = {t: d for t, d in getattr(self, "_downloads", {}).items()
                               if d[3] > now}  # forget offers nobody took within 10 min
            self._downloads[token] = (filename, content, max(1, int(chunk_size)), now + 600)
        return f"/download/{token}/{quote(filename)}"

    def _serve_download(self, token: str) -> Response:
        import mimetypes

        with self._lock:
            downloads = getattr(self, "_downloads", {})
            if request.method == "HEAD":  # asks about it: does not use it up
                offer = downloads.get(token)
            else:
                offer = downloads.pop(token, None)  # one-time
        if offer is not None and offer[3] < time.monotonic():
            offer = None  # offered more than 10 minutes ago: expired
        if offer is None:
            return Response("no such download\n", status=404, mimetype="text/plain")
        filename, content, chunk, _ = offer

        def chunks() -> Any:
            for i in range(0, len(content), chunk):
                yield content[i:i + chunk]

        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        resp = Response(chunks(), mimetype=ctype)
        resp.headers["Content-Length"] = str(len(content))
        resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return resp

    def _relay(self) -> Response:
        if not http.token_ok(self.token):
            return Response("missing or wrong token\n", status=403, mimetype="text/plain")
        if not http.origin_allowed(request.headers.get("Origin"), request.headers.get("Host"),
                                   self.allowed_origins):
            return Response("origin not allowed\n", status=403, mimetype="text/plain")
        sid = request.args.get("sid")
        if not sid:
            return Response("missing ?sid=<session id or *>\n", status=400)
        body = request.get_data(cache=False)
        try:
            msg = codec.decode(body)
        except ProtocolError as e:
            return Response(f"bad body: {e}\n", status=400, mimetype="text/plain")
        targets = self.sessions if sid == "*" else [s for s in self.sessions if s.id == sid]
        if sid != "*" and not targets:
            return Response(f"no session {sid}\n", status=404, mimetype="text/plain")
        payload = codec.encode(msg)
        delivered = 0
        for s in targets:
            try:
                s._send_encoded(payload, msg)
                delivered += 1
            except SessionClosed:
                pass
        return Response(f'{{"delivered": {delivered}}}', mimetype="application/json")

    def _serve_websocket(self, ws: Any) -> None:
        from ..transport import ConnectionClosed, WebSocketConnection

        sock = ws.sock
        ws.connected = False  # from here on our transport owns the socket
        if self.send_timeout and hasattr(socket, "SO_SNDTIMEO"):
            sec = int(self.send_timeout)
            usec = int((self.send_timeout - sec) * 1e6)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, usec))
            except OSError:
                pass
        conn = WebSocketConnection(sock, is_server=True,
                                   max_message_size=self.WEBSOCKET_MAX_SIZE,
                                   inbound_budget=self._inbound_budget)
        session = VuerSession(self, conn, str(uuid.uuid4()), request.environ)
        with self._lock:
            self._sessions[session.id] = session
            self._session_cv.notify_all()
        self.scene._join(session)  # the current shared scene first, then live updates
        logger.info("session %s connected from %s", session.id, session.remote_addr)
        for cb in self._on_connect:
            session._handlers.submit(cb, session)
        bind_queue = None
        if self._bind_fn is not None:
            import queue

            bind_queue = queue.SimpleQueue()
            session._bind_queue = bind_queue
            session._threads.append(
                start_thread(self._run_bind, f"vuer-bind:{session.id[:8]}", session, bind_queue))
        why = "client disconnected"
        try:
            while True:
                session._on_message(conn.receive())
        except ConnectionClosed as e:
            why = f"client closed the connection ({e.code}{' ' + e.reason if e.reason else ''})"
        except OSError as e:
            why = f"connection lost: {e}"
        except Exception:
            logger.exception("session %s: reader failed", session.id)
            why = "reader error"
        finally:
            self.scene._leave(session)
            if self._rtc is not None:
                self._rtc.leave(session)
            session._on_disconnect(why)
            if bind_queue is not None:
                bind_queue.put(None)
            session._sender.join(2.0)
            conn.abort()
            session._join_tasks(1.0)
            for cb in self._on_disconnect:
                session._handlers.submit(cb, session)
            self._count_ended(session)
            with self._lock:
                self._sessions.pop(session.id, None)
                # joined by stop() if still running then (spawn functions, handlers, tasks)
                self._threads.extend(t for t in session._threads_to_join() if t.is_alive())
                self._threads = [t for t in self._threads if t.is_alive()]
                self._session_cv.notify_all()
            logger.info("session %s ended: %s", session.id, why)

    # -- inbound dispatch (reader thread: never runs user code) ----------------------------

    def _dispatch(self, session: VuerSession, ev: ClientEvent) -> None:
        et = ev.etype
        if session._rpc.resolve(et, ev):
            _hand_over_gil()
            return
        if et == INIT and session.init is None:
            session.init = ev
            with self._lock:
                self._session_cv.notify_all()
            self._start_spawn(session, ev)
        session._remember(ev)  # before waking till(): the event is in the buffer by then
        woke = session._till.resolve(et, ev)
        if et == "CAMERA_MOVE":
            session.camera._on_move(ev)
        elif et == "RTC":
            self.rtc.on_event(session, ev)
        if session._key_handlers:
            hook = session._key_handlers.get((et, getattr(ev, "key", None)))
            if hook is not None:
                session._handlers.submit(hook, ev)
        if et not in self._handlers:  # no handler: skip the lock (a dict read is atomic)
            todo = ()
        else:
            with self._lock:
                hs = self._handlers.get(et)
                todo = []
                if hs:
                    for hid, (fn, once) in list(hs.items()):
                        todo.append(fn)
                        if once:
                            del hs[hid]
                    if not hs:
                        del self._handlers[et]
        for fn in todo:
            session._handlers.submit(fn, ev, session)
        if session._bind_queue is not None:
            session._bind_queue.put(ev)
        if woke:
            _hand_over_gil()

    def _start_spawn(self, session: VuerSession, init: ClientEvent) -> None:
        info = init.value if isinstance(init.value, dict) else {}
        matches = [fn for fn, filters in self._spawns if _matches(init, filters)]
        if not matches:
            return
        if len(matches) > 1:
            logger.warning("several spawn functions match %s; running the first (%s)",
                           info, getattr(matches[0], "__qualname__", matches[0]))
        t = start_thread(self._run_spawn, f"vuer-spawn:{session.id[:8]}", matches[0], session)
        session._threads.append(t)

    def _run_spawn(self, fn: Callable[[VuerSession], Any], session: VuerSession) -> None:
        try:
            fn(session)
        except SessionClosed as e:
            logger.debug("spawn function ended: %s", e)
            return
        except Exception:
            logger.exception("spawn function %s raised; closing session %s with 1011",
                             getattr(fn, "__qualname__", fn), session.id)
            session._begin_close(1011, "server error", drain=True)
            return
        session.close(1000, "")

    def _run_bind(self, session: VuerSession, inbox: Any) -> None:
        assert self._bind_fn is not None
        gen = self._bind_fn(session)
        try:
            out = next(gen)
            while True:
                while isinstance(out, Frame):
                    session.send(out.data)
                    if session.wait_closed(1.0 / max(out.frame_rate, 1e-3)):
                        return
                    out = gen.send(NullEvent())
                if isinstance(out, ServerEvent):
                    session.send(out)
                ev = inbox.get()
                if ev is None:
                    return
                out = gen.send(ev)
        except (StopIteration, SessionClosed):
            return
        except Exception:
            logger.exception("bind generator raised; closing session %s", session.id)
            session._begin_close(1011, "server error", drain=True)
        finally:
            gen.close()

