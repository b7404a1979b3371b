"""What recording costs the producer: one `app.scene.update @ {...}` call with and without an
active recorder (median and p99, microseconds), in memory and streamed to a file
(`record(path=...)`: the writer thread packs and writes while the producer runs); the
serialize time, the crash-safe `save()` time (temporary file, fsync, rename) and the file
sizes; the streamed recording's `stop()` time (last batch, end record, fsync).

    python benchmarks/bench_record.py [--n 20000] [--smoke]

Writes benchmarks/out/record.json. No sockets: the producer's own cost only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vuer_sync import Vuer


def calls(app, n):
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        app.scene.update @ {"key": "arm", "q": [i * 0.001, 0.5, 0.25]}
        out.append(time.perf_counter() - t0)
    out.sort()
    return {"median_us": out[n // 2] * 1e6, "p99_us": out[int(n * 0.99)] * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    n = 2000 if args.smoke else args.n
    app = Vuer(port=0)
    app.scene.upsert @ {"key": "arm", "tag": "group"}
    calls(app, n // 4)  # warm up
    plain = calls(app, n)
    rec = app.scene.record()
    recording = calls(app, n)
    rec.stop()
    t0 = time.perf_counter()
    data = rec.serialize()
    ser_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rec.save(Path(tmp) / "memory.vsrec")
        save_s = time.perf_counter() - t0
        streamed = app.scene.record(path=Path(tmp) / "streamed.vsrec")
        streaming = calls(app, n)
        t0 = time.perf_counter()
        streamed.stop()
        stop_s = time.perf_counter() - t0
        stream_bytes = streamed.path.stat().st_size
    result = {"n": n, "without_recorder": plain, "with_recorder": recording,
              "overhead_median_us": recording["median_us"] - plain["median_us"],
              "with_streamed_recorder": streaming,
              "streamed_overhead_median_us": streaming["median_us"] - plain["median_us"],
              "serialize_s": ser_s, "save_s": save_s, "file_bytes": len(data),
              "bytes_per_message": len(data) / n, "streamed_stop_s": stop_s,
              "streamed_file_bytes": stream_bytes}
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / ("record-smoke.json" if args.smoke else "record.json")).write_text(
        json.dumps(result, indent=2))
    print(f"app.scene.update @ ..., {n} calls")
    print(f"  without a recorder: {plain['median_us']:.2f} us median, "
          f"{plain['p99_us']:.2f} us p99")
    print(f"  with a recorder:    {recording['median_us']:.2f} us median, "
          f"{recording['p99_us']:.2f} us p99")
    print(f"  with a streamed recorder: {streaming['median_us']:.2f} us median, "
          f"{streaming['p99_us']:.2f} us p99")
    print(f"  serialize: {ser_s * 1e3:.1f} ms for {len(data)} bytes "
          f"({result['bytes_per_message']:.1f} B/message); save (serialize, write, fsync, "
          f"rename): {save_s * 1e3:.1f} ms")
    print(f"  streamed: {stream_bytes} bytes, stop() {stop_s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
