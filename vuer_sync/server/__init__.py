"""The threaded Vuer server: :class:`Vuer` and :class:`VuerSession`."""

from .. import record as _record
from .app import Vuer
from .preview import local_viewer_url
from .session import VuerSession

_record.use_local_viewer(local_viewer_url)  # Recording.show() opens a local server's client

__all__ = ["Vuer", "VuerSession"]
