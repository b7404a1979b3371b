"""Recording and playback of what the server sends (viser's ``StateSerializer``, done well).

A recording is a list of ``(t, message)`` pairs in *script time*: ``t`` only advances through
:meth:`StateSerializer.insert_sleep` (or, with ``clock="wall"``, with real time), so a script
that computes slowly still plays back smoothly.

A recording lives in memory until :meth:`StateSerializer.save` (``record()``), or **streams
to disk as it is made** (``record(path=...)``): a writer thread appends checksummed records
to the file and hands them to the operating system at least every ``flush_interval``
seconds (0.25 s by default, at most 1 s), so a process killed with ``kill -9`` leaves a file
that loads up to its last flush. Every file write is crash-safe: :meth:`StateSerializer.save`
writes a temporary file in the target's folder, syncs it to disk and renames it over the
target, so an old recording survives a crash in the middle of saving a new one.

File format (``.vsrec``), version 1 — what ``serialize()``/``save()`` of an in-memory
recording write; a stream of msgpack objects::

    b"VSREC\\x00\\x01\\x00"                    8-byte magic: name, format version 1
    {"format": "vuer-sync-recording", "version": 1, "created": <epoch s>,
     "duration": <s>, "messages": <n>, "buffers": <k>, "vuer_sync": <version>}
    [<bytes>, ...]                              buffers stored once (see below)
    [t, <message map>, crc32]  x n              one record per message
    {"end": n, "crc": <crc32 of bytes 8..trailer>}   trailer (truncation, any changed byte)

The header also carries ``buffers_crc``, the CRC-32 of the packed buffer table.

Version 2 — what a streamed recording writes (append-only, so every prefix of it is
meaningful)::

    b"VSREC\\x00\\x02\\x00"                    8-byte magic: name, format version 2
    frames, each [u32 length][u32 crc32 of the payload][msgpack payload] (big endian):
      [0, {"format": "vuer-sync-recording", "version": 2, "created": ..., "clock": ...}]
      [1, <index>, <bytes>]                     a large buffer, the first time it is seen
      [2, t, <message map>]                     one per message
      [3, {"messages": n, "buffers": k, "duration": <s>}]   end: written by stop()

In both, messages are the wire maps the server sent. Any ``bytes`` value of 1 KiB or more is
stored once and referenced as ``ExtType(1, <index as u32 big endian>)``, so a point cloud
re-sent every frame costs its size once. Loading checks every checksum before anything is
played: a corrupt version-1 file, or corruption in the middle of a version-2 file, raises
:class:`RecordingError` naming the byte offset — never a silent, partial playback. The only
damage a version-2 file may have and still load is a *truncated tail* (the process died
while recording): every complete record loads, :attr:`Recording.complete` is ``False``,
:attr:`Recording.truncated_at` is the byte offset where the intact part ends, and a warning
names it.

>>> from vuer_sync import Vuer
>>> from vuer_sync.schemas import Box
>>> app = Vuer(port=0)
>>> rec = app.scene.record()
>>> app.scene.upsert @ Box(key="box", position=[0, 0, 0])
>>> rec.insert_sleep(0.5)
>>> app.scene.update @ {"key": "box", "position": [1, 0, 0]}
>>> data = rec.serialize()
>>> r = Recording.load(data)
>>> [(t, m["etype"]) for t, m in r.records], r.duration
([(0.0, 'UPSERT'), (0.5, 'UPDATE')], 0.5)

Streamed to a file (the scene so far first, as one ``SET``):

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "live.vsrec")
>>> live = app.scene.record(path=path, flush_interval=0.1)
>>> app.scene.update @ {"key": "box", "position": [2, 0, 0]}
>>> live.stop()                    # writes what is pending and an end record, fsyncs
>>> r = Recording.load(path)
>>> [m["etype"] for _, m in r.records], r.complete, r.truncated_at
(['SET', 'UPDATE'], True, None)
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import stat
import struct
import tempfile
import threading
import time
import weakref
import zlib
from pathlib import Path
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Tuple,
    Union,
)

import msgpack

from . import codec
from ._version import __version__
from .errors import VuerSyncError
from .notebook import show_url

if TYPE_CHECKING:  # pragma: no cover
    from .server.session import VuerSession
    from .server.shared import SharedScene

__all__ = ["MAGIC", "MAGIC_V2", "Recording", "RecordingError", "StateSerializer"]

logger = logging.getLogger("vuer_sync.record")

MAGIC = b"VSREC\x00\x01\x00"
MAGIC_V2 = b"VSREC\x00\x02\x00"
VERSION = 1
BUFFER_MIN = 1024
_EXT_BUFFER = 1

# version 2: frames [u32 length][u32 crc32(payload)][payload], payload = [kind, ...]
_FRAME = struct.Struct(">II")
_HEADER, _BUFFER, _MESSAGE, _END = 0, 1, 2, 3
# a streamed recording remembers the digests of the buffers it wrote (to reference them
# again) up to this many; then it forgets them all and defines any it meets again anew
_STREAM_TABLE_MAX = 100_000
_COPY_CHUNK = 1 << 20


class RecordingError(VuerSyncError, ValueError):
    """A recording file is corrupt, truncated or of an unknown version."""


# -- crash-safe file writes ---------------------------------------------------------------

def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Union[str, Path]) -> None:
    """Make a rename or a new file in ``directory`` durable (best effort: not everywhere
    can a directory be opened and synced)."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Union[str, Path], write: Callable[[IO[bytes]], object]) -> None:
    """Write a file so that a crash at any moment leaves either the old file or the new one.

    ``write(f)`` fills a temporary file in the same folder (``.<name>.<random>.tmp``: never
    mistaken for a recording), which is flushed, ``fsync``-ed and renamed over ``path``
    (``os.replace``, atomic); then the folder is synced. On any error the temporary file is
    removed and the target is untouched. A symlink is followed (its target is replaced).
    """
    target = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(target.parent)


# -- buffers stored once ------------------------------------------------------------------

class _Buffers:
    """Large ``bytes`` seen so far (by SHA-256) and the ones not yet written (``new``)."""

    def __init__(self, limit: Optional[int] = None):
        self.table: Dict[bytes, int] = {}
        self.count = 0
        self.new: List[Tuple[int, bytes]] = []
        self.limit = limit

    def ref(self, blob: Union[bytes, bytearray]) -> msgpack.ExtType:
        digest = hashlib.sha256(blob).digest()
        idx = self.table.get(digest)
        if idx is None:
            if self.limit is not None and len(self.table) >= self.limit:
                self.table.clear()  # bounded memory: later repeats are defined again
            idx = self.table[digest] = self.count
            self.count += 1
            self.new.append((idx, bytes(blob)))
        return msgpack.ExtType(_EXT_BUFFER, struct.pack(">I", idx))


def _dedupe(obj: Any, bufs: _Buffers) -> Any:
    if isinstance(obj, (bytes, bytearray)) and len(obj) >= BUFFER_MIN:
        return bufs.ref(obj)
    if isinstance(obj, dict):
        return {k: _dedupe(v, bufs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_dedupe(v, bufs) for v in obj]
    return obj


def _frame(obj: Any) -> List[bytes]:
    """One version-2 record: its 8-byte frame header and its payload."""
    payload = msgpack.packb(obj, use_bin_type=True)
    return [_FRAME.pack(len(payload), zlib.crc32(payload)), payload]


class StateSerializer:
    """Records messages as they are sent; ``serialize()`` gives the file bytes.

    Get one from ``app.scene.record()`` (the shared scene: starts with a snapshot of the
    current scene, then every broadcast) or ``session.record()`` (one session's messages).
    ``clock="script"`` (default) advances time only through :meth:`insert_sleep`;
    ``clock="wall"`` records real elapsed time. ``filter(msg)`` keeps only the messages it
    returns true for.

    ``path=None`` (default) keeps the recording in memory. With a ``path`` the recording
    *streams* to that file (format version 2; the file must not exist yet: a recording is
    never overwritten by a stream): the sender only appends each message to a list, and a
    writer thread (``vuer-record:<name>``) waits for the first message, then
    ``flush_interval`` seconds more to batch what follows, and writes and flushes the batch
    to the operating system. Records written are not kept in memory. A process killed
    at any moment leaves a file that :meth:`Recording.load` reads up to its last flush.
    :meth:`stop` writes what is pending and an end record, syncs (``fsync``) and closes the
    file; ``app.stop()`` (for ``app.scene.record``), the end of the session (for
    ``session.record``) and the interpreter's exit do it for a recording still running.
    """

    def __init__(self, clock: str = "script",
                 filter: Optional[Callable[[Dict[str, Any]], bool]] = None,
                 path: Optional[Union[str, os.PathLike]] = None,
                 flush_interval: float = 0.25):
        if clock not in ("script", "wall"):
            raise ValueError("clock must be 'script' or 'wall'")
        flush_interval = float(flush_interval)
        if not 0.0 <= flush_interval <= 1.0:
            raise ValueError("flush_interval must be between 0 and 1 second")
        self.clock = clock
        self.filter = filter
        self.flush_interval = flush_interval
        #: the file a streamed recording writes to (``None``: in memory)
        self.path: Optional[Path] = None if path is None else Path(path)
        #: why the writer thread of a streamed recording failed (then recording stopped)
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._t = 0.0
        self._t0 = time.monotonic()
        # in memory: every record; streamed: the records not written yet
        self._records: List[Tuple[float, Any]] = []
        self._detach: Optional[Callable[[], None]] = None
        self.stopped = False
        self._wake: Optional[threading.Event] = None  # set: records pending (streamed)
        self._writer: Optional[threading.Thread] = None
        if self.path is not None:
            self._open_stream(self.path)

    # -- producer side (the server's threads) ---------------------------------------------

    def on_outbound(self, payload: Any, msg: Optional[Dict[str, Any]] = None) -> None:
        """Called by the server for every message sent on what is recorded (outbound: server
        to client; cheap: no packing, hashing or writing here, in memory or streamed)."""
        if self.stopped:
            return
        if self.filter is not None:
            m = msg if msg is not None else codec.unpack(payload)
            if not self.filter(m):
                return
        t = time.monotonic() - self._t0 if self.clock == "wall" else self._t
        with self._lock:
            records = self._records
            records.append((t, payload))
            if self._wake is not None and len(records) == 1:
                self._wake.set()  # the writer sleeps until there is something to write

    def insert_sleep(self, duration: float) -> None:
        """Advance script time by ``duration`` seconds (negative durations are refused)."""
        if duration < 0:
            raise ValueError("insert_sleep takes a duration >= 0")
        with self._lock:
            self._t += float(duration)

    def stop(self) -> None:
        """Stop recording (``serialize`` still works).

        A streamed recording writes what is pending and its end record, syncs (``fsync``) and
        closes the file, and its writer thread ends. Raises :class:`RecordingError` if
        writing the file failed (the error is also in :attr:`error`)."""
        self.stopped = True
        detach, self._detach = self._detach, None
        if detach is not None:
            detach()
        writer = self._writer
        if writer is not None:
            with self._lock:
                self._closing = True
            self._closing_evt.set()
            self._wake.set()  # type: ignore[union-attr]
            if writer is not threading.current_thread():
                writer.join()
                with self._lock:  # a message that raced with stop() is not recorded
                    self._records = []
            _live.discard(self)
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise RecordingError(f"writing the recording {self.path} failed: {self.error}"
                                 ) from self.error

    def attach(self, detach: Callable[[], None]) -> None:
        """Called by the server that feeds this recording: ``detach()`` stops the feed, and
        :meth:`stop` calls it."""
        self._detach = detach

    def finish(self) -> None:
        """:meth:`stop`, logging instead of raising (the server calls this when the app stops
        or the recorded session ends)."""
        try:
            self.stop()
        except Exception as e:
            logger.error("%s", e)

    def __len__(self) -> int:
        if self.path is None:
            return len(self._records)
        with self._lock:
            return self._taken + len(self._records)

    @property
    def streaming(self) -> bool:
        """True for a recording that streams to :attr:`path`."""
        return self.path is not None

    def flush(self, fsync: bool = False) -> None:
        """Streamed: write the pending records now, without waiting for ``flush_interval``
        (and with ``fsync=True``, to the disk, not only to the operating system). In memory:
        nothing to do."""
        if self.path is None:
            return
        self._check()
        with self._write_lock:
            self._write_pending()
            if fsync and self._file is not None:
                os.fsync(self._file.fileno())

    # -- output -----------------------------------------------------------------------------

    def serialize(self) -> bytes:
        """The recording in the ``.vsrec`` format (see the module docstring): version 1 in
        memory; streamed, the file so far (version 2) with an end record after what was
        written, so the bytes load as a complete recording while recording goes on."""
        if self.path is None:
            with self._lock:
                records = list(self._records)
                duration = max(self._t, records[-1][0] if records else 0.0)
            return _write(records, duration)
        size, end = self._snapshot()
        with open(self.path, "rb") as f:
            data = f.read(size)
        if len(data) != size:
            raise RecordingError(f"the recording {self.path} is shorter than what was written "
                                 f"({len(data)} of {size} bytes): was it changed?")
        return data + end

    def save(self, path: Union[str, Path]) -> Path:
        """Write :meth:`serialize` to ``path``, crash-safely: a temporary file in the same
        folder is written, flushed, ``fsync``-ed and renamed over ``path``, so whatever
        happens (even ``kill -9`` or a power cut half-way) ``path`` holds either its old
        content or the new recording, never a mix. Returns ``path``.

        A streamed recording is copied in pieces (never all in memory); saving it to its own
        :attr:`path` writes what is pending and syncs the file (``fsync``) instead."""
        p = Path(path)
        if self.path is None:
            data = self.serialize()
            _atomic_write(p, lambda f: f.write(data))
            return p
        if p.exists() and os.path.samefile(p, self.path):
            self.flush(fsync=True)
            return p
        size, end = self._snapshot()

        def copy(f: IO[bytes]) -> None:
            left = size
            with open(self.path, "rb") as src:  # type: ignore[arg-type]
                while left:
                    chunk = src.read(min(left, _COPY_CHUNK))
                    if not chunk:
                        raise RecordingError(f"the recording {self.path} is shorter than "
                                             f"what was written: was it changed?")
                    f.write(chunk)
                    left -= len(chunk)
            f.write(end)

        _atomic_write(p, copy)
        return p

    def as_html(self, client_url: str = "http://localhost:8012/") -> str:
        """See :meth:`Recording.as_html` (the final scene of what was recorded so far)."""
        return Recording.load(self.serialize()).as_html(client_url)

    def show(self, height: int = 400) -> None:
        """See :meth:`Recording.show`."""
        Recording.load(self.serialize()).show(height)

    # -- streaming (the writer thread) -------------------------------------------------------

    def _open_stream(self, path: Path) -> None:
        self._wake = threading.Event()
        self._closing_evt = threading.Event()
        self._closing = False
        self._write_lock = threading.Lock()  # the file, the buffer table, the counters
        self._bufs = _Buffers(limit=_STREAM_TABLE_MAX)
        self._written = 0  # records written to the file
        self._taken = 0  # records taken from the pending list (written or being written)
        self._last_t = 0.0
        self._ended = False
        self._size = 0
        f = open(path, "xb")  # kept open for the recording's lifetime, closed by _run
        try:
            header = {"format": "vuer-sync-recording", "version": 2, "created": time.time(),
                      "clock": self.clock, "flush_interval": self.flush_interval,
                      "vuer_sync": __version__}
            self._size = _write_parts(f, [MAGIC_V2, *_frame([_HEADER, header])])
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        _fsync_dir(path.resolve().parent)
        self._file: Optional[IO[bytes]] = f
        _live.add(self)
        t = threading.Thread(target=self._run, name=f"vuer-record:{path.name}", daemon=True)
        self._writer = t
        t.start()

    def _run(self) -> None:
        wake, closing_evt = self._wake, self._closing_evt
        assert wake is not None
        try:
            while True:
                wake.wait()  # idle: blocked here, no timeout, no polling
                if self.flush_interval > 0:
                    closing_evt.wait(self.flush_interval)  # the batching window
                with self._write_lock:
                    if self.error is not None:  # a write from another thread failed
                        return
                    if self._write_pending():
                        self._write_end()
                        return
        except Exception:
            pass  # _failed() has recorded and logged it
        finally:
            with self._write_lock:
                self._close_file()

    def _failed(self, e: BaseException) -> None:
        """Writing failed (called with ``_write_lock``): recording stops, nothing more is
        written after the last complete record, the file is closed."""
        self.error = e
        self.stopped = True
        with self._lock:
            self._records = []
        self._close_file()
        logger.error("recording to %s stopped: writing failed: %r", self.path, e)

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def _write_pending(self) -> bool:
        """Write the pending records (called with ``_write_lock``); returns whether the
        recording is closing (then nothing more will come)."""
        with self._lock:
            batch, self._records = self._records, []
            self._taken += len(batch)
            closing = self._closing
            if not closing:
                self._wake.clear()  # type: ignore[union-attr]
        if batch and self._file is not None:
            try:
                parts: List[bytes] = []
                bufs = self._bufs
                for t, payload in batch:
                    msg = _dedupe(codec.unpack(payload), bufs)
                    for idx, blob in bufs.new:
                        parts += _frame([_BUFFER, idx, blob])
                    bufs.new.clear()
                    parts += _frame([_MESSAGE, float(t), msg])
                self._size += _write_parts(self._file, parts)
                self._file.flush()  # to the operating system: survives a killed process
            except BaseException as e:
                self._failed(e)
                raise
            self._written += len(batch)
            self._last_t = float(batch[-1][0])
        return closing

    def _end_info(self) -> Dict[str, Any]:
        with self._lock:
            t = self._t
        return {"messages": self._written, "buffers": self._bufs.count,
                "duration": max(t, self._last_t)}

    def _write_end(self) -> None:
        f = self._file
        if f is None:
            return
        try:
            self._size += _write_parts(f, _frame([_END, self._end_info()]))
            f.flush()
            os.fsync(f.fileno())
        except BaseException as e:
            self._failed(e)
            raise
        self._ended = True
        self._close_file()

    def _snapshot(self) -> Tuple[int, bytes]:
        """Write what is pending; return how many bytes of the file are the recording so far,
        and the end record that completes them (empty once the file has its own)."""
        self._check()
        with self._write_lock:
            self._write_pending()
            if self._ended:
                return self._size, b""
            return self._size, b"".join(_frame([_END, self._end_info()]))


def _write_parts(f: IO[bytes], parts: List[bytes]) -> int:
    n = 0
    for p in parts:
        f.write(p)
        n += len(p)
    return n


_live: weakref.WeakSet[StateSerializer] = weakref.WeakSet()  # streamed, not stopped yet


@atexit.register
def _finish_live_recordings() -> None:
    """At interpreter exit, finish the streamed recordings nobody stopped (their writer
    threads are daemons: without this the last ``flush_interval`` of records and the end
    record would be lost)."""
    for rec in list(_live):
        rec.finish()


def _write(records: List[Tuple[float, Any]], duration: float) -> bytes:
    bufs = _Buffers()
    body: List[bytes] = []
    for t, payload in records:
        msg = _dedupe(codec.unpack(payload), bufs)
        packed = msgpack.packb(msg, use_bin_type=True)
        rec = b"\x93" + msgpack.packb(float(t)) + packed + msgpack.packb(zlib.crc32(packed))
        body.append(rec)
    buffers = [blob for _, blob in bufs.new]
    table_bytes = msgpack.packb(buffers, use_bin_type=True)
    header = {"format": "vuer-sync-recording", "version": VERSION, "created": time.time(),
              "duration": float(duration), "messages": len(records), "buffers": len(buffers),
              "buffers_crc": zlib.crc32(table_bytes), "vuer_sync": __version__}
    head = msgpack.packb(header) + table_bytes
    records_bytes = b"".join(body)
    total = zlib.crc32(records_bytes, zlib.crc32(head))
    return b"".join([MAGIC, head, records_bytes,
                     msgpack.packb({"end": len(records), "crc": total})])


def _restore(obj: Any, buffers: List[bytes], where: int) -> Any:
    if isinstance(obj, msgpack.ExtType):
        if obj.code != _EXT_BUFFER or len(obj.data) != 4:
            raise RecordingError(f"unknown extension type {obj.code} in the record at byte "
                                 f"{where}")
        (idx,) = struct.unpack(">I", obj.data)
        if idx >= len(buffers):
            raise RecordingError(f"record at byte {where} references buffer {idx}, but the "
                                 f"file has {len(buffers)}")
        return buffers[idx]
    if isinstance(obj, dict):
        return {k: _restore(v, buffers, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v, buffers, where) for v in obj]
    return obj


class Recording:
    """A loaded, checked recording: ``records`` is a list of ``(t, message map)``.

    ``complete`` is ``False`` for a streamed recording whose writer never finished (the
    process died, or it is still being written): then ``truncated_at`` is the byte offset
    where its intact part ends (``None`` for a complete recording)."""

    def __init__(self, header: Dict[str, Any], records: List[Tuple[float, Dict[str, Any]]],
                 truncated_at: Optional[int] = None):
        self.header = header
        self.records = records
        #: byte offset of the first byte after the last intact record of a recording whose
        #: end is missing (``None``: the file was closed cleanly)
        self.truncated_at: Optional[int] = truncated_at

    @property
    def complete(self) -> bool:
        """True if the file was closed cleanly (always, for format version 1)."""
        return self.truncated_at is None

    @property
    def duration(self) -> float:
        return float(self.header.get("duration", 0.0))

    @classmethod
    def load(cls, source: Union[bytes, bytearray, str, Path]) -> Recording:
        """Parse and check a whole recording (bytes or a path) before anything is played.

        Raises :class:`RecordingError` (naming the byte offset) for a corrupt file. A
        streamed recording (version 2) whose tail is missing or cut short loads up to its
        last intact record, with ``complete`` false, ``truncated_at`` set and a warning on
        the ``vuer_sync.record`` logger."""
        if isinstance(source, (bytes, bytearray)):
            data, name = bytes(source), ""
        else:
            data, name = Path(source).read_bytes(), f" {source}"
        if not data.startswith(MAGIC[:6]):
            raise RecordingError("not a vuer_sync recording (bad magic at byte 0)")
        if data[:8] == MAGIC_V2:
            return cls._load_v2(data, name)
        if data[:8] != MAGIC:
            raise RecordingError(f"unsupported recording version {data[6]}.{data[7]} at byte 6 "
                                 f"(this vuer_sync reads {MAGIC[6]}.{MAGIC[7]} and "
                                 f"{MAGIC_V2[6]}.{MAGIC_V2[7]})")
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        unpacker.feed(data[8:])

        def nxt(what: str) -> Tuple[Any, int]:
            offset = 8 + unpacker.tell()
            try:
                return unpacker.unpack(), offset
            except msgpack.OutOfData:
                raise RecordingError(f"truncated recording: {what} missing at byte {offset}"
                                     ) from None
            except (ValueError, msgpack.UnpackException) as e:
                raise RecordingError(f"corrupt recording at byte {offset} ({what}): {e}"
                                     ) from None

        header, off = nxt("header")
        if not isinstance(header, dict) or header.get("format") != "vuer-sync-recording":
            raise RecordingError(f"corrupt recording header at byte {off}")
        if header.get("version") != VERSION:
            raise RecordingError(f"unsupported recording version {header.get('version')} "
                                 f"in the header at byte {off}")
        buffers, off = nxt("buffer table")
        table_end = 8 + unpacker.tell()
        if not isinstance(buffers, list) or len(buffers) != header.get("buffers") or \
                zlib.crc32(data[off:table_end]) != header.get("buffers_crc"):
            raise RecordingError(f"corrupt buffer table at byte {off}")
        records: List[Tuple[float, Dict[str, Any]]] = []
        for i in range(int(header.get("messages", 0))):
            start = 8 + unpacker.tell()
            rec, off = nxt(f"record {i}")
            if not (isinstance(rec, list) and len(rec) == 3 and isinstance(rec[0], float)
                    and isinstance(rec[1], dict) and isinstance(rec[2], int)):
                raise RecordingError(f"corrupt record {i} at byte {off}")
            raw = data[start:8 + unpacker.tell()]
            t_len = len(msgpack.packb(rec[0]))
            packed = raw[1 + t_len:len(raw) - len(msgpack.packb(rec[2]))]
            if zlib.crc32(packed) != rec[2]:
                raise RecordingError(f"corrupt record {i} at byte {off}: checksum mismatch")
            records.append((rec[0], _restore(rec[1], buffers, off)))
        trailer, off = nxt("trailer")
        if not isinstance(trailer, dict) or trailer.get("end") != len(records):
            raise RecordingError(f"corrupt recording trailer at byte {off}")
        if trailer.get("crc") != zlib.crc32(data[8:off]):
            raise RecordingError(f"checksum mismatch over bytes 8..{off} (header or records "
                                 f"changed; detected at the trailer, byte {off})")
        rest = len(data) - 8 - unpacker.tell()
        if rest:
            raise RecordingError(f"{rest} unexpected bytes after the trailer at byte "
                                 f"{len(data) - rest}")
        return cls(header, records)

    @classmethod
    def _load_v2(cls, data: bytes, name: str) -> Recording:
        n = len(data)
        view = memoryview(data)
        pos = 8
        header: Optional[Dict[str, Any]] = None
        buffers: List[bytes] = []
        records: List[Tuple[float, Dict[str, Any]]] = []
        end: Optional[Dict[str, Any]] = None
        truncated_at: Optional[int] = None
        why = ""
        while pos < n:
            if end is not None:
                raise RecordingError(f"{n - pos} unexpected bytes after the end record at "
                                     f"byte {pos}")
            if n - pos < _FRAME.size:
                truncated_at, why = pos, "the last record's header is cut short"
                break
            length, crc = _FRAME.unpack_from(data, pos)
            stop = pos + _FRAME.size + length
            if length == 0:
                if not data[pos:].strip(b"\x00"):  # zeros to the end (a power cut's tail)
                    truncated_at, why = pos, "zero bytes to the end of the file"
                    break
                raise RecordingError(f"corrupt recording: empty record at byte {pos}")
            if stop > n:
                truncated_at = pos
                why = f"the last record ({length} bytes) is cut short after {n - pos - 8}"
                break
            payload = view[pos + _FRAME.size:stop]
            if zlib.crc32(payload) != crc:
                if stop == n:
                    truncated_at, why = pos, "the last record's checksum does not match"
                    break
                raise RecordingError(f"corrupt recording: checksum mismatch in the record at "
                                     f"byte {pos} (followed by {n - stop} more bytes)")
            try:
                obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            except (ValueError, msgpack.UnpackException) as e:
                raise RecordingError(f"corrupt record at byte {pos}: {e}") from None
            kind = obj[0] if isinstance(obj, list) and obj else None
            if header is None:
                if kind != _HEADER or len(obj) != 2 or not isinstance(obj[1], dict) or \
                        obj[1].get("format") != "vuer-sync-recording":
                    raise RecordingError(f"corrupt recording header at byte {pos}")
                header = dict(obj[1])
                if header.get("version") != 2:
                    raise RecordingError(f"unsupported recording version "
                                         f"{header.get('version')} in the header at byte {pos}")
            elif kind == _MESSAGE and len(obj) == 3 and isinstance(obj[1], float) and \
                    isinstance(obj[2], dict):
                records.append((obj[1], _restore(obj[2], buffers, pos)))
            elif kind == _BUFFER and len(obj) == 3 and isinstance(obj[2], bytes):
                if obj[1] != len(buffers):
                    raise RecordingError(f"buffer record at byte {pos} defines buffer "
                                         f"{obj[1]}, expected {len(buffers)}")
                buffers.append(obj[2])
            elif kind == _END and len(obj) == 2 and isinstance(obj[1], dict):
                end = obj[1]
                if end.get("messages") != len(records) or end.get("buffers") != len(buffers):
                    raise RecordingError(f"corrupt end record at byte {pos}: it counts "
                                         f"{end.get('messages')} messages and "
                                         f"{end.get('buffers')} buffers, the file has "
                                         f"{len(records)} and {len(buffers)}")
            else:
                raise RecordingError(f"corrupt or unknown record at byte {pos}")
            pos = stop
        if header is None:
            raise RecordingError(f"truncated recording{name}: no complete header record at "
                                 f"byte 8 (the file has {n} bytes)")
        if end is None and truncated_at is None:
            truncated_at, why = n, "no end record (the recording was not stopped)"
        header["messages"] = len(records)
        header["buffers"] = len(buffers)
        if end is not None:
            header["duration"] = float(end.get("duration", 0.0))
        else:
            header["duration"] = records[-1][0] if records else 0.0
            logger.warning("truncated recording%s: loaded %d messages, intact up to byte %d "
                           "of %d (%s)", name, len(records), truncated_at, n, why)
        return cls(header, records, truncated_at)

    def final_scene(self) -> Dict[str, Any]:
        """The scene at the end of the recording (``SET`` data), computed offline."""
        from .scene import SceneMirror

        g = SceneMirror()
        for _, msg in self.records:
            g.apply(msg)
        return g.snapshot()

    def scene_param(self) -> str:
        """The final scene as the web client's ``?scene=`` value (URL-safe base64 msgpack)."""
        import base64
        from urllib.parse import quote

        packed = codec.pack(self.final_scene())
        return quote(base64.b64encode(packed).decode("ascii"), safe="")

    def as_html(self, client_url: str = "http://localhost:8012/") -> str:
        """A small HTML page that opens the Vuer web client at ``client_url`` with the final
        scene loaded from the URL itself (``?scene=``): no websocket or server state needed,
        only somewhere serving the web client (a vuer_sync server, ``vuer-sync export``'s
        folder behind any static file server, or the hosted client)."""
        import html

        url = f"{client_url}?scene={self.scene_param()}"
        return ("<!doctype html><meta charset='utf-8'><title>vuer_sync scene</title>"
                f"<script>location.replace({_js_string(url)})</script>"
                f"<a href=\"{html.escape(url)}\">open the scene</a>")

    def export(self, out_dir: Union[str, Path]) -> Path:
        """Write a folder that shows the final scene offline: a copy of the Vuer web client
        (from the installed ``vuer`` wheel) plus ``view.html``. Serve it with any static file
        server (``python -m http.server -d DIR``) and open ``/view.html``; browsers do not
        run the web client's modules from ``file://``. Returns the path of ``view.html``."""
        import shutil

        from .webclient import client_build_dir

        src = client_build_dir()
        if src is None:
            raise RuntimeError("the Vuer web client is not installed: "
                               "pip install 'vuer-sync[viewer]'")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, out, dirs_exist_ok=True)
        view = out / "view.html"
        page = self.as_html(client_url="index.html").encode("utf-8")
        _atomic_write(view, lambda f: f.write(page))
        return view

    def show(self, height: int = 400) -> None:
        """Display the final scene inline in Jupyter (or open it in a browser): a local
        vuer_sync server serves the web client; the scene travels in the URL."""
        if _local_viewer is None:  # pragma: no cover - vuer_sync.server sets it on import
            raise RuntimeError("Recording.show() needs vuer_sync.server (import vuer_sync)")
        url = f"{_local_viewer()}?scene={self.scene_param()}"
        show_url(url, height=height)

    def play(self, target: Union[VuerSession, SharedScene], speed: float = 1.0,
             loop: bool = False, stop: Optional[threading.Event] = None,
             exact: bool = True) -> int:
        """Send the messages to a session or ``app.scene`` at ``speed`` x script time.

        Blocks until done (or ``stop`` is set, or the session closes); returns how many
        messages were sent. ``speed=0`` sends everything at once. ``loop=True`` repeats
        until stopped. ``exact=True`` waits for each message to be written before the next,
        so a slow client sees every recorded message (none coalesced); ``exact=False`` lets
        a slow client skip to the latest state instead.
        """
        from .errors import SessionClosed

        stop = stop or threading.Event()
        sent = 0
        while True:
            t0 = time.monotonic()
            for t, msg in self.records:
                if speed > 0:
                    wait = t / speed - (time.monotonic() - t0)
                    if wait > 0 and stop.wait(wait):
                        return sent
                if stop.is_set():
                    return sent
                try:
                    _send_raw(target, msg)
                    if exact:
                        target.flush(None)
                except SessionClosed:
                    return sent
                sent += 1
            if not loop or stop.is_set() or not self.records:
                return sent


# the local server behind Recording.show(): a function returning the URL of a running local
# vuer_sync server's web client, set by vuer_sync.server (this module is below the server)
_local_viewer: Optional[Callable[[], str]] = None


def use_local_viewer(url_of_local_server: Callable[[], str]) -> None:
    """Set what :meth:`Recording.show` opens (called once by :mod:`vuer_sync.server`)."""
    global _local_viewer
    _local_viewer = url_of_local_server


def _js_string(text: str) -> str:
    import json

    return json.dumps(text).replace("</", "<\\/")


def _send_raw(target: Union[VuerSession, SharedScene], msg: Dict[str, Any]) -> None:
    target.send_encoded(codec.encode_parts({**msg, "ts": time.time()}), msg)
