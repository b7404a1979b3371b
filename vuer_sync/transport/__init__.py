"""WebSocket framing for vuer_sync: a blocking RFC 6455 endpoint over an upgraded socket.

Two layers, as in the ``websockets`` library: :class:`~.protocol.Protocol` (``protocol.py``) is
the sans-I/O state machine -- bytes in, events out, bytes to send, the close handshake,
fragments, limits -- and :class:`WebSocketConnection` (``connection.py``) is the threaded shell
that moves bytes between it and a socket. Exceptions live in ``exceptions.py``.

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
    "Protocol",
    "State",
    "Opcode",
    "CloseCode",
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
    "frames",
]


from . import frames
from .connection import RECEIVE_POOL, BufferPool, WebSocketConnection
from .exceptions import ConnectionClosed, FrameError
from .frames import (
    CloseCode,
    FrameHeader,
    Opcode,
    apply_mask,
    encode_close_payload,
    encode_header,
    is_valid_close_code,
    mask_bytes,
    parse_close_payload,
    parse_header,
    truncate_reason,
)
from .protocol import Protocol, State
