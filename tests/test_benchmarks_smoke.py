"""The benchmark suite keeps working: ``benchmarks/run.py --smoke`` runs end to end.

It checks that every row is reported, with numbers for vuer_sync and for Vuer/viser wherever
they have the feature. It never asserts on speed: the numbers are not pass/fail (these 2-core
machines are noisy). Under CI=true a missing vuer or viser fails the test (``require``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("1", "2", "3", "4", "5", "6", "7", "8a", "8b", "9", "10", "11")
IMPLS = ("vuer_sync", "vuer", "viser")


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_benchmark_suite_smoke(tmp_path):
    require("vuer")
    require("viser")
    require("psutil")
    require("zstandard")  # the row-8 watcher decodes viser's frames
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540, check=False)
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, output

    data = json.loads((tmp_path / "results.json").read_text())
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| row | metric | vuer_sync |" in md
    assert data["mode"] == "smoke"
    machine = data["machine"]
    assert machine["cpu_count"] and machine["cpu_model"] and machine["python"]
    assert machine["packages"]["vuer"] and machine["packages"]["viser"]

    rows = data["rows"]
    missing = [r for r in ROWS if r not in rows]
    assert not missing, f"rows missing from results.json: {missing}"
    problems = []
    for rid in ROWS:
        row = rows[rid]
        assert row["metrics"], f"row {rid} has no metrics"
        for name, m in row["metrics"].items():
            v = m["values"].get("vuer_sync")
            if name.startswith("q100_"):  # Vuer at its default queue_len: Vuer's alone
                if not _number(m["values"].get("vuer")):
                    problems.append(f"row {rid} {name}: vuer = {m['values'].get('vuer')!r}")
                continue
            if not _number(v):
                problems.append(f"row {rid} {name}: vuer_sync = {v!r}")
        for impl in ("vuer", "viser"):
            vals = {name: m["values"].get(impl) for name, m in row["metrics"].items()}
            if not row["supported"][impl]:
                continue
            if not any(_number(v) for v in vals.values()):
                problems.append(f"row {rid}: no number for {impl}: {vals}")
            for name, v in vals.items():
                # a number, or an honest reason (e.g. Vuer's 1009 on a 12 MB upload)
                if not (_number(v) or (isinstance(v, str) and v and not v.startswith("error"))):
                    problems.append(f"row {rid} {name}: {impl} = {v!r}")
    assert not problems, "\n".join(problems) + "\n\n" + output
    assert len(data["goals"]) >= 6
    # every light row of every server started once the servers were quiet
    assert {(x["row"], x["impl"]) for x in data["settle"]} >= {("1", i) for i in IMPLS}
    assert all(x["waited_s"] >= 0 for x in data["settle"])
    # row 1: the frames that reached the client beside the call cost; distinct keys cannot
    # coalesce, so every call is a frame there
    r1 = rows["1"]["metrics"]
    calls = rows["1"]["raw"]["vuer_sync"][0]["distinct_run"]["calls"]
    assert r1["distinct_frames"]["values"]["vuer_sync"] == calls
    assert 0 < r1["frames"]["values"]["vuer_sync"] <= calls
    assert len(data["repetitions"]) == 1 and data["machine"]["git_dirty"] is not None
    # docs/performance.md's generator ran on the same data
    assert "## The table" in (tmp_path / "performance.md").read_text()
    # the lateness goal is shown next to plain sendall writers, measured in the same run
    floor = data["external"]["bench_lateness_floor.py"]
    assert floor["status"] == "ok", floor
    assert all(_number(floor["json"]["lateness_floor-smoke.json"][w]["p99_ms"])
               for w in ("none", "process", "thread", "thread_chunked"))
    assert "writing 512 KiB per call as our transport does" in md


@pytest.mark.timeout(300)
def test_benchmark_suite_runs_the_servers_it_is_given(tmp_path):
    """``--impls vuer_sync`` runs vuer_sync alone (what compare.py needs across checkouts):
    the other columns are empty, with a note saying why; an unknown name is refused."""
    require("psutil")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    run = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--only", "1",
           "--no-external", "--out", str(tmp_path)]
    proc = subprocess.run([*run, "--impls", "vuer_sync"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    values = data["rows"]["1"]["metrics"]["median_us"]["values"]
    assert _number(values["vuer_sync"])
    assert not _number(values.get("vuer")) and not _number(values.get("viser"))
    assert any("vuer was not run (--impls)" in n for n in data["notes"])
    bad = subprocess.run([*run, "--impls", "vuer_sync,nope"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0 and "unknown server(s) nope" in bad.stderr


def test_rows_wait_for_every_server_to_be_quiet():
    """``run.settle``: a row starts once no server process is busy; one that keeps spinning
    (what Vuer 0.1.6 does for a session it never ends) is restarted after ``max_s``, a quiet
    one is left alone."""
    require("psutil")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run  # noqa: E402

    class Server:
        def __init__(self, code):
            self.proc = subprocess.Popen([sys.executable, "-c", code])

    busy = Server("import time\nt = time.monotonic()\nwhile time.monotonic() - t < 30: pass")
    idle = Server("import time; time.sleep(30)")
    restarted = []
    try:
        out = run.settle({"busy": busy, "idle": idle}, restarted.append, max_s=0.6)
        assert restarted == ["busy"] and set(out["restarted"]) == {"busy"}
        assert 0.6 <= out["waited_s"] < 5
        restarted.clear()
        assert run.settle({"idle": idle}, restarted.append, max_s=0.6)["waited_s"] < 0.6
        assert restarted == []
    finally:
        for s in (busy, idle):
            s.proc.kill()
            s.proc.wait()
