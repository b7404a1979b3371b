"""The `vuer-sync` command: demo (the README's main command), version, help."""

from __future__ import annotations

import subprocess
import sys

from vuer_sync import VuerClient, __version__


def run_cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "vuer_sync.cli", *args], check=False,
                          capture_output=True, text=True, timeout=timeout)


def test_version_and_help():
    assert run_cli("version").stdout.strip() == f"vuer-sync {__version__}"
    out = run_cli("--help").stdout
    for cmd in ("demo", "play", "export", "version", "--log-level"):
        assert cmd in out


def test_demo_serves_an_animated_scene():
    proc = subprocess.Popen([sys.executable, "-m", "vuer_sync.cli", "demo", "--port", "0",
                             "--seconds", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for _ in range(20):
            line = proc.stdout.readline()
            if line.startswith("Local:"):
                port = int(line.rsplit(":", 1)[1].strip(" /\n"))
                break
        assert port, "no banner with the local URL"
        with VuerClient(f"ws://127.0.0.1:{port}") as c:
            first = c.recv(timeout=10)
            assert first.etype == "SET"
            keys = {n["key"] for n in first.data["children"]}
            assert {"box", "ball"} <= keys and first.data["bgChildren"]  # a DefaultScene
            moves = [c.recv(timeout=5) for _ in range(3)]
        positions = [m.data["nodes"][0]["position"] for m in moves]
        assert all(m.etype == "UPSERT" for m in moves) and len({tuple(p) for p in positions}) == 3
    finally:
        proc.terminate()
        proc.wait(10)
