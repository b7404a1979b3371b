"""Recordings in the real web client: played back to a browser, and exported to a folder
any static file server can show offline."""

from __future__ import annotations

import functools
import http.server
import math
import threading

import pytest

from vuer_sync import Vuer
from vuer_sync.record import Recording
from vuer_sync.schemas import Box, DefaultScene

from browser import decode_image, module_chromium, red_stats
from conftest import wait_until


def red_box(x=0.0):
    return Box(key="box", args=[2, 2, 2], position=[x, 0, 0], materialType="basic",
               material={"color": "red"})


@pytest.fixture(scope="module")
def chromium():
    yield from module_chromium(800, 600)


def browser_session(chromium, app):
    arrived = []
    app.spawn(lambda s: (arrived.append(s), s.forever()), client="browser")
    app.start(block=False)
    page = chromium.open(f"http://127.0.0.1:{app.port}/")
    assert wait_until(lambda: arrived, 30)
    return page, arrived[0]


def settled_frame(session):
    # right after INIT the web client may still be loading its components: wait for red
    assert wait_until(lambda: red_stats(session.get_render())["fraction"] > 0.005, 20)
    return session.get_render()


def test_animation_recorded_live_then_played_to_a_browser_matches(chromium, no_thread_leak):
    with Vuer(port=0) as live:
        page, s = browser_session(chromium, live)
        rec = live.scene.record()
        live.scene.set @ DefaultScene(red_box(-2))
        settled_frame(s)
        for i in range(40):  # the box slides from x=-2 to x=+2
            live.scene.update @ {"key": "box", "position": [-2 + 4 * i / 39, 0, 0]}
            rec.insert_sleep(1 / 60)
        live.scene.flush(5)
        original = settled_frame(s)
        data = rec.serialize()
        page.close()
    r = Recording.load(data)
    assert len(r.records) == 41
    with Vuer(port=0) as player:
        page, s = browser_session(chromium, player)
        assert r.play(s, speed=8.0) == 41
        replayed = settled_frame(s)
        page.close()
    a, b = red_stats(original), red_stats(replayed)
    assert a["cx"] > 0.55 and abs(a["cx"] - b["cx"]) < 0.02 and abs(a["cy"] - b["cy"]) < 0.02
    assert abs(a["fraction"] - b["fraction"]) < 0.2 * a["fraction"]


def test_exported_folder_shows_the_final_scene_offline(chromium, tmp_path):
    app = Vuer(port=0)
    rec = app.scene.record()
    app.scene.set @ DefaultScene(red_box(-1.5))
    for i in range(10):
        app.scene.update @ {"key": "box", "position": [-1.5 + 3 * i / 9, 0, 0]}
        rec.insert_sleep(0.1)
    r = Recording.load(rec.serialize())
    view = r.export(tmp_path / "site")
    assert view.name == "view.html" and (tmp_path / "site" / "index.html").is_file()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "site"))
    handler.log_message = lambda *a: None
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # not a vuer server
    t = threading.Thread(target=site.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    try:
        page = chromium.open(f"http://127.0.0.1:{site.server_address[1]}/view.html")

        def red_right():
            st = red_stats(decode_image(page.screenshot()))
            return st if st["fraction"] > 0.003 and st["cx"] > 0.55 else None

        st = wait_until(red_right, 30, 0.25)
        assert st, "the exported page did not show the box at its final position"
        assert math.isfinite(st["cx"])
        page.close()
    finally:
        site.shutdown()
        site.server_close()
        t.join(5)


def test_a_reloaded_page_gets_the_current_shared_scene(chromium, no_thread_leak):
    with Vuer(port=0) as app:
        arrived = []
        app.spawn(lambda s: (arrived.append(s), s.forever()), client="browser")
        app.start(block=False)
        app.scene.set @ DefaultScene(red_box(-2))
        page = chromium.open(f"http://127.0.0.1:{app.port}/")
        assert wait_until(lambda: arrived, 30)
        assert red_stats(settled_frame(arrived[0]))["cx"] < 0.45
        app.scene.update @ {"key": "box", "position": [2, 0, 0]}  # changed while connected
        page.reload()  # the web client never reconnects by itself; a reload does
        assert wait_until(lambda: len(arrived) == 2, 30)
        assert red_stats(settled_frame(arrived[1]))["cx"] > 0.55  # the current scene
        page.close()
