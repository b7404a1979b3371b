"""Every example runs, as a user runs it, in its bounded mode: a subprocess per script
(servers stopped with Ctrl-C, as in a terminal), and the Jupyter notebook through a real
kernel (nbclient)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import require

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# examples run by other test files (they need more than a Python client)
TESTED_ELSEWHERE = {"dataset_capture.py": "tests/test_browser.py (needs Chromium)",
                    "fleet.py": "tests/fleet/test_fleet_example.py (needs redis-server)",
                    "teleop.py": "tests/teleop/test_lan.py (replays tests/teleop/ data)"}

# script -> (bounded arguments, lines its output must contain)
STANDALONE = {
    "hello_box.py": (["--seconds", "1", "--port", "0"], [r"Local:\s+http://localhost:\d+/"]),
    "robot_arm.py": (["--seconds", "2", "--port", "0", "--check"],
                     [r"\d+ steps in", r"final tool pose matches the last one computed"]),
    "point_cloud.py": (["--frames", "30", "--points", "20000", "--port", "0", "--check"],
                       [r"30 frames of \d+ points produced",
                        r"last frame identical to the last one produced"]),
    "record_playback.py": (["--port", "0", "--check", "--speed", "8"],
                           [r"recorded 61 messages, 2\.00 s",
                            r"received 61 messages: the same as the recording"]),
}
# (server, client, client arguments, lines the server must print, lines the client must print)
PAIRS = [
    ("seed_server.py", "seed_client.py", [],
     ["Server ready", r"Received HELLO: \{'message': 'Hi!'\}",
      r"Received MOVE_BOX: \[1, 0\.5, 0\]"],
     ["Events sent!", r"box moved to \[1, 0\.5, 0\]"]),
    ("remote_control_server.py", "remote_control_client.py", ["--fps", "250"],
     ["python client connected", r"SET_POSITION #200: "],
     ["sent 200 SET_POSITION events"]),
]


def subprocess_env(**extra: str) -> Dict[str, str]:
    """The environment for scripts: unbuffered output, this checkout importable first."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class ServerProcess:
    """A server script in a subprocess: its port (read from the start-up banner), its output
    (stdout and stderr), and a clean stop with Ctrl-C."""

    def __init__(self, argv: List[str], cwd: Path, env: Dict[str, str], timeout: float = 20):
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=str(cwd), env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._lines: List[str] = []
        self._eof = False
        self._cv = threading.Condition()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        self.port = int(self.wait_for(r"localhost:(\d+)", timeout).group(1))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cv:
                self._lines.append(line)
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    @property
    def output(self) -> str:
        with self._cv:
            return "".join(self._lines)

    def wait_for(self, pattern: str, timeout: float = 10) -> re.Match:
        """Block until the output matches ``pattern``; fail with the output if it does not."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self._cv:
            while True:
                m = rx.search("".join(self._lines))
                left = deadline - time.monotonic()
                if m or self._eof or left <= 0:
                    break
                self._cv.wait(left)
        if m is None:
            raise AssertionError(f"{pattern!r} not in the server's output:\n{self.output}")
        return m

    def stop(self, timeout: float = 10) -> int:
        """Ctrl-C, then wait for the exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop on Ctrl-C within {timeout} s:\n"
                                 f"{self.output}") from None
        self._pump.join(5)
        return rc

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_script(argv: List[str], cwd: Path, env: Dict[str, str], timeout: float = 30
               ) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, *argv], check=False, cwd=str(cwd), env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{argv[0]} did not finish within {timeout} s:\n{e.output}") from None


def assert_clean(name: str, rc: Optional[int], output: str, expected: List[str]) -> None:
    assert rc == 0, f"{name} exited with {rc}:\n{output}"
    assert "Traceback" not in output, f"{name} printed a traceback:\n{output}"
    for pattern in expected:
        assert re.search(pattern, output), f"{pattern!r} not in the output of {name}:\n{output}"


def test_every_example_is_run_by_a_test():
    on_disk = {p.name for p in EXAMPLES.glob("*.py")}
    covered = set(STANDALONE) | {name for pair in PAIRS for name in pair[:2]}
    covered.add("collab_edit.py")  # test_collaborative_editing_across_processes
    assert on_disk - set(TESTED_ELSEWHERE) == covered
    assert (EXAMPLES / "jupyter_quickstart.ipynb").is_file()


@pytest.mark.parametrize("name", sorted(STANDALONE))
def test_standalone_example(name, tmp_path):
    args, expected = STANDALONE[name]
    r = run_script([str(EXAMPLES / name), *args], tmp_path, subprocess_env())
    assert_clean(name, r.returncode, r.stdout, expected)


@pytest.mark.parametrize("server,client,client_args,server_says,client_says", PAIRS,
                         ids=[p[0].replace("_server.py", "") for p in PAIRS])
def test_server_and_client_examples(server, client, client_args, server_says, client_says,
                                    tmp_path):
    env = subprocess_env()
    with ServerProcess([str(EXAMPLES / server), "--port", "0", "--seconds", "30"], tmp_path,
                       env) as srv:
        r = run_script([str(EXAMPLES / client), "--uri", f"ws://localhost:{srv.port}",
                        *client_args], tmp_path, env)
        assert_clean(client, r.returncode, r.stdout, client_says)
        for pattern in server_says:  # the server saw the client's events
            srv.wait_for(pattern)
        rc = srv.stop()
    assert_clean(server, rc, srv.output, server_says)


def test_dataset_capture_headless_checks_playwright_before_serving(tmp_path):
    """No Playwright: one clear line and a non-zero exit, before any server starts."""
    fake = tmp_path / "no-playwright" / "playwright"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("No module named playwright")\n')
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env["PYTHONPATH"]])
    t0 = time.monotonic()
    r = run_script([str(EXAMPLES / "dataset_capture.py"), "--headless", "--n", "1",
                    "--out", str(tmp_path / "out")], tmp_path, env)
    assert r.returncode != 0, r.stdout
    assert "needs Playwright" in r.stdout and "vuer-sync[capture]" in r.stdout, r.stdout
    assert "Vuer server" not in r.stdout and "Traceback" not in r.stdout, r.stdout
    assert time.monotonic() - t0 < 20 and not (tmp_path / "out").exists()
    r = run_script([str(EXAMPLES / "dataset_capture.py"), "--headless", "--chromium",
                    str(tmp_path / "no-such-chromium")], tmp_path, subprocess_env())
    assert r.returncode != 0 and "Vuer server" not in r.stdout, r.stdout
    assert "no Chromium at" in r.stdout or "needs Playwright" in r.stdout, r.stdout


def test_collaborative_editing_across_processes(tmp_path):
    env = subprocess_env()
    script = str(EXAMPLES / "collab_edit.py")
    with ServerProcess([script, "serve", "--port", "0", "--seconds", "30"], tmp_path,
                       env) as srv:
        uri = f"ws://localhost:{srv.port}"
        editors = [
            subprocess.Popen([sys.executable, script, "edit", "--uri", uri, *args], env=env,
                             cwd=str(tmp_path), text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
            for args in (["--name", "alice", "--create", "--n", "50", "--delta", "-1",
                          "--expect", "110"],
                         ["--name", "bob", "--n", "30", "--delta", "2", "--expect", "110"])]
        views = []
        for proc, name in zip(editors, ("alice", "bob")):
            try:
                out, _ = proc.communicate(timeout=30)
            finally:
                proc.kill()
            assert_clean(name, proc.returncode, out, [rf"{name}'s converged view: cube hp=110 "])
            views.append(re.search(r"converged view: (.*)", out).group(1))
        rc = srv.stop()
    assert_clean("collab_edit.py serve", rc, srv.output, [r"server's converged view: "])
    views.append(re.search(r"server's converged view: (.*)", srv.output).group(1))
    assert len(set(views)) == 1, views  # alice, bob and the server: the same scene


def test_jupyter_notebook_runs(tmp_path, monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # the kernel's sys.path
    nb = nbformat.read(str(EXAMPLES / "jupyter_quickstart.ipynb"), as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit the notebook without outputs"
    nbclient.NotebookClient(nb, timeout=30, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "app.stop()" in code[-1].source  # the last cell stops the server

    def text(cell):
        out = []
        for o in cell.outputs:
            out.append(o.get("text", ""))
            out.extend(str(v) for v in o.get("data", {}).values())
        return "".join(out)

    port = re.search(r"serving http://localhost:(\d+)/", text(code[0])).group(1)
    show = next(c for c in code if "app.show(" in c.source)
    frames = re.findall(r"<iframe[^>]*src=\"http://localhost:(\d+)/\"", text(show))
    assert frames == [port], f"expected one viewer for port {port}: {text(show)}"
    assert "scene keys: ['box', 'ball']" in "".join(text(c) for c in code)
