"""The local server behind :meth:`Recording.show <vuer_sync.record.Recording.show>`: started on
first use, on a free port, and reused while it runs."""

from __future__ import annotations

import threading
from typing import Optional

from .app import Vuer

__all__ = ["local_viewer_url"]

_viewer: Optional[Vuer] = None
_lock = threading.Lock()


def local_viewer_url() -> str:
    """The web client URL of a running local server (started if there is none)."""
    global _viewer
    with _lock:
        if _viewer is None or not _viewer.running:
            _viewer = Vuer(port=0)
            _viewer.start(block=False)
        return _viewer.local_url
