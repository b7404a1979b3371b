"""What a 1 kHz loop's lateness can be on this machine while large messages stream.

Row 5 of ``run.py`` measures a control loop in the server's process while a server streams
point clouds. This benchmark measures the floor under it, with no server, codec or websocket
at all: the same ``time.sleep``-paced loop while plain ``socket.sendall`` writes 12 MB blobs
over loopback to a draining peer process, the writer being

* ``none``: nothing streams (the timer and scheduler alone);
* ``process``: another process (only the CPU is shared);
* ``thread``: a thread of the loop's own process (the CPU *and* the GIL are shared), one
  ``sendall`` per 12 MB blob;
* ``thread_chunked``: the same thread writing each blob in 512 KiB ``sendall`` calls, as
  vuer_sync's transport does (``WRITE_CHUNK``): the kernel returns to user space between
  pieces, where the scheduler can run the loop.

Writes ``benchmarks/out/lateness_floor.json`` (``--smoke``: ``lateness_floor-smoke.json``).

Usage::

    python benchmarks/bench_lateness_floor.py [--seconds 3] [--repeat 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import threading
import time
from typing import Any, Dict, List

from common import control_loop

HERE = os.path.dirname(os.path.abspath(__file__))
BLOB = 12 * 2**20


def _drain(port: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(1 << 20)
    while s.recv_into(buf):
        pass
    s.close()


CHUNK = 512 * 1024


def _stream(srv: socket.socket, stop_at: float, chunk: int = 0) -> None:
    conn, _ = srv.accept()
    data = memoryview(b"\x01" * BLOB)
    while time.monotonic() < stop_at:
        if chunk:
            for i in range(0, BLOB, chunk):
                conn.sendall(data[i : i + chunk])
        else:
            conn.sendall(data)
    conn.close()


def _pct(xs: List[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(writer: str, seconds: float) -> Dict[str, float]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    ctx = mp.get_context("spawn")
    sink = ctx.Process(target=_drain, args=(srv.getsockname()[1],), daemon=True)
    stop_at = time.monotonic() + seconds + 0.3
    src: Any = None
    if writer in ("thread", "thread_chunked"):
        chunk = CHUNK if writer == "thread_chunked" else 0
        src = threading.Thread(target=_stream, args=(srv, stop_at, chunk), daemon=True)
    elif writer == "process":
        src = ctx.Process(target=_stream, args=(srv, stop_at), daemon=True)
    try:
        if src is not None:
            sink.start()
            src.start()
            time.sleep(0.2)
        late = control_loop(seconds)
    finally:
        if src is not None:
            src.join(seconds + 10)
            sink.join(10)
            for p in (src, sink):
                if isinstance(p, mp.process.BaseProcess) and p.is_alive():
                    p.kill()
        srv.close()
    return {"p50_ms": _pct(late, 0.5) * 1e3, "p99_ms": _pct(late, 0.99) * 1e3,
            "max_ms": max(late) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per writer (median p99 kept)")
    ap.add_argument("--smoke", action="store_true", help="0.3 s, one run each")
    args = ap.parse_args()
    seconds, repeat = (0.3, 1) if args.smoke else (args.seconds, max(1, args.repeat))
    out: Dict[str, Any] = {"blob_bytes": BLOB, "seconds": seconds, "repeat": repeat}
    for writer in ("none", "process", "thread", "thread_chunked"):
        runs = [measure(writer, seconds) for _ in range(repeat)]
        runs.sort(key=lambda r: r["p99_ms"])
        out[writer] = runs[len(runs) // 2]
        print(f"{writer:8s} p50 {out[writer]['p50_ms']:.3f} ms  p99 {out[writer]['p99_ms']:.3f}"
              f" ms  max {out[writer]['max_ms']:.3f} ms", flush=True)
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    name = "lateness_floor-smoke.json" if args.smoke else "lateness_floor.json"
    with open(os.path.join(HERE, "out", name), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
