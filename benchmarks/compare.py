"""Compare vuer_sync across checkouts: the medians (and spread) of interleaved runs.

Each run is a ``run.py --out DIR`` of one checkout (run the same harness against each: copy
this ``benchmarks/`` into the older checkout, or put it first on ``PYTHONPATH``; ``run.py
--impls vuer_sync`` runs no other server), repeated and interleaved (A1 B1 C1 A2 B2 C2 ...)
so that a noisy minute hits every checkout alike::

    python benchmarks/compare.py --label before=/tmp/bench/before_1,/tmp/bench/before_2 \\
        --label after=/tmp/bench/after_1,/tmp/bench/after_2 --out benchmarks/out/compare.json

writes every value of every run to ``compare.json`` and prints a markdown table of the
medians, ``[min - max]``, and the ratio of the last label to each earlier one (↓: lower is
better, so a ratio above 1 means the last label is worse; ↑: the reverse).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

Key = Tuple[str, str]


def load(dirs: List[str]) -> Tuple[Dict[Key, List[float]], Dict[Key, Dict[str, Any]]]:
    """vuer_sync's value of every metric in each run dir's results.json."""
    values: Dict[Key, List[float]] = {}
    meta: Dict[Key, Dict[str, Any]] = {}
    for d in dirs:
        res = json.loads((Path(d) / "results.json").read_text())
        for rid, row in res["rows"].items():
            for name, m in row["metrics"].items():
                if not isinstance(m, dict):
                    continue
                v = m.get("values", {}).get("vuer_sync")
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    values.setdefault((rid, name), []).append(float(v))
                    meta[(rid, name)] = {"label": m.get("label", name),
                                         "unit": m.get("unit", ""), "better": m.get("better")}
    return values, meta


def fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def table(labels: List[str], data: Dict[str, Dict[Key, List[float]]],
          meta: Dict[Key, Dict[str, Any]]) -> str:
    keys = sorted({k for d in data.values() for k in d},
                  key=lambda k: (int("".join(c for c in k[0] if c.isdigit()) or 0), k))
    last = labels[-1]
    head = ["row", "metric", *labels, *(f"{last} / {lab}" for lab in labels[:-1])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in keys:
        info = meta.get(k, {})
        unit = f" ({info['unit']})" if info.get("unit") else ""
        better = {"lower": " ↓", "higher": " ↑"}.get(info.get("better") or "", "")
        cells: List[str] = [k[0], f"{info.get('label', k[1])}{unit}{better}"]
        meds: Dict[str, Optional[float]] = {}
        for lab in labels:
            xs = data[lab].get(k, [])
            meds[lab] = statistics.median(xs) if xs else None
            cells.append(f"{fmt(meds[lab])} [{fmt(min(xs))} - {fmt(max(xs))}]"
                         if xs else "-")
        for lab in labels[:-1]:
            a, b = meds[last], meds[lab]
            cells.append(f"{a / b:.2f}" if a is not None and b else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", action="append", required=True,
                    help="NAME=DIR,DIR,... (run dirs of one checkout, in run order)")
    ap.add_argument("--out", help="write every value to this json")
    ap.add_argument("--md", help="write the table to this markdown file, with a header")
    args = ap.parse_args()
    labels: List[str] = []
    data: Dict[str, Dict[Key, List[float]]] = {}
    meta: Dict[Key, Dict[str, Any]] = {}
    dirs_of: Dict[str, List[str]] = {}
    for spec in args.label:
        name, _, dirs = spec.partition("=")
        labels.append(name)
        dirs_of[name] = dirs.split(",")
        data[name], m = load(dirs_of[name])
        meta.update(m)
    md = table(labels, data, meta)
    print(md)
    if args.md:
        runs = "; ".join(f"{lab}: {len(dirs_of[lab])} runs" for lab in labels)
        Path(args.md).write_text(
            "# vuer_sync across checkouts\n\nWritten by `benchmarks/compare.py` from interleaved"
            f" runs of `benchmarks/run.py` (the same harness for every checkout; {runs}).\n"
            "Each cell: median [min - max]; the ratios compare medians (↓ lower is better, so "
            "a ratio above 1 is worse; ↑ the reverse). Every value is in `compare.json`.\n\n"
            + md + "\n")
    if args.out:
        out = {"labels": labels, "runs": dirs_of,
               "values": {lab: {f"{k[0]}/{k[1]}": v for k, v in d.items()}
                          for lab, d in data.items()},
               "metrics": {f"{k[0]}/{k[1]}": v for k, v in meta.items()}}
        Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
