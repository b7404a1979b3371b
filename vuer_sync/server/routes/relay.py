"""``POST /relay?sid=<session id or *>``: a msgpack message from another process, queued as it
is on one session (or every session, ``*``) behind what is already queued there. In a fleet,
on whichever node the session is connected to (``*``: every client of every node)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, Response, request

from ... import codec
from ...errors import ProtocolError, SessionClosed
from .. import http

if TYPE_CHECKING:  # pragma: no cover
    from ..app import Vuer

__all__ = ["register", "relay"]


def relay(app: Vuer) -> Response:
    if not http.token_ok(app.token):
        return Response("missing or wrong token\n", status=403, mimetype="text/plain")
    if not http.origin_allowed(request.headers.get("Origin"), request.headers.get("Host"),
                               app.allowed_origins):
        return Response("origin not allowed\n", status=403, mimetype="text/plain")
    sid = request.args.get("sid")
    if not sid:
        return Response("missing ?sid=<session id or *>\n", status=400)
    body = request.get_data(cache=False)
    try:
        msg = codec.decode(body)
    except ProtocolError as e:
        return Response(f"bad body: {e}\n", status=400, mimetype="text/plain")
    targets = app.sessions if sid == "*" else [s for s in app.sessions if s.id == sid]
    payload = codec.encode(msg)
    if app.fleet is not None and (sid == "*" or not targets):
        try:  # the client is on another node, or every client of every node
            delivered = app.scene.fleet_relay(sid, payload)
        except SessionClosed:
            return Response(f"no session {sid} in the room\n", status=404,
                            mimetype="text/plain")
        return Response(f'{{"delivered": {delivered}}}', mimetype="application/json")
    if sid != "*" and not targets:
        return Response(f"no session {sid}\n", status=404, mimetype="text/plain")
    delivered = 0
    for s in targets:
        try:
            s.core.send_encoded(payload, msg)
            delivered += 1
        except SessionClosed:
            pass
    return Response(f'{{"delivered": {delivered}}}', mimetype="application/json")


def register(flask: Flask, app: Vuer) -> None:
    @flask.route("/relay", methods=["POST"])
    def relay_route() -> Response:
        return relay(app)
