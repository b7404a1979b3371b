"""One-time downloads (``session.send_file_download``): the bytes are offered under an
unguessable URL, served once over HTTP in chunks (never through the websocket), and forgotten
10 minutes after the offer if nobody took them."""

from __future__ import annotations

import mimetypes
import secrets
import threading
import time
from typing import Any, Dict, Tuple
from urllib.parse import quote

from flask import Flask, Response, request

__all__ = ["OFFER_TTL", "Downloads"]

OFFER_TTL = 600.0  # seconds an offer stays valid

# token -> (filename, content, chunk size, monotonic expiry)
Offer = Tuple[str, bytes, int, float]


class Downloads:
    """The offers of one server (``app.downloads``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.offers: Dict[str, Offer] = {}

    def offer(self, filename: str, content: bytes, chunk_size: int) -> str:
        """Offer ``content`` once; return the path of its URL."""
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self.offers = {t: d for t, d in self.offers.items()
                           if d[3] > now}  # forget offers nobody took within 10 min
            self.offers[token] = (filename, content, max(1, int(chunk_size)), now + OFFER_TTL)
        return f"/download/{token}/{quote(filename)}"

    def serve(self, token: str) -> Response:
        with self._lock:
            if request.method == "HEAD":  # asks about it: does not use it up
                offer = self.offers.get(token)
            else:
                offer = self.offers.pop(token, None)  # one-time
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

    def register(self, flask: Flask) -> None:
        @flask.route("/download/<token>/<path:filename>")
        def download(token: str, filename: str) -> Response:
            return self.serve(token)
