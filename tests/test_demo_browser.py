"""`vuer-sync demo` in the real Vuer web client (headless Chromium, offline): the objects fill
the view, the camera's thumbnail arrives from the browser's own render (and again from the
next browser after one leaves), and the page finds its favicon.

The screenshot is written to ``tmp_path``; with ``VUER_SYNC_DOCS_IMG=1`` it is also written to
``docs/img/demo.png`` (the README's picture): never under CI.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from vuer_sync import Vuer
from vuer_sync.demo import (
    THUMB_AT,
    VIEW_FOV,
    VIEW_POSITION,
    VIEW_TARGET,
    Demo,
    demo_scene,
)

from browser import Chromium, decode_image, require_chromium
from conftest import IN_CI, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
DOCS_IMG = ROOT / "docs" / "img" / "demo.png"
W, H = 1280, 800
# where the web client's own panels sit over the canvas (scene tree on the left; the
# controls panel that get_render's off-screen camera brings, top right)
PANELS = [(0, 0, 330, H), (980, 0, W, 380)]


def project(p, eye=VIEW_POSITION, target=VIEW_TARGET, fov=VIEW_FOV, w=W, h=H):
    """Pixel of the world point ``p`` in the demo's view (a perspective camera at ``eye``
    looking at ``target``, vertical ``fov``)."""
    eye, target, p = (np.asarray(v, float) for v in (eye, target, p))
    f = (target - eye) / np.linalg.norm(target - eye)
    r = np.cross(f, [0.0, 1.0, 0.0])
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    d = p - eye
    z = d @ f
    t = math.tan(math.radians(fov) / 2)
    return (int(((d @ r) / (z * t * w / h) + 1) / 2 * w),
            int((1 - (d @ u) / (z * t)) / 2 * h))


def test_demo_fills_the_view_with_the_arm_the_cloud_and_the_camera(tmp_path, no_thread_leak):
    require_chromium()
    app = Vuer(port=0)
    # a browser on software WebGL re-renders its scene for ~0.1 s per message: a slow
    # control rate keeps it from falling behind (docs/cli.md)
    demo = Demo(app, hz=4, cloud_hz=1, thumb_hz=2)
    app.start(block=False)
    demo.start()
    try:
        with Chromium(W, H) as chromium:
            url = f"http://127.0.0.1:{app.port}/"
            first = chromium.open(url)
            gone = app.wait_for_session(30, client="browser")
            # the thumbnail: rendered by this browser from the frustum's pose, put back in
            assert wait_until(lambda: demo.thumbnails >= 2, 90, 0.1), \
                f"no thumbnail from the browser; page errors {chromium.page_errors[-3:]}"
            first.close()  # the browser leaves while the loops run: they wait for the next
            assert gone.wait_closed(10)
            time.sleep(1.0)
            assert all(t.is_alive() for t in demo._threads), demo._threads
            before = demo.thumbnails
            page = chromium.open(url)
            session = app.wait_for_session(30, client="browser")
            assert session is not gone
            assert wait_until(lambda: demo.thumbnails >= before + 2, 90, 0.1), \
                "no thumbnail from the browser that came next"
            demo.stop()  # freeze: nothing moves between the two screenshots
            thumb = [n for n in app.scene.snapshot()["children"] if n["key"] == "thumbnail"]
            assert thumb and thumb[0]["rgb"][:3] == b"\xff\xd8\xff"  # a JPEG frame
            session.get_render(timeout=30)  # waits until the browser drew the last messages
            shot = page.screenshot()
            demo_img = decode_image(shot)
            (tmp_path / "demo.png").write_bytes(shot)
            if os.environ.get("VUER_SYNC_DEMO_PNG"):  # to look at it
                Path(os.environ["VUER_SYNC_DEMO_PNG"]).write_bytes(shot)
            if os.environ.get("VUER_SYNC_DOCS_IMG") == "1" and not IN_CI:
                DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
                DOCS_IMG.write_bytes(shot)
            # the same view with nothing but the background (grid, lights)
            empty = demo_scene(points=10)
            empty.children = []
            app.scene.set @ empty
            session.get_render(timeout=30)
            time.sleep(0.3)
            background = decode_image(page.screenshot())
            # a desktop browser asks for /favicon.ico by itself (a 404 shows in its console);
            # headless Chromium does not, and its requests through our offline route are
            # aborted, so ask with the context's own request client
            icon = page.request.get(f"http://127.0.0.1:{app.port}/favicon.ico")
            icons = [(icon.status, icon.headers.get("content-type", ""))]
            icons += [(s, "") for u, s in chromium.responses if u.endswith("/favicon.ico")]
            errors = list(chromium.console_errors)
    finally:
        app.stop()
        demo.stop()
    assert demo_img.shape == (H, W, 3)
    diff = np.abs(demo_img.astype(np.int16) - background.astype(np.int16)).max(axis=2) > 40
    for x0, y0, x1, y1 in PANELS:
        diff[y0:y1, x0:x1] = False
    share = float(diff.mean())
    print(f"the demo's objects cover {share:.1%} of the {W}x{H} view")
    assert share > 0.10, f"the objects cover only {share:.1%} of the view"
    # the thumbnail hangs where the demo puts it, in view
    x, y = project(THUMB_AT)
    assert 330 < x < 980 and 0 < y < H, (x, y)
    around = diff[max(0, y - 40):y + 40, x - 60:x + 60]
    assert around.mean() > 0.5, f"no thumbnail at {(x, y)}: {around.mean():.0%}"
    assert icons[0][1].startswith("image/svg+xml") and all(s == 200 for s, _ in icons), icons
    assert not [e for e in errors if "favicon" in e or "404" in e], errors
