"""The threaded Vuer server: :class:`Vuer` and :class:`VuerSession`."""

from .app import Vuer
from .session import VuerSession

__all__ = ["Vuer", "VuerSession"]
