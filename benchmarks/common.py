"""Helpers shared by the side-by-side benchmarks (``run.py``, ``rows/`` and ``bench_agent.py``).

* :class:`RawPeer`: a minimal websocket client on a raw socket. The same peer talks to all three
  servers, and it is cheap (it skips payloads it does not need), so the *server* is what differs.
* :class:`FrameCounter`: an incremental frame parser that counts frames and bytes, and hands
  complete payloads to a callback only when asked to.
* :class:`MultiReader`: one thread draining many peers with ``selectors`` (the 100-client row).
* :class:`Agent`: a server subprocess (``bench_agent.py``) driven by JSON lines on stdin/stdout,
  so that its CPU time and RSS can be read from ``/proc`` apart from the clients'.
* :func:`one_session`, :func:`one_client`, :func:`draining_clients`, :func:`hangup`: the
  rows' (``rows/``) ways of connecting peers to an agent's server and of ending those sessions.
* :func:`summarize_ns`, :func:`machine_info`, :func:`free_port`.

Everything binds or connects to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import errno
import json
import logging
import math
import os
import platform
import queue
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

logger = logging.getLogger("benchmarks")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
AGENT_SCRIPT = HERE / "bench_agent.py"
HOST = "127.0.0.1"
IMPLS = ("vuer_sync", "vuer", "viser")
NA = "n/a"  # a server without the feature

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_LE_U64 = struct.Struct("<Q")


# -- statistics ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile of already sorted values (``p`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def control_loop(duration: float, period: float = 1e-3) -> List[float]:
    """A 1 kHz loop paced by ``time.sleep``: lateness (s) of every wake-up against its
    scheduled time. Missed ticks are skipped, not replayed."""
    late: List[float] = []
    t0 = time.perf_counter()
    nxt = t0 + period
    end = t0 + duration
    while True:
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter()
        late.append(max(0.0, now - nxt))
        if now >= end:
            return late
        nxt += period
        if nxt < now:
            nxt = now + period


def summarize_ns(values_ns: Iterable[float]) -> Dict[str, float]:
    """Median, p99, mean and max in microseconds of durations given in nanoseconds."""
    v = sorted(values_ns)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "median_us": percentile(v, 50) / 1e3,
        "p99_us": percentile(v, 99) / 1e3,
        "mean_us": sum(v) / len(v) / 1e3,
        "max_us": v[-1] / 1e3,
    }


def summarize_s(values_s: Iterable[float]) -> Dict[str, float]:
    """Median, p99 and max in milliseconds of durations given in seconds."""
    v = sorted(values_s)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "p50_ms": percentile(v, 50) * 1e3,
        "p99_ms": percentile(v, 99) * 1e3,
        "max_ms": v[-1] * 1e3,
    }


# -- machine ---------------------------------------------------------------------------------


def _version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> Dict[str, Any]:
    """CPU count and model, Python, OS, package versions, date, git commit (read only)."""
    commit = dirty = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
            timeout=5, check=False).stdout.strip() or None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
            capture_output=True, text=True, timeout=5, check=False)
        if status.returncode == 0:  # the files changed against the commit, if any
            dirty = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    except Exception:
        pass
    mem = None
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,  # None: not a git checkout (or git missing); []: clean
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg") else None,
        "packages": {
            name: _version(name)
            for name in ("vuer-sync", "vuer", "viser", "flask", "flask-sock", "simple-websocket",
                         "werkzeug", "aiohttp", "websockets", "websocket-client", "msgpack",
                         "numpy", "psutil", "zstandard", "redis", "hiredis", "python-socketio",
                         "meshcat", "rerun-sdk", "playwright")
        },
    }


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for servers that cannot bind port 0
    and report it, e.g. Vuer 0.1.6)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace: float) -> None:
    """Terminate ``proc``; kill it if it has not exited ``grace`` seconds later."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout} s")
            time.sleep(0.02)


# -- websocket framing (client side) ---------------------------------------------------------


def mask_payload(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 masking (numpy for large payloads, big-int XOR for small ones)."""
    n = len(payload)
    if n >= 4096:
        import numpy as np

        out = np.frombuffer(payload, dtype=np.uint8).copy()
        n4 = n // 4 * 4
        out[:n4].view("<u4")[...] ^= np.frombuffer(key, dtype="<u4")[0]
        for i in range(n4, n):
            out[i] ^= key[i % 4]
        return out.tobytes()
    if n == 0:
        return b""
    reps = key * (n // 4 + 1)
    return (int.from_bytes(payload, "big") ^ int.from_bytes(reps[:n], "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = 2) -> bytes:
    """One complete, masked client frame (FIN set)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + _U16.pack(n)
    else:
        head += bytes([0x80 | 127]) + _U64.pack(n)
    key = os.urandom(4)
    return head + key + mask_payload(payload, key)


def client_event(etype: str, value: Any = None, **extra: Any) -> bytes:
    """A Vuer client event as msgpack (``ts`` in ms, as the web client sends it)."""
    import msgpack

    msg = {"etype": etype, "ts": int(time.time() * 1000), "value": value}
    msg.update(extra)
    return msgpack.packb(msg, use_bin_type=True)


def init_event() -> bytes:
    return client_event("INIT", {"client": "python", "clientVersion": "bench",
                                 "pythonVersion": platform.python_version()})


class FrameCounter:
    """Incremental parser for server->client frames.

    Counts data messages and bytes. Payloads are kept only for control frames and when
    ``on_message`` is set; otherwise they are skipped without being buffered, so a 12 MB
    message costs the client one pass of ``recv_into``.
    """

    def __init__(self, on_message: Optional[Callable[[bytes], None]] = None,
                 on_control: Optional[Callable[[int, bytes], None]] = None):
        self.on_message = on_message
        self.on_control = on_control
        self.buf = bytearray()
        self.skip = 0
        self.messages = 0
        self.bytes = 0  # everything received, headers included
        self.payload_bytes = 0  # data-frame payload bytes
        self.first_rx = 0.0
        self.last_rx = 0.0
        self.closed = False
        self.close_code: Optional[int] = None

    def feed(self, data: memoryview) -> None:
        n = len(data)
        now = time.monotonic()
        if not self.bytes:
            self.first_rx = now
        self.bytes += n
        self.last_rx = now
        if self.skip:
            take = min(self.skip, n)
            self.skip -= take
            self.payload_bytes += take
            if take == n:
                return
            data = data[take:]
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            ln = b1 & 127
            off = pos + 2
            if ln == 126:
                if end - off < 2:
                    break
                ln = _U16.unpack_from(buf, off)[0]
                off += 2
            elif ln == 127:
                if end - off < 8:
                    break
                ln = _U64.unpack_from(buf, off)[0]
                off += 8
            if b1 & 0x80:
                off += 4  # servers never mask, but skip a key if one is there
            if off > end:
                break
            op = b0 & 15
            if op >= 8 or self.on_message is not None:
                if end - off < ln:
                    break
                payload = bytes(buf[off:off + ln])
                pos = off + ln
                if op >= 8:
                    self._control(op, payload)
                else:
                    self.messages += 1
                    self.payload_bytes += ln
                    if self.on_message is not None:
                        self.on_message(payload)
                continue
            self.messages += 1
            avail = end - off
            if avail >= ln:
                self.payload_bytes += ln
                pos = off + ln
                continue
            self.payload_bytes += avail
            self.skip = ln - avail
            pos = end
            break
        if pos:
            del buf[:pos]

    def _control(self, op: int, payload: bytes) -> None:
        if op == 8:
            self.closed = True
            if len(payload) >= 2:
                self.close_code = _U16.unpack_from(payload, 0)[0]
        if self.on_control is not None:
            self.on_control(op, payload)


def upgrade_request(port: int, subprotocol: Optional[str] = None) -> bytes:
    """The HTTP/1.1 websocket upgrade request a :class:`RawPeer` sends."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawPeer:
    """A websocket client on a raw socket (HTTP/1.1 upgrade, masked frames, no extensions).

    ``subprotocol``: offered in ``Sec-WebSocket-Protocol`` (viser requires ``viser-v<version>``).
    ``init``: send Vuer's INIT right after the handshake. ``rcvbuf``: a small receive buffer
    makes a peer that never reads stall the server sooner.
    """

    def __init__(self, port: int, *, subprotocol: Optional[str] = None, init: bool = True,
                 rcvbuf: Optional[int] = None, timeout: float = 10.0):
        self.port = port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._setup(sock, port)
        sock.sendall(upgrade_request(port, subprotocol))
        head = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk or time.monotonic() > deadline:
                raise ConnectionError(f"handshake with port {port} failed: {head[:200]!r}")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"handshake refused: {status!r}")
        self.leftover = rest
        if init:
            self.send(init_event())

    def _setup(self, sock: socket.socket, port: int) -> None:
        self.port = port
        self.sock = sock
        self._wlock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.counter = FrameCounter(on_control=self._on_control)
        self.error: Optional[BaseException] = None
        self.leftover = b""

    @classmethod
    def adopt(cls, sock: socket.socket, port: int, leftover: bytes = b"") -> RawPeer:
        """A peer for a socket whose handshake is already done (:func:`open_peers`)."""
        self = cls.__new__(cls)
        self._setup(sock, port)
        self.leftover = leftover
        return self

    # -- writing ---------------------------------------------------------------------------

    def send(self, payload: bytes, opcode: int = 2) -> None:
        self.send_raw(client_frame(payload, opcode))

    def send_raw(self, frames: bytes) -> None:
        with self._wlock:
            self.sock.sendall(frames)

    def _on_control(self, op: int, payload: bytes) -> None:
        if op == 9:  # ping -> pong
            try:
                self.send(payload, 10)
            except OSError:
                pass

    # -- reading ---------------------------------------------------------------------------

    def start_reader(self, on_message: Optional[Callable[[bytes], None]] = None) -> FrameCounter:
        """Drain the socket on a thread, counting; ``on_message`` gets each data payload."""
        self.counter = FrameCounter(on_message=on_message, on_control=self._on_control)
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_loop, name="bench-peer", daemon=True)
        self._thread.start()
        return self.counter

    def _read_loop(self) -> None:
        sock = self.sock
        sock.settimeout(0.1)
        chunk = bytearray(1 << 20)
        mv = memoryview(chunk)
        c = self.counter
        if self.leftover:
            c.feed(memoryview(self.leftover))
            self.leftover = b""
        try:
            while not self._stop.is_set() and not c.closed:
                try:
                    n = sock.recv_into(mv)
                except socket.timeout:
                    continue
                if n == 0:
                    c.closed = True
                    break
                c.feed(mv[:n])
        except OSError as e:
            self.error = e
            c.closed = True
        except Exception as e:  # a callback failed: keep the error for the caller
            self.error = e
            logger.exception("bench peer reader failed")

    def wait_for(self, pred: Callable[[FrameCounter], bool], timeout: float) -> bool:
        """Poll (1 ms) until ``pred(counter)`` or timeout; True if it held."""
        deadline = time.monotonic() + timeout
        while not pred(self.counter):
            if time.monotonic() > deadline or (self.counter.closed and not pred(self.counter)):
                return pred(self.counter)
            time.sleep(0.001)
        return True

    def stop_reader(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        try:
            self.sock.settimeout(10)
        except OSError:
            pass

    def close(self) -> None:
        self.stop_reader()
        try:
            with self._wlock:
                self.sock.settimeout(0.5)
                self.sock.sendall(client_frame(struct.pack("!H", 1000), 8))
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class MultiReader:
    """One thread draining many :class:`RawPeer` sockets with ``selectors`` (counts only;
    answers pings, so that long-connected peers stay alive)."""

    def __init__(self, peers: List[RawPeer]):
        self.peers = peers
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        for p in peers:
            p.counter = FrameCounter(on_control=p._on_control)  # answers pings
            p.sock.setblocking(False)
            self._sel.register(p.sock, selectors.EVENT_READ, p)
        self._thread = threading.Thread(target=self._run, name="bench-multi", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(1 << 18)
        mv = memoryview(buf)
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.1):
                p: RawPeer = key.data
                try:
                    n = p.sock.recv_into(mv)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    p.counter.closed = True
                    self._sel.unregister(p.sock)
                    continue
                if p.leftover:
                    p.counter.feed(memoryview(p.leftover))
                    p.leftover = b""
                p.counter.feed(mv[:n])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sel.close()
        for p in self.peers:
            try:
                p.sock.setblocking(True)
            except OSError:
                pass


def connect_many(port: int, n: int, **kw: Any) -> List[RawPeer]:
    peers = []
    try:
        for _ in range(n):
            peers.append(RawPeer(port, **kw))
    except Exception:
        for p in peers:
            p.close()
        raise
    return peers


def raise_nofile(n: int) -> int:
    """Raise this process's open-file limit (soft) to at least ``n`` if the hard limit allows
    (the many-viewers rows); returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def open_peers(port: int, n: int, *, subprotocol: Optional[str] = None, init: bool = True,
               window: int = 64, timeout: float = 60.0) -> Tuple[List[RawPeer], Dict[str, Any]]:
    """``n`` peers whose handshakes run side by side (at most ``window`` in flight) on one
    ``selectors`` loop, so that connecting thousands costs the server, not the client, and a
    server that serves handshakes in batches is not made to wait for one at a time.

    Bounded by ``timeout`` in all: returns the peers that completed (each sent its INIT if
    ``init``) and ``{"refused": ..., "failed": ..., "timed_out": ..., "s": ...}``; a peer whose
    handshake did not complete is closed."""
    sel = selectors.DefaultSelector()
    done: List[RawPeer] = []
    info: Dict[str, Any] = {"refused": 0, "failed": 0, "timed_out": 0}
    pending: Dict[socket.socket, bytearray] = {}
    started = 0
    t0 = time.monotonic()
    deadline = t0 + timeout
    req = None

    def drop(sock: socket.socket, why: str) -> None:
        info[why] += 1
        pending.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        sock.close()

    try:
        while (started < n or pending) and time.monotonic() < deadline:
            while started < n and len(pending) < window:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                started += 1
                err = sock.connect_ex((HOST, port))
                if err not in (0, errno.EINPROGRESS):
                    info["failed"] += 1
                    sock.close()
                    continue
                pending[sock] = bytearray()
                sel.register(sock, selectors.EVENT_WRITE)
            for key, ev in sel.select(min(0.2, max(0.0, deadline - time.monotonic()))):
                sock = key.fileobj  # type: ignore[assignment]
                assert isinstance(sock, socket.socket)
                if ev & selectors.EVENT_WRITE:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        drop(sock, "failed")
                        continue
                    req = upgrade_request(port, subprotocol)
                    try:
                        sock.send(req)  # ~200 bytes into an empty buffer: sent whole
                    except OSError:
                        drop(sock, "failed")
                        continue
                    sel.modify(sock, selectors.EVENT_READ)
                    continue
                try:
                    chunk = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    drop(sock, "failed")
                    continue
                head = pending[sock]
                head += chunk
                if b"\r\n\r\n" not in head:
                    continue
                line, _, rest = bytes(head).partition(b"\r\n\r\n")
                if b" 101 " not in line.split(b"\r\n", 1)[0] + b" ":
                    drop(sock, "refused")
                    continue
                del pending[sock]
                sel.unregister(sock)
                sock.settimeout(10.0)
                peer = RawPeer.adopt(sock, port, rest)
                if init:
                    peer.send(init_event())
                done.append(peer)
    finally:
        for sock in list(pending):
            drop(sock, "timed_out")
        sel.close()
    info["timed_out"] += n - started
    info["s"] = time.monotonic() - t0
    return done, info


def close_all(peers: Iterable[RawPeer], timeout: float = 30.0) -> None:
    """Close every peer (a close frame each, then the socket), bounded by ``timeout`` in all:
    what is left after it is closed without the close frame."""
    deadline = time.monotonic() + timeout
    for p in peers:
        if time.monotonic() < deadline:
            p.close()
        else:
            with contextlib.suppress(OSError):
                p.sock.close()


# -- viser's wire format (to read pose updates in the delivery check) ------------------------


def decode_viser_frame(payload: bytes) -> List[Dict[str, Any]]:
    """viser 1.1 server frame: u64 LE sizes, zstd(msgpack{"messages": [...]}) + raw buffers."""
    import msgpack
    import zstandard

    dlen = _LE_U64.unpack_from(payload, 0)[0]
    clen = _LE_U64.unpack_from(payload, 8)[0]
    inner = zstandard.ZstdDecompressor().decompress(payload[16:16 + clen], max_output_size=dlen)
    outer = msgpack.unpackb(inner, raw=False, strict_map_key=False)
    msgs = outer.get("messages", [])
    lengths = outer.get("binaryBufferLengths") or []
    if lengths:
        import numpy as np

        bufs = []
        off = 16 + clen
        for ln in lengths:
            off = (off + 7) // 8 * 8
            bufs.append(payload[off:off + ln])
            off += ln
        for m in msgs:
            for k, v in list(m.items()):
                if isinstance(v, dict) and "__binary_index" in v:
                    m[k] = np.frombuffer(bufs[v["__binary_index"]], dtype=v.get("dtype", "<f4"))
    return msgs


# -- the server subprocess -------------------------------------------------------------------


class AgentError(RuntimeError):
    pass


class Agent:
    """``bench_agent.py <impl>`` in a subprocess; JSON commands on stdin, replies on stdout.

    The agent's own stdout (banners, Vuer's prints) goes to its log file, so the protocol
    pipe carries only replies. ``options`` (JSON, optional): ``nofile`` raises the agent's
    open-file limit; for vuer_sync the rest are ``Vuer(...)`` keywords (e.g. ``io_threads``).
    """

    def __init__(self, impl: str, log_dir: Path, tag: str = "", start_timeout: float = 60.0,
                 options: Optional[Dict[str, Any]] = None):
        self.impl = impl
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"agent_{impl}{('_' + tag) if tag else ''}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, str(AGENT_SCRIPT), impl]
        if options:
            argv.append(json.dumps(options))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, cwd=str(HERE), env=env, text=True,
            bufsize=1)
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"agent-{impl}", daemon=True)
        self._reader.start()
        try:
            hello = self.reply(start_timeout)
        except Exception:
            self.close()
            raise
        self.port: int = hello["port"]
        self.pid: int = self.proc.pid
        self.info = hello
        import psutil

        self.ps = psutil.Process(self.proc.pid)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, cmd: str, **kw: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AgentError(f"{self.impl} agent: no reply within {timeout} s "
                                 f"(log: {self.log_path})")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AgentError(f"{self.impl} agent exited (rc={self.proc.poll()}; "
                                 f"log: {self.log_path})")
            if not line.startswith("@@"):
                continue
            msg = json.loads(line[2:])
            if "error" in msg:
                raise AgentError(f"{self.impl}: {msg['error']}")
            return msg

    def call(self, cmd: str, timeout: float = 60.0, **kw: Any) -> Dict[str, Any]:
        self.send(cmd, **kw)
        return self.reply(timeout)

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads, exited ones included) of the server
        process, read inside it with ``time.process_time()``: nanosecond steps, where
        /proc's (psutil's) come in 10 ms clock ticks, coarser than some rows' whole CPU
        time. Falls back to psutil if the agent cannot answer."""
        try:
            r = self.call("cpu", timeout=30)
            if isinstance(r.get("cpu"), float):
                return r["cpu"]
        except Exception:
            pass
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=15)
            except Exception as e:
                logger.debug("agent %s quit: %r", self.impl, e)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                logger.warning("agent %s did not exit; terminating", self.impl)
                stop_process(self.proc, 5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self._reader.join(2)
        self._log.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RssSampler:
    """Samples a process's RSS every ``interval`` s on a thread; keeps the peak."""

    def __init__(self, agent: Agent, interval: float = 0.05):
        self.agent = agent
        self.interval = interval
        self.peak_mb = agent.rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak_mb = max(self.peak_mb, self.agent.rss_mb())
            except Exception:
                return

    def stop(self) -> float:
        self._stop.set()
        self._t.join(2)
        return self.peak_mb


# -- the rows' peers (run.py and rows/) -------------------------------------------------------

#: the rows log under run.py's name, as they did when they lived in it
row_logger = logging.getLogger("benchmarks.run")


def viser_subprotocol() -> str:
    """What viser requires in ``Sec-WebSocket-Protocol``: ``viser-v<installed version>``."""
    v = _version("viser")
    return f"viser-v{v}" if v else "viser-v?"


def peer_kw(impl: str) -> Dict[str, Any]:
    """:class:`RawPeer` keywords for a server (viser: its subprotocol, and no Vuer INIT)."""
    if impl == "viser":
        return {"subprotocol": viser_subprotocol(), "init": False}
    return {}


def connect_peer(agent: Agent, impl: str, **kw: Any) -> RawPeer:
    return RawPeer(agent.port, **{**peer_kw(impl), **kw})


def one_client(agent: Agent, impl: str, on_message: Optional[Callable[[bytes], None]] = None
               ) -> RawPeer:
    """One peer, draining on its own thread, once the server counts it as its one session."""
    peer = connect_peer(agent, impl)
    peer.start_reader(on_message)
    got = agent.call("wait_clients", n=1, wait=30, timeout=30 + 30)
    if got["clients"] not in (1, -1):
        peer.close()
        raise RuntimeError(f"expected 1 session, server has {got['clients']}")
    return peer


@contextlib.contextmanager
def one_session(agent: Agent, impl: str,
                on_message: Optional[Callable[[bytes], None]] = None) -> Iterator[RawPeer]:
    """:func:`one_client` for the ``with`` block, then :func:`hangup`."""
    peer = one_client(agent, impl, on_message)
    try:
        yield peer
    finally:
        hangup(agent, peer)


def hangup(agent: Agent, peer: Optional[RawPeer]) -> None:
    """Close ``peer``, wait until the server has no session left, and reset its scene."""
    if peer is not None:
        peer.close()
    try:
        agent.call("wait_clients", n=0, wait=15, timeout=15 + 30)
        agent.call("reset", timeout=30)  # viser: drop the scene so the next row starts empty
    except Exception as e:
        row_logger.warning("%s: sessions did not end: %r", agent.impl, e)


@contextlib.contextmanager
def draining_clients(agent: Agent, impl: str, n: int
                     ) -> Iterator[Tuple[List[RawPeer], Dict[str, Any]]]:
    """``n`` connected peers drained by one :class:`MultiReader` (counts only); yields the
    peers and the server's ``wait_clients`` reply, and closes them all at the end."""
    peers = connect_many(agent.port, n, **peer_kw(impl))
    mr = None
    try:
        got = agent.call("wait_clients", n=n, wait=60, timeout=60 + 30)
        mr = MultiReader(peers)
        yield peers, got
    finally:
        if mr is not None:
            mr.stop()
        for p in peers:
            p.close()
