"""HTTP side of the server: the web client's files, the workspace, ``/relay``, user routes,
and the gate every websocket upgrade passes (Origin allow-list, optional token)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import mimetypes
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence

from flask import Response, request, send_file
from werkzeug.security import safe_join

from ..webclient import client_build_dir

logger = logging.getLogger("vuer_sync.http")

__all__ = ["HostGuard", "client_build_dir", "host_allowed", "origin_allowed", "safe_path",
           "split_host", "token_ok"]

HOSTED_ORIGINS = ("https://vuer.ai", "https://www.vuer.ai")
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
# scheme://host[:port] and nothing else: no userinfo ("http://evil.com@localhost"), no path,
# query or fragment, no spaces. The host is a DNS name or a bracketed IPv6 literal.
_ORIGIN = re.compile(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)"
                     r"(?::([0-9]{1,5}))?", re.IGNORECASE)
_HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_.])?)"
                          r"(?::([0-9]{1,5}))?", re.IGNORECASE)

_ROBOTICS_TYPES = {
    ".urdf": "application/xml", ".xacro": "application/xml", ".srdf": "application/xml",
    ".sdf": "application/xml", ".mjcf": "application/xml", ".xml": "application/xml",
    ".dae": "model/vnd.collada+xml", ".stl": "model/stl", ".obj": "model/obj",
    ".glb": "model/gltf-binary", ".gltf": "model/gltf+json", ".ply": "application/x-ply",
    ".pcd": "application/x-pcd", ".json": "application/json", ".yaml": "application/x-yaml",
    ".yml": "application/x-yaml", ".js": "text/javascript", ".mjs": "text/javascript",
    ".css": "text/css", ".wasm": "application/wasm",
}


def safe_path(root: Path, filename: str) -> Optional[Path]:
    """``root/filename`` if it is a file inside ``root`` (no ``..``, no absolute paths, no
    symlink leading out of the root); else ``None``."""
    if "\x00" in filename:  # os.path raises ValueError on NUL: a 404, not a 500
        return None
    joined = safe_join(str(root), filename)
    if joined is None:
        return None
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(joined)
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            return None
        if not os.path.isfile(real):
            return None
    except (ValueError, OSError):
        return None
    return Path(real)


def file_response(path: Path) -> Response:
    ctype = _ROBOTICS_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    resp = send_file(path, mimetype=ctype or "application/octet-stream", conditional=True)
    if "hot" in request.args and request.args.get("hot", "").lower() != "false":
        resp.headers["Cache-Control"] = "no-cache"
    return resp


def serve_from(roots: Sequence[Path], filename: str) -> Response:
    for root in roots:
        p = safe_path(root, filename)
        if p is not None:
            return file_response(p)
    return Response("not found\n", status=404, mimetype="text/plain")


def split_host(value: str) -> Optional[tuple]:
    """``(host, port)`` of a ``Host`` header value (``port`` may be ``None``), the host
    lower-cased without a trailing dot; ``None`` if the value is not a plain host[:port]."""
    m = _HOST_HEADER.fullmatch(value.strip())
    if m is None:
        return None
    host = m.group(1).lower().rstrip(".")
    return host, (int(m.group(2)) if m.group(2) else None)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return False
    return True


def host_allowed(host_header: Optional[str], bound_host: str, allowed: Iterable[str]) -> bool:
    """The ``Host`` allow-list (the defence against DNS rebinding).

    A page on ``attacker.example`` whose name is re-pointed at 127.0.0.1 reaches this server
    from the victim's browser, but its requests carry ``Host: attacker.example``. Allowed:

    * no ``Host`` header (HTTP/1.0 programs; browsers always send one);
    * an IP address literal (a rebinding page always has a name, never an address);
    * ``localhost`` and ``*.localhost`` (RFC 6761: browsers resolve them to loopback
      themselves), and the host the server is bound to;
    * the names in ``allowed``: exact names, ``.example.com`` for that domain and every
      subdomain, or ``*`` for any host (the server then insists on a token).

    >>> host_allowed("localhost:8012", "127.0.0.1", [])
    True
    >>> host_allowed("attacker.example:8012", "127.0.0.1", [])
    False
    >>> host_allowed("robot.lab.example:8012", "0.0.0.0", [".lab.example"])
    True
    """
    if host_header is None or host_header == "":
        return True
    parsed = split_host(host_header)
    if parsed is None:
        return False
    host = parsed[0]
    if _is_ip_literal(host) or host == "localhost" or host.endswith(".localhost"):
        return True
    if host == bound_host.lower().rstrip("."):
        return True
    for name in allowed:
        name = name.strip().lower().rstrip(".")
        if name in ("*", host):
            return True
        if name.startswith(".") and (host == name[1:] or host.endswith(name)):
            return True
    return False


class HostGuard:
    """WSGI middleware: every request (page, file, ``/relay``, websocket upgrade) whose
    ``Host`` fails :func:`host_allowed` gets 403 before anything else looks at it."""

    def __init__(self, app: Callable[..., Any], allowed: Callable[[Optional[str]], bool]):
        self.app = app
        self.allowed = allowed
        self.refused = 0

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        host = environ.get("HTTP_HOST")
        if self.allowed(host):
            return self.app(environ, start_response)
        self.refused += 1
        level = logging.WARNING if self.refused == 1 or self.refused % 1000 == 0 else \
            logging.DEBUG
        logger.log(level, "refused a request for Host %r (#%d): not in the allowed hosts; "
                   "pass allowed_hosts=[...] or set VUER_SYNC_ALLOWED_HOSTS if you serve "
                   "under that name", host, self.refused)
        body = b"host not allowed\n"
        start_response("403 Forbidden", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body)))])
        return [body]


def parse_origin(origin: str) -> Optional[tuple]:
    """``(scheme, host, port)`` of a strictly formed web origin, else ``None``.

    >>> parse_origin("http://localhost:8012")
    ('http', 'localhost', 8012)
    >>> parse_origin("http://evil.com@localhost") is None   # userinfo: not an origin
    True
    """
    m = _ORIGIN.fullmatch(origin)
    if m is None:
        return None
    scheme = m.group(1).lower()
    port = int(m.group(3)) if m.group(3) else None
    return scheme, m.group(2).lower(), port


def origin_allowed(origin: Optional[str], host_header: Optional[str],
                   extra: Iterable[str]) -> bool:
    """The websocket Origin policy.

    Allowed: no Origin (non-browser clients), the page's own origin (same host:port as the
    request, whose ``Host`` the :class:`HostGuard` already vetted), ``localhost`` /
    ``127.0.0.1`` / ``[::1]`` pages on any port, the hosted client (``https://vuer.ai``),
    and the configured ``extra`` origins (``"*"`` allows all). Anything that is not exactly
    ``scheme://host[:port]`` (userinfo, paths, ``null``) is refused.
    """
    if origin is None or origin == "":
        return True
    extra = list(extra)
    if "*" in extra or origin in extra:
        return True
    if origin in HOSTED_ORIGINS:
        return True
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    scheme, host, port = parsed
    if host in _LOOPBACK:
        return True
    if not host_header:
        return False
    own = split_host(host_header)
    if own is None or own[0] != host:
        return False
    default = 443 if scheme == "https" else 80
    return (port or default) == (own[1] or default)


def handshake_problem(env: dict) -> Optional[str]:
    """What is wrong with a websocket upgrade request (RFC 6455 4.2.1), or ``None``."""
    import base64
    import binascii

    if env.get("REQUEST_METHOD") != "GET":
        return "the upgrade must be a GET"
    if "upgrade" not in env.get("HTTP_CONNECTION", "").lower():
        return "missing 'Connection: Upgrade'"
    if env.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        return "Sec-WebSocket-Version must be 13"
    key = env.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return "Sec-WebSocket-Key must be 16 bytes, base64"
    except (binascii.Error, ValueError):
        return "Sec-WebSocket-Key is not base64"
    return None


def token_ok(expected: Optional[str]) -> bool:
    """Constant-time check of ``?token=`` (or ``Authorization: Bearer``) when a token is set."""
    if not expected:
        return True
    got = request.args.get("token")
    if got is None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            got = auth[7:]
    if got is None:
        return False
    return hmac.compare_digest(got.encode(), expected.encode())


def missing_client_page(port: int) -> str:
    return f"""<!doctype html><meta charset="utf-8"><title>vuer_sync</title>
<h1>vuer_sync server is running</h1>
<p>The Vuer web client is not installed, so this server cannot show the scene itself.</p>
<p>Install it with <code>pip install "vuer-sync[viewer]"</code> (it ships inside the
<code>vuer</code> wheel) and reload, or open the hosted client:
<a href="https://vuer.ai?ws=ws://localhost:{port}">https://vuer.ai?ws=ws://localhost:{port}</a>
(needs internet).</p>
"""


def route_result(result: Any, content_type: str) -> Response:
    """Turn what a user route returned into a response (str, bytes, dict/list, Path, Response)."""
    if isinstance(result, Response):
        return result
    if isinstance(result, (dict, list)):
        return Response(json.dumps(result), mimetype="application/json")
    if isinstance(result, Path):
        return file_response(result)
    if isinstance(result, (bytes, bytearray)):
        return Response(bytes(result), content_type=content_type)
    if result is None:
        return Response(status=204)
    return Response(str(result), content_type=content_type)


def workspace_roots(workspace: Any) -> List[Path]:
    if workspace is None:
        return []
    if isinstance(workspace, (str, os.PathLike)):
        return [Path(workspace)]
    return [Path(p) for p in workspace]
