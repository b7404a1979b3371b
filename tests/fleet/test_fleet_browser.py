"""``get_render`` across nodes: headless Chromium shows node B; the frame is asked for from
node A, through the room (``app.fleet.session(sid)``). The scene itself came through the
room too."""

from __future__ import annotations

import numpy as np
import pytest

from vuer_sync import Vuer
from vuer_sync.schemas import Box, DefaultScene

from browser import module_chromium, red_stats
from conftest import wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium():
    yield from module_chromium(640, 480)


def red_box():
    """Flat red, 2 m (lit red shades are too dark to find: browser-testing.md sec. 9)."""
    return Box(key="box", args=[2, 2, 2], position=[0, 0, 0], materialType="basic",
               material={"color": "red"})


def test_get_render_on_a_browser_connected_to_another_node(chromium, redis_server):
    with Vuer(port=0, fleet=redis_server.url, room="lab") as a, \
            Vuer(port=0, fleet=redis_server.url, room="lab") as b:
        a.scene.set @ DefaultScene(red_box())
        a.scene.flush(10)
        page = chromium.open(f"http://127.0.0.1:{b.port}/")
        try:
            session = b.wait_for_session(timeout=30, client="browser")
            assert wait_until(lambda: session.id in {s["sid"] for s in a.fleet.sessions()}, 5)
            tab = a.fleet.session(session.id)
            assert tab.node == b.fleet.node_id
            frames = []

            def red_frame():
                frames.append(tab.get_render(timeout=20))
                return red_stats(frames[-1])["fraction"] > 0.005

            # the web client loads its scene components for a moment after INIT
            assert wait_until(red_frame, 40, interval=0.5), red_stats(frames[-1])
            frame = frames[-1]
            assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
            assert frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[0] > 100
            reply = tab.grab_render(ttl=20)  # the raw RPC as well: JPEG bytes
            assert bytes(reply.value["frame"][:2]) == b"\xff\xd8"
        finally:
            page.close()
