"""What the transform check costs: making ``Box(key=..., position=[...], rotation=[...])``
and ``app.scene.upsert @ Box(...)`` with the check (``position``/``rotation``/``scale``/
``quaternion`` shapes, ``vuer_sync.schemas.base.check_transforms``) and with it patched out.

    python benchmarks/bench_validation.py [--n 100000] [--reps 5] [--smoke]

Each figure is the median over ``--reps`` repetitions of the mean time per call over ``--n``
calls (nanoseconds), with the repetitions' min and max as the spread; the repetitions
alternate "with" and "without" so that drift hits both. Writes benchmarks/out/validation.json
(``--smoke``: validation-smoke.json). No sockets: the producer's own cost only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout

import numpy as np  # noqa: E402

from vuer_sync import Vuer  # noqa: E402
from vuer_sync.schemas import Box, base  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def per_call_ns(fn: Callable[[int], Any], n: int) -> float:
    t0 = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t0) / n * 1e9


def make_lists(n: int) -> None:
    for i in range(n):
        Box(key="box", position=[i * 1e-3, 0.5, 0.0], rotation=[0.0, 0.1, 0.0])


def make_array(n: int) -> None:
    p = np.array([0.0, 0.5, 0.0])
    for _ in range(n):
        Box(key="box", position=p)


def make_no_transform(n: int) -> None:
    for _ in range(n):
        Box(key="box", args=[1, 1, 1])


def upsert(app: Vuer) -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            app.scene.upsert @ Box(key="box", position=[i * 1e-3, 0.5, 0.0])
    return run


def measure(cases: Dict[str, Callable[[int], Any]], n: int, reps: int) -> Dict[str, Any]:
    real = base.check_transforms
    samples: Dict[str, Dict[str, List[float]]] = {c: {"with": [], "without": []} for c in cases}
    for fn in cases.values():
        fn(max(1, n // 10))  # warm up
    for r in range(reps):
        order = ("with", "without") if r % 2 == 0 else ("without", "with")
        for name, fn in cases.items():
            for mode in order:
                base.check_transforms = real if mode == "with" else (lambda el, props: None)
                try:
                    samples[name][mode].append(per_call_ns(fn, n))
                finally:
                    base.check_transforms = real
    out: Dict[str, Any] = {}
    for name, modes in samples.items():
        row = {}
        for mode, xs in modes.items():
            row[mode] = {"median_ns": statistics.median(xs), "min_ns": min(xs),
                         "max_ns": max(xs), "reps": len(xs)}
        row["check_ns"] = row["with"]["median_ns"] - row["without"]["median_ns"]
        out[name] = row
    return out


def direct(n: int, reps: int) -> Dict[str, Any]:
    """The check alone, on a typical props dict (what the ``with`` rows add at most)."""
    el = Box(key="box")
    props = {"position": [0.1, 0.5, 0.0], "rotation": [0.0, 0.1, 0.0], "args": [1, 1, 1]}
    xs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            if "position" in props or "rotation" in props or "scale" in props \
                    or "quaternion" in props:
                base.check_transforms(el, props)
        xs.append((time.perf_counter() - t0) / n * 1e9)
    return {"median_ns": statistics.median(xs), "min_ns": min(xs), "max_ns": max(xs),
            "reps": reps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="calls per repetition")
    ap.add_argument("--reps", type=int, default=5, help="repetitions (at least 3)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    args = ap.parse_args()
    n = 2000 if args.smoke else args.n
    reps = max(3, args.reps)
    app = Vuer(port=0)  # never started: app.scene needs no client
    try:
        cases = {
            "Box(position=list, rotation=list)": make_lists,
            "Box(position=np.array)": make_array,
            "Box(args=...) (no transform prop)": make_no_transform,
            "app.scene.upsert @ Box(position=list)": upsert(app),
        }
        rows = measure(cases, n, reps)
        rows["check_transforms alone (position + rotation)"] = {"with": direct(n, reps)}
    finally:
        app.stop()
    result = {"n": n, "reps": reps, "python": sys.version.split()[0], "rows": rows}
    OUT.mkdir(exist_ok=True)
    path = OUT / ("validation-smoke.json" if args.smoke else "validation.json")
    path.write_text(json.dumps(result, indent=2))
    print(f"n={n} calls x {reps} repetitions; ns per call, median [min..max] of repetitions")
    for name, row in rows.items():
        w = row["with"]
        line = f"{name:48s} with {w['median_ns']:8.0f} [{w['min_ns']:.0f}..{w['max_ns']:.0f}]"
        if "without" in row:
            wo = row["without"]
            line += (f"  without {wo['median_ns']:8.0f} [{wo['min_ns']:.0f}..{wo['max_ns']:.0f}]"
                     f"  check {row['check_ns']:+.0f}")
        print(line)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
