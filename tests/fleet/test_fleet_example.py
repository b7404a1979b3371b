"""``examples/fleet.py`` runs as a user runs it, bounded: its own redis-server, two nodes,
the robot in its own process; it exits 0 and both nodes agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_examples import subprocess_env

from .fleet_redis import need_redis

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.py"


def test_fleet_example_runs_and_both_nodes_agree(tmp_path):
    need_redis()
    env = subprocess_env()
    env.pop("VUER_SYNC_FLEET", None)
    r = subprocess.run([sys.executable, str(EXAMPLE), "--seconds", "2", "--port", "0",
                        "--check"], cwd=str(tmp_path), env=env, text=True, timeout=90,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert r.returncode == 0, r.stdout
    assert "Traceback" not in r.stdout, r.stdout
    assert "nodes agree: True" in r.stdout, r.stdout
    assert "robot: " in r.stdout and "node B sees the robot's arm at [9" in r.stdout, r.stdout
    assert list(tmp_path.iterdir()) == []  # the throwaway Redis left nothing behind
