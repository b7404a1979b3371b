"""Werkzeug's threaded WSGI server in a background thread, with the fixes our transport needs.

* a busy port raises ``OSError`` (Werkzeug prints to stderr and calls ``sys.exit(1)``): we
  bind the listening socket ourselves and hand Werkzeug its descriptor;
* with TLS the handshake happens in each connection's thread, not in ``accept()``, so one
  silent TCP client cannot block every other client;
* the request head (request line and headers, and the TLS handshake before them) must arrive
  within ``header_timeout`` seconds in all, however slowly it trickles in (slowloris); an idle
  keep-alive connection is closed after the same time; a head cut off by EOF before its blank
  line is refused (400), never served as if complete;
* at most ``max_connections`` connections at once: the next one gets ``503`` at once;
* ``shutdown()`` returns within ~50 ms (``poll_interval``);
* the per-request access log is quiet (``werkzeug`` logger at WARNING, ours at DEBUG, with
  ``token=`` values redacted).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import socket
import ssl
import threading
import time
from typing import Any, Dict, Optional, Tuple

from werkzeug.serving import (
    BaseWSGIServer,
    WSGIRequestHandler,
    get_sockaddr,
    make_server,
    select_address_family,
)

from ..logsafe import redact_secrets

logger = logging.getLogger("vuer_sync.server")
http_logger = logging.getLogger("vuer_sync.http")

__all__ = ["HttpServer", "default_max_connections"]

#: Bytes of the 503 answer to a connection over ``max_connections``.
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
         b"too many connections\n")


def default_max_connections() -> int:
    """Concurrent connections the server accepts by default: what the process's open-file
    limit leaves room for (minus 128 for files, pipes and the listening socket), between 64
    and 4096."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY or soft <= 0:
            soft = 1 << 16
    except (ImportError, OSError, ValueError):  # pragma: no cover - non-POSIX
        soft = 1024
    return max(64, min(4096, soft - 128))


class _HeadReader(io.RawIOBase):
    """The socket under a request handler's ``rfile``.

    While ``deadline`` is set (the request head is being read), each ``recv`` may wait only
    for what is left of it, so a head that trickles in byte by byte still ends on time
    (``TimeoutError``). ``eof`` records that the peer ended its stream."""

    def __init__(self, sock: socket.socket, idle_timeout: float):
        self.sock = sock
        # the socket's own raw reader: it holds a reference that keeps the descriptor open
        # while Werkzeug still writes its last response (as ``makefile`` does)
        self.raw = sock.makefile("rb", buffering=0)
        self.idle_timeout = idle_timeout
        self.deadline: Optional[float] = None
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request head did not arrive in time")
            self.sock.settimeout(min(left, self.idle_timeout))
        n = self.raw.readinto(b)
        if not n:  # 0 at EOF (None only for non-blocking sockets, which these are not)
            self.eof = True
        return n or 0

    def close(self) -> None:
        self.raw.close()
        super().close()


#: The WSGI environ key of a callable that hands the request's socket over (see
#: ``_QuietHandler.take_socket``); absent under other WSGI servers.
TAKE_SOCKET = "vuer_sync.take_socket"


class _QuietHandler(WSGIRequestHandler):
    header_timeout = 10.0  # set per server (HttpServer makes a subclass)
    idle_timeout = 60.0

    def setup(self) -> None:
        super().setup()
        self._head = _HeadReader(self.connection, self.idle_timeout)
        self.rfile = io.BufferedReader(self._head)
        self._stand_in: Optional[socket.socket] = None

    def make_environ(self) -> Dict[str, Any]:
        environ = super().make_environ()
        environ[TAKE_SOCKET] = self.take_socket
        return environ

    def take_socket(self) -> socket.socket:
        """Give the connection's socket away (a websocket served by the I/O threads) and
        leave this handler a stand-in at EOF: Werkzeug ends the request without reading,
        writing or closing the connection, and this thread ends."""
        sock = self.connection
        own = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        stand_in, peer = socket.socketpair()
        peer.close()
        self._stand_in = self.connection = stand_in
        self.rfile = io.BufferedReader(io.BytesIO())
        self.wfile = io.BytesIO()
        self.close_connection = True
        return own

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._stand_in is not None:
                self._stand_in.close()

    def handle_one_request(self) -> None:
        self._head.deadline = time.monotonic() + self.header_timeout
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        head = self._head
        head.deadline = None
        if ok and head.eof:  # the headers ended with the stream, not with a blank line
            self.close_connection = True
            self.send_error(400, "request cut off before the end of its headers")
            return False
        if ok:
            self.connection.settimeout(self.idle_timeout)
        return ok

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        http_logger.debug('"%s" %s', redact_secrets(self.requestline), code)

    def log_error(self, format: str, *args: Any) -> None:
        # timeouts, malformed requests: the peer's problem, not ours (and slowloris would
        # otherwise write one line per connection)
        http_logger.debug("%s: %s", self.address_string(),
                          redact_secrets(format % args if args else format))

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, OSError) as e:  # failed TLS handshakes, resets
            http_logger.debug("connection error: %s", e)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``OSError`` with a clear message if taken)."""
    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(get_sockaddr(host, int(port), family))
        sock.listen(1024)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE,
                          f"cannot listen on {host}:{port}: the port is in use by another "
                          f"program (pass port=0 for a free port)") from None
        raise
    return sock


class HttpServer:
    """Serve a WSGI app from a daemon thread until :meth:`stop`."""

    def __init__(self, app: Any, host: str, port: int, ssl_context: Optional[ssl.SSLContext],
                 header_timeout: float = 10.0, max_connections: Optional[int] = None,
                 idle_timeout: float = 60.0):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        handler = type("RequestHandler", (_QuietHandler,), {
            "header_timeout": float(header_timeout), "idle_timeout": float(idle_timeout)})
        listener = _listen(host, port)
        try:
            srv: BaseWSGIServer = make_server(host, port, app, threaded=True,
                                              request_handler=handler, fd=listener.fileno())
        finally:
            listener.close()  # Werkzeug holds its own duplicate of the descriptor
        self.max_connections = max_connections or default_max_connections()
        self.refused = 0  # connections answered 503 (over max_connections)
        self._refusing = False
        if ssl_context is not None:
            srv.socket = ssl_context.wrap_socket(
                srv.socket, server_side=True, do_handshake_on_connect=False
            )
            srv.ssl_context = ssl_context
        # every accepted connection's thread and socket, until the thread is done with it
        self._open: Dict[threading.Thread, socket.socket] = {}
        self._open_lock = threading.Lock()
        # ThreadingMixIn's per-connection body (it closes the socket at the end)
        serve_one = srv.process_request_thread  # type: ignore[attr-defined]

        def serve(request: socket.socket, client_address: Any) -> None:
            try:
                serve_one(request, client_address)
            finally:
                with self._open_lock:
                    self._open.pop(threading.current_thread(), None)

        def process_request(request: socket.socket, client_address: Any) -> None:
            if len(self._open) >= self.max_connections:
                self._refuse(request)
                return
            self._refusing = False
            # registered before it starts, so stop() cannot miss a thread not yet running
            t = threading.Thread(target=serve, args=(request, client_address), daemon=True,
                                 name=f"vuer-http-conn:{self.port}")
            with self._open_lock:
                self._open[t] = request
            t.start()

        srv.process_request = process_request  # type: ignore[method-assign, assignment]
        self._srv = srv
        self.host = host
        self.port: int = srv.socket.getsockname()[1]
        self._thread: Optional[threading.Thread] = None

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 from the accept thread (never blocking) and close."""
        self.refused += 1
        if not self._refusing:  # once per episode of overload, not once per connection
            self._refusing = True
            logger.warning("refusing connections: %d open, the limit is max_connections=%d "
                           "(%d refused so far)", len(self._open), self.max_connections,
                           self.refused)
        try:
            if not isinstance(request, ssl.SSLSocket):
                request.setblocking(False)
                request.send(_BUSY)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        request.close()

    @property
    def address(self) -> Tuple[str, int]:
        return self.host, self.port

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._srv.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"vuer-http:{self.port}", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close the listening socket and join the accept thread."""
        if self._thread is not None:
            self._srv.shutdown()
            self._thread.join(2.0)
            self._thread = None
        self._srv.server_close()

    def close_connections(self, timeout: float) -> None:
        """End the connections still open (idle keep-alive HTTP, a handler thread not yet
        scheduled) and join their threads, so the port is free when this returns."""
        with self._open_lock:
            items = list(self._open.items())
        for _, sock in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t, _ in items:
            t.join(max(0.0, deadline - time.monotonic()))
