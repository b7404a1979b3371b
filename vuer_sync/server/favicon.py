"""The page icon served at ``/favicon.ico``: a small SVG cube drawn here (not vuer's), so the
browser's console shows no 404 for it.

>>> favicon_response().mimetype
'image/svg+xml'
"""

from __future__ import annotations

from flask import Response

__all__ = ["FAVICON_SVG", "favicon_response"]

#: an isometric cube (three shaded faces) on a dark rounded square, 32x32
FAVICON_SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
<rect width="32" height="32" rx="7" fill="#1d2530"/>
<path d="M16 5 L26 10.5 L16 16 L6 10.5 Z" fill="#ffb400"/>
<path d="M6 10.5 L16 16 L16 27.5 L6 22 Z" fill="#2f80ed"/>
<path d="M26 10.5 L16 16 L16 27.5 L26 22 Z" fill="#1b5cb8"/>
</svg>
"""


def favicon_response() -> Response:
    """The icon, cacheable for a day."""
    resp = Response(FAVICON_SVG, mimetype="image/svg+xml")
    resp.headers["Cache-Control"] = "public, max-age=86400"
    return resp
