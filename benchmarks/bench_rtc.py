"""vuer_sync.rtc vs vuer-rtc 0.0.2: edit+commit/s and receive/s as the journal grows.

For each journal size N (0, 1k, 10k, 100k) a store is first given N committed 1-op
messages from another client (our store: by receiving them, each message dict made just
before it is received, as a relay delivers them; vuer-rtc: with
``GraphStore.fromServer``, one replay, since receiving them one by one is quadratic), then:

* ``edit+commit``: one ``vector3.set`` edit and a commit, repeated;
* ``receive``: one remote 1-op message whose Lamport time is the newest (the usual case);
* ``late receive`` (ours only): a remote message that sorts 100 messages back in the total
  order (re-folds the ops after it in the registers it touches).

Ours runs a fixed number of ops per case, ``--reps`` times (default 3), the journal sizes
interleaved and their order alternating (0 → 100k, then 100k → 0, ...); each figure is the
median with [min-max] of the repetitions, in ops per second of wall time, of CPU time
(``process_time``: less sensitive to other processes on a shared machine) and of CPU time
outside the cyclic GC's collections.  The GC runs as usual; its collections (count, CPU
time) are reported per case.  *Flat* (the goal) means: the median at the largest journal
is >= 90% of the one at journal 0, for edit+commit and for receive, in ops per second of
wall time, the GC's time included (see :func:`flatness`; the figure outside the GC is
reported beside it).
vuer-rtc runs once per size (in the first repetition; its 10k case takes seconds per op)
with a time budget.

The journal is made one message at a time (:func:`_journal` is a generator). It used to
be a list of all N message dicts, received and then dropped: the store keeps parts of each
message (its id, its clock dict, its numbers), so dropping the rest left the heap of a
100k journal full of holes, and the later allocations of that case (the messages it
receives, the records it makes) landed in them, scattered over ~100 MB instead of packed
together. A process that receives its journal from a relay frees each message's leftovers
right away and reuses that memory for the next one. Measured with the GC off, both stores
in one process, receives in alternating chunks of 500 (rate of the best and of the 10th
percentile chunk), journal 100k over 1k: 0.89-0.98 with the list (3 runs), 0.97-1.00 with
the generator (2 runs); with the GC on, the difference was within the noise. cachegrind
(4 MB last level, no TLB model) counts the same instructions and misses per receive at
both journals either way, so the cost is presumably in what it does not model (the 1 MB
L2, the TLB).

``--relay`` adds the rows of the durable relay (``app.rtc`` on a Redis journal, a throwaway
``redis-server``):

* ``relay edits/s``: two clients on each of two nodes (separate processes, one Redis
  stream) edit one room, against the same four clients on one process (in-memory journal);
  median of 3 interleaved repetitions, with min-max;
* ``late join``: a room whose journal had 100k entries (1k-node live graph): a client
  joining a running node, and a node that starts (snapshot + tail) plus a client joining it.

vuer-rtc's loops are bounded by an iteration cap and a time budget: its 10k/100k cases
take seconds per op, so they get at least one op and a budget, and its 100k case runs only
with ``--vuer-rtc-100k``.  Memory per node is measured with tracemalloc.

Usage::

    python benchmarks/bench_rtc.py            # full run (~1-2 min)
    python benchmarks/bench_rtc.py --reps 5   # more repetitions of our cases
    python benchmarks/bench_rtc.py --smoke    # tiny sizes, a few seconds
    python benchmarks/bench_rtc.py --sizes 0,100000   # only these journal sizes
    python benchmarks/bench_rtc.py --vuer-rtc-100k
    python benchmarks/bench_rtc.py --relay    # also the Redis relay rows (needs redis-server)

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
from typing import Any, Callable, Dict, Iterator, List, Optional

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


def _journal(n: int, spelling: str) -> Iterator[Dict[str, Any]]:
    """Message dicts: one with the node inserts, then n - 1 one-op messages, each made when
    it is asked for (as a relay delivers them: see the module docstring)."""
    yield {"id": "filler:1", "client": "filler", "clock": {"filler": 1}, "lt": 1, "ts": 0.0,
           "seq": 1, "ops": _insert_ops(spelling)}
    for i in range(1, n):
        yield _filler(i, i + 1, spelling)


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


FLAT_RATIO = 0.9  # the flatness criterion: largest journal >= 90% of journal 0 (wall medians)


class _GcWatch:
    """Counts the cyclic GC's collections (per generation) and the CPU time they take
    (``process_time``: a collection runs on the thread that triggered it, the only one)."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = 0.0
        self._t0 = 0.0

    def __call__(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.process_time()
            self.counts[info["generation"]] += 1
        else:
            self.seconds += time.process_time() - self._t0

    def __enter__(self) -> _GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        gc.callbacks.remove(self)


def _fixed(step: Callable[[int], None], count: int) -> Dict[str, Any]:
    """Run ``step(i)`` ``count`` times (after a full collection): wall and CPU time, GC."""
    gc.collect()
    with _GcWatch() as watch:
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(count):
            step(i)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    work = cpu - watch.seconds
    return {"ops": count, "seconds": dt, "cpu_seconds": cpu,
            "per_s": count / dt if dt else None, "cpu_per_s": count / cpu if cpu else None,
            "work_per_s": count / work if work > 0 else None,
            "gc_full": watch.counts[2], "gc_ms": 1000 * watch.seconds}


def _g(x: float) -> float:
    return float(f"{x:.4g}")


def _summary(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Median and [min, max] of the repetitions of one case (``per_s``: wall time,
    ``cpu_per_s``: CPU time, ``work_per_s``: CPU time outside the GC's collections;
    ``ms_per_op`` from the CPU median)."""

    def med(vals: List[float]) -> float:
        vals = sorted(vals)
        mid = len(vals) // 2
        return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2

    wall = [r["per_s"] for r in runs if r["per_s"]]
    cpu = [r["cpu_per_s"] for r in runs if r["cpu_per_s"]]
    work = [r["work_per_s"] for r in runs if r["work_per_s"]] or cpu
    return {
        "ops": runs[0]["ops"], "reps": len(runs),
        "per_s": _g(med(wall)), "per_s_range": [_g(min(wall)), _g(max(wall))],
        "cpu_per_s": _g(med(cpu)), "cpu_per_s_range": [_g(min(cpu)), _g(max(cpu))],
        "work_per_s": _g(med(work)), "work_per_s_range": [_g(min(work)), _g(max(work))],
        "ms_per_op": _g(1000 / med(cpu)),
        "runs_per_s": [_g(v) for v in wall], "runs_cpu_per_s": [_g(v) for v in cpu],
        "runs_work_per_s": [_g(v) for v in work],
        "gc_full": [r["gc_full"] for r in runs], "gc_ms": [round(r["gc_ms"], 1) for r in runs],
    }


# -- ours -----------------------------------------------------------------------------------------
def _ours_store(n: int):
    store = create_graph("me", epoch="")
    for d in _journal(max(n, 1), "ours"):
        store.receive(CRDTMessage(**{k: v for k, v in d.items()}))
    return store


def bench_ours(n: int, count: int) -> Dict[str, Any]:
    """One repetition at journal ``n``: (from journal 200 on) up to 2000 late receives, then
    ``count`` edit+commits and ``count`` receives; see :func:`_fixed`."""
    t0 = time.perf_counter()
    store = _ours_store(n)
    build = time.perf_counter() - t0
    res: Dict[str, Any] = {"journal": n, "build_s": round(build, 3),
                           "journal_len": len(store.get_state().graph.msgs)}

    if n >= 200:
        # late: sorts ~100 filler messages back (lt ~ n - 100), from a third session;
        # first, while the journal's newest 100 messages are still the filler's
        late = []
        for j in range(min(count, 2000)):
            d = _filler(j, max(n - 100, 2), "ours", "late")
            d["seq"], d["id"] = j + 1, f"late:{j + 1}"
            late.append(CRDTMessage(**d))

        def late_receive(i: int) -> None:
            store.receive(late[i])

        res["late_receive"] = _fixed(late_receive, len(late))

    def edit_commit(i: int) -> None:
        store.edit({"otype": "vector3.set", "key": f"n{i % NODES}", "path": "position",
                    "value": [i, 1, 2]})
        store.commit()

    res["edit_commit"] = _fixed(edit_commit, count)
    base_lt = store.get_state().lt + 1
    msgs = [CRDTMessage(**_filler(i, base_lt + i, "ours", "remote")) for i in range(count)]
    # remote seq numbers start at 1 for that session
    for j, m in enumerate(msgs):
        m.seq = j + 1
        m.id = f"remote:{j + 1}"

    def receive(i: int) -> None:
        store.receive(msgs[i])

    res["receive"] = _fixed(receive, count)
    return res


def bench_ours_reps(sizes: List[int], count: int, reps: int,
                    between: Optional[Callable[[int, int], None]] = None
                    ) -> Dict[int, Dict[str, Any]]:
    """``reps`` interleaved repetitions over ``sizes`` (the order alternates each
    repetition); ``between(rep, n)`` runs after each case (vuer-rtc's, in the first).
    Returns, per size, :func:`_summary` of each measured op and the build times."""
    runs: Dict[int, List[Dict[str, Any]]] = {n: [] for n in sizes}
    bench_ours(min(sizes[-1], 1000), max(count // 10, 100))  # warm-up, not kept: the first
    for rep in range(reps):  # case of a process is slower (cold caches, new code paths)
        for n in (sizes if rep % 2 == 0 else list(reversed(sizes))):
            r = bench_ours(n, count)
            runs[n].append(r)
            ec, rc = r["edit_commit"], r["receive"]
            print(f"  rep {rep + 1}/{reps} journal {n:>7}: edit+commit "
                  f"{ec['work_per_s']:,.0f}/s outside the GC ({ec['cpu_per_s']:,.0f}/s "
                  f"CPU, {ec['gc_full']} full GC {ec['gc_ms']:.0f} ms), receive "
                  f"{rc['work_per_s']:,.0f}/s ({rc['cpu_per_s']:,.0f}/s, {rc['gc_full']} "
                  f"full GC {rc['gc_ms']:.0f} ms)", flush=True)
            if between is not None:
                between(rep, n)
    out: Dict[int, Dict[str, Any]] = {}
    for n, rs in runs.items():
        row: Dict[str, Any] = {"journal": n, "journal_len": rs[0]["journal_len"],
                               "build_s": sorted(r["build_s"] for r in rs)[len(rs) // 2]}
        for key in ("edit_commit", "receive", "late_receive"):
            if key in rs[0]:
                row[key] = _summary([r[key] for r in rs])
        out[n] = row
    return out


def flatness(rows: List[Dict[str, Any]], ratio: float = FLAT_RATIO) -> Dict[str, Any]:
    """The flatness criterion from the medians: for edit+commit and receive, the median at
    the largest journal over the one at journal 0 must be >= ``ratio``, in ops per second
    of wall time, the cyclic GC's time included (``wall_ratio``, what a user's clock sees).
    Beside it: ``cpu_ratio`` (CPU time, the GC included) and ``work_ratio`` (CPU time
    outside the GC's collections, the criterion before a journal entry was made to keep a
    single GC-tracked object).

    Why the GC's time can be judged: CPython starts a full collection when the tracked
    objects that survived the young generations grew by a quarter of the long-lived ones,
    and a full collection walks every tracked object, so its cost per op is about
    4 x (tracked objects each op leaves) x (cost of walking one), whatever the heap's
    size. It is flat as long as the journal adds no tracked objects of its own beyond the
    one per entry that each op creates (``tests/rtc/test_rtc_gc.py``); with five per
    entry (the messages kept as they came) it was not: 77% wall for edit+commit at 100k.
    A fixed window still holds a whole number of full collections (at journal 0 a few
    short ones, at 100k one long one or none), hence the spread of the repetitions.

    >>> row = lambda n, e, r: {"journal": n, "ours": {
    ...     "edit_commit": {"work_per_s": e, "cpu_per_s": e, "per_s": e},
    ...     "receive": {"work_per_s": r, "cpu_per_s": r, "per_s": r}}}
    >>> f = flatness([row(0, 100, 200), row(9, 95, 150)])
    >>> f["met"], f["judged"], f["edit_commit"]["wall_ratio"], f["receive"]["wall_ratio"]
    (False, 'wall_ratio', 0.95, 0.75)
    """
    first, last = rows[0], rows[-1]
    out: Dict[str, Any] = {"criterion": f"ops/s (wall time, the GC's included, median) at "
                                        f"journal {last['journal']:,} >= {ratio:.0%} of "
                                        f"journal {first['journal']:,}, edit+commit and "
                                        f"receive",
                           "judged": "wall_ratio",
                           "ratio": ratio, "from": first["journal"], "to": last["journal"]}
    met = True
    for key in ("edit_commit", "receive"):
        a, b = first["ours"][key], last["ours"][key]
        out[key] = {"work_ratio": round(b["work_per_s"] / a["work_per_s"], 3),
                    "cpu_ratio": round(b["cpu_per_s"] / a["cpu_per_s"], 3),
                    "wall_ratio": round(b["per_s"] / a["per_s"], 3)}
        met = met and out[key]["wall_ratio"] >= ratio
    out["met"] = met
    return out


def rtc_goals(rows: List[Dict[str, Any]], flat: Dict[str, Any], reps: int
              ) -> List[Dict[str, Any]]:
    """The issue's throughput goals, judged from the medians (read by ``report.py``)."""
    goals: List[Dict[str, Any]] = []
    ratios = []
    for row in rows:
        t = row.get("vuer_rtc")
        if not t:
            continue
        for key in ("edit_commit", "receive"):
            tv, ov = t[key].get("per_s"), row["ours"][key]["per_s"]
            if tv and ov:
                ratios.append((ov / tv, row["journal"], key))
    goal20 = "rtc commit/receive >= 20x vuer-rtc 0.0.2 (issue 21)"
    if ratios:
        worst = min(ratios)
        journals = ", ".join(f"{j:,}" for j in sorted({r[1] for r in ratios}))
        goals.append({"goal": goal20, "met": worst[0] >= 20,
                      "evidence": f"lowest ratio {worst[0]:,.0f}x ({worst[2]} at journal "
                                  f"{worst[1]:,}; wall-time medians of {reps} repetitions vs "
                                  f"one vuer-rtc run, journals {journals})"})
    else:
        goals.append({"goal": goal20, "met": None, "evidence": "vuer-rtc not installed"})

    def part(key: str, label: str) -> str:
        a, b = rows[0]["ours"][key], rows[-1]["ours"][key]
        f = flat[key]
        return (f"{label} {a['per_s']:,.0f} [{a['per_s_range'][0]:,.0f}-"
                f"{a['per_s_range'][1]:,.0f}] -> {b['per_s']:,.0f} "
                f"[{b['per_s_range'][0]:,.0f}-{b['per_s_range'][1]:,.0f}]/s wall "
                f"({f['wall_ratio']:.0%}; CPU time {f['cpu_ratio']:.0%}, CPU time outside "
                f"the GC {f['work_ratio']:.0%})")

    goals.append({"goal": f"rtc throughput flat from journal {flat['from']:,} to "
                          f"{flat['to']:,} (issue 21)",
                  "met": flat["met"],
                  "evidence": f"{flat['criterion']}: {part('edit_commit', 'edit+commit')}; "
                              f"{part('receive', 'receive')}; medians of {reps} interleaved "
                              f"repetitions [min-max]"})
    return goals


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


# -- the durable relay (app.rtc on Redis) ------------------------------------------------------
def serve_node(journal: str, room: str) -> int:
    """``--serve-node``: one server process (``app.rtc`` on ``journal``) until stdin closes."""
    from vuer_sync import Vuer

    app = Vuer(port=0, rtc_journal=journal, room=room)
    app.start(block=False)
    _ = app.rtc
    print(f"READY {app.port}", flush=True)
    sys.stdin.read()
    app.stop()
    return 0


def _spawn_node(journal: str, room: str) -> Any:
    import subprocess

    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-node",
                             journal, room], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY"):
            return proc, int(line.split()[1])
    raise RuntimeError("bench node did not start")


def _edit_burst(ports: List[int], per_client: int) -> Dict[str, Any]:
    """Two clients per port; each commits ``per_client`` 1-op messages (``number.add`` on a
    node of its own) as fast as it can. Time until every message is acked and every client
    sees every edit."""
    import threading

    from vuer_sync import VuerClient

    clients = [VuerClient(f"ws://127.0.0.1:{p}").connect() for p in ports for _ in range(2)]
    try:
        rtcs = [c.rtc(f"c{i}").join() for i, c in enumerate(clients)]
        for i in range(len(rtcs)):  # one node per client: edits of one register by several
            rtcs[0].edit({"otype": "node.insert", "key": "", "path": "children",  # clients
                          "value": {"key": f"own{i}", "hp": 0}})  # at once measure the CRDT
        rtcs[0].commit()
        for r in rtcs:
            r.wait_for(lambda g: len(g.nodes) == len(rtcs), timeout=30)
        want = per_client * len(rtcs)

        def work(i: int, r: Any) -> None:
            for _ in range(per_client):
                r.edit({"otype": "number.add", "key": f"own{i}", "path": "hp", "value": 1})
                r.commit()
            r.wait_acked(120)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=work, args=(i, r)) for i, r in enumerate(rtcs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        for r in rtcs:
            r.wait_for(lambda g: all(g.nodes[f"own{i}"].get_property("hp") == per_client
                                     for i in range(len(rtcs))), timeout=120)
        dt = time.perf_counter() - t0
        return {"edits": want, "seconds": round(dt, 4), "per_s": round(want / dt, 1)}
    finally:
        for c in clients:
            c.close()


class _InProcessNode:
    """A node in this process (the smoke test's quick variant of ``_spawn_node``)."""

    def __init__(self, journal: str, room: str):
        from vuer_sync import Vuer

        self.app = Vuer(port=0, rtc_journal=journal, room=room).start(block=False)
        _ = self.app.rtc
        self.stdin = self

    def close(self) -> None:
        self.app.stop()

    def wait(self, timeout: float) -> None:
        pass


def bench_relay_edits(url: str, per_client: int, reps: int, in_process: bool = False
                      ) -> Dict[str, Any]:
    """Edits/s: 2 nodes x 2 clients on the Redis journal vs 4 clients on one process
    (server processes of their own; ``in_process``: Vuer apps in this process)."""
    runs: Dict[str, List[float]] = {"one_process": [], "two_nodes_redis": []}
    for rep in range(reps):  # interleaved
        for mode in ("one_process", "two_nodes_redis"):
            room = f"bench-{mode}-{rep}-{time.time_ns()}"
            journal = "memory" if mode == "one_process" else url
            count = 1 if mode == "one_process" else 2
            procs: List[Any] = []
            try:
                for _ in range(count):
                    if in_process:
                        node = _InProcessNode(journal, room)
                        procs.append((node, node.app.port))
                    else:
                        procs.append(_spawn_node(journal, room))
                ports = [p for _, p in procs]
                r = _edit_burst(ports * (2 if len(ports) == 1 else 1), per_client)
                runs[mode].append(r["per_s"])
            finally:
                for proc, _ in procs:
                    proc.stdin.close()
                    proc.wait(30)
    out: Dict[str, Any] = {"clients": 4, "edits_per_client": per_client, "reps": reps}
    for mode, vals in runs.items():
        vals.sort()
        out[mode] = {"median_per_s": vals[len(vals) // 2], "min": vals[0], "max": vals[-1],
                     "runs": vals}
    return out


def _fill_room(url: str, room: str, entries: int, nodes: int) -> None:
    """Write a room's journal straight to its stream: one writer session inserts ``nodes``
    nodes then edits them until ``entries`` records, then leaves (undo window 1)."""
    from vuer_sync.fleet.link import connect
    from vuer_sync.fleet.rtc_journal import RtcKeys, encode_record

    r = connect(url)
    keys = RtcKeys(room)
    recs: List[Dict[str, Any]] = [{"k": "join", "c": "writer"}]
    for i in range(entries - 2):
        if i < nodes:
            op = {"otype": "node.insert", "key": "", "path": "children",
                  "value": {"key": f"n{i}", "tag": "Mesh", "position": [0, 0, 0], "hp": 0}}
        elif i % 2:
            op = {"otype": "number.add", "key": f"n{i % nodes}", "path": "hp", "value": 1}
        else:
            op = {"otype": "vector3.set", "key": f"n{i % nodes}", "path": "position",
                  "value": [i, 0, 0]}
        msg = {"id": f"w:{i + 1}", "client": "w", "lt": i + 1, "seq": i + 1, "uw": 1,
               "ts": 0.0, "ops": [op]}
        recs.append({"k": "crdt", "c": "writer", "m": {"mtype": "crdt", "msg": msg}})
    recs.append({"k": "leave", "c": "writer"})
    for start in range(0, len(recs), 2000):
        pipe = r.pipeline(transaction=False)
        for j, rec in enumerate(recs[start:start + 2000], start + 1):
            pipe.xadd(keys.log, encode_record("filler", j, rec))
        pipe.execute()
    r.close()


def bench_late_join(url: str, entries: int, nodes: int) -> Dict[str, Any]:
    """Late join into a room whose journal had ``entries`` records (``nodes`` live)."""
    from vuer_sync import Vuer, VuerClient

    room = f"late-{time.time_ns()}"
    _fill_room(url, room, entries, nodes)
    res: Dict[str, Any] = {"journal_entries": entries, "live_nodes": nodes}
    t0 = time.perf_counter()
    first = Vuer(port=0, rtc_journal=url, room=room).start(block=False)
    _ = first.rtc  # replays the whole stream once (no snapshot yet): setup, not timed below
    first.rtc.journal.sync(600)
    res["first_node_replay_s"] = round(time.perf_counter() - t0, 3)
    first.rtc.journal.snapshot_now(60)
    apps = [first]
    try:
        def join(port: int) -> float:
            t = time.perf_counter()
            with VuerClient(f"ws://127.0.0.1:{port}") as c:
                g = c.rtc("late").join(60).graph
                assert len(g.live_nodes()) == nodes, len(g.live_nodes())
                return time.perf_counter() - t

        joins = sorted(join(first.port) for _ in range(3))
        res["client_join_s"] = round(joins[1], 4)
        res["client_join_range_s"] = [round(joins[0], 4), round(joins[-1], 4)]
        loads, totals = [], []
        for _ in range(3):  # a node that starts: snapshot + tail, then a client joins it
            t = time.perf_counter()
            node = Vuer(port=0, rtc_journal=url, room=room).start(block=False)
            try:
                _ = node.rtc
                loads.append(time.perf_counter() - t)
                totals.append(loads[-1] + join(node.port))
                res["snapshots_loaded"] = node.rtc.journal.stats["snapshots_loaded"]
                res["tail_applied"] = node.rtc.journal.stats["applied"]
            finally:
                node.stop()
        loads.sort()
        totals.sort()
        res["node_start_load_s"] = round(loads[1], 4)
        res["node_start_and_client_join_s"] = round(totals[1], 4)
        res["node_start_and_client_join_range_s"] = [round(totals[0], 4),
                                                     round(totals[-1], 4)]
        snap = len(first.rtc.journal_dump())
        res["snapshot_bytes"] = snap
    finally:
        for a in apps:
            a.stop()
    return res


def bench_relay(smoke: bool) -> Dict[str, Any]:
    from vuer_sync.fleet import LocalRedis

    with LocalRedis() as redis:
        edits = bench_relay_edits(redis.url, 30 if smoke else 500, 3)
        late = bench_late_join(redis.url, 2000 if smoke else 100_000, 100 if smoke else 1000)
    return {"edits": edits, "late_join": late}


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
    ap.add_argument("--relay", action="store_true",
                    help="also the durable relay rows (app.rtc on Redis; needs redis-server)")
    ap.add_argument("--reps", type=int, default=3,
                    help="interleaved repetitions of our cases (default 3)")
    ap.add_argument("--sizes", default=None,
                    help="comma-separated journal sizes instead of the default ones "
                         "(e.g. 0,100000: a quick flatness check)")
    ap.add_argument("--out", default=None,
                    help="JSON path (default benchmarks/out/rtc.json, rtc-smoke.json with --smoke)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(HERE / "out" / ("rtc-smoke.json" if args.smoke else "rtc.json"))

    if args.smoke:
        sizes, theirs_max, count, mem_nodes = [0, 100, 1000], 1000, 300, 500
        max_iter, their_budget = 300, 0.3
    else:
        sizes, theirs_max, count = [0, 1000, 10_000, 100_000], 10_000, 30_000
        max_iter, their_budget, mem_nodes = 5000, 3.0, 10_000
    if args.sizes:
        sizes = sorted({int(x) for x in args.sizes.split(",")})
    if args.vuer_rtc_100k:
        theirs_max = 100_000
    relay = bench_relay(args.smoke) if args.relay else None

    theirs_by_n: Dict[int, Optional[Dict[str, Any]]] = {n: None for n in sizes}

    def theirs_case(rep: int, n: int) -> None:
        if rep == 0 and vuer_rtc is not None and n <= theirs_max:
            theirs_by_n[n] = bench_theirs(n, max_iter, their_budget)
            t = theirs_by_n[n]
            print(f"  vuer-rtc journal {n:>7}: edit+commit {_fmt(t, 'edit_commit')}, "
                  f"receive {_fmt(t, 'receive')}", flush=True)

    ours_by_n = bench_ours_reps(sizes, count, args.reps, theirs_case)
    rows = [{"journal": n, "ours": ours_by_n[n], "vuer_rtc": theirs_by_n[n]} for n in sizes]
    flat = flatness(rows)
    goals = rtc_goals(rows, flat, args.reps)
    if args.smoke:  # 300-op windows and a 1k journal say nothing about flatness
        goals[-1]["met"] = None
        goals[-1]["evidence"] = "smoke run, not judged: " + goals[-1]["evidence"]
    mem = memory_per_node(mem_nodes)

    print()
    print(f"vuer_sync.rtc: {count} ops per case, median of {args.reps} interleaved repetitions "
          f"[min-max], ops/s of CPU time outside the GC; then of all CPU time and of wall "
          f"time (medians); vuer-rtc: one run, wall time")
    head = (f"{'journal':>8} | {'op':<12} | {'vuer_sync.rtc (outside GC)':>30} | {'cpu':>8} | "
            f"{'wall':>8} | {'vuer-rtc 0.0.2':>24} | {'ratio':>8}")
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
            ours = (f"{o['work_per_s']:,.0f} [{o['work_per_s_range'][0]:,.0f}-"
                    f"{o['work_per_s_range'][1]:,.0f}]/s")
            print(f"{row['journal']:>8} | {label:<12} | {ours:>30} | {o['cpu_per_s']:>8,.0f} | "
                  f"{o['per_s']:>8,.0f} | {tv:>24} | {ratio:>8}")
    print()
    for g in goals:
        mark = {True: "met", False: "NOT MET"}.get(g["met"], "not measured")
        print(f"goal: {g['goal']}: {mark} ({g['evidence']})")
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
        "reps": args.reps,
        "ops_per_case": count,
        "flatness": flat,
        "goals": goals,
        "budget_s": {"vuer_rtc": their_budget},
        "rows": rows,
        "memory": mem,
        "relay": relay,
    }
    if relay is not None:
        e, lj = relay["edits"], relay["late_join"]
        print(f"\nrelay edits/s (4 clients, {e['edits_per_client']} 1-op commits each, median "
              f"of {e['reps']} interleaved [min-max]):")
        for mode in ("one_process", "two_nodes_redis"):
            m = e[mode]
            print(f"  {mode:<16} {m['median_per_s']:>9,.0f}/s [{m['min']:,.0f}-{m['max']:,.0f}]")
        print(f"late join, journal {lj['journal_entries']:,} entries, {lj['live_nodes']} live "
              f"nodes (median of 3): client joins a node {lj['client_join_s'] * 1000:.0f} ms; "
              f"a node starts (snapshot + tail) {lj['node_start_load_s'] * 1000:.0f} ms, + a "
              f"client joins it {lj['node_start_and_client_join_s'] * 1000:.0f} ms "
              f"[{lj['node_start_and_client_join_range_s'][0] * 1000:.0f}-"
              f"{lj['node_start_and_client_join_range_s'][1] * 1000:.0f}]")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-node":
        sys.exit(serve_node(sys.argv[2], sys.argv[3]))
    main()
