"""The report of ``run.py``: ``RESULTS.md`` (the table, the goals, what each row measures, the
notes, the other benchmarks) from the results dictionary that ``results.json`` holds, so that
``run.py --render`` can rewrite it from a saved run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from common import IMPLS
from rows import ROWS

# -- numbers ---------------------------------------------------------------------------------


def ratio(ours: Any, other: Any, better: Optional[str], floor: float = 0.0
          ) -> Optional[float]:
    """vuer_sync against another server, stated so that > 1 means vuer_sync is better.
    Values below ``floor`` (the measurement's resolution) count as ``floor``."""
    if better is None or not _num(ours) or not _num(other):
        return None
    ours, other = max(ours, floor), max(other, floor)
    if better == "lower":
        if ours <= 0:
            return None if other <= 0 else math.inf
        return other / ours
    if other <= 0:
        return None if ours <= 0 else math.inf
    return ours / other


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v).strip().splitlines()[0].replace("|", "/") if str(v).strip() else "—"
    if math.isinf(v):
        return "∞"
    a = abs(v)
    if a >= 1e5:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_spread(v: Any, spread: Optional[List[float]]) -> str:
    """A median with its repetitions' min-max beside it: ``5.43 [5.1–6.0]``."""
    if not spread or not _num(v):
        return fmt(v)
    lo, hi = spread
    return f"{fmt(v)} [{fmt(lo)}–{fmt(hi)}]"


def fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return ""
    if math.isinf(r):
        return "∞"
    return f"**{r:.2f}x**" if r >= 1 else f"{r:.2f}x"


# -- goals -----------------------------------------------------------------------------------


def goals(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = res["rows"]

    def v(rid: str, m: str, impl: str) -> Any:
        return rows.get(rid, {}).get("metrics", {}).get(m, {}).get("values", {}).get(impl)

    out = []

    def add(goal: str, ok: Optional[bool], evidence: str) -> None:
        out.append({"goal": goal, "met": ok, "evidence": evidence})

    def both(a: Any, b: Any, pred: Callable[[float, float], bool]) -> Optional[bool]:
        return pred(a, b) if _num(a) and _num(b) else None

    s, o = v("4", "s2c_cpu_ms_per_MB", "vuer_sync"), v("4", "s2c_cpu_ms_per_MB", "vuer")
    c, oc = v("4", "c2s_mid_cpu_ms_per_MB", "vuer_sync"), v("4", "c2s_mid_cpu_ms_per_MB", "vuer")
    ok1, ok2 = both(s, o, lambda a, b: a <= b), both(c, oc, lambda a, b: a <= b)
    add("server CPU per MB <= Vuer's, both directions",
        None if ok1 is None or ok2 is None else ok1 and ok2,
        f"server->client {fmt(s)} vs {fmt(o)} ms/MB (row 4, big); client->server "
        f"{fmt(c)} vs {fmt(oc)} ms/MB (3 MiB; Vuer rejects the big upload: "
        f"{v('4', 'c2s_cpu_ms_per_MB', 'vuer')})")
    a, b = v("2", "s2c_msgs_per_s", "vuer_sync"), v("2", "s2c_msgs_per_s", "vuer")
    a2, b2 = v("2", "c2s_msgs_per_s", "vuer_sync"), v("2", "c2s_msgs_per_s", "vuer")
    r1, r2 = ratio(a, b, "higher"), ratio(a2, b2, "higher")
    add("small-message throughput >= 2x Vuer's",
        None if r1 is None or r2 is None else r1 >= 2 and r2 >= 2,
        f"server->client {fmt(r1)}x, client->server {fmt(r2)}x (row 2)")
    p, q = v("1", "median_us", "vuer_sync"), v("1", "median_us", "viser")
    p8, q8 = v("8a", "call_median_us", "vuer_sync"), v("8a", "call_median_us", "viser")
    add("producer call cost <= 1/3 of viser's",
        both(p, q, lambda x, y: x <= y / 3),
        f"row 1 median {fmt(p)} vs {fmt(q)} µs ({fmt(ratio(p, q, 'lower'))}x); row 8a median "
        f"{fmt(p8)} vs {fmt(q8)} µs ({fmt(ratio(p8, q8, 'lower'))}x)")
    r, rv = v("3", "p50_us", "vuer_sync"), v("3", "p50_us", "vuer")
    w, wv = v("3b", "p50_us", "vuer_sync"), v("3b", "p50_us", "vuer")
    raw_ok, ws_ok = both(r, rv, lambda a, b: a <= 100 and a < b), \
        both(w, wv, lambda a, b: a <= 100 and a < b)
    add("RPC round trip p50 <= 100 µs and below Vuer's, with both peers",
        None if raw_ok is None or ws_ok is None else raw_ok and ws_ok,
        f"raw peer {fmt(r)} vs Vuer {fmt(rv)} µs (row 3); `websockets` sync client "
        f"{fmt(w)} vs {fmt(wv)} µs (row 3b)")
    lp = v("5", "p99_ms", "vuer_sync")
    floor = res.get("external", {}).get("bench_lateness_floor.py", {}).get("json", {})
    floor = floor.get("lateness_floor.json") or floor.get("lateness_floor-smoke.json") or {}
    floor_note = ""
    if isinstance(floor, dict) and "thread" in floor:
        chunked = floor.get("thread_chunked", {}).get("p99_ms")
        floor_note = (f"; with no server at all (`bench_lateness_floor.py`: plain `sendall` of"
                      f" 12 MB blobs to a draining process): "
                      f"{fmt(floor['thread']['p99_ms'])} ms from a thread of the loop's process"
                      f" writing each blob in one call, {fmt(chunked)} ms writing 512 KiB per "
                      f"call as our transport does, {fmt(floor['process']['p99_ms'])} ms from "
                      f"another process, {fmt(floor['none']['p99_ms'])} ms with nothing "
                      f"streaming")
    add("1 kHz loop lateness p99 <= 0.5 ms while streaming", lp <= 0.5 if _num(lp) else None,
        f"{fmt(lp)} ms at the default switch interval; {fmt(v('5', 'switch_p99_ms', 'vuer_sync'))}"
        f" ms with setswitchinterval(0.0005) (row 5){floor_note}")
    ic = v("7", "cpu_pct", "vuer_sync")
    add("idle CPU ~ 0 (< 1% of a core)", ic < 1.0 if _num(ic) else None,
        f"{fmt(ic)}% with {res['params']['idle_clients']} clients (row 7; Vuer "
        f"{fmt(v('7', 'cpu_pct', 'vuer'))}%)")
    g = v("8a", "rss_growth_MB", "vuer_sync")
    gp = v("8a", "rss_peak_growth_MB", "vuer_sync")
    add("RSS growth <= 20 MB with a stalled client (issue 6)",
        (g <= 20 and gp <= 20) if _num(g) and _num(gp) else None,
        f"row 8a end {fmt(g)} MB, peak {fmt(gp)} MB; row 8b end "
        f"{fmt(v('8b', 'rss_growth_MB', 'vuer_sync'))} MB")
    _many_viewer_goals(res, v, add)
    _fleet_goals(res, add)
    _rtc_goals(res, add)
    for g in anchors_json(res).get("goals", []):  # bench_anchors.py's, judged there
        add(str(g.get("goal")), g.get("met"), f"{g.get('evidence')} (`bench_anchors.py`)")
    return out


def fleet_json(res: Dict[str, Any]) -> Dict[str, Any]:
    """What ``bench_fleet.py`` wrote in this run (``fleet.json``, or the smoke run's), or
    ``{}``."""
    js = res.get("external", {}).get("bench_fleet.py", {}).get("json", {})
    data = js.get("fleet.json") or js.get("fleet-smoke.json") or {}
    return data if isinstance(data, dict) else {}


def _fleet_goals(res: Dict[str, Any], add: Callable[[str, Optional[bool], str], None]
                 ) -> None:
    """Issue 19's goals, as ``bench_fleet.py`` computed them from its values."""
    data = fleet_json(res)
    if data.get("status") == "skipped":
        add("fleet on Redis (issue 19)", None, f"not measured: {data.get('reason')}")
    for g in data.get("goals", []):
        add(f"fleet on Redis (issue 19): {g['goal']}", g["met"], g["evidence"] +
            " (`bench_fleet.py`)")


def rtc_json(res: Dict[str, Any]) -> Dict[str, Any]:
    """What ``bench_rtc.py`` wrote in this run (``rtc.json``, or the smoke run's), or ``{}``."""
    js = res.get("external", {}).get("bench_rtc.py", {}).get("json", {})
    data = js.get("rtc.json") or js.get("rtc-smoke.json") or {}
    return data if isinstance(data, dict) else {}


def _rtc_goals(res: Dict[str, Any], add: Callable[[str, Optional[bool], str], None]) -> None:
    """Issue 21's throughput goals, as ``bench_rtc.py`` judged them from its medians (a
    results file from before it judged them adds none)."""
    data = rtc_json(res)
    for g in data.get("goals", []):
        add(str(g.get("goal")), g.get("met"), f"{g.get('evidence')} (`bench_rtc.py`)")
    relay = data.get("relay") or {}
    edits, late = relay.get("edits") or {}, relay.get("late_join") or {}
    one, two = edits.get("one_process") or {}, edits.get("two_nodes_redis") or {}
    if _num(one.get("median_per_s")) and _num(two.get("median_per_s")):
        add("rtc edits/s through the Redis relay (two nodes, two clients each) and in one "
            "process: both reported (issue 21)", True,
            f"{fmt(two['median_per_s'])}/s [{fmt(two['min'])}-{fmt(two['max'])}] vs one "
            f"process {fmt(one['median_per_s'])}/s [{fmt(one['min'])}-{fmt(one['max'])}], "
            f"medians of {edits.get('reps')} interleaved (`bench_rtc.py --relay`)")
    joins = [late.get(k) for k in ("client_join_s", "node_start_and_client_join_s")]
    if all(_num(j) for j in joins):
        add(f"rtc late join < 0.5 s (journal of {late.get('journal_entries', 0):,} entries, "
            f"{late.get('live_nodes')} live nodes; issue 21)", max(joins) < 0.5,
            f"a client joins a running node {joins[0] * 1000:.0f} ms; a node starts (snapshot "
            f"+ tail) and a client joins it {joins[1] * 1000:.0f} ms (medians of 3; "
            f"`bench_rtc.py --relay`)")
    flat = data.get("flatness") or {}
    parts = {k: flat.get(k) or {} for k in ("edit_commit", "receive")}
    walls = {k: p.get("wall_ratio") for k, p in parts.items()}
    if flat and flat.get("judged") != "wall_ratio" \
            and all(isinstance(w, (int, float)) for w in walls.values()):
        # an older run's criterion left the cyclic GC out; a user's wall clock does not
        add(f"rtc throughput flat from journal {flat.get('from', 0):,} to "
            f"{flat.get('to', 0):,}, the GC's time included (wall time; issue 21)",
            all(w >= flat.get("ratio", 0.9) for w in walls.values()),
            f"at journal {flat.get('to', 0):,}, of journal {flat.get('from', 0):,}: "
            f"edit+commit {walls['edit_commit']:.0%}, receive {walls['receive']:.0%} "
            f"(goal >= {flat.get('ratio', 0.9):.0%}; `bench_rtc.py`)")


def _many_viewer_goals(res: Dict[str, Any], v: Callable[[str, str, str], Any],
                       add: Callable[[str, Optional[bool], str], None]) -> None:
    """Issue 20's goals (rows 6, 9-11); ``[io_threads=0]`` is vuer_sync before it."""
    prm = res["params"]
    c6, c6v = v("6", "cpu_pct", "vuer_sync"), v("6", "cpu_pct", "viser")
    add("broadcast 60 Hz to 100 viewers: CPU <= viser's (issue 20)",
        c6 <= c6v if _num(c6) and _num(c6v) else None,
        f"{fmt(c6)} vs {fmt(c6v)}% of a core (row 6)")

    def sync(m: str) -> Any:
        return v("9", m, "vuer_sync")

    n9 = prm.get("many_idle")
    th, kb, kbv, cpu = (sync("threads_added"), sync("rss_per_viewer_KB"),
                        v("9", "rss_per_viewer_KB", "viser"), sync("idle_cpu_pct"))
    ok = None
    if _num(th) and _num(kb) and _num(kbv) and _num(cpu):
        ok = th <= 8 and kb <= kbv and cpu < 1.0
    add(f"{n9} idle viewers: <= 8 threads added, RSS per viewer <= viser's, idle CPU ~ 0 "
        "(issue 20)", ok,
        f"{fmt(th)} threads, {fmt(kb)} KB per viewer (viser {fmt(kbv)} KB), {fmt(cpu)}% of a "
        f"core (row 9); io_threads=0: {fmt(sync('threads_added_io0'))} threads, "
        f"{fmt(sync('rss_per_viewer_KB_io0'))} KB per viewer")
    held = sync("rss_held_MB")
    add(f"connection churn returns memory: RSS within 20 MB of the baseline after {n9} "
        "viewers left (issue 20)", held <= 20 if _num(held) else None,
        f"{fmt(held)} MB held, {fmt(sync('threads_left'))} threads left (row 9); "
        f"io_threads=0: {fmt(sync('rss_held_MB_io0'))} MB")
    d, c = v("10", "delivered_min_pct", "vuer_sync"), v("10", "cpu_pct", "vuer_sync")
    add(f"broadcast 30 Hz to {prm.get('many_bcast')} viewers: 100% to the worst viewer, "
        "within one core (issue 20)",
        (d >= 100 and c <= 100) if _num(d) and _num(c) else None,
        f"worst viewer {fmt(d)}%, {fmt(c)}% of a core (row 10; viser "
        f"{fmt(v('10', 'cpu_pct', 'viser'))}%); io_threads=0: "
        f"{fmt(v('10', 'delivered_min_pct_io0', 'vuer_sync'))}%, "
        f"{fmt(v('10', 'cpu_pct_io0', 'vuer_sync'))}% of a core")
    p99 = v("11", "p99_ms", "vuer_sync")
    add(f"{prm.get('many_conn')} connected viewers: a new client's first message p99 < 50 ms "
        "(issue 20)", p99 < 50 if _num(p99) else None,
        f"p99 {fmt(p99)} ms, p50 {fmt(v('11', 'p50_ms', 'vuer_sync'))} ms with "
        f"{fmt(v('11', 'viewers', 'vuer_sync'))} viewers (row 11; viser p99 "
        f"{fmt(v('11', 'p99_ms', 'viser'))} ms); io_threads=0: p99 "
        f"{fmt(v('11', 'p99_ms_io0', 'vuer_sync'))} ms")


# -- RESULTS.md ------------------------------------------------------------------------------


def write_markdown(res: Dict[str, Any], path: Path) -> None:
    L = (_head(res) + _table(res) + _goals_section(res) + _measures_section(res) +
         _notes_section(res) + _external_section(res) + _fleet_section(res) +
         _anchors_section(res) +
         _reproduce_section())
    path.write_text("\n".join(L) + "\n", encoding="utf-8")


#: the template of docs/performance.md (prose, no figures) and the page it becomes
PERFORMANCE_TEMPLATE = Path(__file__).resolve().parent / "performance_template.md"
PERFORMANCE_PAGE = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def performance_page(res: Dict[str, Any], template: Path = PERFORMANCE_TEMPLATE) -> str:
    """``docs/performance.md``: the template's prose with every figure generated from
    ``res`` (the ``{{NAME}}`` markers: the same sections as ``RESULTS.md``)."""
    def body(lines: List[str]) -> str:
        text = "\n".join(lines).strip("\n")
        # RESULTS.md's own section titles go; the template has its own
        return "\n".join(x for x in text.splitlines()
                         if not (x.startswith("## ") and x[3:] in ("Goals", "Notes",
                                                                  "What each row measures")))
    head = _head(res)[2:]  # without RESULTS.md's title
    parts = {
        "HEAD": body(head), "TABLE": body(_table(res)), "GOALS": body(_goals_section(res)),
        "MEASURES": body(_measures_section(res)), "NOTES": body(_notes_section(res)),
        "EXTERNAL": body(_external_section(res)), "FLEET": body(_fleet_section(res)),
        "ANCHORS": body(_anchors_section(res)),
    }
    text = template.read_text(encoding="utf-8")
    for name, value in parts.items():
        text = text.replace("{{" + name + "}}", value.strip())
    return text.rstrip("\n") + "\n"


def _head(res: Dict[str, Any]) -> List[str]:
    m = res["machine"]
    pk = m["packages"]
    L: List[str] = []
    L.append("# Benchmark results: vuer_sync vs Vuer 0.1.6 vs viser")
    L.append("")
    flag = " --smoke" if res["mode"] == "smoke" else ""
    reps = res.get("repetitions") or [None]
    L.append(f"Generated by `python benchmarks/run.py{flag}`"
             f" on {m['date']} in {res.get('elapsed_s', 0):.0f} s ({res['mode']} run). "
             f"Every row ran {len(reps)} time(s), interleaved: the servers take turns within "
             "each repetition, in alternating order. Each cell is the **median** of the "
             "repetitions with their [min–max] beside it; ratios and goals use the medians "
             "(a goal is met only when its median meets it). A noisy 2-core machine: read "
             "the ratios and the spreads. Numbers are never pass/fail.")
    L.append("")
    L.append(f"**Machine:** {m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
             f"{m['platform']}; {m['implementation']} {m['python']}; load average at start "
             f"{m.get('load_average_at_start')} (other work shares these cores).  ")
    dirty = m.get("git_dirty")
    state = ("" if dirty is None else " (clean tree)" if not dirty else
             f" plus uncommitted changes to {len(dirty)} file(s): "
             + ", ".join(f"`{f}`" for f in dirty[:8]) + (" ..." if len(dirty) > 8 else ""))
    L.append("**Packages:** " + ", ".join(f"{k} {v}" for k, v in pk.items() if v) +
             (f".  \n**Commit:** {m['git_commit']}{state}" if m.get("git_commit") else "."))
    L.append("")
    L.append("Ratios are vuer_sync against the other server, stated so that **> 1 means "
             "vuer_sync is better** (faster, or less CPU/memory). `n/a`: that server has no "
             "such feature. Details of each row are below the table; raw replies are in "
             "`results.json`.")
    L.append("")
    return L


def _table(res: Dict[str, Any]) -> List[str]:
    L: List[str] = []
    L.append("| row | metric | vuer_sync | vuer 0.1.6 | viser 1.1 | vs vuer | vs viser |")
    L.append("|---|---|---:|---:|---:|---:|---:|")
    for row in ROWS:
        r = res["rows"].get(row["id"])
        if r is None:
            continue
        first = True
        floors = row.get("floor", {})
        defs = {m[0]: m for m in row["metrics"]}
        for name, mt in r["metrics"].items():
            fl = floors.get(name, 0.0)
            if name in defs:  # the definitions in rows/ win over the JSON's copy
                mt = {**mt, "label": defs[name][1], "unit": defs[name][2]}
            vals = mt["values"]
            ours = vals.get("vuer_sync")
            spread = mt.get("spread", {})
            cells = [fmt_spread(vals.get(i), spread.get(i)) for i in IMPLS]
            unit = f" ({mt['unit']})" if mt["unit"] else ""
            rc = f"{row['id']}. {row['title']}" if first else ""
            first = False
            L.append(f"| {rc} | {mt['label']}{unit} | " + " | ".join(cells) + " | "
                     f"{fmt_ratio(ratio(ours, vals.get('vuer'), mt['better'], fl))} | "
                     f"{fmt_ratio(ratio(ours, vals.get('viser'), mt['better'], fl))} |")
    return L


def _section(title: str) -> List[str]:
    return ["", f"## {title}", ""]


def _goals_section(res: Dict[str, Any]) -> List[str]:
    L = _section("Goals") + ["| goal | met? | evidence (this run) |", "|---|---|---|"]
    for g in res.get("goals", []):
        met = {True: "met", False: "**not met**", None: "unknown"}[g["met"]]
        L.append(f"| {g['goal']} | {met} | {g['evidence']} |")
    return L


def _measures_section(res: Dict[str, Any]) -> List[str]:
    L = _section("What each row measures")
    for row in ROWS:
        r = res["rows"].get(row["id"])
        if r is None:
            continue
        L.append(f"- **{row['id']}. {row['title']}** {row['measures']}")
        for note in r.get("notes", []):
            L.append(f"  - {note}")
    return L


def _notes_section(res: Dict[str, Any]) -> List[str]:
    return _section("Notes") + [f"- {note}" for note in res.get("notes", [])]


def _external_section(res: Dict[str, Any]) -> List[str]:
    L = _section("Other benchmarks in this directory (run by run.py, JSON merged)")
    ext = res.get("external", {})
    if not ext:
        L.append("- not run in this invocation (`--only`).")
    for name, e in ext.items():
        if e["status"] == "missing":
            L.append(f"- `{name}`: **missing** from the tree, so it was skipped.")
            continue
        if e["status"] == "skipped":
            L.append(f"- `{name}`: skipped: {e['note']}.")
            continue
        L.append(f"- `{name}`: {e['status']} (return code {e['returncode']}, "
                 f"{e['elapsed_s']:.1f} s).")
        for fname, data in e.get("json", {}).items():
            if name == "bench_fleet.py" and isinstance(data, dict) and "goals" in data:
                L.append(f"  - `{fname}`: see the fleet section below.")
                continue
            flat = _flatten(data)
            shown = flat[:24]
            L.append(f"  - `{fname}`: " + ("; ".join(f"{k} = {fmt(v)}" for k, v in shown) or
                                             "(no numbers)") +
                     (f"; … ({len(flat) - len(shown)} more in results.json)"
                      if len(flat) > len(shown) else ""))
        if e["status"] != "ok":
            tail = e.get("output_tail", "").strip().splitlines()[-3:]
            L.append("  - last output: `" + " / ".join(tail).replace("`", "'") + "`")
        elif not e.get("json"):
            tail = e.get("output_tail", "").strip().splitlines()[-25:]
            L.append("  - no JSON written; its printed output (tail):")
            L.append("")
            L.append("    ```")
            L.extend("    " + line for line in tail)
            L.append("    ```")
    return L


def _fleet_section(res: Dict[str, Any]) -> List[str]:
    """``bench_fleet.py``'s numbers (issue 19): one process, the fleet and python-socketio's
    ``RedisManager`` side by side; ratios computed here from the values."""
    data = fleet_json(res)
    if not data or "latency" not in data:
        return []
    lat, thr, late = data["latency"], data["throughput"], data["late_join"]
    reps = data.get("params", {}).get("reps")
    L = _section("Fleet on Redis (issue 19, `bench_fleet.py`)")
    L.append(f"Medians of {reps} interleaved repetitions ([min-max] in `results.json`); "
             "loopback, one `redis-server`; ratios > 1 mean the fleet is better.")
    L.append("")
    L.append("| measurement | one process | fleet (vuer_sync) | python-socketio RedisManager "
             "| fleet vs socketio |")
    L.append("|---|---:|---:|---:|---:|")

    def g(d: Dict[str, Any], *path: str) -> Any:
        for p in path:
            d = d.get(p, {}) if isinstance(d, dict) else {}
        return d if d != {} else None

    for q in ("p50_ms", "p99_ms"):
        a, f, s = g(lat, "one_process", q), g(lat, "fleet", q), g(lat, "socketio_redis", q)
        L.append(f"| latency producer call -> viewer, {q[:3]} (ms) | {fmt(a)} | {fmt(f)} | "
                 f"{fmt(s)} | {fmt_ratio(ratio(f, s, 'lower'))} |")
    for q, label, better in (
            ("all_viewers", "delivered updates/s, sum over all viewers", "higher"),
            ("per_viewer_min", "delivered updates/s, worst viewer", "higher"),
            ("publisher_ops_per_s", "publisher's calls/s", "higher"),
            ("stale_at_end_ms_max", "age of a viewer's newest update at the end (ms)", "lower"),
            ("node_stream_lag_ms_max", "slowest node behind the stream at the end (ms)", None),
            ("node_cpu_us_per_update", "nodes' CPU per delivered update (µs)", "lower"),
            ("cpu_pct_nodes", "CPU of the 3 nodes (% of a core)", None),
            ("cpu_pct_viewers", "CPU of the viewers' reader (% of a core)", None)):
        f, s = g(thr, "fleet", q), g(thr, "socketio_redis", q)
        L.append(f"| {label} | n/a | {fmt(f)} | {fmt(s)} | "
                 f"{fmt_ratio(ratio(f, s, better))} |")
    for v, label in (("history", "late join into a long history"),
                     ("scene_only", "late join, no history")):
        d = late.get(v, {})
        L.append(f"| {label}: new node to its viewer's first SET (ms; {d.get('history_ops')} "
                 f"ops, {d.get('scene_nodes')} nodes) | n/a | {fmt(d.get('first_set_ms'))} | "
                 "n/a | |")
    tf = thr.get("fleet", {})
    p = data.get("params", {})
    L.append("")
    L.append(f"Throughput: {p.get('nodes')} nodes x {p.get('viewers')} viewers, one "
             f"publisher-only process updating {p.get('keys')} nodes round robin as fast as it "
             f"can; the fleet's publisher coalesced {fmt(tf.get('fleet_coalesced'))} of "
             f"{fmt(tf.get('fleet_ops'))} operations ({fmt(tf.get('fleet_coalesced_pct'))}%) "
             f"into {fmt(tf.get('fleet_entries'))} stream entries, the nodes' client outboxes "
             f"{fmt(tf.get('client_outbox_coalesced'))} more; socket.io delivers every emit "
             "(its publisher waits for one Redis `PUBLISH` per emit). Goals: in the Goals "
             "section. Method: `bench_fleet.py`'s docstring.")
    return L


def _reproduce_section() -> List[str]:
    return _section("Reproduce") + [
        "```bash\npip install -e '.[bench]'          # vuer 0.1.6, viser, psutil, playwright\n"
        "python benchmarks/run.py              # full run, writes this file\n"
        "python benchmarks/run.py --smoke      # CI-sized, < 1 minute\n"
        "python benchmarks/run.py --only 2,8a  # some rows\n```"]


def _flatten(x: Any, prefix: str = "") -> List[Any]:
    out: List[Any] = []
    if isinstance(x, dict):
        for k, v in x.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(x, list) and len(x) <= 20:
        for i, v in enumerate(x):
            out.extend(_flatten(v, f"{prefix}.{i}"))  # not [i]: Markdown reads [a][b] as a link
    elif _num(x):
        out.append((prefix, x))
    elif isinstance(x, str) and len(x) < 40 and prefix:
        out.append((prefix, x))
    return out



# -- bench_anchors.py (issue 18: meshcat and rerun beside vuer_sync and viser) ---------------


def anchors_json(res: Dict[str, Any]) -> Dict[str, Any]:
    """What ``bench_anchors.py`` wrote in this run (``bench_anchors.json``, or the smoke
    run's), or ``{}``."""
    js = res.get("external", {}).get("bench_anchors.py", {}).get("json", {})
    data = js.get("bench_anchors.json") or js.get("bench_anchors-smoke.json") or {}
    return data if isinstance(data, dict) else {}


def _anchors_section(res: Dict[str, Any]) -> List[str]:
    """``bench_anchors.py``'s producer-cost rows: medians with their [min-max] spread over
    the interleaved repetitions, what reached the consumer, and ratios against vuer_sync
    computed here from the values (> 1: vuer_sync's call is cheaper)."""
    data = anchors_json(res)
    rows = data.get("rows")
    if not rows:
        return []
    L = _section("Robotics anchors: meshcat and rerun (issue 18, `bench_anchors.py`)")
    L.append(f"Medians of {data.get('reps')} interleaved repetitions [min-max]; each library in "
             "a process of its own; one consumer in another process (vuer_sync, viser, "
             "meshcat: a websocket peer decoding every frame; rerun: its `.rrd` file sink read "
             "back). `same`: one node, the same key every call; `distinct`: a new key every "
             "call (nothing coalescible); `tick100`: 100 poses per tick at 1 kHz, cost per "
             "tick and per pose. *lands*: from the end of the loop until the consumer has "
             "every final value (rerun: its final `flush()`). *vs vuer_sync*: the other's cost "
             "over vuer_sync's (per call; `tick100`: per pose, against vuer_sync's `calls` "
             "for a call per pose, else its cheapest batched form).")
    L.append("")
    L.append("| workload | library, form | per call (µs) | p99 (µs) | per pose (µs) | calls "
             "(ticks) | reached the consumer | coalesced | lands (ms) | vs vuer_sync |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")

    def med(slot: Dict[str, Any], m: str) -> Any:
        v = slot.get(m)
        return v.get("median") if isinstance(v, dict) else None

    def spread(slot: Dict[str, Any], m: str) -> str:
        v = slot.get(m)
        if not isinstance(v, dict):
            return "—"
        return f"{fmt(v.get('median'))} [{fmt(v.get('min'))}–{fmt(v.get('max'))}]"

    for workload in ("same", "distinct", "tick100"):
        by_impl = rows.get(workload, {})
        sync = by_impl.get("vuer_sync", {})
        batched = [med(sync[v], "per_pose_us") for v in ("list", "poses") if v in sync]
        best_batched = min((b for b in batched if _num(b)), default=None)
        for impl in ("vuer_sync", "viser", "meshcat", "rerun"):
            for form, slot in by_impl.get(impl, {}).items():
                if workload == "tick100":
                    m = "per_pose_us"
                    ref = (med(sync.get("calls", {}), m) if form == "calls" else best_batched)
                else:
                    m = "call_median_us"
                    ref = med(sync.get("one", {}), m)
                reached = slot.get("consumer_updates") or slot.get("consumer_rows")
                r = None if impl == "vuer_sync" else ratio(ref, med(slot, m), "lower")
                L.append(f"| {workload} | {impl} {form} | {spread(slot, 'call_median_us')} | "
                         f"{fmt(med(slot, 'call_p99_us'))} | {spread(slot, 'per_pose_us')} | "
                         f"{fmt(med(slot, 'calls'))} | "
                         f"{fmt(reached.get('median') if isinstance(reached, dict) else None)}"
                         f" | {fmt(med(slot, 'coalesced'))} | {spread(slot, 'land_ms')} "
                         f"({slot.get('landed', '?')} landed) | {fmt_ratio(r)} |")
    L.append("")
    for g in data.get("goals", []):
        mark = {True: "met", False: "**not met**"}.get(g.get("met"), "not measured")
        L.append(f"- {g.get('goal')}: {mark} ({g.get('evidence')}).")
    p = data.get("params", {})
    L.append(f"- Parameters: {p.get('n')} calls (`same`, `distinct`), {p.get('ticks')} ticks of "
             f"{p.get('nodes')} poses at {fmt(p.get('hz'))} Hz, every loop capped at "
             f"{fmt(p.get('max_s'))} s (*calls* shows what was made); versions "
             f"{data.get('versions')}. meshcat's call returns when `meshcat-server` "
             "acknowledged it (ZeroMQ REQ/REP); rerun's consumer is the file after the flush. "
             "Method: `bench_anchors.py`'s docstring.")
    return L
