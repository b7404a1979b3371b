"""Werkzeug's threaded WSGI server in a background thread, with the fixes our transport needs.

* a busy port raises ``OSError`` (Werkzeug calls ``sys.exit(1)``);
* with TLS the handshake happens in each connection's thread, not in ``accept()``, so one
  silent TCP client cannot block every other client;
* ``shutdown()`` returns within ~50 ms (``poll_interval``);
* the per-request access log is quiet (``werkzeug`` logger at WARNING).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from typing import Any, Dict, Optional, Tuple

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

logger = logging.getLogger("vuer_sync.server")

__all__ = ["HttpServer"]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        logging.getLogger("vuer_sync.http").debug('"%s" %s', self.requestline, code)

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, OSError) as e:  # failed TLS handshakes, resets
            logging.getLogger("vuer_sync.http").debug("connection error: %s", e)


class HttpServer:
    """Serve a WSGI app from a daemon thread until :meth:`stop`."""

    def __init__(self, app: Any, host: str, port: int, ssl_context: Optional[ssl.SSLContext]):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        try:
            srv: BaseWSGIServer = make_server(
                host, port, app, threaded=True, request_handler=_QuietHandler
            )
        except SystemExit:
            raise OSError(
                errno.EADDRINUSE,
                f"cannot listen on {host}:{port}: the port is in use by another program "
                f"(pass port=0 to pick a free port)",
            ) from None
        if ssl_context is not None:
            srv.socket = ssl_context.wrap_socket(
                srv.socket, server_side=True, do_handshake_on_connect=False
            )
            srv.ssl_context = ssl_context
        # every accepted connection's thread and socket, until the thread is done with it
        self._open: Dict[threading.Thread, socket.socket] = {}
        self._open_lock = threading.Lock()
        serve_one = srv.process_request_thread  # closes the socket at the end

        def serve(request: socket.socket, client_address: Any) -> None:
            try:
                serve_one(request, client_address)
            finally:
                with self._open_lock:
                    self._open.pop(threading.current_thread(), None)

        def process_request(request: socket.socket, client_address: Any) -> None:
            # registered before it starts, so stop() cannot miss a thread not yet running
            t = threading.Thread(target=serve, args=(request, client_address), daemon=True,
                                 name=f"vuer-http-conn:{self.port}")
            with self._open_lock:
                self._open[t] = request
            t.start()

        srv.process_request = process_request  # type: ignore[method-assign]
        self._srv = srv
        self.host = host
        self.port: int = srv.socket.getsockname()[1]
        self._thread: Optional[threading.Thread] = None

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
