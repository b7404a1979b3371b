"""The real Vuer web client (vuer 0.1.6 ``client_build``) in headless Chromium, offline, against
our server: serving, INIT and spawn selection, rendering, ``get_render`` on both paths,
``grab_render``, CAMERA_MOVE events, and the faults around rendering.

One Chromium and one server with one page serve the module; tests that need their own page
(one drags the camera, one closes its page) open a second tab in the same browser. Every test
sends its own scene first, so the order of the tests does not matter.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from vuer_sync import RPCTimeout, SessionClosed, Vuer, VuerClient
from vuer_sync.schemas import (
    DEFAULT_BG_CHILDREN,
    Box,
    DefaultScene,
    Grid,
    Scene,
    SceneCameraControl,
)

from browser import (
    CHROMIUM,
    Chromium,
    decode_image,
    module_chromium,
    red_mask,
    red_side,
    red_stats,
    require_chromium,
)
from conftest import our_threads, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1280, 720  # the main page; the UI panels cover x < ~320 px


def red_box(x: float = 0.0, z: float = 0.0) -> Box:
    """A 2 m box in flat red: lit red shades too dark to find (browser-testing.md sec. 9)."""
    return Box(key="box", args=[2, 2, 2], position=[x, 0, z], materialType="basic",
               material={"color": "red"})


class Viewer:
    """Our server; each page that connects is handed over by its ``spawn`` function.

    A ``spawn(client="python")`` is registered *before* the ``client="browser"`` one, so a
    browser that ran the first would show that INIT filters are ignored.
    """

    def __init__(self, chromium: Chromium):
        self.chromium = chromium
        self.app = Vuer(port=0)
        self.spawned_by = {}
        self._arrivals: queue.Queue = queue.Queue()

        @self.app.spawn(client="python")
        def python_main(session):
            self.spawned_by[session.id] = "python"
            session.forever()

        @self.app.spawn(client="browser")
        def browser_main(session):
            self.spawned_by[session.id] = "browser"
            self._arrivals.put(session)
            session.forever()

        self.app.start(block=False)
        self.url = f"http://127.0.0.1:{self.app.port}/"

    def open(self, timeout: float = 30.0):
        """A new tab on our server; returns ``(page, session)`` once its INIT ran our spawn."""
        page = self.chromium.open(self.url)
        try:
            session = self._arrivals.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the web client did not connect within {timeout} s; page errors: "
                        f"{self.chromium.page_errors[-5:]}")
        # for a moment after INIT the web client is still loading its scene components (no
        # message says when it is done): frames then lack the scene's children. Start after.
        session.set @ DefaultScene(red_box())
        assert wait_until(lambda: red_stats(session.get_render())["fraction"] > 0.005, 20)
        return page, session


@pytest.fixture(scope="module")
def chromium():
    yield from module_chromium(WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def viewer(chromium):
    before = our_threads()
    v = Viewer(chromium)
    try:
        v.page, v.session = v.open()
        yield v
    finally:
        v.app.stop()
    left = wait_until(lambda: not (our_threads() - before), 3.0) or (our_threads() - before)
    assert left is True, f"threads left running: {left}"


@pytest.fixture
def second_page(viewer):
    """Another tab on the module's server (its own session); closed afterwards."""
    page, session = viewer.open()
    yield page, session
    if not page.is_closed():
        page.close()
    assert session.wait_closed(5), "the session outlived its closed tab"


# -- serving and INIT -------------------------------------------------------------------------


def test_offline_page_connects_back_and_runs_the_browser_spawn(viewer):
    port = viewer.app.port
    page, session = viewer.page, viewer.session
    assert page.url == f"http://127.0.0.1:{port}/"  # no ?ws=: the bundle picks our origin
    # (a call into Playwright also delivers the events it has queued, e.g. "websocket")
    assert page.evaluate("location.search") == ""
    statuses = {}
    for url, status in viewer.chromium.responses:
        statuses[url] = status
    assets = {u: s for u, s in statuses.items() if urlsplit(u).path.startswith("/assets/")}
    assert statuses.get(viewer.url) == 200
    assert len(assets) >= 5 and set(assets.values()) == {200}, assets
    assert not viewer.chromium.failed_loopback, viewer.chromium.failed_loopback
    # offline for real: the Google Fonts stylesheet of index.html was aborted by the route
    assert any("fonts.googleapis.com" in u for u in viewer.chromium.blocked)
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in statuses)
    # the websocket went to the page's own origin
    ws = [urlsplit(u) for u in viewer.chromium.websockets]
    assert ws and all((w.scheme, w.netloc) == ("ws", f"127.0.0.1:{port}") for w in ws), ws
    assert session.origin == f"http://127.0.0.1:{port}"
    init = session.till("INIT", timeout=1)
    assert init.value["client"] == "browser"
    assert init.value["pkg"] == "@vuer-ai/vuer"
    assert (init.value["screenWidth"], init.value["screenHeight"]) == (WIDTH, HEIGHT)
    assert viewer.spawned_by[session.id] == "browser"  # not the python spawn listed first
    assert viewer.app.wait_for_session(1, client="browser") is session


# -- rendering ------------------------------------------------------------------------------


def test_red_box_in_screenshot_and_in_get_render(viewer):
    session, page = viewer.session, viewer.page
    session.set @ DefaultScene(red_box(x=2))
    frame = session.get_render()
    shot = decode_image(page.screenshot())
    assert frame.shape == shot.shape == (HEIGHT, WIDTH, 3)
    fs, ss = red_stats(frame), red_stats(shot)
    assert fs["fraction"] > 0.005 and ss["fraction"] > 0.005, (fs, ss)
    assert red_side(frame) == red_side(shot) == "R"
    # the same pixels: what get_render returns is what the user sees
    mf, ms = red_mask(frame), red_mask(shot)
    assert (mf & ms).sum() > 0.8 * mf.sum(), ((mf & ms).sum(), mf.sum(), ms.sum())


def test_every_frame_shows_the_update_sent_before_it(viewer):
    """The box jumps left/right between calls; each frame must show the latest side."""
    session = viewer.session
    session.set @ DefaultScene(red_box(x=-2))
    session.get_render()
    want, got = [], []
    for i in range(10):
        x = 2.0 if i % 2 == 0 else -2.0
        session.update @ Box(key="box", position=[x, 0, 0])
        got.append(red_side(session.get_render()))
        want.append("R" if x > 0 else "L")
    assert got == want
    # the posed path too (the off-screen camera renders on request)
    want, got = [], []
    for i in range(6):
        x = 2.0 if i % 2 == 0 else -2.0
        session.update @ Box(key="box", position=[x, 0, 0])
        got.append(red_side(session.get_render(320, 240, position=[0, 3, 8],
                                               look_at=[0, 0, 0])))
        want.append("R" if x > 0 else "L")
    assert got == want


def test_get_render_after_a_shared_scene_set(viewer):
    # regression: a SET from app.scene did not count as a new scene for get_render, which
    # then waited for the GrabRender element that SET had removed
    session = viewer.session
    session.set @ DefaultScene(red_box(x=-2))
    assert red_side(session.get_render()) == "L"
    viewer.app.scene.set @ DefaultScene(red_box(x=2))
    assert red_side(session.get_render(timeout=3)) == "R"


def test_posed_render_is_offscreen_and_leaves_the_users_view_alone(viewer):
    session = viewer.session
    session.set @ DefaultScene(red_box())
    before = session.get_render()
    # a camera that stands inside the user's view: a gizmo or frustum would show up there
    rgb = session.get_render(640, 480, position=[2.5, 1.5, 4], look_at=[0, 0, 0], fov=50)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    s = red_stats(rgb)
    assert s["fraction"] > 0.05 and abs(s["cx"] - 0.5) < 0.1 and abs(s["cy"] - 0.5) < 0.1, s
    away = session.get_render(640, 480, position=[2.5, 1.5, 4], look_at=[10, 1.5, 12])
    assert red_stats(away)["fraction"] < 0.001  # the pose is honoured
    narrow = session.get_render(640, 480, position=[2.5, 1.5, 4], look_at=[0, 0, 0], fov=20)
    assert red_stats(narrow)["fraction"] > 2 * s["fraction"]  # so is the field of view
    after = session.get_render()
    changed = (np.abs(before.astype(np.int16) - after).max(axis=2) > 40).mean()
    assert changed < 0.0002, f"{changed:.3%} of the user's view changed"


def test_depth_frame(viewer):
    session = viewer.session
    session.set @ DefaultScene(red_box())
    rgb, depth = session.get_render(320, 240, position=[0, 0, 6], look_at=[0, 0, 0],
                                    depth=True, near=0.1, far=20)
    assert rgb.shape == (240, 320, 3) and depth.shape == (240, 320)
    assert depth.dtype == np.uint8
    # 8-bit, 255 * (1 - (d - near) / (far - near)): the front face is 5 m away -> ~192
    assert abs(int(depth[120, 160]) - 192) < 12, depth[120, 160]
    assert depth[5, 5] < 10  # nothing there: far
    assert red_mask(rgb)[120, 160]


def test_grab_render_raw_response(viewer):
    session = viewer.session
    session.set @ DefaultScene(red_box())
    session.get_render()  # adds the GrabRender element that answers grab_render
    ev = session.grab_render(quality=0.5, subsample=2, ttl=5)
    assert ev.etype.startswith("GRAB_RENDER_RESPONSE")
    v = ev.value
    assert v["frame"][:3] == b"\xff\xd8\xff"
    assert (v["width"], v["height"], v["dpr"]) == (WIDTH, HEIGHT, 1)  # before downsample
    assert isinstance(v["delta"], (int, float))
    img = decode_image(v["frame"])
    assert img.shape == (HEIGHT // 2, WIDTH // 2, 3)
    better = session.grab_render(quality=0.95, subsample=2, ttl=5).value["frame"]
    assert len(v["frame"]) < len(better)  # the quality is applied


# -- events ---------------------------------------------------------------------------------


def test_camera_move_events_reach_a_handler(viewer, second_page):
    page, session = second_page
    moves = []
    remove = viewer.app.add_handler("CAMERA_MOVE", lambda ev, s: moves.append((s, ev.value)))
    try:
        # DefaultScene's background, with a streaming camera control under a new key (so
        # that it mounts afresh and reports the camera once mounted)
        streaming = {"key": "streaming-control", "makeDefault": True, "stream": True}
        bg = [Grid(key="grid")] + [
            cls(**(streaming if cls is SceneCameraControl else copy.deepcopy(kw)))
            for cls, kw in DEFAULT_BG_CHILDREN
        ]
        session.set @ Scene(red_box(), bgChildren=bg)
        # the control reports the camera once it is mounted
        assert wait_until(lambda: moves, 10), "no CAMERA_MOVE after mounting"

        def moved(value):
            p = value["camera"]["position"]
            return math.dist(p, [0, 5, 10]) > 0.5

        n0 = len(moves)
        assert not any(moved(v) for _, v in moves[:n0])
        page.mouse.move(900, 450)
        page.mouse.down()
        for i in range(1, 13):
            page.mouse.move(900 - 25 * i, 450 - 5 * i)
        page.mouse.up()
        assert wait_until(lambda: any(moved(v) for _, v in moves[n0:]), 10), moves[-1:]
        assert {s.id for s, _ in moves} == {session.id}  # the other tab streams nothing
        cam = moves[-1][1]["camera"]
        assert len(cam["quaternion"]) == 4 and len(cam["matrix"]) == 16
    finally:
        remove()


# -- faults ---------------------------------------------------------------------------------


def test_closing_the_page_fails_a_pending_get_render_at_once(viewer, second_page):
    page, session = second_page
    session.set @ DefaultScene(red_box())
    assert session.get_render().shape == (HEIGHT, WIDTH, 3)  # this tab answers...
    session.remove @ "DEFAULT"  # ...until its GrabRender is gone: the next request hangs
    session.flush(5)
    sent = session.stats["sent"]
    box = {}

    def render():
        try:
            box["result"] = session.get_render(timeout=30)
        except BaseException as e:  # noqa: BLE001 - checked below
            box["error"], box["at"] = e, time.monotonic()

    t = threading.Thread(target=render, name="test-render")
    t.start()
    assert wait_until(lambda: session.stats["sent"] > sent, 5), "GRAB_RENDER never written"
    closed_at = time.monotonic()
    page.close()
    t.join(5)
    assert not t.is_alive()
    assert isinstance(box.get("error"), SessionClosed), box
    assert box["at"] - closed_at < 1.0


def test_app_get_render_without_a_browser_times_out_clearly(app):
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}"):  # a Python client is not a browser
        app.wait_for_session(5, client="python")
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as ei:
            app.get_render(timeout=0.5)
        took = time.monotonic() - t0
    assert isinstance(ei.value, RPCTimeout)
    assert "browser" in str(ei.value) and "0.5" in str(ei.value)
    assert 0.45 < took < 1.5


def jpeg(w, h, color):
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (w, h), color).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_get_render_names_what_arrived_instead_of_a_jpeg(app):
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as client:
        session = app.wait_for_session(5, client="python")
        client.respond("GRAB_RENDER", lambda req: {"frame": b"not a jpeg"})
        with pytest.raises(ValueError, match=r"value\['frame'\] is not a JPEG: 10 bytes "
                                             r"starting b'not a jpeg'"):
            session.get_render(timeout=5)
        client.respond("GRAB_RENDER", lambda req: {"frame": "/9j/4AAQ"})
        with pytest.raises(ValueError, match=r"expected JPEG bytes in value\['frame'\], "
                                             r"got str: '/9j/4AAQ'"):
            session.get_render(timeout=5)
        client.respond("GRAB_RENDER", lambda req: [1, 2])
        with pytest.raises(ValueError, match=r"expected a map with 'frame'.*got list"):
            session.get_render(timeout=5)
        client.respond("GRAB_RENDER", lambda req: {"frame": jpeg(32, 24, "red")})
        with pytest.raises(ValueError, match=r"value\['depthFrame'\], got NoneType"):
            session.get_render(32, 24, position=[0, 0, 5], depth=True, timeout=5)
        # and a real JPEG goes through
        rgb = session.get_render(timeout=5)
        assert rgb.shape == (24, 32, 3) and red_mask(rgb).all()


def test_posed_renders_reuse_one_hidden_camera_per_configuration(app):
    """What get_render sends for posed frames, seen by a Python client that answers them."""
    from vuer_sync.server.render import (
        MAX_RENDER_CAMERAS,
        RENDER_CAMERA_KEY,
        keep_render_cameras,
    )

    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as client:
        session = app.wait_for_session(5, client="python")
        asked = []

        def answer(req):
            asked.append(req.key)
            return {"frame": jpeg(32, 24, "red"), "depthFrame": jpeg(32, 24, "white")}

        client.respond("GRAB_RENDER", answer)

        def upserts():
            out = []
            while True:
                ev = client.recv(timeout=0.2)  # flushed before: all arrived by then
                if ev is None:
                    return out
                if ev.etype == "UPSERT":
                    out.extend((ev.data["to"], n) for n in ev.data["nodes"])

        session.get_render(32, 24, position=[0, 0, 5], timeout=5)
        session.flush(5)
        [(to, node)] = upserts()
        assert to == "rawChildren" and node["tag"] == "CameraView"
        assert node["key"] == RENDER_CAMERA_KEY and node["stream"] == "ondemand"
        assert (node["showCamera"], node["monitor"], node["downsample"]) == (False, False, 1)
        assert (node["width"], node["height"], node["fov"]) == (32, 24, 50.0)
        # a new pose moves the same camera; the same pose sends nothing
        session.get_render(32, 24, position=[0, 1, 5], timeout=5)
        session.get_render(32, 24, position=[0, 1, 5], timeout=5)
        session.flush(5)
        [(_, moved)] = upserts()
        assert moved["key"] == RENDER_CAMERA_KEY and moved["position"] == [0, 1, 5]
        assert asked == [RENDER_CAMERA_KEY] * 3
        # the web client fixes fov/size/near/far/depth at mount: a new one gets its own camera
        session.get_render(32, 24, position=[0, 1, 5], fov=30, timeout=5)
        session.flush(5)
        [(_, other)] = upserts()
        assert other["key"] == f"{RENDER_CAMERA_KEY}-1" and other["fov"] == 30.0
        for i in range(2, MAX_RENDER_CAMERAS):
            session.get_render(32, 24, position=[0, 1, 5], fov=30 + i, timeout=5)
        with pytest.raises(RuntimeError, match=f"already has {MAX_RENDER_CAMERAS} off-screen"):
            session.get_render(32, 24, position=[0, 1, 5], fov=99, timeout=5)
        session.get_render(32, 24, position=[0, 1, 5], fov=30, timeout=5)  # reuse is fine
        session.flush(5)
        upserts()
        # a SET drops the helpers; session.send carries them over in rawChildren
        session.set @ Scene()
        session.flush(5)
        sets = []
        while True:
            ev = client.recv(timeout=0.2)
            if ev is None:
                break
            if ev.etype == "SET":
                sets.append(ev)
        kept = sets[0].data["rawChildren"]
        assert [n["key"] for n in kept][:2] == [RENDER_CAMERA_KEY, f"{RENDER_CAMERA_KEY}-1"]
        assert len(kept) == MAX_RENDER_CAMERAS and kept[1]["position"] == [0, 1, 5]
        session.get_render(32, 24, position=[0, 1, 5], fov=30, timeout=5)
        session.flush(5)
        assert upserts() == []  # still mounted: nothing re-added
        # a SET that did not carry them (a shared-scene SET): re-added once
        app.scene.set @ Scene()
        session.get_render(32, 24, position=[0, 1, 5], fov=30, timeout=5)
        session.flush(5)
        assert [n["key"] for _, n in upserts()] == [f"{RENDER_CAMERA_KEY}-1"]
        msg = {"etype": "SET", "data": {"tag": "Scene", "rawChildren": [{"key": "mine"}]}}
        keep_render_cameras(session, msg)  # keeps what the scene lists, appends the helpers
        assert msg["data"]["rawChildren"][0] == {"key": "mine"}


def test_settle_waits_only_after_something_was_sent(app):
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as client:
        session = app.wait_for_session(5, client="python")
        client.respond("GRAB_RENDER", lambda req: {"frame": jpeg(32, 24, "red")})
        session.get_render(timeout=5, settle=0.3)  # adds GrabRender: waits

        def took(**kw):
            t0 = time.monotonic()
            session.get_render(timeout=5, settle=0.3, **kw)
            return time.monotonic() - t0

        assert took() < 0.25  # nothing sent since the last frame: no wait
        session.upsert @ red_box(x=1)
        assert took() >= 0.29  # a scene message was: the browser gets time to draw it
        assert took() < 0.25


# -- the dataset-capture example ----------------------------------------------------------


def test_dataset_capture_example_writes_frames_and_poses(tmp_path):
    require_chromium()
    out = tmp_path / "capture"
    cmd = [sys.executable, str(ROOT / "examples" / "dataset_capture.py"), "--headless",
           "--n", "3", "--width", "160", "--height", "120", "--fov", "60", "--out", str(out),
           "--chromium", CHROMIUM]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(  # this checkout, not an installed copy
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=100,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "transforms.json").read_text())
    intr = meta["intrinsics"]
    assert (intr["width"], intr["height"]) == (160, 120)
    assert intr["fy"] == pytest.approx(60 / math.tan(math.radians(30)))
    assert intr["fx"] == pytest.approx(intr["fy"])
    assert (intr["cx"], intr["cy"]) == (80, 60)
    frames = meta["frames"]
    assert len(frames) == 3
    images = []
    for f in frames:
        assert len(f["position"]) == 3 and len(f["wxyz"]) == 4 and len(f["look_at"]) == 3
        assert math.isclose(sum(q * q for q in f["wxyz"]), 1.0, abs_tol=1e-6)
        img = decode_image((out / f["file"]).read_bytes())
        assert img.shape == (120, 160, 3)
        assert red_mask(img).mean() > 0.005, f"no red object in {f['file']}"
        images.append(img.astype(np.int16))
    assert len({tuple(round(c, 6) for c in f["position"]) for f in frames}) == 3
    assert np.abs(images[0] - images[1]).mean() > 1  # different poses, different frames
    assert "3/3" in proc.stderr  # the progress bar reached the end
