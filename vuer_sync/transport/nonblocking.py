"""A non-blocking RFC 6455 endpoint for a selector loop: bytes are moved only when the socket
is ready, and no call ever waits.

:class:`NonBlockingConnection` is the second socket shell of
:class:`~vuer_sync.transport.protocol.Protocol` (the first,
:class:`~vuer_sync.transport.connection.WebSocketConnection`, blocks, with a thread per
reader). It owns no thread: a loop calls :meth:`NonBlockingConnection.read` when the socket is
readable and :meth:`NonBlockingConnection.flush` when it is writable; any thread may
:meth:`~NonBlockingConnection.queue` whole frames and try to write them at once (every write
goes through one lock, and an entry is written whole before a control frame or another entry).

>>> import socket
>>> from vuer_sync.transport import WebSocketConnection
>>> a, b = socket.socketpair()
>>> server = NonBlockingConnection(a, is_server=True)
>>> peer = WebSocketConnection(b, is_server=False)
>>> frames, count = server.protocol.encode_many([b"hello"])
>>> server.queue(frames, token="batch 1")
>>> server.flush(), server.take_written()
(True, ['batch 1'])
>>> peer.receive()
b'hello'
>>> peer.send(b"hi")
>>> scratch = memoryview(bytearray(65536))
>>> server.read(scratch)
[b'hi']
>>> a.close(); b.close()
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
import threading
import time
from typing import Any, Deque, List, Optional, Tuple, Union

from .budget import InboundBudget
from .connection import RECEIVE_POOL
from .exceptions import ConnectionClosed, FrameError
from .frames import _SMALL_MASK, FrameHeader, _xor_small, apply_mask, mask_bytes, parse_header
from .protocol import Pong, Protocol, State

__all__ = ["WRITTEN_NOW", "NonBlockingConnection", "WRITE_CHUNK"]

logger = logging.getLogger("vuer_sync.transport")

Buffer = Union[bytes, bytearray, memoryview]

#: Bytes per ``sendmsg`` (the same 512 KiB as the blocking shell: see its ``WRITE_CHUNK``).
WRITE_CHUNK = 512 * 1024

try:
    _IOV_MAX = int(os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    _IOV_MAX = 16
#: Buffers per ``sendmsg`` call.
IOV_BATCH = max(2, min(512, _IOV_MAX if _IOV_MAX > 0 else 1024))

_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)

#: :meth:`NonBlockingConnection.write` wrote everything at once, its token included, and
#: reports nothing (the caller accounts for the token itself).
WRITTEN_NOW = 2

#: The second byte of a masked ping frame with the longest payload a control frame has.
_PING_MAX = 0x80 | 125

#: After a read that completed more than this many control frames, the next reads take
#: :data:`SMALL_READ` bytes (a million pings from one client then delay the others' turns by
#: the parsing of 4 KiB, not of 64 KiB).
MANY_FRAMES = 128
SMALL_READ = 4096
#: A frame payload larger than this is read straight into pooled buffers, not through the
#: scratch buffer.
BIG_PAYLOAD = 256 * 1024
#: The first pooled buffer of a large payload, and the largest step it grows by: a header
#: that declares 200 MiB and sends 10 bytes holds 1 MiB.
_FIRST_STEP = 1 << 20
_MAX_STEP = 16 << 20


class _Entry:
    """Buffers to write in order (whole frames), and what to report once they are out."""

    __slots__ = ("bufs", "started", "token")

    def __init__(self, bufs: List[Buffer], token: Any) -> None:
        self.bufs: Deque[memoryview] = collections.deque(
            memoryview(b).cast("B") for b in bufs if len(b))
        self.token = token
        self.started = False


class _BigPayload:
    """A large frame payload arriving over several reads, into pooled buffers that grow with
    what has arrived (each step reserved from the inbound budget first: ``FrameError``
    1013 when it is exhausted); unmasked in place step by step."""

    def __init__(self, header: FrameHeader, protocol: Protocol, first: memoryview) -> None:
        self.header = header
        self.protocol = protocol
        self.n = header.payload_length
        self.steps: List[Tuple[bytearray, memoryview]] = []
        self.got = 0  # payload bytes in completed steps
        self.filled = 0  # in the current step
        self.reserved = 0
        self._next_step()
        while len(first):
            dst = self.free()
            k = min(len(dst), len(first))
            dst[:k] = first[:k]
            first = first[k:]
            self.arrived(k)

    def _next_step(self) -> None:
        size = min(self.n - self.got, max(_FIRST_STEP, min(self.got, _MAX_STEP)))
        self.protocol.reserve(size)  # FrameError (1013) when the budget is exhausted
        self.reserved += size
        buf = RECEIVE_POOL.get(size)
        self.steps.append((buf, memoryview(buf)[:size]))
        self.filled = 0

    def free(self) -> memoryview:
        """Where the next bytes go."""
        return self.steps[-1][1][self.filled:]

    def arrived(self, k: int) -> bool:
        """``k`` bytes were written into :meth:`free`; True once the payload is complete."""
        self.filled += k
        dst = self.steps[-1][1]
        if self.filled < len(dst):
            return False
        key = self.header.mask_key
        if key is not None:
            apply_mask(dst, key, self.got)
        self.got += len(dst)
        if self.got >= self.n:
            return True
        self._next_step()
        return False

    def take(self) -> bytes:
        """The payload (one copy), the buffers back to the pool, the reservation given back."""
        try:
            views = [dst for _, dst in self.steps]
            return views[0].tobytes() if len(views) == 1 else b"".join(views)
        finally:
            self.discard()

    def discard(self) -> None:
        for buf, dst in self.steps:
            dst.release()
            RECEIVE_POOL.put(buf)
        self.steps = []
        if self.reserved:
            self.protocol.release(self.reserved)
            self.reserved = 0


class NonBlockingConnection:
    """The socket side of one WebSocket connection, for a selector loop (plain sockets).

    :param sock: the connected socket after the HTTP upgrade; it is made non-blocking.
    :param is_server: as for :class:`~vuer_sync.transport.protocol.Protocol`.
    :param max_message_size: larger inbound messages fail the connection with 1009.
    :param fragment_size: outbound messages larger than this go as several frames.
    :param write_chunk: at most this many bytes per ``sendmsg`` (large messages are written
        in pieces of the caller's memory, without copies).
    :param inbound_budget: shared by the connections of a server (see ``budget.py``).
    :param max_read: bytes per :meth:`read` (:data:`SMALL_READ` after a read of more than
        :data:`MANY_FRAMES` frames).

    State the loop reads: ``protocol``, ``last_received`` / ``last_progress`` (monotonic times
    of the last byte read / written), ``pending`` (entries not yet written),
    ``bytes_sent``/``bytes_received``/``messages_received``, ``last_pong``.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        is_server: bool = True,
        max_message_size: Optional[int] = 2**28,
        fragment_size: int = 32 * 2**20,
        write_chunk: int = WRITE_CHUNK,
        inbound_budget: Optional[InboundBudget] = None,
        max_read: int = 65536,
    ) -> None:
        if write_chunk < 1:
            raise ValueError("write_chunk must be positive")
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not a TCP socket after all
                pass
        self.sock = sock
        self.protocol = Protocol(is_server=is_server, max_message_size=max_message_size,
                                 fragment_size=fragment_size, inbound_budget=inbound_budget)
        self.write_chunk = int(write_chunk)
        self._lock = threading.Lock()  # every write, and the entry queue
        self._entries: Deque[_Entry] = collections.deque()
        self._written: List[Any] = []  # tokens of entries written since take_written()
        self._dropped: List[Any] = []  # tokens of entries that will never be written
        now = time.monotonic()
        self.last_received = now
        self.last_progress = now
        self.last_pong: Optional[float] = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_received = 0
        self.pings_skipped = 0  # pings of a run before its last (only the last is answered)
        self.max_read = int(max_read)
        self.read_size = self.max_read  # bytes the next read() takes at most
        self._buf = bytearray()  # read, not parsed yet
        self._buffered_reserved = 0  # of it, held against the inbound budget
        self._header: Optional[FrameHeader] = None  # parsed; its payload not complete yet
        self._big: Optional[_BigPayload] = None  # a large payload being read directly
        self.read_full = False  # the last read() filled what it asked for
        self._shut_wr = False

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def pending(self) -> int:
        """Entries queued and not completely written."""
        return len(self._entries)

    # ------------------------------------------------------------------ reading

    def read(self, scratch: memoryview) -> List[Union[bytes, str]]:
        """Read what the socket has (one ``recv_into``) and return the messages it completes.

        Small frames are read ``read_size`` bytes at a time into one scratch buffer (the
        loop's) and parsed here; the payload of a large frame is read straight into pooled
        buffers that grow with what has arrived (reserved from the inbound budget; unmasked
        in place), then copied once into the message. Pings are answered (the pong is
        queued: call :meth:`flush`); pongs are recorded. After the peer's close frame, or a
        protocol error (this side's close frame is then queued), :attr:`input_ended` is
        True. Raises :class:`ConnectionClosed` when the stream ends or the read fails."""
        protocol = self.protocol
        big = self._big
        self.read_full = False
        try:
            if big is not None:
                want = len(big.free())
                n = self.sock.recv_into(big.free())
            else:
                want = min(len(scratch), self.read_size)
                n = self.sock.recv_into(scratch, want)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as e:
            raise self._lost(f"read failed: {e}") from None
        if n == 0:
            self._drop_input()
            protocol.receive_eof()
            raise protocol.closed_error()
        self.last_received = time.monotonic()
        self.bytes_received += n
        # the socket may well have more: the buffer is full, or a large payload is still
        # arriving (read on until the socket is empty, rather than back through select)
        self.read_full = n == want or big is not None
        out: List[Union[bytes, str]] = []
        try:
            if big is not None:
                if not big.arrived(n):
                    return out
                self._big = None
                h = big.header
                payload = big.take()
                self._event(protocol.receive_payload(h, payload), out)
            else:
                self._buf += scratch[:n]
            controls = self._parse(out)
        except FrameError as err:
            self._drop_input()
            protocol.fail(err.code, str(err))
            return out
        self.messages_received += len(out)
        # many control frames per read (a ping flood): read less at a time, so that parsing
        # one connection's backlog never holds the loop for long
        if controls > MANY_FRAMES:
            self.read_size = SMALL_READ
            self.read_full = False  # and no second read in the same turn
        else:
            self.read_size = self.max_read
        return out

    def _parse(self, out: List[Union[bytes, str]]) -> int:
        """Frames from the read buffer until it runs out (or a large payload starts: it is
        read directly from then on); returns how many control frames there were."""
        protocol = self.protocol
        buf = self._buf
        pos = 0
        controls = 0
        limit = protocol.max_message_size
        small = self.protocol.is_server
        try:
            while not (protocol.close_rcvd or protocol.failed):
                h = self._header
                if h is None and small and not protocol.in_message:
                    # the common case: a small, masked, final binary frame, wholly here (the
                    # checks Protocol.receive_header makes between messages, inlined: a
                    # single-frame binary message changes no protocol state)
                    end = len(buf)
                    if end - pos >= 6 and buf[pos] == 0x82 and 0x80 <= buf[pos + 1] < 0xFF:
                        n = buf[pos + 1] & 0x7F
                        head = 6
                        if n == 126 and end - pos >= 8:
                            n = (buf[pos + 2] << 8) | buf[pos + 3]
                            head = 8
                        if n != 126 and n <= _SMALL_MASK and pos + head + n <= end \
                                and (limit is None or n <= limit):
                            key = bytes(buf[pos + head - 4:pos + head])
                            out.append(_xor_small(buf[pos + head:pos + head + n], key)
                                       if n else b"")
                            pos += head + n
                            continue
                if h is None and len(buf) - pos >= 12 and buf[pos] == 0x89 \
                        and 0x80 <= buf[pos + 1] <= _PING_MAX:
                    # a run of masked pings, whole here (a flood, or a keepalive burst): a
                    # pong may answer only the latest of them (RFC 6455 5.5.3), so only the
                    # last is parsed and the rest are counted (a compare per frame)
                    run, last, at, end = 0, pos, pos, len(buf)
                    while at + 6 <= end and buf[at] == 0x89 and 0x80 <= buf[at + 1] <= _PING_MAX:
                        size = 6 + (buf[at + 1] & 0x7F)
                        if at + size > end:
                            break
                        run, last, at = run + 1, at, at + size
                    if run > 1:
                        ping = parse_header(buf, last)
                        assert not isinstance(ping, int) and ping.mask_key is not None
                        protocol.receive_header(ping)
                        body = bytes(buf[last + 6:at])
                        self._event(protocol.receive_payload(
                            ping, mask_bytes(body, ping.mask_key) if body else b""), out)
                        pos = at
                        controls += run
                        self.pings_skipped += run - 1
                        continue
                if h is None:
                    parsed = parse_header(buf, pos)
                    if isinstance(parsed, int):
                        break
                    h = parsed
                    pos += h.header_length
                    protocol.receive_header(h)  # FrameError: fails the connection
                    self._header = h
                n = h.payload_length
                have = len(buf) - pos
                if have < n:
                    if n > BIG_PAYLOAD:
                        self._big = _BigPayload(h, protocol, memoryview(buf)[pos:])
                        self._header = None
                        pos = len(buf)
                    break
                with memoryview(buf) as mv:
                    view = mv[pos:pos + n]
                    payload = bytes(view) if h.mask_key is None else mask_bytes(view, h.mask_key)
                    view.release()
                pos += n
                self._header = None
                if h.opcode >= 0x8:
                    controls += 1
                self._event(protocol.receive_payload(h, payload), out)
        finally:
            del buf[:pos]
            self._hold_buffered()
        return controls

    def _event(self, ev: Any, out: List[Union[bytes, str]]) -> None:
        kind = type(ev)
        if kind is bytes or kind is str:
            out.append(ev)
        elif kind is Pong:
            self.last_pong = self.last_received

    def _hold_buffered(self) -> None:
        """Reserve the unparsed bytes beyond 64 KiB from the inbound budget (a peer that
        sends most of a frame and stops holds only what the budget allows)."""
        want = max(0, len(self._buf) - 65536)
        held = self._buffered_reserved
        if want > held:
            self.protocol.reserve(want - held)
        elif want < held:
            self.protocol.release(held - want)
        self._buffered_reserved = want

    def _drop_input(self) -> None:
        """No more input: give back the read buffer and a large payload in progress."""
        self._buf.clear()
        self._header = None
        if self._buffered_reserved:
            self.protocol.release(self._buffered_reserved)
            self._buffered_reserved = 0
        big, self._big = self._big, None
        if big is not None:
            big.discard()

    def _lost(self, reason: str) -> ConnectionClosed:
        self._drop_input()
        return self.protocol.connection_lost(reason)

    @property
    def input_ended(self) -> bool:
        """No more messages will come: the peer's close frame arrived or this side failed the
        connection (``protocol.closed_error()`` says with what code)."""
        p = self.protocol
        return p.close_rcvd or p.failed

    # ------------------------------------------------------------------ writing

    def queue(self, bufs: List[Buffer], token: Any = None) -> None:
        """Queue whole frames (``Protocol.encode_many``/``frames_of`` output) to be written
        after what is queued; ``token`` (unless None) comes back from :meth:`take_written`
        once they are out (or from :meth:`take_dropped` if the connection ends first).
        Control frames (pongs, pings, the close) go out between entries."""
        p = self.protocol
        with self._lock:
            if p.close_sent or p.write_broken or p.state is State.CLOSED:
                self._dropped.append(token)
                return
            self._entries.append(_Entry(bufs, token))

    def flush(self) -> bool:
        """Write queued entries and control frames until done or the socket is full; True
        when nothing is left to write. Raises :class:`ConnectionClosed` if a write fails."""
        with self._lock:
            return self._flush_locked()

    def write(self, bufs: List[Buffer], token: Any) -> int:
        """From any thread: queue ``bufs`` (whole frames, as :meth:`queue`) and write what the
        socket takes now. True when everything, including what was queued before, is written.

        The common case, nothing queued before it and at most ``write_chunk`` bytes, is one
        ``sendmsg`` with no bookkeeping: then it returns :data:`WRITTEN_NOW` (2, true) and
        ``token`` is *not* reported by :meth:`take_written` (the caller knows it is out).
        If the write fails (:class:`ConnectionClosed`),
        ``token`` is the caller's to account for: it is not reported as dropped."""
        try:
            return self._write(bufs, token)
        except ConnectionClosed:
            with self._lock:
                self._dropped = [t for t in self._dropped if t is not token]
            raise

    def _write(self, bufs: List[Buffer], token: Any) -> int:
        p = self.protocol
        with self._lock:
            if self._entries or p.has_control() or p.close_sent or p.write_broken \
                    or p.state is State.CLOSED or len(bufs) > IOV_BATCH:
                return self._queue_and_flush_locked(bufs, token)
            total = 0
            for b in bufs:
                total += len(b)
            if total > self.write_chunk:
                return self._queue_and_flush_locked(bufs, token)
            try:
                sent = self.sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as err:
                if err.errno not in _AGAIN:
                    raise self._write_error(err) from None
                sent = 0
            if sent:
                self.last_progress = time.monotonic()
                self.bytes_sent += sent
            if sent == total:
                if self._written:  # reported in order, after the ones before it
                    self._written.append(token)
                    return True
                return WRITTEN_NOW
            self._entries.append(_Entry(bufs, token))
            self._advance(sent)
            return False

    def _queue_and_flush_locked(self, bufs: List[Buffer], token: Any) -> bool:
        p = self.protocol
        if p.close_sent or p.write_broken or p.state is State.CLOSED:
            self._dropped.append(token)
            return self._flush_locked()
        self._entries.append(_Entry(bufs, token))
        return self._flush_locked()

    def _write_error(self, err: OSError) -> ConnectionClosed:
        self.protocol.write_failed()
        self._drop_all()
        logger.debug("websocket send failed: %s", err)
        return ConnectionClosed(1006, f"send failed: {err}")

    def take_written(self) -> List[Any]:
        """Tokens of the entries written since the last call, in order."""
        with self._lock:
            out, self._written = self._written, []
        return out

    def take_dropped(self) -> List[Any]:
        """Tokens of entries that will never be written (the connection ended first)."""
        with self._lock:
            out, self._dropped = self._dropped, []
        return out

    def _control_entry(self) -> bool:
        """Put the next control frame in front (only between entries). True if one was."""
        entries = self._entries
        if entries and entries[0].started:
            return False
        item = self.protocol.next_control(allow_close=True)
        if item is None:
            return False
        is_close, frame = item
        entries.appendleft(_Entry([frame], _CLOSE_TOKEN if is_close else _CONTROL_TOKEN))
        return True

    def _flush_locked(self) -> bool:
        protocol = self.protocol
        entries = self._entries
        sock = self.sock
        limit = self.write_chunk
        while True:
            if protocol.has_control():
                self._control_entry()
            if not entries:
                if protocol.take_eof():
                    self._shutdown_wr()
                return True
            if protocol.write_broken:
                self._drop_all()
                raise protocol.closed_error()
            iov: List[memoryview] = []
            size = 0
            # gather across entries, unless a control frame waits: then this write ends
            # with the current entry, and the control frame goes next
            one_entry = protocol.has_control()
            for e in entries:
                for b in e.bufs:
                    if iov and (size + len(b) > limit or len(iov) >= IOV_BATCH):
                        break
                    iov.append(b[: limit - size] if len(b) > limit - size else b)
                    size += len(iov[-1])
                else:
                    if one_entry:
                        break
                    continue
                break
            try:
                sent = sock.sendmsg(iov)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as err:
                if err.errno in _AGAIN:
                    return False
                raise self._write_error(err) from None
            if sent:
                self.last_progress = time.monotonic()
                self.bytes_sent += sent
            self._advance(sent)
            if sent < size:
                return False

    def _advance(self, sent: int) -> None:
        entries = self._entries
        while sent and entries:
            e = entries[0]
            e.started = True
            bufs = e.bufs
            while sent and bufs:
                b = bufs[0]
                if sent >= len(b):
                    sent -= len(b)
                    bufs.popleft()
                else:
                    bufs[0] = b[sent:]
                    sent = 0
            if not bufs:
                entries.popleft()
                self._done(e.token)
        while entries and not entries[0].bufs:  # entries of empty buffers
            self._done(entries.popleft().token)

    def _done(self, token: Any) -> None:
        if token is _CLOSE_TOKEN:
            self.protocol.close_frame_written()
            # nothing may follow a close frame: what was queued behind it is dropped
            self._drop_all()
        elif token is not _CONTROL_TOKEN and token is not None:
            self._written.append(token)

    def _drop_all(self) -> None:
        for e in self._entries:
            if e.token is not _CLOSE_TOKEN and e.token is not _CONTROL_TOKEN \
                    and e.token is not None:
                self._dropped.append(e.token)
        self._entries.clear()

    def _shutdown_wr(self) -> None:
        if not self._shut_wr:
            self._shut_wr = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    # ------------------------------------------------------------------ ending

    def abort(self) -> None:
        """Drop the connection: CLOSED (1006 unless a close code is known), the socket shut
        down both ways (the loop then sees it readable, reads EOF and closes it). Safe from
        any thread, more than once."""
        self.protocol.abort()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close_socket(self) -> None:
        """Release the file descriptor (the loop, after unregistering it)."""
        with self._lock:
            self._drop_all()
        self._drop_input()  # what incomplete input held of the inbound budget
        self.protocol.abort()
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass


_CLOSE_TOKEN = object()
_CONTROL_TOKEN = object()
