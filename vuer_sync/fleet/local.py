"""A throwaway ``redis-server`` on this machine, for trying the fleet out, examples and docs:
a free 127.0.0.1 port, a temporary directory, no persistence; stopped (and the directory
removed) by :meth:`LocalRedis.stop` or the end of a ``with`` block.

Not for production: there, run Redis as a service (with a password or ACL users, TLS, and
AOF if the room must survive a Redis restart; ``docs/fleet.md``).
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, List, Optional

logger = logging.getLogger("vuer_sync.fleet")

__all__ = ["LocalRedis"]


class LocalRedis:
    """``redis-server`` in a subprocess.

    >>> import shutil
    >>> if shutil.which("redis-server"):
    ...     with LocalRedis() as redis:
    ...         redis.url.startswith("redis://127.0.0.1:")
    ... else:
    ...     True
    True

    ``FileNotFoundError`` if ``redis-server`` is not on ``PATH`` (Debian/Ubuntu:
    ``apt-get install redis-server``; macOS: ``brew install redis``).
    """

    def __init__(self, executable: Optional[str] = None, appendonly: bool = False):
        exe = executable or shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server is not on PATH (apt-get install "
                                    "redis-server, or brew install redis)")
        self.executable = exe
        self.appendonly = appendonly
        self.port = 0
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> List[str]:
        assert self.dir is not None
        return [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"]

    def start(self, timeout: float = 10.0) -> LocalRedis:
        """Start on a free port and wait until it accepts connections (three tries)."""
        self.dir = tempfile.mkdtemp(prefix="vuer-redis-")
        for _ in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            self.proc = subprocess.Popen(self._argv(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            if self._ready(timeout):
                return self
            self._kill()
        self.stop()
        raise RuntimeError("redis-server did not start")

    def _ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``), remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        if self.proc is not None:
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
