"""The transport's exceptions, apart from the code that raises them (no imports back).

* :class:`ConnectionClosed` -- the connection is closed; ``code`` / ``reason`` say how.
* :class:`FrameError` -- bytes from the peer violate RFC 6455; ``code`` is the close code to
  fail the connection with (1002, 1007, 1009, 1013).
"""

from __future__ import annotations

__all__ = ["ConnectionClosed", "FrameError"]


class ConnectionClosed(Exception):
    """The WebSocket connection is closed (or was never usable for this operation).

    ``code`` is the RFC 6455 close code: the peer's code after a close handshake (1005 if its close
    frame had no code), the code this side failed the connection with (1002 protocol error, 1007
    invalid UTF-8, 1009 message too big), or 1006 when the connection dropped without a close frame.
    ``reason`` is the close reason text (may be empty).
    """

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


class FrameError(ValueError):
    """A frame or close payload violates RFC 6455.

    ``code`` is the close code the receiving endpoint should fail the connection with
    (1002 protocol error, 1007 invalid UTF-8, ...).
    """

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code
