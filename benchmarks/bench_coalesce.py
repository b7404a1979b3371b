"""The producer's cost of a scene call, in two checkouts side by side (before/after a change
to the outbox or the coalescing path):

    python benchmarks/bench_coalesce.py --tree before=/tmp/a --tree after=/tmp/b [--n 20000]
        [--reps 5] [--smoke]

Each workload runs in a fresh process per checkout (``sys.path`` starts with that checkout);
the repetitions alternate the checkouts' order so that drift hits both. A figure is the median
over ``--reps`` repetitions of the median per-call time (nanoseconds) of ``--n`` calls (the
first tenth unrecorded, as ``run.py``'s producer-cost row), with the repetitions' min and max.

Workloads, each with one connected ``VuerClient`` draining (no sockets for ``outbox-*``):

- ``session.upsert @ Box``: ``run.py``'s producer-cost row (``upsert @ element`` fast path);
- ``session.update @ Box``: the same for ``UPDATE``;
- ``session.update @ dict``: the event path (merge info computed by the outbox's policy);
- ``app.scene.upsert @ Box``: one broadcast (merge info once, pushed to every client);
- ``outbox push (replace)``: an outbox with no sender, a pose stream of one key (every push
  merges by replacing the queued frame); ``outbox push (merge)``: the same with a subset of
  the queued properties (decoded, merged and encoded again).

Writes benchmarks/out/coalesce.json (``--smoke``: coalesce-smoke.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

OUT = Path(__file__).resolve().parent / "out"
WORKLOADS = ["session.upsert @ Box", "session.update @ Box", "session.update @ dict",
             "app.scene.upsert @ Box", "outbox push (replace)", "outbox push (merge)"]


def timed(call: Callable[[int], None], n: int) -> float:
    """Median per-call time (ns) of ``call(i)`` over ``n`` calls, the first tenth unrecorded."""
    pc = time.perf_counter_ns
    times = [0] * n
    for i in range(-(n // 10), n):
        t0 = pc()
        call(i)
        dt = pc() - t0
        if i >= 0:
            times[i] = dt
    return float(statistics.median(times))


def worker(tree: str, workload: str, n: int) -> float:
    sys.path.insert(0, tree)
    import threading

    import msgpack

    from vuer_sync import Vuer, VuerClient, codec
    from vuer_sync.outbox import Outbox
    from vuer_sync.schemas import Box

    assert Path(sys.modules["vuer_sync"].__file__ or "").resolve().is_relative_to(
        Path(tree).resolve()), "imported another checkout"
    if workload.startswith("outbox"):
        box = Outbox(encode=codec.encode, decode=lambda b: msgpack.unpackb(b, raw=False),
                     max_bytes=1 << 40)
        box.push(*_upd(codec, 0.0, True))
        frames = [_upd(codec, i * 1e-3, workload.endswith("(replace)")) for i in range(256)]
        return timed(lambda i: box.push(*frames[i & 255]), n)
    with Vuer(port=0) as app:
        with VuerClient(f"ws://127.0.0.1:{app.port}") as client:
            stop = threading.Event()

            def drain() -> None:
                while not stop.is_set():
                    try:
                        client.recv(timeout=0.1)
                    except Exception:
                        pass

            t = threading.Thread(target=drain, daemon=True)
            t.start()
            s = app.wait_for_session(timeout=10)
            calls: Dict[str, Callable[[int], None]] = {
                "session.upsert @ Box":
                    lambda i: s.upsert @ Box(key="box", position=[i * 1e-3, 0.5, 0.0]),
                "session.update @ Box":
                    lambda i: s.update @ Box(key="box", position=[i * 1e-3, 0.5, 0.0]),
                "session.update @ dict":
                    lambda i: s.update @ {"key": "arm", "position": [i * 1e-3, 0.5, 0.0]},
                "app.scene.upsert @ Box":
                    lambda i: app.scene.upsert @ Box(key="box", position=[i * 1e-3, 0.5, 0.0]),
            }
            try:
                return timed(calls[workload], n)
            finally:
                s.flush(60)
                stop.set()
                t.join(5)


def _upd(codec: Any, x: float, every_prop: bool) -> Any:
    node: Dict[str, Any] = {"key": "arm", "position": [x, 0.5, 0.0]}
    if every_prop:
        node["rotation"] = [0.0, x, 0.0]
    msg = {"etype": "UPDATE", "data": {"nodes": [node]}, "ts": 0}
    return codec.encode(msg), msg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="a checkout to measure (give two or more)")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--worker", nargs=3, metavar=("TREE", "WORKLOAD", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], int(a.worker[2]))))
        return
    if a.smoke:
        a.n, a.reps = 1000, 1
    trees = dict(t.split("=", 1) for t in a.tree)
    workloads = [w for w in WORKLOADS if not a.only or w in a.only.split(",")]
    samples: Dict[str, Dict[str, List[float]]] = {w: {t: [] for t in trees} for w in workloads}
    for r in range(a.reps):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for w in workloads:
            for name in order:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", trees[name], w, str(a.n)],
                    check=True, capture_output=True, text=True, cwd="/").stdout
                samples[w][name].append(json.loads(out.strip().splitlines()[-1]))
    result = {"n": a.n, "reps": a.reps, "trees": trees, "samples": samples}
    OUT.mkdir(exist_ok=True)
    (OUT / ("coalesce-smoke.json" if a.smoke else "coalesce.json")).write_text(
        json.dumps(result, indent=1))
    names = list(trees)
    print(f"| workload (median per-call ns, median of {a.reps} reps [min-max]) | "
          + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for w in workloads:
        cells = [f"{statistics.median(xs):.0f} [{min(xs):.0f}-{max(xs):.0f}]"
                 for xs in (samples[w][t] for t in names)]
        print(f"| `{w}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
