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


def test_bench_rtc_relay_rows_smoke(tmp_path):
    """The durable relay rows (``--relay``) run end to end on a real redis-server, tiny."""
    from fleet.fleet_redis import RedisServer, need_redis

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_rtc
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    srv = RedisServer(need_redis(), tmp_path).start()
    try:
        edits = bench_rtc.bench_relay_edits(srv.url, per_client=5, reps=1, in_process=True)
        late = bench_rtc.bench_late_join(srv.url, entries=300, nodes=20)
    finally:
        srv.stop()
    for mode in ("one_process", "two_nodes_redis"):
        assert edits[mode]["median_per_s"] > 0 and len(edits[mode]["runs"]) == 1
    assert late["snapshots_loaded"] == 1 and late["tail_applied"] < 300
    assert 0 < late["client_join_s"] and 0 < late["node_start_and_client_join_s"]
