"""The other ``bench_*.py`` in this directory (owned by others), run by ``run.py``: each that
exists runs (``--smoke`` in smoke mode, when the script has that flag), and the JSON files it
writes to ``benchmarks/out/`` are merged into ``results.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

from common import HERE

EXTERNAL = ("bench_client_upload.py", "bench_rtc.py", "bench_render.py", "bench_transport.py",
            "bench_record.py", "bench_lateness_floor.py", "bench_validation.py",
            "bench_fleet.py", "bench_anchors.py", "bench_teleop.py")
#: flags a full run adds (not a smoke run): bench_rtc's durable-relay rows (issue 21's
#: edits/s through Redis and late join) in the same bench_rtc run as its throughput rows
FULL_FLAGS = {"bench_rtc.py": ["--relay"]}


def run_external(smoke: bool, out_dir: Path) -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    bench_out = HERE / "out"
    for name in EXTERNAL:
        path = HERE / name
        if not path.exists():
            results[name] = {"status": "missing", "note": f"{name} is not in the tree"}
            print(f"  {name}: missing, skipped")
            continue
        if smoke and "--smoke" not in path.read_text(encoding="utf-8", errors="replace"):
            results[name] = {"status": "skipped", "note": f"{name} has no --smoke flag, so "
                             "the smoke run skips it (the full run includes it)"}
            print(f"  {name}: no --smoke flag, skipped in smoke mode")
            continue
        cmd = [sys.executable, str(path)] + (["--smoke"] if smoke else FULL_FLAGS.get(name, []))
        before = {f.name: f.stat().st_mtime for f in bench_out.glob("*.json")}
        start = time.time()
        timeout = 120 if smoke else 1800
        print(f"  {name} {'--smoke' if smoke else ''} ...", flush=True)
        try:
            env = dict(os.environ)  # this tree's vuer_sync, whatever is pip-installed
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(HERE.parent), env.get("PYTHONPATH", "")) if p)
            proc = subprocess.run(cmd, cwd=str(HERE.parent), capture_output=True, text=True,
                                  timeout=timeout, check=False, env=env)
            rc: Any = proc.returncode
            tail = (proc.stdout + proc.stderr)[-2000:]
        except subprocess.TimeoutExpired as e:
            rc = f"timed out after {timeout} s"
            tail = str(e)[-2000:]
        entry: Dict[str, Any] = {"status": "ok" if rc == 0 else "failed", "returncode": rc,
                                 "elapsed_s": time.time() - start, "output_tail": tail,
                                 "json": {}}
        if bench_out.is_dir():
            for f in sorted(bench_out.glob("*.json")):
                if f.name == "results.json" or f.stat().st_mtime == before.get(f.name):
                    continue
                try:
                    entry["json"][f.name] = json.loads(f.read_text())
                except ValueError:
                    entry["json"][f.name] = "unreadable JSON"
        results[name] = entry
        print(f"  {name}: {entry['status']} ({entry['elapsed_s']:.1f} s, "
              f"{len(entry['json'])} JSON file(s))")
    return results

