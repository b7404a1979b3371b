"""Exceptions raised by vuer_sync."""

from __future__ import annotations

__all__ = ["ProtocolError", "RPCTimeout", "SessionClosed", "VuerSyncError"]


class VuerSyncError(Exception):
    """Base class of vuer_sync's own errors."""


class ProtocolError(VuerSyncError, ValueError):
    """An inbound message does not follow the Vuer wire protocol.

    Raised by :func:`vuer_sync.codec.decode` for anything that is not one msgpack map with a
    string ``etype`` (truncated data, a list, non-string keys, ...).
    """


class SessionClosed(VuerSyncError, ConnectionError):
    """The session's websocket is closed: nothing more can be sent or received on it."""


class RPCTimeout(VuerSyncError, TimeoutError):
    """A blocking call (``rpc``, ``grab_render``, ``till``, ``flush``...) ran out of time.

    A subclass of the built-in :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """
