"""WebSocket framing for vuer_sync: a blocking RFC 6455 endpoint over an upgraded socket.

The HTTP upgrade is done elsewhere (flask-sock / simple-websocket with no reader thread and no
permessage-deflate). The raw socket is then handed to :class:`WebSocketConnection`, which does all
framing itself: ``recv_into`` one exact-size buffer per large message, in-place numpy unmasking,
``sendmsg([header, memoryview])`` without copies, and one lock for every write so that a ping,
pong or close frame can never land inside a data frame.

Example::

    conn = WebSocketConnection(raw_socket, is_server=True)
    try:
        while True:
            msg = conn.receive()      # bytes (binary) or str (text)
            conn.send(msg)            # echo
    except ConnectionClosed as exc:
        print(exc.code, exc.reason)
    finally:
        conn.abort()                  # release the socket
"""

from __future__ import annotations

__all__ = [
    "ConnectionClosed",
    "WebSocketConnection",
    "BufferPool",
    "RECEIVE_POOL",
    "FrameError",
    "FrameHeader",
    "encode_header",
    "parse_header",
    "apply_mask",
    "mask_bytes",
    "is_valid_close_code",
    "encode_close_payload",
    "parse_close_payload",
    "truncate_reason",
    "install_websocket_client_mask",
    "uninstall_websocket_client_mask",
    "frames",
]


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


from . import frames  # noqa: E402
from .connection import RECEIVE_POOL, BufferPool, WebSocketConnection  # noqa: E402
from .frames import (  # noqa: E402
    FrameError,
    FrameHeader,
    apply_mask,
    encode_close_payload,
    encode_header,
    install_websocket_client_mask,
    is_valid_close_code,
    mask_bytes,
    parse_close_payload,
    parse_header,
    truncate_reason,
    uninstall_websocket_client_mask,
)
