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
import ssl
import threading
from typing import Any, Optional, Tuple

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
