"""benchmarks/bench_rtc.py --smoke runs end to end and reports sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_rtc_smoke(tmp_path):
    out = tmp_path / "rtc.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_rtc.py"), "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["smoke"] is True
    sizes = [row["journal"] for row in data["rows"]]
    assert sizes == [0, 100, 1000]
    for row in data["rows"]:
        assert row["ours"]["edit_commit"]["ops"] > 0 and row["ours"]["receive"]["ops"] > 0
    assert data["memory"]["ours_bytes_per_node_compacted"] > 0
    assert "edit+commit" in proc.stdout
