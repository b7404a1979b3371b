"""Client handles in the real web client: file downloads, notifications, moving the camera."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vuer_sync import Vuer
from vuer_sync.schemas import Box, DefaultScene

from browser import Chromium, red_stats, require_chromium
from conftest import wait_until


@pytest.fixture(scope="module")
def viewer():
    require_chromium()
    chrome = Chromium(800, 600).start()
    app = Vuer(port=0)
    arrived = []
    app.spawn(lambda s: (arrived.append(s), s.forever()), client="browser")
    app.start(block=False)
    try:
        page = chrome.open(f"http://127.0.0.1:{app.port}/")
        assert wait_until(lambda: arrived, 30)
        s = arrived[0]
        s.set @ DefaultScene(Box(key="box", args=[2, 2, 2], materialType="basic",
                                 material={"color": "red"}))
        assert wait_until(lambda: red_stats(s.get_render())["fraction"] > 0.005, 20)
        yield page, s
    finally:
        app.stop()
        assert not chrome.close()


def test_send_file_download_saves_the_exact_bytes(viewer):
    page, s = viewer
    content = os.urandom(3 << 20) + b"end"
    with page.expect_download(timeout=20_000) as info:
        s.send_file_download("capture.bin", content, chunk_size=1 << 16)
    download = info.value
    assert download.suggested_filename == "capture.bin"
    with open(download.path(), "rb") as f:
        assert f.read() == content


def test_notification_appears_updates_and_goes_away(viewer):
    page, s = viewer
    n = s.add_notification("Capturing", "frame 1 of 3", loading=True, with_close_button=False)
    body = page.get_by_text("frame 1 of 3")
    body.wait_for(state="visible", timeout=15_000)
    n.body = "frame 3 of 3"
    page.get_by_text("frame 3 of 3").wait_for(state="visible", timeout=15_000)
    n.remove()
    page.get_by_text("frame 3 of 3").wait_for(state="detached", timeout=15_000)


def test_notification_close_button_hides_it(viewer):
    page, s = viewer
    n = s.add_notification("Done", "click to dismiss")
    page.get_by_text("click to dismiss").wait_for(state="visible", timeout=15_000)
    page.locator(f'button[name="{n.key}-close"]').click(timeout=15_000)
    page.get_by_text("click to dismiss").wait_for(state="hidden", timeout=15_000)
    n.remove()  # the server side is still in charge of the element
    page.get_by_text("click to dismiss").wait_for(state="detached", timeout=15_000)


def test_camera_move_changes_the_users_view(viewer):
    page, s = viewer
    before = red_stats(s.get_render())
    s.camera.move(position=[6, 1, 0], look_at=[0, 0, 0])  # from the side, closer
    assert wait_until(lambda: abs(red_stats(s.get_render())["fraction"] - before["fraction"])
                      > 0.2 * before["fraction"], 15)
    after = s.get_render()
    assert red_stats(after)["fraction"] > 0.005 and not np.array_equal(after, before)
