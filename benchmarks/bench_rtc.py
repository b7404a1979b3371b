"""vuer_sync.rtc vs vuer-rtc 0.0.2: edit+commit/s and receive/s as the journal grows.

For each journal size N (0, 1k, 10k, 100k) a store is first given N committed 1-op
messages from another client (our store: by receiving them; vuer-rtc: with
``GraphStore.fromServer``, one replay, since receiving them one by one is quadratic), then:

* ``edit+commit``: one ``vector3.set`` edit and a commit, repeated;
* ``receive``: one remote 1-op message whose Lamport time is the newest (the usual case);
* ``late receive`` (ours only): a remote message that sorts 100 messages back in the total
  order (re-folds the ops after it in the registers it touches).

Every loop is bounded by an iteration cap and a time budget; vuer-rtc's 10k/100k cases
take seconds per op, so they get at least one op and a budget, and its 100k case runs only
with ``--vuer-rtc-100k``.  Memory per node is measured with tracemalloc.

Usage::

    python benchmarks/bench_rtc.py            # full run (~1-2 min)
    python benchmarks/bench_rtc.py --smoke    # tiny sizes, a few seconds
    python benchmarks/bench_rtc.py --vuer-rtc-100k

Writes ``benchmarks/out/rtc.json`` (``rtc-smoke.json`` with ``--smoke``) and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from vuer_sync.rtc import CRDTMessage, create_graph  # noqa: E402

try:  # the reference implementation is optional
    import vuer_rtc  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    vuer_rtc = None

NODES = 100


# -- message factories --------------------------------------------------------------------------
def _insert_ops(spelling: str) -> List[Dict[str, Any]]:
    f = "otype" if spelling == "ours" else "ot"
    return [
        {f: "node.insert", "key": "", "path": "children",
         "value": {"key": f"n{i}", "tag": "Mesh", "position": [0, 0, 0], "hp": 0}}
        for i in range(NODES)
    ]


def _filler(i: int, lt: int, spelling: str, client: str = "filler") -> Dict[str, Any]:
    f = "otype" if spelling == "ours" else "ot"
    if i % 2:
        op = {f: "number.add", "key": f"n{i % NODES}", "path": "hp", "value": 1}
    else:
        op = {f: "vector3.set", "key": f"n{i % NODES}", "path": "position", "value": [i, 0, 0]}
    return {"id": f"{client}:{lt}", "client": client, "clock": {client: lt}, "lt": lt,
            "ts": 0.0, "seq": lt, "ops": [op]}


def _journal(n: int, spelling: str) -> List[Dict[str, Any]]:
    """Message dicts: one with the node inserts, then n - 1 one-op messages."""
    first = {"id": "filler:1", "client": "filler", "clock": {"filler": 1}, "lt": 1, "ts": 0.0,
             "seq": 1, "ops": _insert_ops(spelling)}
    return [first] + [_filler(i, i + 1, spelling) for i in range(1, n)]


# -- timing helper -----------------------------------------------------------------------------
def _rate(
    step: Callable[[int], None], max_iter: int, budget: float, min_iter: int = 1
) -> Dict[str, Any]:
    """Run ``step(i)`` until ``max_iter`` or ``budget`` seconds (at least ``min_iter``)."""
    gc.collect()
    t0 = time.perf_counter()
    n = 0
    while n < max_iter:
        step(n)
        n += 1
        if n >= min_iter and time.perf_counter() - t0 > budget:
            break
    dt = time.perf_counter() - t0
    return {"ops": n, "seconds": round(dt, 4), "per_s": float(f"{n / dt:.4g}") if dt else None,
            "ms_per_op": float(f"{1000 * dt / n:.4g}")}


# -- ours -----------------------------------------------------------------------------------------
def _ours_store(n: int):
    store = create_graph("me", epoch="")
    for d in _journal(max(n, 1), "ours"):
        store.receive(CRDTMessage(**{k: v for k, v in d.items()}))
    return store


def bench_ours(n: int, max_iter: int, budget: float) -> Dict[str, Any]:
    t0 = time.perf_counter()
    store = _ours_store(n)
    build = time.perf_counter() - t0
    res: Dict[str, Any] = {"journal": n, "build_s": round(build, 3),
                           "journal_len": len(store.get_state().graph.msgs)}

    def edit_commit(i: int) -> None:
        store.edit({"otype": "vector3.set", "key": f"n{i % NODES}", "path": "position",
                    "value": [i, 1, 2]})
        store.commit()

    res["edit_commit"] = _rate(edit_commit, max_iter, budget)
    base_lt = store.get_state().lt + 1
    msgs = [CRDTMessage(**_filler(i, base_lt + i, "ours", "remote")) for i in range(max_iter)]
    # remote seq numbers start at 1 for that session
    for j, m in enumerate(msgs):
        m.seq = j + 1
        m.id = f"remote:{j + 1}"

    def receive(i: int) -> None:
        store.receive(msgs[i])

    res["receive"] = _rate(receive, max_iter, budget)
    if n >= 200:
        # late: sorts ~100 filler messages back (lt ~ n - 100), from a third session
        late = []
        for j in range(min(max_iter, 2000)):
            d = _filler(j, max(n - 100, 2), "ours", "late")
            d["seq"], d["id"] = j + 1, f"late:{j + 1}"
            late.append(CRDTMessage(**d))

        def late_receive(i: int) -> None:
            store.receive(late[i])

        res["late_receive"] = _rate(late_receive, len(late), budget)
    return res


# -- vuer-rtc 0.0.2 -----------------------------------------------------------------------------
def _theirs_store(n: int):
    msgs = [vuer_rtc.CRDTMessage.fromDict(d) for d in _journal(max(n, 1), "theirs")]
    snap = vuer_rtc.Snapshot(graph=vuer_rtc.createEmptyGraph(), vectorClock={})
    return vuer_rtc.GraphStore.fromServer("me", snap, msgs)


def bench_theirs(n: int, max_iter: int, budget: float) -> Dict[str, Any]:
    t0 = time.perf_counter()
    store = _theirs_store(n)
    build = time.perf_counter() - t0
    res: Dict[str, Any] = {"journal": n, "build_s": round(build, 3),
                           "journal_len": len(store.getState().journal)}

    def edit_commit(i: int) -> None:
        store.edit({"ot": "vector3.set", "key": f"n{i % NODES}", "path": "position",
                    "value": [i, 1, 2]})
        store.commit()

    res["edit_commit"] = _rate(edit_commit, max_iter, budget)
    base_lt = store.getState().lt + 1
    msgs = [vuer_rtc.CRDTMessage.fromDict(_filler(i, base_lt + i, "theirs", "remote"))
            for i in range(max_iter)]

    def receive(i: int) -> None:
        store.receive(msgs[i])

    res["receive"] = _rate(receive, max_iter, budget)
    return res


# -- memory ---------------------------------------------------------------------------------------
def _node_msgs(count: int, spelling: str) -> List[Dict[str, Any]]:
    f = "otype" if spelling == "ours" else "ot"
    return [
        {"id": f"m:{i + 1}", "client": "m", "clock": {"m": i + 1}, "lt": i + 1, "ts": 0.0,
         "seq": i + 1, "uw": 1,
         "ops": [{f: "node.insert", "key": "", "path": "children",
                  "value": {"key": f"k{i}", "tag": "Mesh", "name": f"node {i}",
                            "position": [0.0, 1.0, 0.0], "opacity": 1.0}}]}
        for i in range(count)
    ]


def memory_per_node(count: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {"nodes": count,
                           "node": "tag, name, 2 properties (vector3, number), 1 insert message"}
    msgs = [CRDTMessage(**d) for d in _node_msgs(count, "ours")]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store = create_graph("me", epoch="")
    for m in msgs:
        store.receive(m)
    gc.collect()
    with_journal = tracemalloc.get_traced_memory()[0] - base
    store.compact()
    gc.collect()
    compacted = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    out["ours_bytes_per_node_with_journal"] = round(with_journal / count)
    out["ours_bytes_per_node_compacted"] = round(compacted / count)
    out["ours_journal_left"] = len(store.get_state().graph.msgs)
    if vuer_rtc is not None:
        tmsgs = [vuer_rtc.CRDTMessage.fromDict(d) for d in _node_msgs(count, "theirs")]
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        snap = vuer_rtc.Snapshot(graph=vuer_rtc.createEmptyGraph(), vectorClock={})
        tstore = vuer_rtc.GraphStore.fromServer("me", snap, tmsgs)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out["vuer_rtc_bytes_per_node_with_journal"] = round(used / count)
        del tstore
    return out


# -- driver ---------------------------------------------------------------------------------------
def _fmt(r: Optional[Dict[str, Any]], key: str) -> str:
    if r is None:
        return "skipped"
    v = r.get(key)
    if v is None:
        return "-"
    rate = f"{v['per_s']:,.0f}" if v["per_s"] >= 100 else f"{v['per_s']:.3g}"
    ms = v["ms_per_op"]
    per = f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1000:.3g} s"
    return f"{rate}/s ({per})"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    ap.add_argument("--vuer-rtc-100k", action="store_true",
                    help="also run vuer-rtc at 100k (about 30 s and 500 MB)")
    ap.add_argument("--out", default=None,
                    help="JSON path (default benchmarks/out/rtc.json, rtc-smoke.json with --smoke)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(HERE / "out" / ("rtc-smoke.json" if args.smoke else "rtc.json"))

    if args.smoke:
        sizes, theirs_max, max_iter, budget, mem_nodes = [0, 100, 1000], 1000, 300, 0.2, 500
        their_budget = 0.3
    else:
        sizes, theirs_max, max_iter, budget = [0, 1000, 10_000, 100_000], 10_000, 5000, 1.0
        mem_nodes = 10_000
        their_budget = 3.0
    if args.vuer_rtc_100k:
        theirs_max = 100_000

    rows = []
    for n in sizes:
        ours = bench_ours(n, max_iter, budget)
        theirs = None
        if vuer_rtc is not None and n <= theirs_max:
            theirs = bench_theirs(n, max_iter, their_budget)
        rows.append({"journal": n, "ours": ours, "vuer_rtc": theirs})
        print(f"journal {n:>7}: ours edit+commit {_fmt(ours, 'edit_commit')}, "
              f"receive {_fmt(ours, 'receive')}; vuer-rtc edit+commit "
              f"{_fmt(theirs, 'edit_commit')}, receive {_fmt(theirs, 'receive')}", flush=True)
    mem = memory_per_node(mem_nodes)

    print()
    head = (f"{'journal':>8} | {'op':<12} | {'vuer_sync.rtc':>24} | {'vuer-rtc 0.0.2':>24} | "
            f"{'ratio':>8}")
    print(head)
    print("-" * len(head))
    for row in rows:
        for key, label in (("edit_commit", "edit+commit"), ("receive", "receive"),
                           ("late_receive", "late recv")):
            o = row["ours"].get(key)
            if o is None:
                continue
            t = row["vuer_rtc"].get(key) if row["vuer_rtc"] else None
            ratio = f"{o['per_s'] / t['per_s']:,.0f}x" if t and t["per_s"] else "-"
            tv = _fmt(row["vuer_rtc"], key) if row["vuer_rtc"] else (
                "skipped" if key != "late_receive" else "-")
            print(f"{row['journal']:>8} | {label:<12} | {_fmt(row['ours'], key):>24} | "
                  f"{tv:>24} | {ratio:>8}")
    print()
    print(f"memory per node ({mem['nodes']} nodes, {mem['node']}):")
    print(f"  vuer_sync.rtc: {mem['ours_bytes_per_node_with_journal']} B with its journal entry, "
          f"{mem['ours_bytes_per_node_compacted']} B after compact()")
    if "vuer_rtc_bytes_per_node_with_journal" in mem:
        print(f"  vuer-rtc 0.0.2: {mem['vuer_rtc_bytes_per_node_with_journal']} B with its "
              f"journal entry")

    result = {
        "benchmark": "rtc",
        "smoke": args.smoke,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "vuer_rtc": getattr(vuer_rtc, "__version__", "0.0.2") if vuer_rtc else None,
        "budget_s": {"ours": budget, "vuer_rtc": their_budget},
        "rows": rows,
        "memory": mem,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
