"""RFC 6455 framing helpers: pure functions, no sockets.

Everything here works on bytes-like buffers and is safe to call from any thread.

* :func:`encode_header` / :func:`parse_header` -- frame headers with 7/16/64-bit lengths.
* :func:`apply_mask` (in place, numpy) and :func:`mask_bytes` (copying) -- the XOR mask.
* :func:`encode_close_payload` / :func:`parse_close_payload` -- close-frame bodies (RFC 6455 §5.5.1,
  §7.4).
* :class:`Opcode` and :class:`CloseCode` -- the RFC 6455 numbers as enums (``OP_*`` and
  ``CLOSE_*`` are the same values as plain ints, for the hot paths).

(websocket-client's numpy mask, which used to live here, is in :mod:`vuer_sync.client_transport`.)
"""

from __future__ import annotations

import enum
import struct
from typing import Any, NamedTuple, Optional, Tuple, Union

import numpy as np

from .exceptions import FrameError

__all__ = [
    "Opcode",
    "CloseCode",
    "OP_CONTINUATION",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "DATA_OPCODES",
    "CONTROL_OPCODES",
    "KNOWN_OPCODES",
    "CLOSE_NORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED_DATA",
    "CLOSE_NO_STATUS",
    "CLOSE_ABNORMAL",
    "CLOSE_INVALID_PAYLOAD",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_MANDATORY_EXTENSION",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_TRY_AGAIN_LATER",
    "CLOSE_BAD_GATEWAY",
    "CLOSE_TLS_HANDSHAKE",
    "MAX_CONTROL_PAYLOAD",
    "MAX_CLOSE_REASON_BYTES",
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
]

# --------------------------------------------------------------------------- constants

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

DATA_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY))
CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))
KNOWN_OPCODES = DATA_OPCODES | CONTROL_OPCODES

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005  # never sent on the wire: "the close frame had no code"
CLOSE_ABNORMAL = 1006  # never sent on the wire: "connection dropped without a close frame"
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_MANDATORY_EXTENSION = 1010
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_GATEWAY = 1014
CLOSE_TLS_HANDSHAKE = 1015  # never sent on the wire



class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONT = OP_CONTINUATION
    TEXT = OP_TEXT
    BINARY = OP_BINARY
    CLOSE = OP_CLOSE
    PING = OP_PING
    PONG = OP_PONG


class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455 §7.4.1 and the IANA registry)."""

    NORMAL_CLOSURE = CLOSE_NORMAL
    GOING_AWAY = CLOSE_GOING_AWAY
    PROTOCOL_ERROR = CLOSE_PROTOCOL_ERROR
    UNSUPPORTED_DATA = CLOSE_UNSUPPORTED_DATA
    NO_STATUS_RCVD = CLOSE_NO_STATUS
    ABNORMAL_CLOSURE = CLOSE_ABNORMAL
    INVALID_DATA = CLOSE_INVALID_PAYLOAD
    POLICY_VIOLATION = CLOSE_POLICY_VIOLATION
    MESSAGE_TOO_BIG = CLOSE_MESSAGE_TOO_BIG
    MANDATORY_EXTENSION = CLOSE_MANDATORY_EXTENSION
    INTERNAL_ERROR = CLOSE_INTERNAL_ERROR
    SERVICE_RESTART = CLOSE_SERVICE_RESTART
    TRY_AGAIN_LATER = CLOSE_TRY_AGAIN_LATER
    BAD_GATEWAY = CLOSE_BAD_GATEWAY
    TLS_HANDSHAKE = CLOSE_TLS_HANDSHAKE


MAX_CONTROL_PAYLOAD = 125
MAX_CLOSE_REASON_BYTES = MAX_CONTROL_PAYLOAD - 2

# Codes 1000-2999 that may appear in a close frame on the wire (RFC 6455 §7.4.1 plus the
# IANA-registered 1012-1014). 1004 is reserved; 1005, 1006 and 1015 are local-only.
_WIRE_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)

_FIN = 0x80
_MASK_BIT = 0x80
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_H2 = struct.Struct("!BB")
_H4 = struct.Struct("!BBH")
_H10 = struct.Struct("!BBQ")

# Below this size the big-integer XOR beats numpy's per-call overhead.
_SMALL_MASK = 1024

Buffer = Union[bytes, bytearray, memoryview]


class FrameHeader(NamedTuple):
    """A parsed frame header (see :func:`parse_header`)."""

    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    masked: bool
    mask_key: Optional[bytes]
    payload_length: int
    header_length: int

    @property
    def rsv(self) -> int:
        """The three RSV bits as an int (``rsv1`` is 4, ``rsv3`` is 1)."""
        return (self.rsv1 << 2) | (self.rsv2 << 1) | int(self.rsv3)

    @property
    def is_control(self) -> bool:
        """True for close, ping and pong (opcodes 0x8-0xF)."""
        return self.opcode >= 0x8


# --------------------------------------------------------------------------- headers


def encode_header(
    payload_length: int,
    opcode: int,
    *,
    fin: bool = True,
    mask_key: Optional[bytes] = None,
    rsv: int = 0,
) -> bytes:
    """Encode a frame header.

    :param payload_length: payload size in bytes (0 .. 2**63-1); the shortest length form is used.
    :param opcode: 0x0-0xF.
    :param fin: FIN bit.
    :param mask_key: 4-byte masking key; sets the MASK bit and is appended to the header.
    :param rsv: RSV1-3 bits as an int 0-7 (RSV1 = 4). Only for tests: no extension is supported.
    """
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode out of range: {opcode!r}")
    if not 0 <= rsv <= 7:
        raise ValueError(f"rsv out of range: {rsv!r}")
    b0 = (_FIN if fin else 0) | (rsv << 4) | opcode
    mbit = _MASK_BIT if mask_key is not None else 0
    if payload_length < 0:
        raise ValueError("negative payload length")
    if payload_length < 126:
        header = _H2.pack(b0, mbit | payload_length)
    elif payload_length < 0x10000:
        header = _H4.pack(b0, mbit | 126, payload_length)
    elif payload_length < 1 << 63:
        header = _H10.pack(b0, mbit | 127, payload_length)
    else:
        raise ValueError("payload length does not fit in 63 bits")
    if mask_key is not None:
        if len(mask_key) != 4:
            raise ValueError("mask key must be 4 bytes")
        header += bytes(mask_key)
    return header


def parse_header(buf: Buffer, offset: int = 0) -> Union[FrameHeader, int]:
    """Parse a frame header at ``buf[offset:]``.

    Returns a :class:`FrameHeader`, or, when the buffer holds only part of the header, an ``int``
    > 0: the number of further bytes needed before calling again (the payload is not included).
    Raises :class:`FrameError` (1002) for a 64-bit length with the most significant bit set.
    Other checks (RSV bits, opcodes, masking rules) are left to the caller, which knows the
    connection's role and negotiated extensions.
    """
    avail = len(buf) - offset
    if avail < 2:
        return 2 - avail
    b0 = buf[offset]
    b1 = buf[offset + 1]
    length = b1 & 0x7F
    masked = bool(b1 & _MASK_BIT)
    if length == 126:
        header_length = 4
    elif length == 127:
        header_length = 10
    else:
        header_length = 2
    if masked:
        header_length += 4
    if avail < header_length:
        return header_length - avail
    if length == 126:
        length = _U16.unpack_from(buf, offset + 2)[0]
    elif length == 127:
        length = _U64.unpack_from(buf, offset + 2)[0]
        if length >> 63:
            raise FrameError("64-bit payload length has its most significant bit set")
    mask_key = bytes(buf[offset + header_length - 4 : offset + header_length]) if masked else None
    return FrameHeader(
        bool(b0 & 0x80),
        bool(b0 & 0x40),
        bool(b0 & 0x20),
        bool(b0 & 0x10),
        b0 & 0x0F,
        masked,
        mask_key,
        length,
        header_length,
    )


# --------------------------------------------------------------------------- masking


def _byte_view(buf: Any) -> memoryview:
    mv = memoryview(buf)
    if not mv.c_contiguous:
        raise TypeError("a C-contiguous buffer is required")
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


def _rotated_key(key: bytes, offset: int) -> bytes:
    if len(key) != 4:
        raise ValueError("mask key must be 4 bytes")
    o = offset & 3
    key = bytes(key)
    return key[o:] + key[:o] if o else key


def _xor_small(mv: Buffer, key: bytes) -> bytes:
    """XOR ``mv`` (any length) with the repeating ``key`` using one big-int operation."""
    n = len(mv)
    reps = key * ((n >> 2) + 1)
    value = int.from_bytes(mv, "little") ^ int.from_bytes(reps[:n], "little")
    return value.to_bytes(n, "little")


def apply_mask(buf: Union[bytearray, memoryview, Any], key: bytes, offset: int = 0) -> None:
    """XOR ``buf`` in place with the 4-byte masking ``key`` (RFC 6455 §5.3).

    ``offset`` is the position of ``buf[0]`` within the frame's payload, so a payload that arrives
    in chunks can be unmasked chunk by chunk: ``apply_mask(chunk, key, offset=bytes_before_chunk)``.
    ``buf`` must be a writable, C-contiguous buffer (bytearray, writable memoryview, numpy array).
    Masking is its own inverse.
    """
    mv = _byte_view(buf)
    if mv.readonly:
        raise TypeError("apply_mask needs a writable buffer")
    n = len(mv)
    if n == 0:
        return
    k = _rotated_key(key, offset)
    if n <= _SMALL_MASK:
        mv[:] = _xor_small(mv, k)
        return
    arr = np.frombuffer(mv, dtype=np.uint8)
    # Process a few head bytes so that the bulk is 4-byte aligned in memory, then XOR the bulk as
    # uint32 (native byte order matches memory order, so the key can be read the same way).
    head = (-arr.ctypes.data) & 3
    if head:
        arr[:head] ^= np.frombuffer(k[:head], dtype=np.uint8)
        k = k[head:] + k[:head]
    bulk_end = head + ((n - head) & ~3)
    if bulk_end > head:
        words = arr[head:bulk_end].view(np.uint32)
        np.bitwise_xor(words, np.frombuffer(k, dtype=np.uint32)[0], out=words)
    tail = n - bulk_end
    if tail:
        arr[bulk_end:] ^= np.frombuffer(k[:tail], dtype=np.uint8)


def mask_bytes(data: Any, key: bytes, offset: int = 0) -> bytes:
    """Return ``data`` XOR-masked with ``key`` as new ``bytes`` (the input is not modified).

    ``data`` may be any C-contiguous buffer. ``offset`` has the same meaning as in
    :func:`apply_mask`.
    """
    mv = _byte_view(data)
    n = len(mv)
    k = _rotated_key(key, offset)
    if n <= _SMALL_MASK:
        return _xor_small(mv, k) if n else b""
    src = np.frombuffer(mv, dtype=np.uint8)
    out = np.empty(n, dtype=np.uint8)  # fresh allocation: 4-byte aligned
    bulk_end = n & ~3
    np.bitwise_xor(
        src[:bulk_end].view(np.uint32),
        np.frombuffer(k, dtype=np.uint32)[0],
        out=out[:bulk_end].view(np.uint32),
    )
    tail = n - bulk_end
    if tail:
        np.bitwise_xor(src[bulk_end:], np.frombuffer(k[:tail], dtype=np.uint8), out=out[bulk_end:])
    return out.tobytes()


# --------------------------------------------------------------------------- close payloads


def is_valid_close_code(code: int) -> bool:
    """True if ``code`` may be sent in a close frame (RFC 6455 §7.4).

    Valid: 1000-1003, 1007-1014 and the application / library ranges 3000-4999. Invalid: below 1000,
    1004 (reserved), 1005/1006/1015 (local-only), other unassigned 1016-2999, and 5000+.
    """
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


def encode_close_payload(code: Optional[int] = CLOSE_NORMAL, reason: str = "") -> bytes:
    """Encode a close-frame body: 2-byte big-endian code + UTF-8 reason.

    ``code=None`` gives an empty body (which the peer reads as 1005, "no status"); a reason then
    is not allowed. Raises ``ValueError`` for a code that may not be sent, or a reason longer than
    123 UTF-8 bytes.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent in a close frame")
    raw = reason.encode("utf-8")
    if len(raw) > MAX_CLOSE_REASON_BYTES:
        raise ValueError(f"close reason is {len(raw)} bytes; the limit is {MAX_CLOSE_REASON_BYTES}")
    return _U16.pack(code) + raw


def truncate_reason(reason: str, limit: int = MAX_CLOSE_REASON_BYTES) -> str:
    """Shorten ``reason`` so that its UTF-8 encoding fits in ``limit`` bytes (never splitting a
    character)."""
    raw = reason.encode("utf-8")
    if len(raw) <= limit:
        return reason
    return raw[:limit].decode("utf-8", errors="ignore")


def parse_close_payload(payload: Buffer) -> Tuple[int, str]:
    """Parse a received close-frame body into ``(code, reason)``.

    An empty body gives ``(1005, "")``. Raises :class:`FrameError` with code 1002 for a 1-byte body
    or a code that may not be sent, and with code 1007 for a reason that is not valid UTF-8.
    """
    n = len(payload)
    if n == 0:
        return CLOSE_NO_STATUS, ""
    if n == 1:
        raise FrameError("close frame body of 1 byte")
    if n > MAX_CONTROL_PAYLOAD:
        raise FrameError("close frame body longer than 125 bytes")
    code = _U16.unpack_from(payload, 0)[0]
    if not is_valid_close_code(code):
        raise FrameError(f"invalid close code {code}")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("close reason is not valid UTF-8", CLOSE_INVALID_PAYLOAD)
    return code, reason
