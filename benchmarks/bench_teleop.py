"""Teleoperation latency: a ``HAND_MOVE`` frame sent to the server -> the control loop's wait
returning with it, p50/p99, side by side with Vuer 0.1.6 used the way teleoperation projects
use it today.

    python benchmarks/bench_teleop.py            # 3 interleaved repetitions x 900 frames
    python benchmarks/bench_teleop.py --smoke    # 1 repetition x 90 frames

* ``vuer_sync``: ``Vuer(port=0)``; the control loop (a thread of the server's process) calls
  ``app.hands.wait_update()``.
* ``vuer+shm``: Vuer 0.1.6; its async ``HAND_MOVE`` handler copies the right hand (400
  floats) and a sequence number into ``multiprocessing.shared_memory`` and sets a
  ``multiprocessing.Event``; the control loop is a separate process that waits on the event
  and reads the shared memory (the best case of that pattern: no polling interval).

One client (websocket-client, this process) sends the recorded frames of
``tests/teleop/hand_move.msgpack`` (the web client's exact bytes) at 90 Hz; the latency of
frame *i* is the loop's ``time.time()`` when it got sequence *i* minus the client's
``time.time()`` just before sending it (one clock: same machine). Frames a loop did not get
(replaced before it woke) are counted as ``missed``. Also: the cost of one latest-value read
(``app.hands.latest`` vs. copying the shared-memory block), in ns.

Writes ``benchmarks/out/teleop.json`` (``--smoke``: ``teleop-smoke.json``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
RECORDING = REPO / "tests" / "teleop" / "hand_move.msgpack"
HZ = 90.0
IMPLS = ("vuer_sync", "vuer+shm")


def frames() -> List[bytes]:
    import msgpack

    data = RECORDING.read_bytes()
    u = msgpack.Unpacker(raw=False)
    u.feed(data)
    ends = []
    for _ in u:
        ends.append(u.tell())
    return [data[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def pct(v: List[float], p: float) -> float:
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# -- workers (subprocesses) ----------------------------------------------------------------


def worker_vuer_sync(n: int, out: str) -> None:
    import logging

    from vuer_sync import Vuer

    logging.disable(logging.WARNING)
    app = Vuer(port=0)
    app.start(block=False)
    got: List[List[float]] = []

    def loop() -> None:  # the control loop: block for the next sample, note when it came
        seq = 0
        while seq < n:
            s = app.hands.wait_update(timeout=30)
            if s is None:
                break
            got.append([s.seq, time.time()])
            seq = s.seq

    t = threading.Thread(target=loop)
    t.start()
    print(f"PORT {app.port}", flush=True)
    hands = app.hands
    reads = []
    t.join(120)
    for _ in range(5):  # the cost of one latest-value read
        t0 = time.perf_counter_ns()
        for _ in range(100_000):
            hands.latest  # noqa: B018
        reads.append((time.perf_counter_ns() - t0) / 100_000)
    Path(out).write_text(json.dumps({"got": got, "read_ns": statistics.median(reads)}))
    app.stop()


def _shm_reader(name: str, event: Any, n: int, out: str) -> None:
    from multiprocessing import shared_memory

    import numpy as np

    shm = shared_memory.SharedMemory(name=name)
    buf = np.ndarray((401,), dtype=np.float64, buffer=shm.buf)
    got: List[List[float]] = []
    seq = 0
    while seq < n:  # the control loop in its own process: wait, then read the block
        if not event.wait(30):
            break
        event.clear()
        pose = buf.copy()
        seq = int(pose[0])
        got.append([seq, time.time()])
    reads = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(100_000):
            buf.copy()
        reads.append((time.perf_counter_ns() - t0) / 100_000)
    del buf
    shm.close()
    Path(out).write_text(json.dumps({"got": got, "read_ns": statistics.median(reads)}))


def worker_vuer(n: int, out: str, port: int) -> None:
    import multiprocessing as mp
    from multiprocessing import shared_memory

    import numpy as np
    from vuer import Vuer

    shm = shared_memory.SharedMemory(create=True, size=401 * 8)
    buf = np.ndarray((401,), dtype=np.float64, buffer=shm.buf)
    buf[:] = 0
    event = mp.Event()
    reader = mp.Process(target=_shm_reader, args=(shm.name, event, n, out), daemon=True)
    reader.start()
    app = Vuer(host="127.0.0.1", port=port)
    count = [0]

    async def on_hands(ev: Any, session: Any) -> None:  # the user's async handler
        right = ev.value.get("right") if isinstance(ev.value, dict) else None
        count[0] += 1
        if isinstance(right, list) and len(right) == 400:
            buf[1:] = right
        buf[0] = count[0]
        event.set()

    async def main(session: Any) -> None:
        await session.forever()

    app.add_handler("HAND_MOVE", on_hands)
    app.spawn(main)
    print(f"PORT {port}", flush=True)
    try:
        app.start()
    finally:
        reader.join(5)
        shm.close()
        shm.unlink()


# -- the driver ------------------------------------------------------------------------------


def one_run(impl: str, n: int, tmp: Path) -> Dict[str, Any]:
    import msgpack
    import websocket

    sys.path.insert(0, str(HERE))
    from common import free_port, stop_process, wait_port

    out = tmp / f"{impl}-{time.monotonic_ns()}.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    args = [sys.executable, __file__, "--worker", impl, str(n), str(out)]
    if impl == "vuer+shm":
        args.append(str(free_port()))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    try:
        port = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("PORT "):
                port = int(line.split()[1])
                break
        if port is None:
            raise RuntimeError(f"{impl} worker did not start")
        wait_port(port)
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=10)
        ws.send_binary(msgpack.packb({"etype": "INIT", "ts": time.time(),
                                      "value": {"client": "headset"}}))
        time.sleep(0.5)  # the session is set up
        fr = frames()
        sent: List[float] = []
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / HZ - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent.append(time.time())
            ws.send_binary(fr[i % len(fr)])
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ws.close()
        time.sleep(0.1)
        result = json.loads(out.read_text())
    finally:
        stop_process(proc, 5)
        if out.exists():
            out.unlink()
    lat = [t - sent[int(seq) - 1] for seq, t in result["got"] if 0 < seq <= n]
    return {"latency_ms": [x * 1e3 for x in lat], "got": len(lat), "missed": n - len(lat),
            "read_ns": result["read_ns"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--frames", type=int, default=900)
    ap.add_argument("--worker", nargs="+")
    a = ap.parse_args()
    if a.worker:
        impl, n, out = a.worker[0], int(a.worker[1]), a.worker[2]
        if impl == "vuer_sync":
            worker_vuer_sync(n, out)
        else:
            worker_vuer(n, out, int(a.worker[3]))
        return
    reps, n = (1, 90) if a.smoke else (a.reps, a.frames)
    import tempfile

    runs: Dict[str, List[Dict[str, Any]]] = {i: [] for i in IMPLS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):  # interleaved: one of each per repetition
            for impl in IMPLS:
                runs[impl].append(one_run(impl, n, Path(tmp)))
    result: Dict[str, Any] = {
        "what": "HAND_MOVE sent -> control loop's wait returns with it (ms); latest read (ns)",
        "hz": HZ, "frames_per_rep": n, "reps": reps, "smoke": a.smoke, "impls": {}}
    for impl, rs in runs.items():
        p50 = [pct(r["latency_ms"], 50) for r in rs]
        p99 = [pct(r["latency_ms"], 99) for r in rs]
        result["impls"][impl] = {
            "p50_ms": statistics.median(p50), "p50_ms_reps": [round(x, 3) for x in p50],
            "p99_ms": statistics.median(p99), "p99_ms_reps": [round(x, 3) for x in p99],
            "missed_reps": [r["missed"] for r in rs],
            "latest_read_ns": statistics.median(r["read_ns"] for r in rs),
        }
    s, v = result["impls"]["vuer_sync"], result["impls"]["vuer+shm"]
    result["ratio_p50_vuer_over_vuer_sync"] = v["p50_ms"] / s["p50_ms"] if s["p50_ms"] else None
    result["ratio_p99_vuer_over_vuer_sync"] = v["p99_ms"] / s["p99_ms"] if s["p99_ms"] else None
    OUT.mkdir(exist_ok=True)
    (OUT / ("teleop-smoke.json" if a.smoke else "teleop.json")).write_text(
        json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
