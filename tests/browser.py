"""Headless Chromium for browser tests: Debian's ``/usr/bin/chromium`` driven by Playwright.

The recipe of ``reference/browser-testing.md``: software WebGL (SwiftShader), a fresh profile,
no network beyond loopback (host-resolver rules in Chromium *and* a Playwright route that
aborts every non-loopback request), never ``playwright install``.

    from browser import Chromium, require_chromium

    require_chromium()                      # skip locally / FAIL under CI=true when missing
    with Chromium(1280, 720) as chromium:   # one browser process tree
        page = chromium.open(f"http://127.0.0.1:{app.port}/")
        ...
    assert not chromium.leftover            # every process of that profile is gone

One :class:`Chromium` serves many pages (``open`` again, or ``page.close()``); launching takes
about a second here, loading the Vuer client 1-3 s more, so tests share one per module.
Playwright's sync API is bound to the thread that started it: call it from the test thread
only (never from a vuer_sync handler or spawn thread).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

CHROMIUM = os.environ.get("VUER_SYNC_CHROMIUM", "/usr/bin/chromium")

#: the flags of reference/browser-testing.md section 3
CHROMIUM_ARGS: Tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , "
    "EXCLUDE [::1]",
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(url: str) -> bool:
    """True for URLs that stay on this machine (and for non-network schemes)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        return True  # data:, blob:, about: ... never leave the browser
    return (parts.hostname or "") in LOOPBACK_HOSTS


def require_chromium() -> None:
    """Playwright and a Chromium binary, or skip (locally) / FAIL (under ``CI=true``)."""
    import pytest

    from conftest import IN_CI, require

    require("playwright.sync_api")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        msg = (f"no Chromium at {CHROMIUM} (apt-get install chromium, or set "
               f"VUER_SYNC_CHROMIUM)")
        if IN_CI:
            pytest.fail(f"{msg}; it is required under CI=true")
        pytest.skip(msg)



def module_chromium(width: int, height: int) -> Any:
    """The body of a module-scoped ``chromium`` fixture: one browser for the module's tests,
    closed at the end with a check that no process of it survived::

        @pytest.fixture(scope="module")
        def chromium():
            yield from module_chromium(1280, 720)
    """
    require_chromium()
    c = Chromium(width, height).start()
    try:
        yield c
    finally:
        leftover = c.close()
    assert not leftover, f"Chromium processes left after close (killed): {leftover}"

def processes_using(marker: str) -> List[int]:
    """Pids of the processes whose command line mentions ``marker`` (Linux ``/proc``)."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(name))
    return pids


class Chromium:
    """One headless Chromium (a persistent context on a fresh temporary profile).

    What happened, for assertions: ``blocked`` lists the non-loopback URLs the pages tried
    to fetch (all aborted); ``responses`` the ``(url, status)`` of every response;
    ``failed_loopback`` the loopback requests that failed; ``websockets`` the URLs of the
    websockets the pages opened; ``page_errors`` the uncaught page exceptions (offline, the
    web client raises one ``Failed to fetch`` for its troika font lookup);
    ``console_errors`` the console errors. ``leftover`` is set by :meth:`close` to the pids
    still alive after a clean close (they are killed; it should be empty).
    """

    def __init__(self, width: int = 1280, height: int = 720, *,
                 executable: str = CHROMIUM, launch_timeout: float = 60.0,
                 extra_args: Tuple[str, ...] = ()):
        self.width, self.height = int(width), int(height)
        self.extra_args = tuple(extra_args)
        self.executable = executable
        self.launch_timeout = launch_timeout
        self.blocked: List[str] = []
        self.responses: List[Tuple[str, int]] = []
        self.failed_loopback: List[str] = []
        self.websockets: List[str] = []
        self.page_errors: List[str] = []
        self.console_errors: List[str] = []
        self.leftover: List[int] = []
        self.user_data_dir: Optional[str] = None
        self._pw: Any = None
        self.context: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Chromium:
        from playwright.sync_api import sync_playwright

        self.user_data_dir = tempfile.mkdtemp(prefix="vuer-sync-chromium-")
        try:
            self._pw = sync_playwright().start()
            self.context = self._pw.chromium.launch_persistent_context(
                self.user_data_dir,
                executable_path=self.executable,
                headless=True,
                args=[*CHROMIUM_ARGS, *self.extra_args,
                      f"--window-size={self.width},{self.height}"],
                viewport={"width": self.width, "height": self.height},
                timeout=self.launch_timeout * 1000,
            )
            self.context.route("**/*", self._route)
            self.context.on("response", lambda r: self.responses.append((r.url, r.status)))
            self.context.on("requestfailed", self._failed)
        except BaseException:
            self.close()
            raise
        return self

    def close(self, timeout: float = 10.0) -> List[int]:
        """Close the browser and Playwright; kill (by pid) whatever of this profile survives.
        Returns and stores the pids that were still alive after a clean close."""
        try:
            if self.context is not None:
                self.context.close()
        except Exception:
            pass
        finally:
            self.context = None
            if self._pw is not None:
                try:
                    self._pw.stop()
                finally:
                    self._pw = None
        if self.user_data_dir is None:
            return self.leftover
        deadline = time.monotonic() + timeout
        pids = processes_using(self.user_data_dir)
        while pids and time.monotonic() < deadline:  # bounded: exits within `timeout`
            time.sleep(0.05)
            pids = processes_using(self.user_data_dir)
        self.leftover = pids
        for pid in pids:  # only processes launched on our own fresh profile
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.user_data_dir, ignore_errors=True)
        self.user_data_dir = None
        return self.leftover

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- pages ----------------------------------------------------------------------------

    def open(self, url: str, width: Optional[int] = None, height: Optional[int] = None,
             timeout: float = 30.0) -> Any:
        """A new page (the first call reuses the profile's initial blank tab) at ``url``;
        returns once the page's ``load`` event fired. Websocket connects come after that:
        wait for the session on the server side."""
        assert self.context is not None, "Chromium is not started"
        blank = [p for p in self.context.pages if p.url == "about:blank"]
        page = blank[0] if blank else self.context.new_page()
        if width or height:
            page.set_viewport_size({"width": int(width or self.width),
                                    "height": int(height or self.height)})
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("console", self._console)
        page.on("websocket", lambda ws: self.websockets.append(ws.url))
        page.goto(url, timeout=timeout * 1000)
        return page

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.console_errors.append(msg.text)

    def _failed(self, request: Any) -> None:
        if is_loopback(request.url):
            self.failed_loopback.append(f"{request.url}: {request.failure}")

    def _route(self, route: Any) -> None:
        url = route.request.url
        if is_loopback(url):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")


# -- looking at frames --------------------------------------------------------------------


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes (e.g. ``page.screenshot()``) as a ``uint8`` RGB array."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def red_mask(img: np.ndarray) -> np.ndarray:
    """Clearly red pixels (the flat ``materialType="basic"`` red box), as booleans."""
    r, g, b = (img[..., i].astype(np.int16) for i in range(3))
    return (r > 150) & (g < 80) & (b < 80)


def red_stats(img: np.ndarray) -> Dict[str, float]:
    """How much red there is and where: ``fraction`` of the frame, ``cx``/``cy`` its
    centroid as fractions of width/height (``nan`` when there is none), and ``left`` /
    ``right`` the red pixel counts in each half."""
    m = red_mask(img)
    h, w = m.shape
    ys, xs = np.nonzero(m)
    return {
        "fraction": float(m.mean()),
        "cx": float(xs.mean() / w) if len(xs) else float("nan"),
        "cy": float(ys.mean() / h) if len(ys) else float("nan"),
        "left": float(m[:, : w // 2].sum()),
        "right": float(m[:, w // 2:].sum()),
    }


def red_side(img: np.ndarray) -> str:
    """``"L"`` or ``"R"`` when one half holds clearly more red (4x, and at least 0.3 % of
    the frame), else ``"?"``. The web client's axis gizmo has two small red dots near the
    bottom centre; the 2 m box is some 20x more red."""
    s = red_stats(img)
    least = 0.003 * img.shape[0] * img.shape[1]
    if s["left"] > max(4 * s["right"], least):
        return "L"
    if s["right"] > max(4 * s["left"], least):
        return "R"
    return "?"
