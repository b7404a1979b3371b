"""``Vuer``: the threaded server (Flask + flask-sock on Werkzeug, in a background thread)."""

from __future__ import annotations

import inspect
import logging
import secrets
import ssl
import threading
import time
import warnings
from ssl import SSLContext
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from flask import Response, request

from .. import lan
from .._version import __version__
from ..config import env_bool, env_int, env_str
from ..errors import SessionClosed
from ..events import ServerEvent
from ..fleet.link import FleetLink
from ..notebook import show_url
from . import http
from .connections import Connections
from .registry import Handler, Registry, check_plain
from .routes import make_flask
from .routes.downloads import Downloads
from .serving import HttpServer, default_max_connections
from .session import VuerSession
from .shared import SharedScene
from .viewer import CurrentViewer
from .xr import controller_stream, hand_stream

logger = logging.getLogger("vuer_sync.server")

FREE_PORT_IGNORED = ("free_port is ignored: vuer_sync never kills other processes; use "
                     "port=0 for a free port")


def _workspace(workspace: Optional[str], static_root: Optional[str]) -> str:
    """``workspace=`` (``static_root=``, deprecated, still taken) or ``VUER_WORKSPACE``."""
    if static_root is not None and workspace is None:
        warnings.warn("static_root is deprecated; use workspace=", DeprecationWarning,
                      stacklevel=3)
        workspace = static_root
    return workspace if workspace is not None else env_str("VUER_WORKSPACE", ".") or "."

__all__ = ["Vuer"]


DEFAULT_CORS = "https://vuer.ai,https://staging.vuer.ai,https://dash.ml"
#: How often ``start(block=True)`` wakes to let Python run a pending Ctrl-C handler
SIGNAL_CHECK_S = 0.25


def _size_option(value: Optional[int], env: str) -> int:
    """A size limit: the argument, else the environment variable, else 256 MiB."""
    return int(value if value is not None else env_int(env, 2**28))


def _received_limits(queue_len: int, downlink_bytes: int) -> Tuple[int, int]:
    """The received-events buffer's limits (``queue_len``, ``downlink_bytes``), checked."""
    if int(queue_len) < 1 or int(downlink_bytes) < 0:
        raise ValueError("queue_len must be at least 1 and downlink_bytes not negative")
    return int(queue_len), int(downlink_bytes)


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
    ``static_root``), ``queue_len`` (a session keeps its newest received events for
    ``session.popleft()``/``stream()``: this many, and at most ``downlink_bytes``, 16 MiB,
    of them together, the newest one whatever its size), ``WEBSOCKET_MAX_SIZE`` (enforced:
    larger messages close the connection with 1009), ``REQUEST_MAX_SIZE``,
    ``domain``/``client_url``, ``verbose``, ``queries``. Our own: ``token``
    (``VUER_TOKEN``), ``allowed_origins``,
    ``allowed_hosts`` (``VUER_SYNC_ALLOWED_HOSTS``: names this server may be reached by
    besides loopback names and IP addresses, the DNS-rebinding guard), ``ping_interval``,
    ``outbox_bytes``/``outbox_policy``/``outbox_timeout``, ``coalesce_after`` (3: a
    client's queue merges a newer update of a node into a queued one only once more than
    this many frames wait while its socket is full or in a burst faster than one update per
    5 ms, so a client that stays behind gets the newest values, while a backlog that is the
    server's own (a pause of the garbage collector, a busy core) of updates at a viewer's
    pace loses no intermediate update up to 64 KiB per client; 0 merges as soon as anything
    waits that way), and the limits of
    ``docs/security.md``: ``header_timeout`` (10 s for a request head), ``init_timeout``
    (30 s for a websocket's ``INIT``), ``max_connections``, ``inbound_bytes`` (memory for
    incomplete inbound messages, all connections together). ``io_threads`` (1): the
    shared I/O threads that serve every websocket (0: two threads per connection, the
    older model; TLS connections always get their own); ``handler_threads`` (32): the
    most threads the event handlers of all sessions run on together. ``fleet``
    (``VUER_SYNC_FLEET``, a ``redis://`` URL) and ``room`` (``VUER_SYNC_ROOM``, default
    ``"default"``): join a fleet, one scene across processes (``docs/fleet.md``).
    ``rtc_journal`` (``VUER_SYNC_RTC_JOURNAL``): where ``app.rtc`` keeps its relay's
    journal: ``"memory"``, ``"redis"`` (the fleet's; the default with a fleet) or a
    ``redis://`` URL (``docs/rtc.md``).
    ``tls="self-signed"``: HTTPS for a headset on the LAN with a cached self-signed
    certificate for this machine's addresses, a token made if none is given, the LAN URL
    and its QR code in the banner (``docs/teleop.md``; ``pip install "vuer-sync[lan]"``).
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
        downlink_bytes: int = 16 << 20,
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
        coalesce_after: int = 3,
        free_port: bool = False,
        allowed_hosts: Optional[Sequence[str]] = None,
        header_timeout: float = 10.0,
        init_timeout: Optional[float] = 30.0,
        max_connections: Optional[int] = None,
        inbound_bytes: Optional[int] = None,
        io_threads: int = 1,
        handler_threads: int = 32,
        fleet: Optional[str] = None,
        room: Optional[str] = None,
        rtc_journal: Optional[str] = None,
        tls: Optional[str] = None,
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
        self.workspace = _workspace(workspace, static_root)
        self.queue_len, self.downlink_bytes = _received_limits(queue_len, downlink_bytes)
        self.WEBSOCKET_MAX_SIZE = _size_option(WEBSOCKET_MAX_SIZE, "WEBSOCKET_MAX_SIZE")
        self.REQUEST_MAX_SIZE = _size_option(REQUEST_MAX_SIZE, "REQUEST_MAX_SIZE")
        self.domain = domain if domain is not None else env_str("VUER_DOMAIN", "https://vuer.ai")
        self.client_url = client_url
        self.verbose = verbose if verbose is not None else env_bool("VUER_VERBOSE", False)
        self.queries = dict(queries or {})
        self.token = token if token is not None else env_str("VUER_TOKEN")
        self._use_tls(tls)  # tls="self-signed": a headset on the LAN (docs/teleop.md)
        self.allowed_origins = [o.strip() for o in allowed_origins if o.strip()]
        self.ping_interval = ping_interval
        self.send_timeout = float(send_timeout)
        self._outbox_options(outbox_bytes, outbox_policy, outbox_timeout, coalesce_after)
        if free_port:
            warnings.warn(FREE_PORT_IGNORED, stacklevel=2)
        self._set_limits(allowed_hosts, header_timeout, init_timeout, max_connections,
                         inbound_bytes, io_threads, handler_threads, rtc_journal, room)
        self._server: Optional[HttpServer] = None
        self._stopped = threading.Event()
        #: internals: what the user registered, and the serving side (sessions, the
        #: websocket loop), one-time downloads
        self.registry = Registry()
        self.connections = Connections(self, self.registry)
        self.downloads = Downloads()
        self.client_root = http.client_build_dir()
        self.flask = make_flask(self)
        self.scene = SharedScene(self, fleet, room)  # fleet: docs/fleet.md
        #: the hands and controllers of whichever headset sent last (docs/teleop.md)
        self.hands = hand_stream()
        self.controllers = controller_stream()

    def _outbox_options(self, max_bytes: int, policy: str, timeout: float,
                        coalesce_after: int) -> None:
        """Every client's outbox: its byte budget, what a producer meets past it, and how
        many queued frames it takes before updates merge (checked here, not per client)."""
        if policy not in ("block", "disconnect"):
            raise ValueError(f"outbox_policy must be 'block' or 'disconnect', got {policy!r}")
        if coalesce_after < 0:
            raise ValueError(f"coalesce_after must be >= 0, got {coalesce_after!r}")
        self.outbox_bytes = int(max_bytes)
        self.outbox_policy = policy
        self.outbox_timeout = float(timeout)
        self.coalesce_after = int(coalesce_after)

    def _use_tls(self, tls: Optional[str]) -> None:
        """``tls="self-signed"``: a cached certificate for the LAN addresses, and a token."""
        self.tls = tls
        self.lan_addresses: List[str] = []
        if tls is None:
            return
        if tls != "self-signed":
            raise ValueError("tls= takes 'self-signed' (for your own certificate: cert=, key=)")
        if self.cert:
            raise ValueError("tls='self-signed' makes its own certificate: drop cert=/key=")
        self.lan_addresses = lan.advertised_addresses(self.host)
        self.cert, self.key = lan.ensure_certificate(self.lan_addresses)
        if not self.token:
            self.token = secrets.token_urlsafe(16)

    @property
    def lan_urls(self) -> List[str]:
        """With ``tls="self-signed"``: the URLs (with the token) a headset on the LAN opens."""
        return [lan.lan_url(a, self.port, self.token) for a in self.lan_addresses]

    def _set_limits(self, allowed_hosts: Optional[Sequence[str]], header_timeout: float,
                    init_timeout: Optional[float], max_connections: Optional[int],
                    inbound_bytes: Optional[int], io_threads: int = 1,
                    handler_threads: int = 32, rtc_journal: Optional[str] = None,
                    room: Optional[str] = None) -> None:
        """The guards of ``docs/security.md``, the thread counts and ``app.rtc``'s journal
        (``rtc_journal``; ``room`` names it without a fleet: ``docs/rtc.md``) (see the class
        docstring)."""
        if int(io_threads) < 0 or int(handler_threads) < 1:
            raise ValueError("io_threads must be >= 0 and handler_threads >= 1")
        self.rtc_journal = rtc_journal if rtc_journal is not None \
            else env_str("VUER_SYNC_RTC_JOURNAL")
        self.rtc_room = room if room is not None else env_str("VUER_SYNC_ROOM", "default")
        self.io_threads = int(io_threads)
        self.handler_threads = int(handler_threads)
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
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.token:
            logger.warning("binding %s without a token: anyone who can reach this port can "
                           "drive the scene (pass token= or set VUER_TOKEN)", self.host)

    # -- configuration helpers ------------------------------------------------------------

    @property
    def ssl(self) -> str:
        return "s" if self.cert else ""

    def _ssl_context(self) -> Optional[SSLContext]:
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
            return self.registry.add_handler(event_type, f, once)

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
        self.registry.registered.setdefault(message_cls, []).append((callback, cleanup))

    def unregister_handler(self, message_cls: type,
                           callback: Optional[Callable[[VuerSession, Any], Any]] = None) -> None:
        """Remove ``callback`` (or every callback) registered for ``message_cls``."""
        kept = []
        registered = self.registry.registered
        for cb, cleanup in registered.pop(message_cls, []):
            if callback is None or cb is callback:
                cleanup()
            else:
                kept.append((cb, cleanup))
        if kept:
            registered[message_cls] = kept

    def spawn(self, fn: Optional[Callable[[VuerSession], Any]] = None, start: bool = False,
              **filters: Any) -> Any:
        """Run ``fn(session)`` on its own thread for each client whose INIT matches
        ``filters`` (glob patterns on INIT fields, e.g. ``client="python"``; first match
        wins). The session closes when ``fn`` returns; an exception is logged with its
        traceback and closes the socket with 1011. ``start=True`` starts the server and
        blocks, like Vuer."""

        def register(f: Callable[[VuerSession], Any]) -> Callable[[VuerSession], Any]:
            check_plain(f, "a spawn function")
            self.registry.spawns.append((f, filters))
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
            self.registry.bind_fn = f
            if start:
                self.start()
            return f

        if fn is None:
            return register
        return register(fn)

    def on_connect(self, fn: Callable[[VuerSession], Any]) -> Callable[[VuerSession], Any]:
        """Call ``fn(session)`` (on the session's handler thread) when a client connects."""
        self.registry.on_connect.append(fn)
        return fn

    def on_disconnect(self, fn: Callable[[VuerSession], Any]) -> Callable[[VuerSession], Any]:
        """Call ``fn(session)`` after a client disconnected."""
        self.registry.on_disconnect.append(fn)
        return fn

    def add_route(self, path: str, fn: Callable[..., Any], method: str = "GET",
                  content_type: str = "text/html") -> None:
        """Serve ``fn()`` (or ``fn(request)``) at ``path``; it may return str, bytes, a
        dict/list (JSON), a ``Path`` or a Flask ``Response``."""
        takes_request = len(inspect.signature(fn).parameters) > 0

        def view(**kwargs: Any) -> Response:
            result = fn(request, **kwargs) if takes_request else fn(**kwargs)
            return http.route_result(result, content_type)

        view.__name__ = f"user_route_{len(list(self.flask.url_map.iter_rules()))}"
        self.flask.add_url_rule(path, view.__name__, view, methods=[method.upper()])

    # -- sessions -------------------------------------------------------------------------

    @property
    def sessions(self) -> List[VuerSession]:
        """The connected sessions."""
        return self.connections.sessions()

    def wait_for_session(self, timeout: Optional[float] = None, **filters: Any) -> VuerSession:
        """Block until a client whose INIT matches ``filters`` (glob patterns, e.g.
        ``client="browser"``) is connected; return its session (the oldest such).

        Raises :class:`~vuer_sync.errors.RPCTimeout` after ``timeout`` seconds. The session
        ends with its connection (a page reload is a new session): a loop that should outlive
        one viewer sends the scene to :attr:`scene` and uses :meth:`viewer` for the rest.
        """
        return self.connections.wait_for(timeout, filters)

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
        show_url(self.local_url, width=width, height=height)

    @property
    def rtc(self) -> Any:
        """The collaborative scene graph room (:class:`~vuer_sync.server.rtc_room.RtcRoom`):
        relays ``vuer_sync.rtc`` edits between clients and mirrors the result into
        ``app.scene``. Created on first use (or on the first ``RTC`` event)."""
        return self.connections.rtc()

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
        return self.connections.stats()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def fleet(self) -> Optional[FleetLink]:
        """The fleet link (:class:`~vuer_sync.fleet.FleetLink`), or ``None``."""
        return self.scene.fleet

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, block: bool = True) -> Vuer:
        """Start serving. ``block=True`` (the default, like Vuer) serves until Ctrl-C or
        :meth:`stop`; ``block=False`` returns as soon as the port is bound."""
        if self._server is None:
            self._stopped.clear()
            self.hands.reopen()
            self.controllers.reopen()
            if self.fleet is not None:
                self.fleet.start()  # the room's scene loaded before anyone is served
            server = HttpServer(self.flask, self.host, self.port, self._ssl_context(),
                                header_timeout=self.header_timeout,
                                max_connections=self.max_connections,
                                idle_timeout=max(self.header_timeout, self.send_timeout))
            self._server = server
            self.port = server.port
            self.connections.start_io()
            server.start()
            self._banner()
        if block:
            try:
                # in short waits: Ctrl-C's SIGINT may land on another thread, and Python
                # runs signal handlers (KeyboardInterrupt) only when the main thread wakes
                while not self._stopped.wait(SIGNAL_CHECK_S):
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
        self.scene.stop_recordings()  # streamed app.scene.record(path=...) files finished
        if self.connections.rtc_room is not None:
            self.connections.rtc_room.close(timeout)  # app.rtc's journal (docs/rtc.md)
        if self.fleet is not None:
            self.fleet.close(timeout)
        server, self._server = self._server, None
        if server is None:
            return
        deadline = time.monotonic() + timeout
        server.stop()
        threads = self.connections.close_all(timeout)
        for t in threads:
            if t is threading.current_thread():
                continue
            t.join(max(0.0, deadline - time.monotonic()))
        server.close_connections(max(0.1, deadline - time.monotonic()))
        self.connections.stop_io(max(0.1, deadline - time.monotonic()))
        self.connections.forget_all()
        self.hands.close()
        self.controllers.close()
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
        if self.tls is not None:
            lines += lan.lan_banner(self.lan_urls, self.port,
                                    loopback=self.host in ("127.0.0.1", "localhost", "::1"))
        if self.client_root is None:
            lines.append("(web client not installed: pip install 'vuer-sync[viewer]')")
        lines += ["", "Ctrl-C to stop."]
        if self.verbose:  # as Vuer's verbose: every setting
            for name in ("host", "port", "cert", "key", "ca_cert", "cors", "workspace",
                         "queue_len", "downlink_bytes", "WEBSOCKET_MAX_SIZE",
                         "REQUEST_MAX_SIZE", "domain",
                         "client_url", "ping_interval", "send_timeout", "outbox_bytes",
                         "outbox_policy", "outbox_timeout", "coalesce_after",
                         "allowed_origins"):
                lines.append(f"  {name} = {getattr(self, name)!r}")
            lines.append(f"  token = {'(set)' if self.token else None}")
        print("\n".join(lines) + "\n", flush=True)  # the one start-up banner
