"""Recording and playback of what the server sends (viser's ``StateSerializer``, done well).

A recording is a list of ``(t, message)`` pairs in *script time*: ``t`` only advances through
:meth:`StateSerializer.insert_sleep` (or, with ``clock="wall"``, with real time), so a script
that computes slowly still plays back smoothly.

File format (``.vsrec``), version 1 — a stream of msgpack objects::

    b"VSREC\\x00\\x01\\x00"                    8-byte magic: name, format version 1
    {"format": "vuer-sync-recording", "version": 1, "created": <epoch s>,
     "duration": <s>, "messages": <n>, "buffers": <k>, "vuer_sync": <version>}
    [<bytes>, ...]                              buffers stored once (see below)
    [t, <message map>, crc32]  x n              one record per message
    {"end": n, "crc": <crc32 of bytes 8..trailer>}   trailer (truncation, any changed byte)

The header also carries ``buffers_crc``, the CRC-32 of the packed buffer table.

Messages are the wire maps the server sent. Any ``bytes`` value of 1 KiB or more is stored
once in the buffer table and referenced as ``ExtType(1, <index as u32 big endian>)``, so a
point cloud re-sent every frame costs its size once. Each record carries the CRC-32 of its
packed message; loading checks every record before anything is played, so a corrupt or
truncated file raises :class:`RecordingError` naming the byte offset — never a partial,
silent playback.

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
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

import msgpack

from . import codec
from ._version import __version__
from .errors import VuerSyncError

if TYPE_CHECKING:  # pragma: no cover
    from .server.session import VuerSession
    from .server.shared import SharedScene

__all__ = ["MAGIC", "Recording", "RecordingError", "StateSerializer"]

MAGIC = b"VSREC\x00\x01\x00"
VERSION = 1
BUFFER_MIN = 1024
_EXT_BUFFER = 1


class RecordingError(VuerSyncError, ValueError):
    """A recording file is corrupt, truncated or of an unknown version."""


class StateSerializer:
    """Records messages as they are sent; ``serialize()`` gives the file bytes.

    Get one from ``app.scene.record()`` (the shared scene: starts with a snapshot of the
    current scene, then every broadcast) or ``session.record()`` (one session's messages).
    ``clock="script"`` (default) advances time only through :meth:`insert_sleep`;
    ``clock="wall"`` records real elapsed time.
    """

    def __init__(self, clock: str = "script", filter: Optional[Callable[[Dict[str, Any]], bool]]
                 = None):
        if clock not in ("script", "wall"):
            raise ValueError("clock must be 'script' or 'wall'")
        self.clock = clock
        self.filter = filter
        self._lock = threading.Lock()
        self._t = 0.0
        self._t0 = time.monotonic()
        self._records: List[Tuple[float, bytes]] = []
        self._detach: Optional[Callable[[], None]] = None
        self.stopped = False

    def _on_message(self, payload: bytes, msg: Optional[Dict[str, Any]] = None) -> None:
        """Called by the server for every message sent on what is recorded (cheap)."""
        if self.stopped:
            return
        if self.filter is not None:
            m = msg if msg is not None else codec.unpack(payload)
            if not self.filter(m):
                return
        t = time.monotonic() - self._t0 if self.clock == "wall" else self._t
        with self._lock:
            self._records.append((t, payload))

    def insert_sleep(self, duration: float) -> None:
        """Advance script time by ``duration`` seconds (negative durations are refused)."""
        if duration < 0:
            raise ValueError("insert_sleep takes a duration >= 0")
        with self._lock:
            self._t += float(duration)

    def stop(self) -> None:
        """Stop recording (``serialize`` still works)."""
        self.stopped = True
        if self._detach is not None:
            self._detach()
            self._detach = None

    def __len__(self) -> int:
        return len(self._records)

    def serialize(self) -> bytes:
        """The recording in the ``.vsrec`` format (see the module docstring)."""
        with self._lock:
            records = list(self._records)
            duration = max(self._t, records[-1][0] if records else 0.0)
        return _write(records, duration)

    def save(self, path: Union[str, Path]) -> Path:
        """Write :meth:`serialize` to ``path``; returns it."""
        p = Path(path)
        p.write_bytes(self.serialize())
        return p

    def as_html(self, client_url: str = "http://localhost:8012/") -> str:
        """See :meth:`Recording.as_html` (the final scene of what was recorded so far)."""
        return Recording.load(self.serialize()).as_html(client_url)

    def show(self, height: int = 400) -> None:
        """See :meth:`Recording.show`."""
        Recording.load(self.serialize()).show(height)


def _dedupe(obj: Any, table: Dict[bytes, int], buffers: List[bytes]) -> Any:
    if isinstance(obj, (bytes, bytearray)) and len(obj) >= BUFFER_MIN:
        digest = hashlib.sha256(obj).digest()
        idx = table.get(digest)
        if idx is None:
            idx = table[digest] = len(buffers)
            buffers.append(bytes(obj))
        return msgpack.ExtType(_EXT_BUFFER, struct.pack(">I", idx))
    if isinstance(obj, dict):
        return {k: _dedupe(v, table, buffers) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_dedupe(v, table, buffers) for v in obj]
    return obj


def _write(records: List[Tuple[float, bytes]], duration: float) -> bytes:
    table: Dict[bytes, int] = {}
    buffers: List[bytes] = []
    body: List[bytes] = []
    for t, payload in records:
        msg = _dedupe(codec.unpack(payload), table, buffers)
        packed = msgpack.packb(msg, use_bin_type=True)
        rec = b"\x93" + msgpack.packb(float(t)) + packed + msgpack.packb(zlib.crc32(packed))
        body.append(rec)
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
    """A loaded, fully validated recording: ``records`` is a list of ``(t, message map)``."""

    def __init__(self, header: Dict[str, Any], records: List[Tuple[float, Dict[str, Any]]]):
        self.header = header
        self.records = records

    @property
    def duration(self) -> float:
        return float(self.header.get("duration", 0.0))

    @classmethod
    def load(cls, source: Union[bytes, bytearray, str, Path]) -> Recording:
        """Parse and check a whole recording (bytes or a path) before anything is played."""
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else \
            Path(source).read_bytes()
        if not data.startswith(MAGIC[:6]):
            raise RecordingError("not a vuer_sync recording (bad magic at byte 0)")
        if data[:8] != MAGIC:
            raise RecordingError(f"unsupported recording version {data[6]}.{data[7]} "
                                 f"(this vuer_sync reads {MAGIC[6]}.{MAGIC[7]})")
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
            raise RecordingError(f"unsupported recording version {header.get('version')}")
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

    def final_scene(self) -> Dict[str, Any]:
        """The scene at the end of the recording (``SET`` data), computed offline."""
        from .scene import SceneGraph

        g = SceneGraph()
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

        from .server.http import client_build_dir

        src = client_build_dir()
        if src is None:
            raise RuntimeError("the Vuer web client is not installed: "
                               "pip install 'vuer-sync[viewer]'")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, out, dirs_exist_ok=True)
        view = out / "view.html"
        view.write_text(self.as_html(client_url="index.html"))
        return view

    def show(self, height: int = 400) -> None:
        """Display the final scene inline in Jupyter (or open it in a browser): a local
        vuer_sync server serves the web client; the scene travels in the URL."""
        global _viewer
        from .server.app import Vuer

        if _viewer is None or not _viewer.running:
            _viewer = Vuer(port=0)
            _viewer.start(block=False)
        url = f"{_viewer.local_url}?scene={self.scene_param()}"
        try:
            from IPython import get_ipython
            from IPython.display import IFrame, display
        except ImportError:
            get_ipython = None  # type: ignore[assignment]
        if get_ipython is not None and get_ipython() is not None:
            display(IFrame(url, width="100%", height=height))
            return
        import webbrowser

        webbrowser.open(url)

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


_viewer: Any = None  # the local server behind Recording.show()


def _js_string(text: str) -> str:
    import json

    return json.dumps(text).replace("</", "<\\/")


def _send_raw(target: Any, msg: Dict[str, Any]) -> None:
    payload = codec.encode_parts({**msg, "ts": time.time()})
    if hasattr(target, "_broadcast_encoded"):
        target._broadcast_encoded(payload, msg)
    else:
        target._send_encoded(payload, msg)
