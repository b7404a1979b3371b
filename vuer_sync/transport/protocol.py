"""The WebSocket protocol (RFC 6455) without I/O, in the style of the ``websockets`` library.

A :class:`Protocol` is the state of one connection: bytes in, events out, bytes to send. It
knows nothing of sockets; :class:`~vuer_sync.transport.connection.WebSocketConnection` is the
threaded shell that moves bytes between it and a socket.

>>> server, client = Protocol(is_server=True), Protocol(is_server=False)
>>> client.send_binary(b"hi")
>>> server.receive_data(b"".join(client.data_to_send()))
>>> server.events_received()
[b'hi']
>>> server.send_close(1000, "bye")
True
>>> client.receive_data(b"".join(server.data_to_send()))
>>> client.events_received(), client.state.name
([Close(code=1000, reason='bye')], 'CLOSING')
>>> server.receive_data(b"".join(client.data_to_send())); server.state.name
'CLOSED'

Events are ``bytes`` (a binary message), ``str`` (a text message), :class:`Ping`, :class:`Pong`
and :class:`Close`. ``data_to_send()`` returns the frames to write; a ``b""`` at its end means
"half-close the TCP stream now" (``shutdown(SHUT_WR)``): the close handshake is complete, or
this side failed the connection and its close frame is out.

Two entry points feed frames in. :meth:`Protocol.receive_data` takes raw bytes (anything that
has bytes: a test, a selector loop). :meth:`Protocol.receive_header` and
:meth:`Protocol.receive_payload` take one parsed frame at a time: the socket shell uses them to
read large payloads straight from the socket into pooled buffers (no copy through this
object's buffer); ``receive_data`` goes through the same two methods, so both paths make the
same checks. Likewise the shell writes data frames itself (zero-copy ``sendmsg``) after
:meth:`Protocol.check_writable`, with the frames :meth:`Protocol.frames_of` encodes, and takes
control frames one by one with :meth:`Protocol.next_control`.

Thread safety: the shell calls the receiving methods from its one reader thread and the sending
methods from any thread; the state transitions (close, fail, loss, abort) and the pong slot are
guarded by one internal lock, never held while calling out.
"""

from __future__ import annotations

import codecs
import collections
import enum
import os
import struct
import threading
from typing import Any, Deque, Iterable, List, NamedTuple, Optional, Tuple, Union

from .budget import InboundBudget
from .exceptions import ConnectionClosed, FrameError
from .frames import (
    _H4,
    CLOSE_ABNORMAL,
    CLOSE_INVALID_PAYLOAD,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN_LATER,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameHeader,
    _byte_view,
    encode_close_payload,
    encode_header,
    mask_bytes,
    parse_close_payload,
    parse_header,
    truncate_reason,
)

__all__ = ["Close", "Event", "Ping", "Pong", "Protocol", "State"]

Buffer = Union[bytes, bytearray, memoryview]

# Payloads up to this size are copied next to their header (one buffer instead of two): cheaper
# than an extra iovec, and lets send_many pack thousands of small messages into a few buffers.
COALESCE = 2048
# headers of unmasked, final binary frames of fewer than 126 bytes, by length (the server's
# small-message fast path in encode_many)
_SMALL_BINARY_HEADERS = tuple(bytes((0x80 | OP_BINARY, n)) for n in range(126))
# receive_data() holds this many unparsed bytes without reserving them from the inbound budget
_FREE_BUFFER = 65536
_U16 = struct.Struct("!H")

_CONTROL = 0  # a ping (or any control frame but close and pong)
_CLOSE = 1  # the close frame: waits until the message being written is complete
_PONG = 2  # the turn of the pong slot: only the latest unanswered ping gets a pong


class State(enum.IntEnum):
    """A connection's state. CLOSING: a close frame is queued, sent or received, or this side
    failed the connection; CLOSED: the handshake is complete, or the connection was lost or
    aborted."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# Enum members as module constants: ``State.OPEN`` is a class attribute lookup through the
# enum machinery (~70 ns on CPython 3.11), and ``check_writable`` runs for every message sent.
_OPEN = State.OPEN
_CLOSING = State.CLOSING
_CLOSED = State.CLOSED


class Ping(NamedTuple):
    """A ping arrived (its pong is queued while the connection is open)."""

    data: bytes


class Pong(NamedTuple):
    """A pong arrived."""

    data: bytes


class Close(NamedTuple):
    """The peer's close frame arrived (code 1005 if it had none); a reply is queued."""

    code: int
    reason: str


Event = Union[bytes, str, Ping, Pong, Close]


class Protocol:
    """One WebSocket connection's protocol state (RFC 6455), without I/O.

    :param is_server: incoming frames must be masked and outgoing ones are not; False: the
        reverse, with a random mask key per frame.
    :param max_message_size: largest accepted message (all fragments); larger fails with 1009.
    :param fragment_size: :meth:`frames_of` splits larger messages into fragments.
    :param inbound_budget: bytes held by incomplete inbound messages are reserved from it;
        when it is exhausted the connection fails with 1013.
    :param state: OPEN (the HTTP upgrade is done elsewhere).
    """

    def __init__(
        self,
        *,
        is_server: bool = True,
        max_message_size: Optional[int] = 2**28,
        fragment_size: int = 32 * 2**20,
        inbound_budget: Optional[InboundBudget] = None,
        state: State = State.OPEN,
    ) -> None:
        if fragment_size < 1:
            raise ValueError("fragment_size must be positive")
        self.is_server = bool(is_server)
        self.max_message_size = max_message_size
        self.fragment_size = int(fragment_size)
        self.state = state
        #: None while open; then the close code (see WebSocketConnection.close_code)
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.close_sent = False  # our close frame is written
        self.close_rcvd = False  # the peer's close frame arrived
        self._failed = False  # this side failed the connection (1002/1007/1009/1013)
        self._write_broken = False  # a write failed: the stream may be cut mid-frame
        self._eof_due = False  # the write side should be shut down now (take_eof)
        self._lock = threading.Lock()
        self._budget = inbound_budget
        # the inbound message being assembled (reader side)
        self._msg_opcode: Optional[int] = None
        self._parts: List[Any] = []
        self._total = 0
        self._decoder: Any = None
        self._held = 0  # bytes of earlier fragments, reserved from the budget
        # outgoing control frames
        self._control: Deque[Tuple[int, bytes]] = collections.deque()
        self._pong: Optional[bytes] = None
        # receive_data() / data_to_send()
        self._in = bytearray()
        self._in_pos = 0
        self._in_header: Optional[FrameHeader] = None
        self._in_reserved = 0
        self._events: List[Event] = []
        self._out: List[bytes] = []
        self._out_fragmented = False

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """True once no more data may be sent: a close frame was queued, sent or received, the
        connection failed, dropped or was aborted, or a write failed."""
        return self.state is not _OPEN or self._write_broken

    @property
    def failed(self) -> bool:
        """True once this side failed the connection (a protocol error: 1002/1007/1009/1013)."""
        return self._failed

    @property
    def write_broken(self) -> bool:
        """True after :meth:`write_failed`."""
        return self._write_broken

    @property
    def in_message(self) -> bool:
        """True while a fragmented inbound message is being assembled."""
        return self._msg_opcode is not None

    def closed_error(self) -> ConnectionClosed:
        """The exception for an operation on a closed connection."""
        if self._write_broken and self.state is _OPEN:
            return ConnectionClosed(CLOSE_ABNORMAL, "write failed")
        code = self.close_code if self.close_code is not None else CLOSE_ABNORMAL
        return ConnectionClosed(code, self.close_reason)

    def check_writable(self) -> None:
        """Raise :class:`ConnectionClosed` if no more data may be sent."""
        if self.state is not _OPEN or self._write_broken:
            raise self.closed_error()

    def take_eof(self) -> bool:
        """True once (then False) when the write side should be shut down now."""
        with self._lock:
            due, self._eof_due = self._eof_due, False
        return due

    # ------------------------------------------------------------------ receiving: frames

    def receive_header(self, h: FrameHeader) -> None:
        """Check a frame header before its payload is read. Raises :class:`FrameError`."""
        if h.rsv1 or h.rsv2 or h.rsv3:
            raise FrameError("RSV bits set but no extension was negotiated")
        if h.masked != self.is_server:
            raise FrameError(
                "unmasked frame from the client"
                if self.is_server
                else "masked frame from the server"
            )
        opcode = h.opcode
        if opcode >= 0x8:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise FrameError(f"reserved control opcode 0x{opcode:x}")
            if not h.fin:
                raise FrameError("fragmented control frame")
            if h.payload_length > MAX_CONTROL_PAYLOAD:
                raise FrameError("control frame payload longer than 125 bytes")
            return
        if opcode == OP_CONTINUATION:
            if self._msg_opcode is None:
                raise FrameError("continuation frame without a message to continue")
        elif opcode in (OP_BINARY, OP_TEXT):
            if self._msg_opcode is not None:
                raise FrameError("new data frame while a fragmented message is in progress")
        else:
            raise FrameError(f"reserved opcode 0x{opcode:x}")
        self._total += h.payload_length
        limit = self.max_message_size
        if limit is not None and self._total > limit:
            raise FrameError(f"message exceeds the limit of {limit} bytes", CLOSE_MESSAGE_TOO_BIG)

    def receive_payload(self, h: FrameHeader, payload: Any) -> Optional[Event]:
        """Take the (unmasked) payload of the frame whose header :meth:`receive_header` passed.

        Returns the event it completes (a message, a ping, a pong, the peer's close) or None
        (a fragment of a message in progress). Raises :class:`FrameError`.
        """
        opcode = h.opcode
        if opcode >= 0x8:
            return self._receive_control(opcode, payload)
        if h.fin and self._msg_opcode is None:  # single-frame message: the common case
            self._total = 0
            if opcode == OP_BINARY:
                return payload if type(payload) is bytes else bytes(payload)
            try:
                return str(payload, "utf-8")
            except UnicodeDecodeError:
                raise FrameError("text message is not valid UTF-8", CLOSE_INVALID_PAYLOAD)
        kind = self._msg_opcode if opcode == OP_CONTINUATION else opcode
        if self._budget is not None and not h.fin:  # held until the last fragment
            self.reserve(len(payload))
            self._held += len(payload)
        if kind == OP_TEXT:
            if self._decoder is None:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
            try:  # fails as soon as a fragment contains an invalid sequence
                self._parts.append(self._decoder.decode(payload, h.fin))
            except UnicodeDecodeError:
                raise FrameError("text message is not valid UTF-8", CLOSE_INVALID_PAYLOAD)
        else:
            self._parts.append(payload)
        if not h.fin:
            self._msg_opcode = kind
            return None
        parts = self._parts
        self._discard_message()
        return "".join(parts) if kind == OP_TEXT else b"".join(parts)

    def _receive_control(self, opcode: int, payload: bytes) -> Event:
        if opcode == OP_PING:
            if self.state is _OPEN:
                self._queue_pong(payload)
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        code, reason = parse_close_payload(payload)  # FrameError -> fail with 1002 / 1007
        self._close_received(code, reason)
        return Close(code, reason)

    def _discard_message(self) -> None:
        """Forget the inbound message in progress and give back what it held."""
        self._msg_opcode = None
        self._parts = []
        self._total = 0
        self._decoder = None
        if self._held:
            self.release(self._held)
            self._held = 0

    def _stop_input(self) -> None:
        """No more input will be read: drop the message in progress and unparsed bytes."""
        self._discard_message()
        if self._in_reserved:
            self.release(self._in_reserved)
            self._in_reserved = 0
        self._in.clear()
        self._in_pos = 0
        self._in_header = None

    def reserve(self, n: int) -> None:
        """Reserve ``n`` inbound bytes from the budget; :class:`FrameError` (1013) if refused."""
        if self._budget is not None and not self._budget.reserve(n):
            raise FrameError("server busy: inbound memory budget exhausted", CLOSE_TRY_AGAIN_LATER)

    def release(self, n: int) -> None:
        """Give back ``n`` bytes reserved with :meth:`reserve`."""
        if self._budget is not None:
            self._budget.release(n)

    # ------------------------------------------------------------------ receiving: bytes

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes read from the network. A protocol error fails the connection (its close
        frame is then in :meth:`data_to_send`); bytes after the peer's close frame, or after a
        failure, are ignored."""
        if self.close_rcvd or self._failed or self.state is _CLOSED:
            return
        self._in += data
        try:
            self._parse()
            self._reserve_buffered()
        except FrameError as err:
            self.fail(err.code, str(err))

    def receive_eof(self) -> None:
        """The peer ended the TCP stream. Without its close frame first, the connection is
        lost (1006)."""
        with self._lock:
            if self.state is _CLOSED:
                return
            if self.close_rcvd or self._failed:
                self.state = _CLOSED
                return
        self.connection_lost("connection closed by the peer without a close frame")

    def events_received(self) -> List[Event]:
        """The events completed since the last call, in order."""
        events, self._events = self._events, []
        return events

    def _parse(self) -> None:
        buf = self._in
        while not (self.close_rcvd or self._failed):
            h = self._in_header
            if h is None:
                parsed = parse_header(buf, self._in_pos)
                if isinstance(parsed, int):
                    break
                h = parsed
                self._in_pos += h.header_length
                self._in_header = h
                self.receive_header(h)
            end = self._in_pos + h.payload_length
            if len(buf) < end:
                break
            with memoryview(buf) as mv:
                view = mv[self._in_pos : end]
                payload = bytes(view) if h.mask_key is None else mask_bytes(view, h.mask_key)
                view.release()
            self._in_pos = end
            self._in_header = None
            event = self.receive_payload(h, payload)
            if event is not None:
                self._events.append(event)
        del buf[: self._in_pos]
        self._in_pos = 0

    def _reserve_buffered(self) -> None:
        """Hold the unparsed bytes beyond ``_FREE_BUFFER`` against the inbound budget."""
        want = max(0, len(self._in) - _FREE_BUFFER)
        if want > self._in_reserved:
            self.reserve(want - self._in_reserved)
        elif want < self._in_reserved:
            self.release(self._in_reserved - want)
        self._in_reserved = want

    # ------------------------------------------------------------------ closing

    def _close_received(self, code: int, reason: str) -> None:
        with self._lock:
            self.close_rcvd = True
            self.close_code = code
            self.close_reason = reason
            reply = self.state is _OPEN
            if reply:
                self.state = _CLOSING
            elif self.close_sent:
                self.state = _CLOSED  # handshake complete
                self._eof_due = True
        self._stop_input()
        if reply:
            payload = b"" if code == CLOSE_NO_STATUS else _U16.pack(code)
            self._control.append((_CLOSE, self.control_frame(OP_CLOSE, payload)))

    def send_close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bool:
        """Queue a close frame (once; False if the connection is not open). ``reason`` is cut
        to 123 UTF-8 bytes; ``ValueError`` for a code that may not be sent."""
        reason = truncate_reason(reason)
        frame = self.control_frame(OP_CLOSE, encode_close_payload(code, reason))
        with self._lock:
            if self.state is not _OPEN:
                return False
            self.state = _CLOSING
            if self.close_code is None:
                self.close_code = code
                self.close_reason = reason
        self._control.append((_CLOSE, frame))
        return True

    def fail(self, code: int, reason: str) -> ConnectionClosed:
        """Fail the connection (RFC 6455 §7.1.7): queue a close frame with ``code`` unless one
        is already out, stop reading. Returns the exception for the reader to raise."""
        reason = truncate_reason(reason)
        with self._lock:
            self._failed = True
            self.close_code = code
            self.close_reason = reason
            send_close = self.state is _OPEN
            if send_close:
                self.state = _CLOSING
            elif self.close_sent:
                self.state = _CLOSED
                self._eof_due = True
        self._stop_input()
        if send_close:
            frame = self.control_frame(OP_CLOSE, encode_close_payload(code, reason))
            self._control.append((_CLOSE, frame))
        return ConnectionClosed(code, reason)

    def connection_lost(self, reason: str) -> ConnectionClosed:
        """The transport failed (EOF or an error while reading): CLOSED with 1006."""
        with self._lock:
            self.state = _CLOSED
            self.close_code = CLOSE_ABNORMAL
            self.close_reason = reason
        self._stop_input()
        return ConnectionClosed(CLOSE_ABNORMAL, reason)

    def abort(self) -> None:
        """The socket is being dropped: CLOSED, with 1006 "aborted" unless a close code from a
        handshake, a failure or a loss is already there."""
        with self._lock:
            if not (self.close_rcvd or self._failed or self.state is _CLOSED):
                self.close_code = CLOSE_ABNORMAL
                self.close_reason = "aborted"
            self.state = _CLOSED

    def write_failed(self) -> None:
        """A write raised: the byte stream may be cut mid-frame, nothing more is written."""
        self._write_broken = True
        self._control.clear()

    # ------------------------------------------------------------------ control frames out

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a ping. ``ValueError`` above 125 bytes; :class:`ConnectionClosed` if closed."""
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError("ping payload longer than 125 bytes")
        self.check_writable()
        self._control.append((_CONTROL, self.control_frame(OP_PING, data)))

    def send_pong(self, data: bytes = b"") -> None:
        """Queue a pong (replacing one not yet written)."""
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError("pong payload longer than 125 bytes")
        self._queue_pong(data)

    def _queue_pong(self, data: bytes) -> None:
        """A peer that pings while not reading gets one pong for the latest ping (RFC 6455
        5.5.3), not one queued per ping: at most one pong waits, whatever it sends."""
        with self._lock:  # the frame is made when it is taken (a flood makes one, not N)
            waiting = self._pong is not None
            self._pong = bytes(data)
        if not waiting:
            self._control.append((_PONG, b""))

    def has_control(self) -> bool:
        """True if control frames wait to be written."""
        return bool(self._control)

    def next_control(self, allow_close: bool = True) -> Optional[Tuple[bool, bytes]]:
        """Take the next control frame to write: ``(is_close, frame)``, or None when there is
        none, or when only the close frame is left and ``allow_close`` is False (a message is
        being written: the close frame waits until it is complete). Call
        :meth:`close_frame_written` once a close frame is written."""
        pending = self._control
        while pending:
            kind, frame = pending[0]
            if kind == _CLOSE and not allow_close:
                return None
            pending.popleft()
            if kind == _PONG:
                with self._lock:
                    pong, self._pong = self._pong, None
                if pong is None:
                    continue
                frame = self.control_frame(OP_PONG, pong)
            if self.close_sent or self._write_broken or self.state is _CLOSED:
                continue  # nothing may follow a close frame
            return kind == _CLOSE, frame
        return None

    def close_frame_written(self) -> None:
        """Our close frame is out; with the peer's close (or our failure) the handshake is
        complete: CLOSED, and :meth:`take_eof` says to shut down the write side."""
        with self._lock:
            self.close_sent = True
            if self.close_rcvd or self._failed:
                self.state = _CLOSED
                self._eof_due = True

    # ------------------------------------------------------------------ data frames out

    def send_binary(self, data: Any, fin: bool = True) -> None:
        """Queue one binary frame (``fin=False``: the first of a fragmented message)."""
        self._send_data(OP_BINARY, data, fin)

    def send_text(self, data: Union[str, Buffer], fin: bool = True) -> None:
        """Queue one text frame (``str`` is encoded as UTF-8)."""
        self._send_data(OP_TEXT, data.encode("utf-8") if isinstance(data, str) else data, fin)

    def send_continuation(self, data: Any, fin: bool) -> None:
        """Queue the next frame of the fragmented message being sent."""
        self._send_data(OP_CONTINUATION, data, fin)

    def _send_data(self, opcode: int, data: Any, fin: bool) -> None:
        if opcode != OP_CONTINUATION or self.close_sent or self.state is _CLOSED:
            self.check_writable()  # a message begun before send_close() may be finished
        elif self._write_broken:
            raise self.closed_error()
        if (opcode == OP_CONTINUATION) != self._out_fragmented:
            raise ValueError("a continuation frame continues a fragmented message, and only it")
        self._out_fragmented = not fin
        self._out.append(b"".join(self.encode_frame(opcode, fin, _byte_view(data))))

    def data_to_send(self) -> List[bytes]:
        """The bytes to write, in order, and ``b""`` last when the write side should be shut
        down. Control frames wait here; the close frame waits for the end of a fragmented
        message being sent."""
        out, self._out = self._out, []
        while True:
            item = self.next_control(allow_close=not self._out_fragmented)
            if item is None:
                break
            out.append(item[1])
            if item[0]:
                self.close_frame_written()
        if self.take_eof():
            out.append(b"")
        return out

    # ------------------------------------------------------------------ encoding

    def frames_of(self, payload: Any, opcode: int) -> List[List[Buffer]]:
        """Frames of one message, each a list of buffers to write: ``payload`` is a buffer,
        or an object whose ``parts`` (a sequence of buffers) are the message's bytes in order,
        written as they are (gathered, no copy on the server side)."""
        parts = getattr(payload, "parts", None)
        if parts is None:
            return self.encode_message(_byte_view(payload), opcode)
        views = [_byte_view(p) for p in parts]
        if not self.is_server:  # masking copies anyway
            return self.encode_message(memoryview(b"".join(views)), opcode)
        total = sum(len(v) for v in views)
        size = self.fragment_size
        frames: List[List[Buffer]] = []
        chunk: List[Buffer] = []
        filled = done = 0

        def emit() -> None:
            nonlocal chunk, filled, done
            done += filled
            op = opcode if not frames else OP_CONTINUATION
            frames.append([encode_header(filled, op, fin=done == total), *chunk])
            chunk, filled = [], 0

        for v in views:
            while len(v):
                take = min(len(v), size - filled)
                chunk.append(v[:take])
                filled += take
                v = v[take:]
                if filled == size:
                    emit()
        if filled or not frames:
            emit()
        return frames

    def encode_message(self, mv: memoryview, opcode: int) -> List[List[Buffer]]:
        """Split a message into frames of at most ``fragment_size`` bytes."""
        n = len(mv)
        size = self.fragment_size
        if n <= size:
            return [self.encode_frame(opcode, True, mv)]
        out = []
        for start in range(0, n, size):
            end = min(start + size, n)
            op = opcode if start == 0 else OP_CONTINUATION
            out.append(self.encode_frame(op, end == n, mv[start:end]))
        return out

    def encode_frame(self, opcode: int, fin: bool, chunk: memoryview) -> List[Buffer]:
        """One frame as buffers: a small payload is copied next to its header, a large one
        is a separate buffer (the caller's memory on the server side, no copy)."""
        n = len(chunk)
        if self.is_server:
            header = encode_header(n, opcode, fin=fin)
            if n <= COALESCE:
                return [header + chunk.tobytes()]
            return [header, chunk]
        key = os.urandom(4)
        header = encode_header(n, opcode, fin=fin, mask_key=key)
        if n <= COALESCE:
            return [header + mask_bytes(chunk, key)]
        return [header, mask_bytes(chunk, key)]

    def control_frame(self, opcode: int, payload: bytes) -> bytes:
        """One control frame, masked on the client side."""
        if self.is_server:
            return encode_header(len(payload), opcode) + payload
        key = os.urandom(4)
        return encode_header(len(payload), opcode, mask_key=key) + mask_bytes(payload, key)

    def encode_many(self, payloads: Iterable[Any]) -> Tuple[List[Buffer], int]:
        """Binary messages as few buffers: ``(buffers, count)``. Small messages are packed
        next to their headers into shared buffers; large ones stay separate (no copy)."""
        bufs: List[Buffer] = []
        small = bytearray()
        count = 0
        fast = self.is_server and self.fragment_size >= COALESCE
        for payload in payloads:
            if fast and type(payload) is bytes and len(payload) <= COALESCE:
                # the common small server message: header and payload straight into `small`
                n = len(payload)
                if n < 126:
                    small += _SMALL_BINARY_HEADERS[n]
                else:
                    small += _H4.pack(0x80 | OP_BINARY, 126, n)
                small += payload
                count += 1
                continue
            for frame in self.frames_of(payload, OP_BINARY):
                for part in frame:
                    if len(part) <= COALESCE:
                        small += part
                    else:
                        if small:
                            bufs.append(small)
                            small = bytearray()
                        bufs.append(part)
            count += 1
        if small:
            bufs.append(small)
        return bufs, count
