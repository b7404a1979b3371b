"""Files over HTTP: the offline web client (``/``, ``/assets/...``), our favicon, and the
workspace (``/workspace/...``, behind the token when there is one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, Response

from .. import http
from ..favicon import favicon_response

if TYPE_CHECKING:  # pragma: no cover
    from ..app import Vuer

__all__ = ["register"]


def register(flask: Flask, app: Vuer) -> None:
    @flask.route("/")
    def index() -> Response:
        if app.client_root is None:
            return Response(http.missing_client_page(app.port), mimetype="text/html")
        return http.file_response(app.client_root / "index.html")

    @flask.route("/favicon.ico")
    def favicon() -> Response:  # ours (an SVG): no 404 in the page's console
        return favicon_response()

    @flask.route("/assets/<path:filename>")
    def assets(filename: str) -> Response:
        if app.client_root is None:
            return Response("web client not installed\n", status=404)
        return http.serve_from([app.client_root / "assets"], filename)

    @flask.route("/workspace/<path:filename>")
    def workspace(filename: str) -> Response:
        if not http.token_ok(app.token):  # with a token, files need it too
            return Response("missing or wrong token\n", status=403, mimetype="text/plain")
        return http.serve_from(http.workspace_roots(app.workspace), filename)
