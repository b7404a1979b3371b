"""Logging hygiene shared by the server and the client: secrets out of logged URLs, and
repeated identical tracebacks folded into a count."""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from typing import Dict, Optional, Tuple

__all__ = ["TracebackLimiter", "redact_secrets"]

_SECRET = re.compile(r"((?:^|[?&;\s/]|%3F|%26)(?:token|access_token|password|secret)"
                     r"(?:=|%3D))(?:(?!%26)[^&;\s#'\"])*", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    """``text`` with the values of ``token=`` (also percent-encoded, ``token%3D``),
    ``access_token=``, ``password=`` and ``secret=`` replaced by ``***``.

    >>> redact_secrets("GET /?ws=ws://h:1/%3Ftoken%3Ds3cret&x=1 HTTP/1.1")
    'GET /?ws=ws://h:1/%3Ftoken%3D***&x=1 HTTP/1.1'
    >>> redact_secrets("ws://localhost:8012/?token=abc")
    'ws://localhost:8012/?token=***'
    """
    return _SECRET.sub(r"\1***", text)


class TracebackLimiter:
    """Logs an exception's traceback the first time it is seen from a given source, then
    only counts identical ones (same source, exception type and stack of code locations; the
    message may differ) for ``window`` seconds; the next one after that is logged with how
    many were folded in.

    >>> limiter = TracebackLimiter(logging.getLogger("vuer_sync.example"), window=60)
    >>> for _ in range(3):
    ...     try:
    ...         1 / 0
    ...     except ZeroDivisionError as e:
    ...         logged = limiter.log("handler f raised", e, source="f")
    >>> limiter.suppressed
    2
    """

    def __init__(self, logger: logging.Logger, window: float = 60.0, max_keys: int = 1024):
        self.logger = logger
        self.window = window
        self.max_keys = max_keys
        self.suppressed = 0
        self._lock = threading.Lock()
        self._seen: Dict[Tuple[str, str], Tuple[float, int]] = {}  # key -> (logged at, folded)

    def log(self, message: str, exc: BaseException, source: str = "") -> bool:
        """Log ``message`` with ``exc``'s traceback unless an identical one from ``source``
        was logged less than ``window`` seconds ago (then count it). Returns True if
        logged."""
        where = "|".join(f"{f.filename}:{f.lineno}" for f in
                         traceback.extract_tb(exc.__traceback__))
        key = (source, f"{type(exc).__qualname__}@{where}")
        now = time.monotonic()
        with self._lock:
            seen: Optional[Tuple[float, int]] = self._seen.get(key)
            if seen is not None and now - seen[0] < self.window:
                self._seen[key] = (seen[0], seen[1] + 1)
                self.suppressed += 1
                return False
            folded = seen[1] if seen is not None else 0
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
            self._seen[key] = (now, 0)
        extra = (f" (the same error {folded} more time{'s' if folded != 1 else ''} in the "
                 f"last {self.window:.0f} s, not logged)") if folded else ""
        self.logger.error("%s%s", message, extra, exc_info=(type(exc), exc, exc.__traceback__))
        return True
