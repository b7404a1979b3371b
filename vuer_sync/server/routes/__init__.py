"""The HTTP side of the server: one Flask app per :class:`~vuer_sync.server.app.Vuer`.

:func:`make_flask` installs the guards (Host allow-list, websocket Origin/token/handshake
checks, CORS) and the websocket route, then each route module registers its own routes:
:mod:`.files` (the web client, the favicon, the workspace), :mod:`.relay` (``POST /relay``),
:mod:`.downloads` (one-time downloads for ``session.send_file_download``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

from flask import Flask, Response, request
from flask_sock import Sock

from .. import http
from . import files, relay

if TYPE_CHECKING:  # pragma: no cover
    from ..app import Vuer

logger = logging.getLogger("vuer_sync.server")

__all__ = ["make_flask"]


class _NoReaderThread:
    """Given to simple-websocket as ``thread_class``: flask-sock does the routing and the
    handshake, then our transport reads the socket itself (no extra reader thread)."""

    def __init__(self, target: Any = None, **_: Any):
        self.name = "vuer-unused"

    def start(self) -> None:
        pass


def _text(body: str, status: int) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def _websocket_refusal(app: Vuer) -> Optional[Response]:
    """Why a websocket upgrade request is refused (``None``: accepted)."""
    env = request.environ
    if not http.origin_allowed(env.get("HTTP_ORIGIN"), env.get("HTTP_HOST"),
                               app.allowed_origins):
        logger.warning("refused websocket from origin %r", env.get("HTTP_ORIGIN"))
        return _text("origin not allowed\n", 403)
    if not http.token_ok(app.token):
        return _text("missing or wrong token\n", 403)
    problem = http.handshake_problem(env)
    if problem:
        return _text(f"bad websocket handshake: {problem}\n", 400)
    env.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)  # never permessage-deflate
    return None


def cors_allows(app: Vuer, origin: str) -> bool:
    allowed = [o.strip() for o in (app.cors or "").split(",") if o.strip()]
    return "*" in allowed or origin in allowed or http.origin_allowed(
        origin, request.headers.get("Host"), app.allowed_origins)


def make_flask(app: Vuer) -> Flask:
    """The Flask app of ``app``: guards, the websocket at ``/``, then the route modules."""
    flask = Flask("vuer_sync", static_folder=None)
    flask.wsgi_app = http.HostGuard(  # type: ignore[method-assign]
        flask.wsgi_app, lambda host: http.host_allowed(host, app.host, app.allowed_hosts))
    flask.config["MAX_CONTENT_LENGTH"] = app.REQUEST_MAX_SIZE
    flask.config["SOCK_SERVER_OPTIONS"] = {"thread_class": _NoReaderThread}
    sock = Sock(flask)

    @flask.before_request
    def gate() -> Optional[Response]:
        if request.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            return _websocket_refusal(app)
        return None

    @flask.after_request
    def cors(resp: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and cors_allows(app, origin):
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
        return resp

    @sock.route("/")
    def websocket(ws: Any) -> None:
        app.connections.serve(ws)

    files.register(flask, app)
    relay.register(flask, app)
    app.downloads.register(flask)
    return flask
