"""Where the installed Vuer web client is (the ``vuer`` wheel's ``client_build``): the server
serves it, ``Recording.export`` copies it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

__all__ = ["client_build_dir"]


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
