"""The `vuer-sync` command (and `python -m vuer_sync`): demo (the README's main command),
play, version, help, a busy port; and `./scripts/demo` itself on Debian's own Python."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vuer_sync import Vuer, VuerClient, __version__
from vuer_sync.schemas import Box, DefaultScene

from conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=30, module="vuer_sync.cli"):
    return subprocess.run([sys.executable, "-m", module, *args], check=False,
                          capture_output=True, text=True, timeout=timeout)


def test_version_and_help():
    assert run_cli("version").stdout.strip() == f"vuer-sync {__version__}"
    out = run_cli("--help").stdout
    for cmd in ("demo", "play", "export", "version", "--log-level", "--version"):
        assert cmd in out
    play_help = run_cli("play", "--help").stdout
    assert "--seconds" in play_help and "--port" in play_help  # bounded play is documented


def test_version_flag_and_python_dash_m():
    for args in (["--version"], ["version"]):
        r = run_cli(*args, module="vuer_sync")  # python -m vuer_sync: the same command
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"vuer-sync {__version__}"
    assert "demo" in run_cli("--help", module="vuer_sync").stdout


class Demo:
    """`vuer-sync demo` in a subprocess; ``port`` from its banner."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vuer_sync", "demo", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.banner = []
        self.port = None
        for _ in range(20):
            line = self.proc.stdout.readline()
            self.banner.append(line)
            if line.startswith("Local:"):
                self.port = int(line.rsplit(":", 1)[1].strip(" /\n"))
            if "Ctrl-C" in line:
                break
        assert self.port, f"no banner with the local URL: {self.banner}"

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


def test_demo_serves_an_arm_a_point_cloud_and_a_camera():
    demo = Demo("--seconds", "30")
    try:
        assert any("Ctrl-C to stop" in line for line in demo.banner), demo.banner
        with VuerClient(f"ws://127.0.0.1:{demo.port}") as c:
            first = c.recv(timeout=10)
            assert first.etype == "SET"
            keys = {n["key"] for n in first.data["children"]}
            assert {"arm", "cloud", "frustum"} <= keys, keys
            assert first.data["bgChildren"]  # DefaultScene's background ...
            cam = next(n for n in first.data["bgChildren"] if n["key"] == "SceneCamera")
            assert cam["position"] != [0, 5, 10] and "lookAt" in cam  # ... framed on the demo

            def walk(node):
                yield node
                for child in node.get("children", []):
                    yield from walk(child)

            arm = next(n for n in first.data["children"] if n["key"] == "arm")
            joints = [n["key"] for n in walk(arm) if n["tag"] == "group"]
            assert joints[:2] == ["arm", "j-base"] and len(joints) >= 5  # nested groups
            frustum = next(n for n in first.data["children"] if n["key"] == "frustum")
            assert frustum["tag"] == "Frustum"
            updates = []
            deadline = time.monotonic() + 10
            while len(updates) < 12 and time.monotonic() < deadline:  # bounded
                ev = c.recv(timeout=5)
                if ev is not None and ev.etype == "UPDATE":
                    updates.append(ev.data["nodes"])
        poses = [tuple(n["rotation"]) for nodes in updates for n in nodes
                 if n["key"] == "j-shoulder"]
        assert len(set(poses)) >= 10, "the arm's joints do not move"
        clouds = [n for nodes in updates for n in nodes if n.get("key") == "cloud"]
        assert clouds and isinstance(clouds[0]["vertices"], bytes)  # the live point cloud
    finally:
        demo.close()


def test_demo_stops_after_seconds_and_on_ctrl_c():
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "vuer_sync", "demo", "--port", "0",
                        "--seconds", "1"], check=False, capture_output=True, text=True,
                       timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and took < 15, (took, r.stderr)
    demo = Demo()  # no --seconds: until Ctrl-C
    try:
        with VuerClient(f"ws://127.0.0.1:{demo.port}") as c:
            assert c.recv(timeout=10).etype == "SET"
            demo.proc.send_signal(signal.SIGINT)
            rc = demo.proc.wait(15)
        assert rc == 0
        assert "Traceback" not in demo.proc.stderr.read()
    finally:
        demo.close()


def busy_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def recording(tmp_path):
    studio = Vuer(port=0)  # never started
    rec = studio.scene.record()
    studio.scene.set @ DefaultScene(Box(key="box"))
    studio.scene.update @ {"key": "box", "position": [1, 0, 0]}
    return rec.save(tmp_path / "box.vsrec")


def test_a_busy_port_is_one_line_not_a_traceback(tmp_path):
    sock, port = busy_port()
    try:
        path = recording(tmp_path)
        for cmd in (["demo"], ["play", str(path)]):
            r = run_cli(*cmd, "--port", str(port), "--seconds", "5", module="vuer_sync")
            assert r.returncode == 1, (cmd, r.returncode, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1, r.stderr  # no Werkzeug lines, no traceback
            assert str(port) in lines[0] and "in use" in lines[0]
            assert "--port N" in lines[0] and "--port 0" in lines[0]
            assert "Local:" not in r.stdout  # nothing was served
    finally:
        sock.close()


def test_play_stops_after_seconds(tmp_path):
    path = recording(tmp_path)
    r = run_cli("play", str(path), "--port", "0", "--seconds", "1", module="vuer_sync")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "Local:" in r.stdout


# -- ./scripts/demo on Debian's own Python (PEP 668) ---------------------------------------

DEBIAN_PYTHON = "/usr/bin/python3"


def copy_of_the_tree(dest: Path) -> Path:
    """What a clean clone of this working tree would hold: tracked and untracked files that
    .gitignore does not exclude (so the test checks what is in the tree, committed or not)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():  # tracked but deleted in the tree: not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scripts_demo_on_debians_own_python(tmp_path):
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        if IN_CI:
            pytest.fail(f"{DEBIAN_PYTHON} is required under CI=true (Debian's python3)")
        pytest.skip(f"no {DEBIAN_PYTHON}")
    tree = copy_of_the_tree(tmp_path / "clone")
    assert not (tree / ".venv").exists()
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")}
    env.update(PATH="/usr/bin:/bin", PYTHONUNBUFFERED="1")

    def demo():
        t0 = time.monotonic()
        r = subprocess.run(["./scripts/demo", "--port", "0", "--seconds", "2"], cwd=tree,
                           env=env, check=False, capture_output=True, text=True, timeout=600)
        return r, time.monotonic() - t0

    first, took_first = demo()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert re.search(r"Local:\s+http://localhost:\d+/", first.stdout), first.stdout
    assert "Ctrl-C to stop" in first.stdout
    assert "installing" in first.stderr  # into the project's own .venv ...
    venv_python = tree / ".venv" / "bin" / "python"
    base = subprocess.run([str(venv_python), "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert base == "/usr"  # ... made by Debian's python3
    stamps = list((tree / ".venv").glob(".vuer-sync-install-*.stamp"))
    assert [p.name for p in stamps] == [".vuer-sync-install-viewer.stamp"]

    second, took_second = demo()  # warm: nothing changed, so no pip
    assert second.returncode == 0, second.stderr[-3000:]
    assert "installing" not in second.stderr and "Local:" in second.stdout
    assert took_second < took_first

    with open(tree / "setup.cfg", "a") as f:  # the package's metadata changed: reinstall
        f.write("\n# changed\n")
    third, _ = demo()
    assert third.returncode == 0, third.stderr[-3000:]
    assert "installing" in third.stderr
    print(f"scripts/demo on {DEBIAN_PYTHON}: first run {took_first:.1f} s, warm run "
          f"{took_second:.1f} s (of which the demo serves 2 s)")


#: a process serving with start(block=True) (or the CLI's --seconds wait) whose Ctrl-C
#: SIGINT is delivered to one of its other threads (the kernel may pick any thread that
#: does not block the signal); Python runs the handler only when the main thread wakes
_SIGINT_ELSEWHERE = r"""
import signal, sys, threading, time
from vuer_sync import Vuer
from vuer_sync.cli import main

def interrupt_from_another_thread():
    time.sleep(1.0)
    other = threading.Thread(target=time.sleep, args=(5,), name="bystander", daemon=True)
    other.start()
    signal.pthread_kill(other.ident, signal.SIGINT)

threading.Thread(target=interrupt_from_another_thread, daemon=True).start()
t0 = time.monotonic()
if sys.argv[1] == "start":
    Vuer(port=0).start(block=True)
else:
    main(["demo", "--port", "0", "--seconds", "600"])
print(f"stopped after {time.monotonic() - t0:.1f} s", flush=True)
"""


@pytest.mark.parametrize("how", ["start", "cli_seconds"])
def test_ctrl_c_delivered_to_another_thread_still_stops_the_server(how):
    r = subprocess.run([sys.executable, "-c", _SIGINT_ELSEWHERE, how], check=False,
                       capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    took = float(r.stdout.rsplit("stopped after ", 1)[1].split()[0])
    assert took < 10, (took, r.stderr[-2000:])  # not the 3600 s (or 600 s) wait
