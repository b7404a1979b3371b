"""The benchmark suite: vuer_sync side by side with Vuer 0.1.6 (aiohttp) and viser 1.1.

    python benchmarks/run.py                 # full run: 3 repetitions (about 25 minutes)
    python benchmarks/run.py --reps 5        # more repetitions
    python benchmarks/run.py --smoke         # tiny sizes, well under a minute (CI)
    python benchmarks/run.py --only 3,8      # some rows only
    python benchmarks/run.py --out DIR       # write results.json and RESULTS.md to DIR

Every row runs for every server in the same run. Each server runs in its own subprocess
(``bench_agent.py``) so that its CPU time and RSS can be read from /proc apart from the
clients'. The clients are one minimal raw-socket websocket peer (``common.RawPeer``) for all
three servers, so the server is what differs. Loopback only; every loop is bounded.

Layout: ``run.py`` (this file) only orchestrates: the command line, which rows run, the
interleaving of the rows by server, collecting their numbers. Each row's definition and
workload is a module of ``rows/``; ``report.py`` writes ``RESULTS.md`` and the goals;
``external.py`` runs the other ``bench_*.py``; ``common.py`` holds the peers and the agent.

Writes ``results.json`` and ``RESULTS.md`` (default ``benchmarks/RESULTS.md``) and
``docs/performance.md`` (from ``performance_template.md``). Numbers are never pass/fail:
these 2-core machines are noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rows  # noqa: E402
from common import HERE, IMPLS, NA, Agent, machine_info, raise_nofile  # noqa: E402
from external import run_external  # noqa: E402
from report import PERFORMANCE_PAGE, fmt, goals, performance_page, write_markdown  # noqa: E402
from rows import ROW_BY_ID, ROWS  # noqa: E402
from rows.large_messages_browser import METRICS as BROWSER_METRICS  # noqa: E402
from rows.large_messages_browser import PLAIN_METRICS as BROWSER_PLAIN  # noqa: E402
from rows.large_messages_browser import browser_available, browser_s2c  # noqa: E402

logger = logging.getLogger("benchmarks.run")

FULL = {
    "producer_n": 20000,
    "small_n": 50000,
    "rpc_n": 2000,
    "big_size": 12_000_000,
    "big_k": 40,
    "mid_size": 3 * 2**20,
    "mid_k": 40,
    "late_s": 3.0,
    "bcast_clients": 100,
    "bcast_s": 5.0,
    "idle_clients": 10,
    "idle_s": 3.0,
    "pose_nodes": 100,
    "pose_hz": 1000.0,
    "pose_s": 10.0,
    "browser_k": 5,
    "many_idle": 1000,
    "many_bcast": 1000,
    "many_bcast_s": 4.0,
    "many_conn": 5000,
    "many_probes": 30,
    "many_probe_budget_s": 60.0,
    "many_connect_s": 120.0,
    "many_settle_s": 1.0,
    "many_release_s": 8.0,
}
SMOKE = {
    "producer_n": 1000,
    "small_n": 2000,
    "rpc_n": 50,
    "big_size": 1_000_000,
    "big_k": 2,
    "mid_size": 500_000,
    "mid_k": 2,
    "late_s": 0.3,
    "bcast_clients": 10,
    "bcast_s": 0.5,
    "idle_clients": 3,
    "idle_s": 0.3,
    "pose_nodes": 100,
    "pose_hz": 1000.0,
    "pose_s": 1.0,
    "browser_k": 2,
    "many_idle": 50,
    "many_bcast": 50,
    "many_bcast_s": 0.5,
    "many_conn": 100,
    "many_probes": 10,
    "many_probe_budget_s": 5.0,
    "many_connect_s": 30.0,
    "many_settle_s": 0.2,
    "many_release_s": 0.5,
}

#: rows 1-5 and 7: one long-lived server per implementation, the rows interleaved by server
LIGHT_ROWS = {"1": rows.producer_call.run, "2": rows.small_messages.run,
              "3": rows.rpc_round_trip.run, "3b": rows.rpc_websockets.run,
              "4": rows.large_messages.run,
              "5": rows.loop_lateness.run, "7": rows.idle_cpu.run}

#: rows 9-11: one server per implementation (and vuer_sync io_threads=0) for the three
MANY_ROWS = rows.many_viewers.RUNS

#: the notes of every run (below the "is not installed" ones)
#: between two rows on the long-lived servers, a server counts as quiet below this much of a
#: core over :data:`QUIET_WINDOW_S`, and one still busy after :data:`QUIET_MAX_S` is restarted
QUIET_PCT = 10.0
QUIET_WINDOW_S = 0.2
QUIET_MAX_S = 8.0


NOTES = [
    f"Vuer 0.1.6 runs with `queue_len={10_000_000:,}` instead of its default 100: with 100, "
    "its per-session deque silently drops the oldest messages once 100 are queued (both the "
    "send and the receive deque use this length), so the rows would count lost messages as "
    "sent. With the raised length it drops nothing but its queues are unbounded.",
    "Vuer 0.1.6 accepts at most 4 MiB per client message (aiohttp's default; its "
    "`WEBSOCKET_MAX_SIZE` setting is not applied to the websocket): larger uploads are closed "
    "with 1009 and reported as such; the 3 MiB client->server metric is the like-for-like one.",
    "Vuer 0.1.6's uplink task busy-polls (`await sleep(0)`) whenever a connected session has "
    "nothing to send, so its CPU numbers include that spinning whenever a client is connected "
    "(that is its real cost, and why row 7 is what it is).",
    f"Rows 1-5 and 7 run on one long-lived server per implementation: each row starts "
    f"only once every server is quiet (below {QUIET_PCT:g}% of a core over "
    f"{QUIET_WINDOW_S:g} s; one still busy after {QUIET_MAX_S:g} s is restarted), so that "
    "what one server still does after its own row cannot slow another's (`settle` in "
    "results.json).",
    "Servers: vuer_sync `Vuer(port=0)` with defaults; Vuer `Vuer(host=\"127.0.0.1\", "
    "queue_len=...)` in a thread with its own event loop; viser "
    "`ViserServer(host=\"127.0.0.1\", port=0)`. Each in its own process; CPU = "
    "user+system time of that whole process, read inside it (`time.process_time()`: "
    "nanosecond steps, so no figure sits at the 10 ms clock-tick resolution of /proc); "
    "RSS from psutil.",
    "Client: one raw-socket websocket peer (`benchmarks/common.py`) for all three servers, "
    "no compression offered, masked frames; it skips payloads it does not need, so it is much "
    "cheaper than the servers. Client and server share the 2 cores.",
]


def installed(impl: str) -> bool:
    return importlib.util.find_spec(impl) is not None


# -- results ---------------------------------------------------------------------------------


class Results:
    """rows -> metrics -> values per server, plus raw replies and notes."""

    def __init__(self, params: Dict[str, Any], mode: str):
        self.data: Dict[str, Any] = {
            "mode": mode,
            "params": params,
            "machine": machine_info(),
            "rows": {},
            "external": {},
            "notes": [],
        }

    def row(self, rid: str, title: str, measures: str, supported: Dict[str, bool]) -> Dict:
        r = self.data["rows"].setdefault(rid, {"title": title, "measures": measures,
                                               "supported": supported, "metrics": {},
                                               "raw": {}, "notes": []})
        return r

    def metric(self, rid: str, name: str, label: str, unit: str, better: Optional[str]) -> Dict:
        m = self.data["rows"][rid]["metrics"].setdefault(
            name, {"label": label, "unit": unit, "better": better, "values": {}})
        return m

    def put(self, rid: str, name: str, impl: str, value: Any) -> None:
        """One repetition's value (:meth:`finish` turns them into median and spread)."""
        if isinstance(value, float) and not math.isfinite(value):
            value = "nan"
        self.data["rows"][rid]["metrics"][name].setdefault("reps", {}).setdefault(
            impl, []).append(value)

    def finish(self) -> None:
        """Every metric's value per server: the median of its repetitions, with the
        min-max ``spread`` beside it (a repetition that failed, or a text value, is kept in
        ``reps``; the value is the median of the numeric ones, or the first text when no
        repetition gave a number)."""
        for row in self.data["rows"].values():
            for m in row["metrics"].values():
                for impl, reps in m.get("reps", {}).items():
                    nums = [x for x in reps if isinstance(x, (int, float))
                            and not isinstance(x, bool)]
                    if nums:
                        m["values"][impl] = statistics.median(nums)
                        if len(nums) > 1:
                            m.setdefault("spread", {})[impl] = [min(nums), max(nums)]
                        if len(nums) < len(reps):
                            m.setdefault("failed_reps", {})[impl] = len(reps) - len(nums)
                    else:
                        m["values"][impl] = reps[0]

    def declare(self, rows: List[Dict[str, Any]]) -> None:
        """Every row and metric, in the order of the table, before any number comes in."""
        for row in rows:
            self.row(row["id"], row["title"], row["measures"], row["supported"])
            for name, label, unit, better in row["metrics"]:
                self.metric(row["id"], name, label, unit, better)

    def record(self, rid: str, impl: str, fn: Callable[[], Dict[str, Any]],
               suffix: str = "") -> None:
        """Run one row for one server (``n/a`` where it lacks the feature) and keep its
        values and raw replies; a failure becomes the row's values for that server.
        ``suffix``: a variant of the server (``spec.variant``): its values go to the row's
        metrics ``<name><suffix>``, its raw replies under ``<impl><suffix>``."""
        row = ROW_BY_ID[rid]
        variants = row.get("variants", {})
        own = [name for name, *_ in row["metrics"]
               if (name.endswith(suffix) if suffix else
                   not any(name.endswith(v) for v in variants))]
        if not suffix and impl != "vuer_sync":  # the variants are vuer_sync's alone
            for name, *_ in row["metrics"]:
                if name not in own:
                    self.put(rid, name, impl, NA)
        if not row["supported"].get(impl):
            for name in own:
                self.put(rid, name, impl, NA)
            return
        who = impl + suffix
        t = time.monotonic()
        try:
            out = fn()
        except Exception as e:
            logger.warning("row %s %s failed: %r", rid, who, e)
            msg = f"error: {type(e).__name__}: {str(e)[:120]}"
            for name in own:
                self.put(rid, name, impl, msg)
            self.data["rows"][rid]["raw"].setdefault(who, []).append({"error": repr(e)})
            print(f"  row {rid:>2} {who:<9} FAILED: {e!r}", flush=True)
            return
        names = {name[:len(name) - len(suffix)] if suffix else name for name in own}
        for name, val in out["values"].items():
            if name in names:
                self.put(rid, name + suffix, impl, val)
        self.data["rows"][rid]["raw"].setdefault(who, []).append(out.get("raw"))
        summary = ", ".join(f"{k}={fmt(v)}" for k, v in list(out["values"].items())[:4])
        print(f"  row {rid:>2} {who:<9} {time.monotonic() - t:5.1f} s  {summary}", flush=True)


# -- running the rows ------------------------------------------------------------------------


def _start_agents(agents: Dict[str, Agent], impls: List[str], log_dir: Path) -> None:
    """One server per implementation, started side by side, into ``agents``."""
    with ThreadPoolExecutor(len(impls) or 1) as pool:
        started = {impl: pool.submit(Agent, impl, log_dir, "light") for impl in impls}
        failed = None
        for impl, fut in started.items():
            try:
                agents[impl] = fut.result()
            except Exception as e:
                failed = failed or e
        if failed is not None:
            raise failed


def busy_pct(pids: Dict[str, int], window: float = QUIET_WINDOW_S) -> Dict[str, float]:
    """Each process's CPU over ``window`` seconds, in % of a core (gone: 0)."""
    import psutil

    procs: Dict[str, Any] = {}
    before: Dict[str, float] = {}
    for name, pid in pids.items():
        try:
            procs[name] = psutil.Process(pid)
            before[name] = sum(procs[name].cpu_times()[:2])
        except psutil.Error:
            pass
    time.sleep(window)
    out = {name: 0.0 for name in pids}
    for name, proc in procs.items():
        try:
            out[name] = (sum(proc.cpu_times()[:2]) - before[name]) / window * 100
        except psutil.Error:
            pass
    return out


def settle(agents: Dict[str, Agent], restart: Callable[[str], None],
           max_s: float = QUIET_MAX_S) -> Dict[str, Any]:
    """Wait until no server is busy before the next row, so that what one server still does
    after its own row (Vuer 0.1.6 keeps spinning for a session it has not noticed is gone,
    and for the 1009 session of row 4, which it never ends) does not run during another
    server's row. A server still busy after ``max_s`` is restarted (``restart(impl)``).
    Returns what was waited for (kept in ``results.json``)."""
    t0 = time.monotonic()
    while True:
        busy = busy_pct({impl: ag.proc.pid for impl, ag in agents.items()})
        loud = {impl: round(v, 1) for impl, v in busy.items() if v >= QUIET_PCT}
        if not loud:
            return {"waited_s": round(time.monotonic() - t0, 2)}
        if time.monotonic() - t0 >= max_s:
            for impl in loud:
                restart(impl)
            return {"waited_s": round(time.monotonic() - t0, 2), "restarted": loud}


def run_light(res: Results, impls: List[str], light: List[str], do_browser: bool,
              P: Dict[str, Any], log_dir: Path) -> None:
    """Rows 1-5 and 7 (and the Chromium part of row 4) on one long-lived server per
    implementation, interleaved by server."""
    agents: Dict[str, Agent] = {}
    try:
        _start_agents(agents, impls, log_dir)
        for impl in impls:
            res.data["machine"].setdefault("modules", {})[impl] = agents[impl].info.get(
                "module")
        for rid in light:
            for impl in impls:
                if agents[impl].proc.poll() is not None:  # a crashed server: a new one
                    agents[impl].close()
                    agents[impl] = Agent(impl, log_dir, tag=f"light{rid}")

                def restart(name: str, rid: str = rid) -> None:
                    agents[name].close()
                    agents[name] = Agent(name, log_dir, tag=f"light{rid}")

                quiet = settle(agents, restart)
                res.data.setdefault("settle", []).append({"row": rid, "impl": impl, **quiet})
                ag = agents[impl]
                res.record(rid, impl, lambda ag=ag, impl=impl, rid=rid:
                           LIGHT_ROWS[rid](ag, impl, P))
        if do_browser:
            run_browser(res, agents, impls, P)
    finally:
        for ag in agents.values():
            ag.close()


def run_browser(res: Results, agents: Dict[str, Agent], impls: List[str],
                P: Dict[str, Any]) -> None:
    """Row 4's headless-Chromium metrics, or a note saying why they are missing."""
    if not browser_available():
        res.data["rows"]["4"]["notes"].append(
            "headless Chromium part skipped: playwright or /usr/bin/chromium missing")
        return
    for name, label, unit, better, _ in BROWSER_METRICS + BROWSER_PLAIN:
        res.metric("4", name, label, unit, better)

    def measure(agent: Agent, impl: str) -> Dict[str, Any]:
        try:
            return browser_s2c(agent, impl, P) or {}
        except Exception as e:
            return {"error": f"error: {type(e).__name__}: {str(e)[:100]}"}

    for impl in impls:
        b = measure(agents[impl], impl)
        plain = b
        if impl == "vuer":  # once more with its compression off, like for like
            with Agent(impl, agents[impl].log_path.parent, tag="browser_plain",
                       options={"compress": False}) as ag:
                plain = measure(ag, impl)
        for metrics, got in ((BROWSER_METRICS, b), (BROWSER_PLAIN, plain)):
            for dst, *_, src in metrics:
                res.put("4", dst, impl, got.get(src, got.get("error")))
        print(f"  row  4 {impl:<9} browser: {b}" + (f", compress=False: {plain}"
                                                   if plain is not b else ""), flush=True)


def run_own_server_rows(res: Results, impls: List[str], want: Callable[[str], bool],
                        P: Dict[str, Any], log_dir: Path) -> None:
    """Rows 6, 8a and 8b: a fresh server for every row and implementation."""
    if want("6"):
        for impl in impls:
            def go6(impl: str = impl) -> Dict[str, Any]:
                with Agent(impl, log_dir, tag="6") as ag:
                    return rows.broadcast_clients.run(ag, impl, P)
            res.record("6", impl, go6)
    for rid, batch in (("8a", False), ("8b", True)):
        if want(rid):
            for impl in impls:
                res.record(rid, impl, lambda impl=impl, batch=batch:
                           rows.pose_updates.run(impl, P, log_dir, batch))
    if want("8b") and "vuer_sync" in impls:
        res.record("8b", "vuer_sync", lambda: rows.pose_updates.run(
            "vuer_sync", P, log_dir, True, columnar=True), suffix=rows.pose_updates.COLUMNAR)


def run_many_viewers(res: Results, impls: List[str], want: Callable[[str], bool],
                     P: Dict[str, Any], log_dir: Path) -> None:
    """Rows 9-11 (many viewers): one fresh server per implementation for all three, in that
    order (row 9 first, on a server no viewer has touched), and once more for vuer_sync with
    ``io_threads=0``, whose numbers go to the rows' ``[io_threads=0]`` metrics."""
    wanted = [rid for rid in MANY_ROWS if want(rid)]
    if not wanted:
        return
    raise_nofile(P["many_conn"] + 1024)  # the client side of row 11 (the agent raises its own)
    variants: List[Tuple[str, Dict[str, Any], str]] = [(impl, {}, "") for impl in impls]
    if "vuer_sync" in impls:
        opts, suffix, _ = rows.many_viewers.IO0
        variants.append(("vuer_sync", opts, suffix))
    for impl, opts, suffix in variants:
        options: Dict[str, Any] = {"nofile": P["many_conn"] + 1024, **opts}
        if impl == "vuer_sync":  # its default is capped at 4096 connections
            options["max_connections"] = P["many_conn"] + 256

        def start(impl: str = impl, options: Dict[str, Any] = options,
                  suffix: str = suffix) -> Agent:
            return Agent(impl, log_dir, tag="many" + suffix, options=options)

        ag: Optional[Agent] = None
        try:
            for rid in wanted:
                if ag is not None and ag.proc.poll() is not None:  # crashed: a new one
                    ag.close()
                    ag = None

                def go(rid: str = rid, impl: str = impl) -> Dict[str, Any]:
                    nonlocal ag
                    if ag is None:
                        ag = start()
                    return MANY_ROWS[rid](ag, impl, P)

                res.record(rid, impl, go, suffix=suffix)
        finally:
            if ag is not None:
                ag.close()


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, well under a minute")
    ap.add_argument("--only", default="", help="comma-separated row ids (1..7, 8a, 8b, "
                    "8 = both, 9..11, ext = the other benchmarks, browser)")
    ap.add_argument("--out", type=Path, default=None,
                    help="directory for results.json and RESULTS.md (default: benchmarks/out "
                         "and benchmarks/RESULTS.md)")
    ap.add_argument("--no-browser", action="store_true", help="skip the headless Chromium row")
    ap.add_argument("--browser", action="store_true",
                    help="include the headless Chromium row in a --smoke run")
    ap.add_argument("--no-external", action="store_true", help="skip the other bench_*.py")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions of every row, interleaved with alternating server order "
                         "(default 3; --smoke: 1); the table shows the median and min-max")
    ap.add_argument("--impls", default="",
                    help="comma-separated servers to run (default: every installed one of "
                         f"{', '.join(IMPLS)}; e.g. vuer_sync alone to compare checkouts "
                         "with compare.py)")
    ap.add_argument("--render", type=Path, default=None, metavar="RESULTS_JSON",
                    help="only rewrite RESULTS.md (or --out DIR/RESULTS.md) from a results.json")
    return ap.parse_args(argv)


def render(results_json: Path, out: Optional[Path]) -> int:
    """``--render``: rewrite RESULTS.md from a saved results.json."""
    data = json.loads(results_json.read_text())
    data["goals"] = goals(data)
    md = (out / "RESULTS.md") if out else (HERE / "RESULTS.md")
    write_markdown(data, md)
    page = (out / "performance.md") if out else PERFORMANCE_PAGE
    page.write_text(performance_page(data), encoding="utf-8")
    print(f"wrote {md} and {page}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render(args.render, args.out)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    P = dict(SMOKE if args.smoke else FULL)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if "8" in only:
        only |= {"8a", "8b"}
    out_dir = args.out or (HERE / "out")
    md_path = (args.out / "RESULTS.md") if args.out else (HERE / "RESULTS.md")
    log_dir = out_dir / "logs"
    out_dir.mkdir(parents=True, exist_ok=True)

    def want(rid: str) -> bool:
        return not only or rid in only

    res = Results(P, "smoke" if args.smoke else "full")
    t_start = time.monotonic()
    chosen = [x.strip() for x in args.impls.split(",") if x.strip()]
    unknown = sorted(set(chosen) - set(IMPLS))
    if unknown:
        raise SystemExit(f"--impls: unknown server(s) {', '.join(unknown)} "
                         f"(known: {', '.join(IMPLS)})")
    impls = [i for i in IMPLS if (not chosen or i in chosen) and installed(i)]
    for i in IMPLS:
        if chosen and i not in chosen:
            res.data["notes"].append(f"{i} was not run (--impls): its column is empty.")
        elif i not in impls:
            res.data["notes"].append(f"{i} is not installed: its column is empty.")
    res.data["notes"] += NOTES
    print(f"benchmarks ({res.data['mode']}): servers {', '.join(impls)}; output {out_dir}",
          flush=True)
    res.declare(ROWS)

    light = [rid for rid in ("1", "2", "3", "3b", "4", "5", "7") if want(rid)]
    do_browser = "browser" in only or (not only and not args.no_browser
                                       and (args.browser or not args.smoke))
    reps = args.reps if args.reps is not None else (1 if args.smoke else 3)
    res.data["repetitions"] = []
    for rep in range(reps):  # interleaved: every row once per repetition, order alternating
        order = impls if rep % 2 == 0 else impls[::-1]
        res.data["repetitions"].append({"order": order, "started": time.time()})
        print(f"repetition {rep + 1}/{reps}: {', '.join(order)}", flush=True)
        if light or do_browser:
            run_light(res, order, light, do_browser, P, log_dir)
        run_own_server_rows(res, order, want, P, log_dir)
        run_many_viewers(res, order, want, P, log_dir)
    res.finish()

    if (not only or "ext" in only) and not args.no_external:
        print("other benchmarks:", flush=True)
        res.data["external"] = run_external(args.smoke, out_dir)

    res.data["elapsed_s"] = time.monotonic() - t_start
    res.data["goals"] = goals(res.data)
    if only:
        res.data["rows"] = {k: v for k, v in res.data["rows"].items()
                            if k in only or (k == "4" and "browser" in only)}
    # the default run's raw numbers sit next to RESULTS.md (committed with it: every number
    # in RESULTS.md and docs/performance.md comes from this file)
    json_path = (args.out / "results.json") if args.out else (HERE / "results.json")
    json_path.write_text(json.dumps(res.data, indent=1, default=str))
    write_markdown(res.data, md_path)
    # docs/performance.md from the same data (with --out: next to RESULTS.md, not docs/)
    page = (args.out / "performance.md") if args.out else PERFORMANCE_PAGE
    page.write_text(performance_page(json.loads(json_path.read_text())), encoding="utf-8")
    print(f"\nwrote {json_path} and {md_path} "
          f"({res.data['elapsed_s']:.0f} s)")
    print(md_path.read_text().split("\n## Goals")[0].split("\n\n", 4)[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
