"""Headless Chromium pages for a capture: Debian's ``chromium`` driven by Playwright
(``pip install "vuer-sync[capture]"``, ``apt-get install chromium``; no ``playwright
install``: ``executable_path`` points at the system binary), offline, software WebGL.

    with HeadlessPages(app, count=2) as pages:      # two browsers, two pages, two sessions
        pool = RenderPool(pages.sessions)

Playwright's sync API belongs to the thread that started it: create, :meth:`kill` and close
from one thread (the render workers never touch it). Each page's own view is kept small
(``viewport``, 160x120; much smaller pages answered far slower here) and drawn at
``main_view_hz`` (5) instead of 60 Hz: the capture camera renders off-screen, on request,
at its own size, and the page's own view is watched by nobody.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, List, Optional, Sequence, Tuple

__all__ = ["CHROMIUM_ARGS", "HeadlessPages", "headless_problem"]

logger = logging.getLogger("vuer_sync.capture.headless")

#: Software WebGL, a fresh profile, nothing but loopback resolves (the page works offline).
CHROMIUM_ARGS: Tuple[str, ...] = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio",
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    # every page renders, not just the front tab: no background throttling
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , "
    "EXCLUDE [::1]",
)
DEFAULT_CHROMIUM = os.environ.get("VUER_SYNC_CHROMIUM", "/usr/bin/chromium")


def headless_problem(executable: str = DEFAULT_CHROMIUM) -> Optional[str]:
    """Why headless pages cannot start here (``None`` when they can): Playwright missing,
    or no Chromium binary at ``executable``."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        return (f"headless capture needs Playwright ({e}): pip install 'vuer-sync[capture]' "
                f"(no `playwright install`: it drives Debian's chromium)")
    if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        return (f"no Chromium at {executable} (apt-get install chromium, or pass its path; "
                f"VUER_SYNC_CHROMIUM)")
    return None


class HeadlessPages:
    """``count`` headless Chromium pages on ``app``'s web client, one browser each;
    ``sessions`` are their server sessions (same order as ``pages``). ``close()`` ends the
    browsers."""

    def __init__(self, app: Any, count: int = 2, *, executable: str = DEFAULT_CHROMIUM,
                 viewport: Tuple[int, int] = (160, 120), timeout: float = 60.0,
                 extra_args: Sequence[str] = (), main_view_hz: Optional[float] = 5.0):
        if count < 1:
            raise ValueError("HeadlessPages needs at least one page")
        problem = headless_problem(executable)
        if problem:
            raise RuntimeError(problem)
        from playwright.sync_api import sync_playwright

        self.app = app
        self.executable, self.viewport = executable, viewport
        self.main_view_hz = main_view_hz
        self.args = [*CHROMIUM_ARGS, *extra_args]
        self.browsers: List[Any] = []
        self.pages: List[Any] = []
        self.sessions: List[Any] = []
        self._pw: Any = sync_playwright().start()
        try:
            url = f"http://127.0.0.1:{app.port}/"
            for _ in range(count):
                self.open(url, timeout)
        except BaseException:
            self.close()
            raise

    def open(self, url: str, timeout: float = 60.0) -> Any:
        """One more page at ``url``, in a browser of its own (pages of one browser share
        its GPU process, where software WebGL runs, and its tabs are throttled when in the
        background); returns the page's session once it connected."""
        browser = self._pw.chromium.launch(executable_path=self.executable, headless=True,
                                           args=self.args, timeout=timeout * 1000)
        self.browsers.append(browser)
        page = browser.new_page(viewport={"width": self.viewport[0],
                                          "height": self.viewport[1]})
        page.route("**/*", _loopback_only)
        if self.main_view_hz:
            page.add_init_script(slow_animation_frames(self.main_view_hz))
        known = {s.id for s in self.app.sessions}
        page.goto(url, timeout=timeout * 1000)
        deadline = time.monotonic() + timeout
        while True:  # bounded by `timeout`: the page's websocket and INIT
            new = [s for s in self.app.sessions
                   if s.id not in known and s.init is not None]
            if new:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no session from the headless page within {timeout} s")
            time.sleep(0.02)
        self.pages.append(page)
        self.sessions.append(new[0])
        return new[0]

    def kill(self, i: int) -> None:
        """Close page ``i``'s browser (its session ends; a render pool moves its poses
        elsewhere)."""
        self.browsers[i].close()

    def close(self) -> None:
        """Close every browser (Playwright removes their temporary profiles)."""
        for browser in self.browsers:
            try:
                browser.close()
            except Exception:  # the browser may already be gone
                logger.debug("closing a headless browser", exc_info=True)
        self.browsers.clear()
        if self._pw is not None:
            self._pw.stop()
            self._pw = None

    def __enter__(self) -> HeadlessPages:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def slow_animation_frames(hz: float) -> str:
    """A page script that runs ``requestAnimationFrame`` callbacks at ``hz`` instead of the
    display rate: the page's own view (which nobody watches) is drawn less often, and the
    CPU goes to the capture camera, which renders on request, not on animation frames.

    >>> "setTimeout" in slow_animation_frames(5)
    True
    """
    ms = max(1, int(1000 / hz))
    return ("(() => { const ids = new Map(); let next = 1;"
            " window.requestAnimationFrame = (cb) => { const id = next++;"
            f" ids.set(id, setTimeout(() => {{ ids.delete(id); cb(performance.now()); }}, {ms}));"
            " return id; };"
            " window.cancelAnimationFrame = (id) => { clearTimeout(ids.get(id));"
            " ids.delete(id); }; })();")


def _loopback_only(route: Any) -> None:
    from urllib.parse import urlsplit

    url = route.request.url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "ws", "wss") and (parts.hostname or "") not in (
            "127.0.0.1", "localhost", "::1"):
        route.abort("blockedbyclient")
    else:
        route.continue_()
