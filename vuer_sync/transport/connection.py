"""A blocking, thread-safe RFC 6455 endpoint over an already-upgraded socket.

Threading model: one thread calls :meth:`WebSocketConnection.receive` in a loop; any number of
threads call :meth:`~WebSocketConnection.send`, :meth:`~WebSocketConnection.send_many`,
:meth:`~WebSocketConnection.ping`, :meth:`~WebSocketConnection.close` and
:meth:`~WebSocketConnection.abort`.

This is the socket shell around :class:`~vuer_sync.transport.protocol.Protocol`, which holds the
protocol state (the close handshake, fragment assembly, limits, the inbound budget, queued control
frames). The shell moves bytes: it reads headers and payloads (large ones straight into pooled
buffers) and hands them to the protocol object, and it writes what the protocol object encodes.

Every byte written goes through one lock, and a frame is always written whole, so control frames
never land inside a data frame. Control frames (pong replies, pings, close) are put on a small
queue and written by whichever thread holds the lock: the reader never blocks behind a large send
to answer a ping, and a pong can go out between the fragments of a large fragmented message.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import threading
import time
from typing import Any, Iterable, List, Optional, Tuple, Union

from .budget import InboundBudget
from .exceptions import ConnectionClosed, FrameError
from .frames import (
    _SMALL_MASK,
    CLOSE_ABNORMAL,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN_LATER,  # noqa: F401 - importable from here, as before
    OP_BINARY,
    OP_TEXT,
    FrameHeader,
    _byte_view,
    _xor_small,
    apply_mask,
    mask_bytes,
    parse_header,
)
from .protocol import Close, Ping, Pong, Protocol, State

__all__ = ["RECEIVE_POOL", "BufferPool", "WebSocketConnection"]

logger = logging.getLogger("vuer_sync.transport")

try:
    _IOV_MAX = int(os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    _IOV_MAX = 16
if _IOV_MAX <= 0:  # pragma: no cover - sysconf may report "no limit" as -1
    _IOV_MAX = 1024
#: Buffers per ``sendmsg`` call (kept well under IOV_MAX).
IOV_BATCH = max(2, min(512, _IOV_MAX))

#: Bytes per write system call (default of ``write_chunk``). One ``sendmsg`` of a whole 12 MB
#: message keeps its thread in the kernel for milliseconds, and a 1 kHz control loop in the
#: same process wakes up late (p99 0.5-0.8 ms on 2 cores, loopback). Returning to user space
#: every 512 KiB gives the scheduler points to run it (p99 0.23-0.32 ms), and the smaller
#: copies stay in cache: throughput is no lower (``benchmarks/bench_lateness_floor.py``
#: measures plain ``sendall`` both ways; row 5 of ``benchmarks/run.py`` the server).
WRITE_CHUNK = 512 * 1024

# While receiving a large masked payload, unmask every time this much new data has arrived, so the
# bytes are still in cache (instead of one pass over the whole message at the end).
_UNMASK_CHUNK = 256 * 1024

_HAVE_POLL = hasattr(select, "poll")
_POLLIN = getattr(select, "POLLIN", 1)
_POLLOUT = getattr(select, "POLLOUT", 4)

#: A large payload is read into buffers that grow with what has arrived: the first holds
#: this much, each next one as much as has arrived so far, up to ``_MAX_STEP``. A header that
#: declares 200 MiB and sends 10 bytes costs ``_FIRST_STEP``, not 200 MiB.
_FIRST_STEP = 1 << 20
_MAX_STEP = 16 << 20

Buffer = Union[bytes, bytearray, memoryview]


class BufferPool:
    """A small process-wide pool of large receive buffers.

    Large payloads are read into a pooled ``bytearray`` and then copied once into the returned
    ``bytes``. Reusing buffers whose pages are already mapped avoids one page fault per 4 KiB per
    message: on the 2-vCPU test VM that cut server CPU for 12 MB client->server messages from about
    1.1 to 0.4 ms/MB. Idle connections hold nothing; the pool keeps at most ``max_total`` bytes
    and does not pool buffers above ``max_buffer`` (those get a one-off buffer).
    """

    def __init__(self, max_total: int = 64 * 2**20, max_buffer: int = 32 * 2**20) -> None:
        self.max_total = max_total
        self.max_buffer = max_buffer
        self._lock = threading.Lock()
        self._free: List[bytearray] = []
        self._bytes = 0

    def get(self, n: int) -> bytearray:
        """A buffer of at least ``n`` bytes (contents undefined)."""
        with self._lock:
            best = -1
            for i, b in enumerate(self._free):
                if len(b) >= n and (best < 0 or len(b) < len(self._free[best])):
                    best = i
            if best >= 0:
                buf = self._free.pop(best)
                self._bytes -= len(buf)
                return buf
        # round up so that slightly larger messages can reuse the buffer later
        size = min(max(n, -(-n // _POOL_ROUND) * _POOL_ROUND), max(n, self.max_buffer))
        return bytearray(size)

    def put(self, buf: bytearray) -> None:
        """Return a buffer obtained from :meth:`get`."""
        if len(buf) > self.max_buffer or len(buf) > self.max_total:
            return
        with self._lock:
            self._free.append(buf)
            self._bytes += len(buf)
            while self._bytes > self.max_total:  # drop the smallest first
                small = min(range(len(self._free)), key=lambda i: len(self._free[i]))
                self._bytes -= len(self._free.pop(small))

    def clear(self) -> None:
        """Drop every pooled buffer."""
        with self._lock:
            self._free.clear()
            self._bytes = 0

    @property
    def pooled_bytes(self) -> int:
        """Bytes currently held by the pool."""
        return self._bytes


_POOL_ROUND = 1 << 20

#: The pool used by every WebSocketConnection for payloads larger than its ``read_size``.
RECEIVE_POOL = BufferPool()


class _Lost(Exception):
    """The transport failed while reading (EOF or socket error): close code 1006."""


def _pieces(buf: Buffer, limit: int) -> List[Buffer]:
    """``buf`` itself, or views of it of at most ``limit`` bytes each."""
    n = len(buf)
    if n <= limit:
        return [buf]
    mv = memoryview(buf)
    return [mv[i : i + limit] for i in range(0, n, limit)]


class WebSocketConnection:
    """Blocking WebSocket endpoint over an already-upgraded socket (plain or ``ssl.SSLSocket``).

    :param sock: the connected socket, after the HTTP upgrade. It is switched to blocking mode;
        do not give it a timeout afterwards (a read timeout would count as a dropped connection):
        detect dead peers with :meth:`ping`, :attr:`last_received` and :meth:`abort` instead.
    :param is_server: True on the server side: incoming frames must be masked and outgoing frames
        are not; False on the client side: the reverse, with a random mask key per frame.
    :param max_message_size: largest accepted message in bytes, whole message across fragments
        (None for no limit). Larger messages fail the connection with close code 1009.
    :param read_size: size of each ``recv_into`` for headers and small payloads. A payload larger
        than this is read with ``recv_into`` straight into one buffer (from :data:`RECEIVE_POOL`
        when it is at most 32 MiB), unmasked in place, and copied once into the returned bytes.
    :param fragment_size: outgoing messages larger than this are sent as several frames, so that
        control frames (pongs) can go out between them.
    :param initial_data: bytes already read from the socket past the HTTP request (normally empty).
    :param write_chunk: at most this many bytes per write system call (:data:`WRITE_CHUNK`):
        large messages are written in pieces, without copies, so other threads of the process
        get the CPU between them.
    :param inbound_budget: shared with other connections: the bytes held by incomplete inbound
        messages are reserved from it as they arrive; when it is exhausted the connection is
        failed with 1013. Whatever a header declares, only arrived bytes (plus one growth step)
        are held.

    The connection never closes the socket's file descriptor by itself, except in :meth:`abort`.
    After a completed close handshake or a failure it only half-closes (``shutdown(SHUT_WR)``), so
    the peer sees the end of the stream; call :meth:`abort` (or let the HTTP server close the
    socket) to release it.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        is_server: bool = True,
        max_message_size: Optional[int] = 2**28,
        read_size: int = 65536,
        fragment_size: int = 32 * 2**20,
        initial_data: bytes = b"",
        write_chunk: int = WRITE_CHUNK,
        inbound_budget: Optional[InboundBudget] = None,
    ) -> None:
        if read_size < 16:
            raise ValueError("read_size must be at least 16")
        if write_chunk < 1:
            raise ValueError("write_chunk must be positive")
        self._write_chunk = int(write_chunk)
        self._sock = sock
        self._is_server = bool(is_server)
        #: the connection's protocol state: close handshake, fragments, limits, control frames
        self._protocol = Protocol(
            is_server=is_server,
            max_message_size=max_message_size,
            fragment_size=fragment_size,
            inbound_budget=inbound_budget,
        )
        self._max_message_size = max_message_size  # for the fast path (_buffered_small_binary)
        self._read_size = int(read_size)
        self._is_ssl = isinstance(sock, ssl.SSLSocket)
        self._use_sendmsg = hasattr(sock, "sendmsg") and not self._is_ssl

        # OpenSSL forbids concurrent calls on one SSL object (SSL_read in the reader thread while
        # another thread is in SSL_write can crash or corrupt the stream: python/cpython#151508).
        # For TLS the socket is made non-blocking, every SSL call is made under _io_lock, and
        # threads wait for readiness with poll() outside that lock. Plain sockets stay blocking:
        # the kernel handles a concurrent recv and send.
        self._io_lock = threading.Lock()
        if self._is_ssl:
            sock.settimeout(0.0)
        else:
            sock.setblocking(True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not a TCP socket after all
                pass

        self._send_lock = threading.Lock()  # every write
        self._recv_lock = threading.Lock()  # one reader at a time

        # read side (only touched by the thread holding _recv_lock)
        self._buf = bytearray(initial_data)
        self._pos = 0
        self._scratch = bytearray(self._read_size)
        self._scratch_mv = memoryview(self._scratch)
        self._recv_exc: Optional[ConnectionClosed] = None

        # statistics
        now = time.monotonic()
        self._last_received = now
        self._last_pong: Optional[float] = None
        self._pongs_received = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._messages_sent = 0
        self._messages_received = 0

    # ------------------------------------------------------------------ properties

    @property
    def sock(self) -> socket.socket:
        """The underlying socket."""
        return self._sock

    @property
    def is_server(self) -> bool:
        """True for the server side of the connection."""
        return self._is_server

    @property
    def closed(self) -> bool:
        """True once no more data can be sent: a close frame was queued, sent or received, the
        connection failed or dropped, or :meth:`abort` was called."""
        return self._protocol.closed

    @property
    def state(self) -> State:
        """The protocol state: OPEN, CLOSING (a close frame queued, sent or received, or this
        side failed the connection) or CLOSED."""
        return self._protocol.state

    @property
    def close_code(self) -> Optional[int]:
        """None while open. Then: the peer's close code if its close frame arrived (1005 if it had
        none), else the code this side sent or failed with, else 1006 (dropped / aborted)."""
        return self._protocol.close_code

    @property
    def close_reason(self) -> str:
        """The reason text that goes with :attr:`close_code` ("" while open)."""
        return self._protocol.close_reason

    @property
    def close_received(self) -> bool:
        """True once the peer's close frame arrived (the peer closed, not a drop or a
        failure of this side)."""
        return self._protocol.close_rcvd

    @property
    def last_received(self) -> float:
        """``time.monotonic()`` when bytes were last read from the socket (creation time before
        that). It advances during a slow large transfer, so a keepalive can tell that from a dead
        peer."""
        return self._last_received

    @property
    def last_pong(self) -> Optional[float]:
        """``time.monotonic()`` of the last pong received, or None."""
        return self._last_pong

    @property
    def pongs_received(self) -> int:
        """Number of pong frames received."""
        return self._pongs_received

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the socket, frame headers included."""
        return self._bytes_sent

    @property
    def bytes_received(self) -> int:
        """Bytes read from the socket, frame headers included."""
        return self._bytes_received

    @property
    def messages_sent(self) -> int:
        """Data messages sent (a fragmented message counts once)."""
        return self._messages_sent

    @property
    def messages_received(self) -> int:
        """Data messages received (a fragmented message counts once)."""
        return self._messages_received

    def __repr__(self) -> str:
        role = "server" if self._is_server else "client"
        state = "open" if not self.closed else f"closed({self.close_code})"
        return f"<WebSocketConnection {role} {state}>"

    # ------------------------------------------------------------------ receiving

    def receive(self) -> Union[bytes, str]:
        """Block until a whole data message arrives and return it.

        Binary messages are returned as ``bytes``, text messages as ``str``. Pings are answered
        while waiting (also between the fragments of a message), pongs are recorded.

        Raises :class:`ConnectionClosed` when the peer closes (after replying with a close frame),
        when this side fails the connection because of a protocol error (1002), invalid UTF-8
        (1007) or an oversized message (1009) -- a close frame with that code is sent first -- and
        with code 1006 on EOF or a socket error. Every later call raises the same again.
        """
        with self._recv_lock:
            if self._recv_exc is not None:
                raise ConnectionClosed(self._recv_exc.code, self._recv_exc.reason)
            if self._is_server:
                data = self._buffered_small_binary()
                if data is not None:
                    return data
            try:
                return self._receive_message()
            except FrameError as err:
                exc = self._fail(err.code, str(err))
            except _Lost as err:
                exc = self._connection_lost(str(err))
            except ConnectionClosed as err:
                exc = err
            self._recv_exc = exc
        raise exc

    def _buffered_small_binary(self) -> Optional[bytes]:
        """The server's fast path: the next message if it is one small, masked, final binary
        frame (no RSV bits) already wholly in the read buffer, else ``None`` (and nothing is
        consumed: :meth:`_receive_message` then reads it, with every check).

        It bypasses the protocol object on purpose: a small message is then a few byte
        comparisons and one XOR, about twice as fast as header parsing plus two protocol
        calls, and this is the server's hot path (thousands of small client messages per
        second). It accepts only what :meth:`Protocol.receive_header` accepts between
        messages -- FIN + binary opcode, no RSV bit, masked, within ``max_message_size`` --
        and a single-frame binary message changes no protocol state. It runs only at the start
        of :meth:`receive`, where no fragmented message is in progress: fragments are
        assembled within one :meth:`_receive_message` call, and an error there ends the
        connection (``_recv_exc``)."""
        limit = self._max_message_size
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 6 or buf[pos] != 0x80 | OP_BINARY:
            return None
        b1 = buf[pos + 1]
        if b1 < 0x80 or b1 == 0xFF:  # unmasked (a protocol error), or a 64-bit length
            return None
        n = b1 & 0x7F
        head = 6
        if n == 126:
            if avail < 8:
                return None
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            head = 8
            if n > _SMALL_MASK:
                return None
        end = pos + head + n
        if end > len(buf) or (limit is not None and n > limit):
            return None
        key = bytes(buf[pos + head - 4 : pos + head])
        self._pos = end
        self._messages_received += 1
        return _xor_small(buf[pos + head : end], key) if n else b""

    def _receive_message(self) -> Union[bytes, str]:
        """Read frames until one completes a message; the protocol object checks every header
        and assembles fragments, the payloads are read here (large ones straight into pooled
        buffers). Pings are answered (the pong is queued by the protocol and written here)."""
        protocol = self._protocol
        while True:
            h = self._read_header()
            protocol.receive_header(h)
            payload = self._read_payload(h.payload_length, h.mask_key)
            event = protocol.receive_payload(h, payload)
            if event is None:
                continue
            kind = type(event)
            if kind is bytes or kind is str:
                self._messages_received += 1
                return event  # type: ignore[return-value]
            if kind is Ping:
                # the pong; a writer holding the lock writes it when it lets go (a ping flood
                # while a large message is stuck costs no more than a lookup per ping)
                if protocol.has_control() and not self._send_lock.locked():
                    self._flush_pending()
            elif isinstance(event, Pong):
                self._last_pong = time.monotonic()
                self._pongs_received += 1
            elif isinstance(event, Close):
                logger.debug("websocket close frame received: %d %r", event.code, event.reason)
                self._flush_pending()  # our reply, if it is ours to send
                if protocol.take_eof():
                    self._shutdown(socket.SHUT_WR)  # handshake complete
                raise ConnectionClosed(event.code, event.reason)

    def _recv_into(self, view: memoryview) -> int:
        """One ``recv_into``; for TLS, serialised with writes and waiting outside the lock."""
        sock = self._sock
        if not self._is_ssl:
            return sock.recv_into(view)
        while True:
            with self._io_lock:
                try:
                    return sock.recv_into(view)
                except ssl.SSLWantReadError:
                    event = _POLLIN
                except ssl.SSLWantWriteError:  # e.g. a TLS 1.3 key update reply
                    event = _POLLOUT
            self._wait(event)

    def _wait(self, event: int) -> None:
        """Wait until the socket is ready for ``event`` (or has an error / was shut down)."""
        fd = self._sock.fileno()
        if fd < 0 or self._protocol.state is State.CLOSED:
            raise OSError("socket closed")
        if _HAVE_POLL:
            poller = select.poll()
            poller.register(fd, event)
            while not poller.poll(1000):  # wake up now and then to notice abort()
                if self._protocol.state is State.CLOSED:
                    raise OSError("socket closed")
        else:  # pragma: no cover - platforms without poll()
            rlist, wlist = ([fd], []) if event == _POLLIN else ([], [fd])
            while not any(select.select(rlist, wlist, [fd], 1.0)):
                if self._protocol.state is State.CLOSED:
                    raise OSError("socket closed")

    def _read_header(self) -> FrameHeader:
        while True:
            h = parse_header(self._buf, self._pos)
            if type(h) is not int:
                self._pos += h.header_length  # type: ignore[union-attr]
                return h  # type: ignore[return-value]
            self._fill()

    def _fill(self) -> None:
        """Append one ``recv`` worth of bytes to the read buffer."""
        buf = self._buf
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        try:
            n = self._recv_into(self._scratch_mv)
        except (OSError, ValueError) as err:
            raise _Lost(f"read failed: {err}")
        if not n:
            raise _Lost("connection closed by the peer without a close frame")
        buf += self._scratch_mv[:n]
        self._bytes_received += n
        self._last_received = time.monotonic()

    def _read_payload(self, n: int, key: Optional[bytes]) -> bytes:
        """Read ``n`` payload bytes and unmask them."""
        avail = len(self._buf) - self._pos
        if n <= avail or n <= self._read_size:
            while len(self._buf) - self._pos < n:
                self._fill()
            start = self._pos
            end = start + n
            with memoryview(self._buf) as mv:
                data = bytes(mv[start:end]) if key is None else mask_bytes(mv[start:end], key)
            self._pos = end
            return data

        return self._read_large_payload(n, key, avail)

    def _read_large_payload(self, n: int, key: Optional[bytes], avail: int) -> bytes:
        """Read a payload larger than ``read_size``, holding only what has arrived.

        The bytes go with ``recv_into`` straight into buffers that grow with what has arrived
        (``_FIRST_STEP``, then as much again, up to ``_MAX_STEP`` each), are unmasked in place
        while still in cache, and are joined into the returned bytes (one copy). The buffers
        come from :data:`RECEIVE_POOL`, whose pages are already mapped (a fresh buffer per
        message costs a page fault per 4 KiB). Each step is reserved from the inbound budget
        first; when it is exhausted the connection fails with 1013.
        """
        pool = RECEIVE_POOL
        steps: List[Tuple[bytearray, memoryview]] = []
        reserved = 0
        got = 0
        try:
            while got < n:
                size = min(n - got, max(_FIRST_STEP, min(got, _MAX_STEP)))
                self._protocol.reserve(size)  # FrameError (1013) when the budget is exhausted
                reserved += size
                buf = pool.get(size)
                dst = memoryview(buf)[:size]
                steps.append((buf, dst))
                filled = 0
                if avail:  # bytes already read past the header
                    filled = min(avail, size)
                    with memoryview(self._buf) as src:
                        dst[:filled] = src[self._pos : self._pos + filled]
                    self._pos += filled
                    avail -= filled
                    if not avail:
                        self._buf.clear()
                        self._pos = 0
                self._recv_exact_into(dst, filled, key, got)
                got += size
            if len(steps) == 1:
                return steps[0][1].tobytes()
            return b"".join([dst for _, dst in steps])
        finally:
            for buf, dst in steps:
                dst.release()
                pool.put(buf)
            if reserved:
                self._protocol.release(reserved)

    def _recv_exact_into(self, dst: memoryview, got: int, key: Optional[bytes],
                         mask_offset: int = 0) -> None:
        """Fill ``dst[got:]`` from the socket and unmask all of ``dst`` (in chunks, in place);
        ``mask_offset`` is the position of ``dst[0]`` in the frame's payload."""
        n = len(dst)
        recv_into = self._sock.recv_into if not self._is_ssl else self._recv_into
        unmasked = 0
        while got < n:
            try:
                k = recv_into(dst[got:])
            except (OSError, ValueError) as err:
                raise _Lost(f"read failed: {err}")
            if not k:
                raise _Lost("connection closed by the peer in the middle of a frame")
            got += k
            self._bytes_received += k
            self._last_received = time.monotonic()
            if key is not None and got - unmasked >= _UNMASK_CHUNK:
                apply_mask(dst[unmasked:got], key, mask_offset + unmasked)
                unmasked = got
        if key is not None and unmasked < n:
            apply_mask(dst[unmasked:], key, mask_offset + unmasked)

    # ------------------------------------------------------------------ sending

    def send(self, payload: Union[Buffer, str, Any], binary: bool = True) -> None:
        """Send one message.

        ``payload`` may be ``str`` (always a text frame), any C-contiguous buffer (``bytes``,
        ``bytearray``, ``memoryview``, numpy array, ...) or an object whose ``parts`` attribute
        is a sequence of such buffers (the message is their concatenation, e.g.
        :class:`vuer_sync.codec.Segments`), sent without copying on the server side as a
        binary frame (a text frame if ``binary=False``; the bytes must then be UTF-8).
        Messages larger than ``fragment_size`` are split into fragments. On the client side each
        frame is masked with a random key (a copy).

        Blocks until the whole message is handed to the kernel. Raises :class:`ConnectionClosed`
        if a close frame was already queued or the connection is gone.
        """
        if isinstance(payload, str):
            frames = self._protocol.encode_message(memoryview(payload.encode("utf-8")), OP_TEXT)
        else:
            frames = self._protocol.frames_of(payload, OP_BINARY if binary else OP_TEXT)
        self._send_frames(frames, 1)

    def send_many(self, payloads: Iterable[Union[Buffer, Any]]) -> None:
        """Send several binary messages with as few system calls as possible.

        Small messages are packed next to their headers into shared buffers; large ones go as
        separate iovecs without copying. Everything is written under one lock acquisition, so no
        other message is interleaved, with ``sendmsg`` calls of at most ``IOV_BATCH`` buffers
        (partial writes are resumed where they stopped).
        """
        bufs, count = self._protocol.encode_many(payloads)
        if count:
            self._send_frames([bufs], count)

    def ping(self, data: Union[bytes, str] = b"") -> None:
        """Queue a ping frame (at most 125 bytes of payload) and return without waiting.

        It is written at once if no other thread is writing, otherwise right after the frame being
        written. The pong shows up in :attr:`last_pong` / :attr:`pongs_received`.
        """
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self._protocol.send_ping(payload)  # ValueError over 125 bytes, ConnectionClosed
        self._flush_pending()
        if self._protocol.write_broken:
            raise self._protocol.closed_error()

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake: queue a close frame and return without waiting.

        The frame is sent once (later calls do nothing), after any message that is being written.
        After this no more data can be sent; :meth:`receive` keeps returning messages until the
        peer's close frame arrives and then raises :class:`ConnectionClosed`. ``reason`` is cut to
        123 UTF-8 bytes. Raises ``ValueError`` for a code that may not be sent (e.g. 1005, 1006).
        """
        if self._protocol.send_close(code, reason):
            self._flush_pending()

    def abort(self) -> None:
        """Drop the connection at once: ``shutdown(SHUT_RDWR)`` and close the socket.

        Unblocks a reader blocked in ``recv`` and writers blocked in ``send`` (they raise
        :class:`ConnectionClosed` with code 1006). Safe to call more than once and from any thread.
        """
        self._protocol.abort()
        self._shutdown(socket.SHUT_RDWR)
        # For TLS, do not free the SSL object under a thread that is inside an SSL call (the
        # calls are short: the socket is non-blocking). Give up waiting after a second.
        locked = self._is_ssl and self._io_lock.acquire(timeout=1.0)
        try:
            self._sock.close()
        except OSError:  # pragma: no cover
            pass
        finally:
            if locked:
                self._io_lock.release()

    # ------------------------------------------------------------------ internals: writing

    def _send_frames(self, frames: List[List[Buffer]], count: int) -> None:
        protocol = self._protocol
        lock = self._send_lock
        lock.acquire()
        try:
            protocol.check_writable()
            if protocol.has_control():
                self._drain_pending_locked(allow_close=False)
            for i, frame in enumerate(frames):
                if i and protocol.has_control():  # let pongs / pings out between fragments
                    self._drain_pending_locked(allow_close=False)
                self._write_locked(frame)
            self._messages_sent += count
        except (OSError, ValueError) as err:  # ValueError: socket object already closed
            protocol.write_failed()
            logger.debug("websocket send failed: %s", err)
            raise ConnectionClosed(CLOSE_ABNORMAL, f"send failed: {err}")
        finally:
            lock.release()
            self._flush_pending()

    def _flush_pending(self) -> None:
        """Write the queued control frames now if no other thread is writing."""
        # Whoever releases the lock checks the queue again, so an item appended while the lock was
        # held (and whose producer failed to take the lock) is never left behind.
        lock = self._send_lock
        has_control = self._protocol.has_control
        while has_control() and lock.acquire(blocking=False):
            try:
                self._drain_pending_locked(allow_close=True)
            finally:
                lock.release()

    def _drain_pending_locked(self, allow_close: bool) -> None:
        protocol = self._protocol
        while True:
            item = protocol.next_control(allow_close)
            if item is None:
                return
            is_close, frame = item
            try:
                self._write_locked([frame])
            except (OSError, ValueError) as err:
                protocol.write_failed()
                logger.debug("websocket control frame write failed: %s", err)
                return
            if is_close:
                protocol.close_frame_written()
                if protocol.take_eof():
                    self._shutdown(socket.SHUT_WR)  # handshake complete

    def _write_locked(self, bufs: List[Buffer]) -> None:
        """Write every byte of ``bufs`` (the send lock is held)."""
        sock = self._sock
        if self._is_ssl:
            for b in bufs:
                self._ssl_write_all(b)
            return
        if not self._use_sendmsg:  # pragma: no cover - plain sockets without sendmsg
            for b in bufs:
                sock.sendall(b)
                self._bytes_sent += len(b)
            return
        limit = self._write_chunk
        nbufs = len(bufs)
        if nbufs == 1 and len(bufs[0]) <= limit:
            sock.sendall(bufs[0])
            self._bytes_sent += len(bufs[0])
            return
        if any(len(b) > limit for b in bufs):  # views of at most `limit` bytes (no copy)
            bufs = [v for b in bufs for v in _pieces(b, limit)]
            nbufs = len(bufs)
        pos = 0  # index of the first buffer not completely sent
        head: Optional[memoryview] = None  # unsent rest of bufs[pos] after a partial write
        while pos < nbufs:
            # at most IOV_BATCH buffers and about `limit` bytes per call
            end = pos + 1
            size = len(bufs[pos])
            stop = min(nbufs, pos + IOV_BATCH)
            while end < stop and size + len(bufs[end]) <= limit:
                size += len(bufs[end])
                end += 1
            batch = bufs[pos:end]
            if head is not None:
                batch[0] = head
            sent = sock.sendmsg(batch)
            self._bytes_sent += sent
            j = 0
            nbatch = len(batch)
            while j < nbatch and sent >= len(batch[j]):
                sent -= len(batch[j])
                j += 1
            pos += j
            # A partial write: resume inside batch[j] (a view, no copy).
            head = memoryview(batch[j])[sent:] if j < nbatch else None

    def _ssl_write_all(self, data: Buffer) -> None:
        """Write all of ``data`` to the (non-blocking) SSL socket, one SSL_write at a time under
        ``_io_lock``; wait for room outside the lock so that the reader can run meanwhile."""
        sock = self._sock
        view = _byte_view(data)
        pos = 0
        n = len(view)
        while pos < n:
            with self._io_lock:
                try:
                    # After a WANT_WRITE the retry must pass the same bytes: pos is unchanged.
                    k = sock.send(view[pos:])
                except ssl.SSLWantWriteError:
                    k = -_POLLOUT
                except ssl.SSLWantReadError:
                    k = -_POLLIN
            if k > 0:
                pos += k
                self._bytes_sent += k
            elif k < 0:
                self._wait(-k)
            else:  # pragma: no cover - send() of a non-empty buffer never returns 0
                self._wait(_POLLOUT)

    def _shutdown(self, how: int) -> None:
        try:
            if self._is_ssl:
                # SSLSocket.shutdown() drops the SSL object, which would break a concurrent reader;
                # shut down the TCP stream underneath instead.
                socket.socket.shutdown(self._sock, how)
            else:
                self._sock.shutdown(how)
        except OSError:
            pass

    # ------------------------------------------------------------------ internals: closing

    def _fail(self, code: int, reason: str) -> ConnectionClosed:
        logger.debug("failing websocket connection with %d: %s", code, reason)
        exc = self._protocol.fail(code, reason)
        self._flush_pending()  # the close frame with the code
        if self._protocol.take_eof():
            self._shutdown(socket.SHUT_WR)
        return exc

    def _connection_lost(self, reason: str) -> ConnectionClosed:
        logger.debug("websocket connection lost: %s", reason)
        exc = self._protocol.connection_lost(reason)
        self._shutdown(socket.SHUT_RDWR)  # wake writers blocked on a dead peer
        return exc
