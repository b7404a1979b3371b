"""A real ``redis-server`` for the fleet tests: a free 127.0.0.1 port, a temp dir, no
persistence (or AOF with fsync on every write), stopped (or killed) by the test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need_redis() -> str:
    """The ``redis-server`` executable (and the ``redis`` module importable): skip when
    missing, FAIL under ``CI=true``."""
    exe = shutil.which("redis-server")
    problem = None
    if exe is None:
        problem = "redis-server is not on PATH (apt-get install redis-server)"
    else:
        try:
            import redis  # noqa: F401
        except ImportError as e:
            problem = f"the redis module is not importable ({e}): pip install redis"
    if problem is not None:
        if IN_CI:
            pytest.fail(f"{problem}; required under CI=true")
        pytest.skip(problem)
    assert exe is not None
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process in ``dir``."""

    def __init__(self, exe: str, dir: Path, appendonly: bool = False):
        self.exe = exe
        self.dir = dir
        self.appendonly = appendonly
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> List[str]:
        argv = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
                "--daemonize", "no"]
        if self.appendonly:
            return argv + ["--appendonly", "yes", "--appendfsync", "always"]
        return argv + ["--appendonly", "no"]

    def start(self, port: Optional[int] = None, timeout: float = 10.0) -> RedisServer:
        """Start (on ``port``, or a free one; three tries) and wait until it answers PING."""
        for _ in range(3):
            self.port = port or free_port()
            self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            if self._wait_ping(timeout):
                return self
            self.kill()
            if port:
                break
        log = (self.dir / "redis.log")
        raise RuntimeError("redis-server did not start:\n" +
                           (log.read_text()[-2000:] if log.exists() else ""))

    def _wait_ping(self, timeout: float) -> bool:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
                try:
                    if r.ping():
                        return True
                finally:
                    r.close()
            except redis.RedisError:
                time.sleep(0.02)
        return False

    def client(self):
        import redis
        return redis.Redis.from_url(self.url)

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
