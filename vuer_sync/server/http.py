"""HTTP side of the server: the web client's files, the workspace, ``/relay``, user routes,
and the gate every websocket upgrade passes (Origin allow-list, optional token)."""

from __future__ import annotations

import hmac
import importlib.util
import json
import logging
import mimetypes
import os
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence
from urllib.parse import urlsplit

from flask import Response, request, send_file
from werkzeug.security import safe_join

logger = logging.getLogger("vuer_sync.http")

__all__ = ["client_build_dir", "origin_allowed", "safe_path", "token_ok"]

HOSTED_ORIGINS = ("https://vuer.ai", "https://www.vuer.ai")
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}

_ROBOTICS_TYPES = {
    ".urdf": "application/xml", ".xacro": "application/xml", ".srdf": "application/xml",
    ".sdf": "application/xml", ".mjcf": "application/xml", ".xml": "application/xml",
    ".dae": "model/vnd.collada+xml", ".stl": "model/stl", ".obj": "model/obj",
    ".glb": "model/gltf-binary", ".gltf": "model/gltf+json", ".ply": "application/x-ply",
    ".pcd": "application/x-pcd", ".json": "application/json", ".yaml": "application/x-yaml",
    ".yml": "application/x-yaml", ".js": "text/javascript", ".mjs": "text/javascript",
    ".css": "text/css", ".wasm": "application/wasm",
}


def client_build_dir() -> Optional[Path]:
    """The Vuer web client shipped in the installed ``vuer`` wheel, found without importing
    ``vuer`` (which pulls in asyncio servers and reads env vars at import)."""
    try:
        spec = importlib.util.find_spec("vuer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "client_build"
        if (p / "index.html").is_file():
            return p
    return None


def safe_path(root: Path, filename: str) -> Optional[Path]:
    """``root/filename`` if it is a file inside ``root`` (no ``..``, no absolute paths, no
    symlink leading out of the root); else ``None``."""
    joined = safe_join(str(root), filename)
    if joined is None:
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(joined)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    if not os.path.isfile(real):
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


def origin_allowed(origin: Optional[str], host_header: Optional[str],
                   extra: Iterable[str]) -> bool:
    """The websocket Origin policy.

    Allowed: no Origin (non-browser clients), the page's own origin (same host:port as the
    request), ``localhost``/``127.0.0.1``/``[::1]`` pages on any port, the hosted client
    (``https://vuer.ai``), and the configured ``extra`` origins (``"*"`` allows all).
    """
    if origin is None or origin == "":
        return True
    extra = list(extra)
    if "*" in extra or origin in extra:
        return True
    if origin in HOSTED_ORIGINS:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.hostname in _LOOPBACK:
        return True
    return bool(host_header) and parts.netloc.lower() == str(host_header).lower()


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
