"""Loops that outlive their viewers: ``app.viewer()`` follows the current client across
reloads, and ``app.get_render`` / ``app.scene.get_render`` ask another browser when the one
they asked leaves mid-call. Python clients and raw websockets on 127.0.0.1 stand in for
browser tabs (a reload is a new connection; an abrupt one is a tab that just vanished).
"""

from __future__ import annotations

import io
import queue
import socket
import threading
import time

import pytest

from vuer_sync import RPCTimeout, SessionClosed, Vuer, VuerClient, codec
from vuer_sync.events import ClientEvent, ServerRPC, Upsert
from vuer_sync.schemas import Box, Scene
from vuer_sync.server.viewer import CurrentViewer

from conftest import wait_until
from helpers import raw_client, recv_msg

pytestmark = pytest.mark.timeout(60)


class Ping(ServerRPC):
    etype = "PING"


def connect(app: Vuer) -> VuerClient:
    return VuerClient(f"ws://127.0.0.1:{app.port}").connect()


def jpeg(color: str, w: int = 32, h: int = 24) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (w, h), color).save(out, "JPEG", quality=95)
    return out.getvalue()


def next_of(client: VuerClient, etype: str, timeout: float = 5.0):
    """The client's next ``etype`` message (others skipped); fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        ev = client.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert ev is not None, f"no {etype} within {timeout} s"
        if ev.etype == etype:
            return ev


class FakeBrowser:
    """A raw websocket whose INIT says ``client="browser"``; it answers ``GRAB_RENDER`` with
    a JPEG of ``color`` (``answer=False``: only notes the request). ``vanish()`` cuts the
    socket without a close handshake, as a reloading tab or a dropped Wi-Fi does."""

    def __init__(self, port: int, color: str = "red", answer: bool = True):
        self.color, self.answer = color, answer
        self.seen: list = []  # etypes received, in order
        self.requests: queue.Queue = queue.Queue()
        self.ws = raw_client(port, client="browser")
        self.ws.settimeout(None)
        self.thread = threading.Thread(target=self._read, name="test-fake-browser")
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                msg = recv_msg(self.ws)
            except Exception:  # closed or cut: the tab is gone
                return
            self.seen.append(msg["etype"])
            if msg["etype"] == "GRAB_RENDER":
                self.requests.put(msg)
                if self.answer:
                    reply = {"etype": msg["rtype"], "key": msg.get("key"),
                             "value": {"frame": jpeg(self.color)}}
                    self.ws.send_binary(codec.encode(reply))

    def vanish(self) -> None:
        try:
            self.ws.sock.shutdown(socket.SHUT_RDWR)  # no close frame: the tab just vanishes
        except OSError:
            pass
        self.ws.shutdown()
        self.thread.join(5)
        assert not self.thread.is_alive()


def browsers(app: Vuer) -> list:
    return [s for s in app.sessions if s.init is not None and not s.closed
            and s.init.value.get("client") == "browser"]


# -- app.viewer(): following the current client ---------------------------------------------


def test_viewer_follows_the_newest_client_and_comes_back_after_reloads(app):
    app.start(block=False)
    viewer = app.viewer(client="python", timeout=5)
    assert isinstance(viewer, CurrentViewer) and viewer.session is None
    a = connect(app)
    viewer.upsert @ Box(key="box", position=[0, 1, 0])   # waits for `a`'s INIT, then sends
    assert next_of(a, "UPSERT").data["nodes"][0]["position"] == [0, 1, 0]
    sa = viewer.wait()
    b = connect(app)                                      # a second tab: the newest one
    assert wait_until(lambda: viewer.session is not None and viewer.session is not sa, 5)
    viewer.update @ {"key": "box", "position": [0, 2, 0]}
    assert next_of(b, "UPDATE").data["nodes"][0]["position"] == [0, 2, 0]
    assert a.recv(timeout=0.2) is None                    # only the newest one gets it
    sb = viewer.wait()
    b.close()                                             # back to the older tab
    assert sb.wait_closed(5)
    viewer.send(Upsert(Box(key="box", position=[0, 3, 0])))   # the call form
    assert next_of(a, "UPSERT").data["nodes"][0]["position"] == [0, 3, 0]
    a.close()                                             # nobody left: the next call waits
    assert sa.wait_closed(5)
    late = {}
    timer = threading.Timer(0.3, lambda: late.setdefault("c", connect(app)))
    timer.start()
    t0 = time.monotonic()
    viewer.upsert @ Box(key="box", position=[0, 4, 0])
    waited = time.monotonic() - t0
    timer.join()
    c = late["c"]
    assert 0.2 < waited < 4.0
    assert next_of(c, "UPSERT").data["nodes"][0]["position"] == [0, 4, 0]
    c.close()


def test_viewer_waits_a_bounded_time_and_says_for_what(no_thread_leak):
    app = Vuer(port=0)
    viewer = app.viewer(client="browser", timeout=0.3)
    with pytest.raises(SessionClosed, match="not running"):   # before start: at once
        viewer.upsert @ Box(key="box")
    app.start(block=False)
    try:
        with VuerClient(f"ws://127.0.0.1:{app.port}"):          # a python client: no match
            app.wait_for_session(5)
            t0 = time.monotonic()
            with pytest.raises(RPCTimeout) as ei:
                viewer.upsert @ Box(key="box")
            assert 0.25 < time.monotonic() - t0 < 2.0
            assert str(ei.value) == ("upsert: no client matching {'client': 'browser'} "
                                     "connected within 0.3 s")
            with pytest.raises(RPCTimeout, match=r"PING request: no client matching "
                                                 r"\{'client': 'browser'\} connected within "
                                                 r"0\.2 s"):
                viewer.rpc(Ping(), ttl=0.2)                    # a call's own limit wins
    finally:
        app.stop()
    t0 = time.monotonic()
    with pytest.raises(SessionClosed, match="not running"):    # after stop: at once
        viewer.get_render(timeout=5)
    assert time.monotonic() - t0 < 0.5


def test_a_waiting_call_ends_when_the_server_stops(no_thread_leak):
    app = Vuer(port=0).start(block=False)
    viewer = app.viewer(timeout=30)
    box = {}

    def send():
        try:
            viewer.upsert @ Box(key="box")
        except BaseException as e:  # noqa: BLE001 - checked below
            box["error"] = e

    t = threading.Thread(target=send, name="test-waiting-send")
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    app.stop()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 3.0
    assert isinstance(box.get("error"), SessionClosed)


def test_viewer_rpc_is_asked_again_of_the_next_viewer_when_one_leaves_mid_call(app):
    app.start(block=False)
    older = connect(app)
    older.respond("PING", lambda req: "pong from the older tab")
    app.wait_for_session(5)
    newer = connect(app)                                   # gets the request, never answers
    viewer = app.viewer(client="python")
    assert wait_until(lambda: len([s for s in app.sessions if s.init]) == 2, 5)
    box = {}

    def cut_on_request():
        box["request"] = next_of(newer, "PING")
        newer.close()

    t = threading.Thread(target=cut_on_request, name="test-cut")
    t.start()
    t0 = time.monotonic()
    reply = viewer.rpc(Ping(), ttl=5)
    t.join(5)
    assert reply.value == "pong from the older tab"
    assert box["request"].etype == "PING"                  # the newest was asked first
    assert time.monotonic() - t0 < 3.0
    older.close()


def test_viewer_rpc_raises_session_closed_when_no_viewer_is_back_by_the_deadline(app):
    app.start(block=False)
    only = connect(app)
    viewer = app.viewer(client="python")
    viewer.wait(5)
    t = threading.Thread(target=lambda: (next_of(only, "PING"), only.close()), name="test-cut")
    t.start()
    t0 = time.monotonic()
    with pytest.raises(SessionClosed) as ei:
        viewer.rpc(Ping(), ttl=1.0)
    took = time.monotonic() - t0
    t.join(5)
    assert 0.8 < took < 2.5  # waited for a new viewer until the deadline, then gave up
    msg = str(ei.value)
    assert msg.startswith("PING request: the viewer left (") and msg.endswith(
        "no other client matching {'client': 'python'} connected within 1 s")


def test_setup_runs_once_for_each_new_viewer_before_anything_else(app):
    app.start(block=False)
    calls = []

    def setup(session):
        calls.append(session.id)
        time.sleep(0.05)  # other threads' calls wait until it is done
        session.set @ Scene(Box(key="overlay"))

    viewer = app.viewer(client="python", timeout=5, setup=setup)
    for _ in range(2):  # a tab, then its reload
        tab = connect(app)
        threads = [threading.Thread(target=lambda i=i: viewer.upsert @ Box(key=f"b{i}"),
                                    name=f"test-producer-{i}") for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        first = tab.recv(timeout=5)
        assert first.etype == "SET" and first.data["children"][0]["key"] == "overlay"
        keys = {next_of(tab, "UPSERT").data["nodes"][0]["key"] for _ in range(4)}
        assert keys == {"b0", "b1", "b2", "b3"}
        session = viewer.wait()
        tab.close()
        assert session.wait_closed(5)
    assert len(calls) == len(set(calls)) == 2


def test_a_failing_setup_raises_and_is_tried_again(app):
    app.start(block=False)
    attempts = []

    def setup(session):
        attempts.append(session.id)
        if len(attempts) == 1:
            raise ValueError("not yet")

    viewer = app.viewer(timeout=5, setup=setup)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as tab:
        with pytest.raises(ValueError, match="not yet"):
            viewer.upsert @ Box(key="box")
        viewer.upsert @ Box(key="box")
        assert next_of(tab, "UPSERT").data["nodes"][0]["key"] == "box"
    assert len(attempts) == 2 and attempts[0] == attempts[1]


def test_till_waits_on_whichever_viewer_is_current(app):
    app.start(block=False)
    first = connect(app)
    viewer = app.viewer(client="python", timeout=5)
    old = viewer.wait(5)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("ev", viewer.till("CLICK", timeout=10)),
                         name="test-till")
    t.start()
    time.sleep(0.2)
    first.close()                     # the viewer reloads while till waits
    assert old.wait_closed(5)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as second:
        assert wait_until(lambda: viewer.session is not None
                          and viewer.session.core.till.wants("CLICK"), 5)  # till moved over
        second.send(ClientEvent(etype="CLICK", value="from the new tab"))
        t.join(5)
    assert not t.is_alive() and box["ev"].value == "from the new tab"


# -- get_render from a loop: any browser, another one if it leaves --------------------------


@pytest.mark.parametrize("entry", ["app", "scene"])
def test_get_render_asks_another_browser_when_the_first_leaves_mid_call(app, entry):
    app.start(block=False)
    staying = FakeBrowser(app.port, color="blue")
    assert wait_until(lambda: len(browsers(app)) == 1, 5)
    leaving = FakeBrowser(app.port, answer=False)   # the newest: asked first
    assert wait_until(lambda: len(browsers(app)) == 2, 5)
    app.scene.upsert @ Box(key="box", position=[1, 0, 0])
    cut = threading.Thread(target=lambda: (leaving.requests.get(timeout=5), leaving.vanish()),
                           name="test-cut")
    cut.start()
    render = app.get_render if entry == "app" else app.scene.get_render
    t0 = time.monotonic()
    rgb = render(timeout=10)
    took = time.monotonic() - t0
    cut.join(5)
    assert not leaving.requests.qsize() and not cut.is_alive()
    assert rgb.shape == (24, 32, 3)
    assert rgb[..., 2].mean() > 200 and rgb[..., 0].mean() < 60   # blue: the staying one
    assert took < 5.0
    # the request travelled behind the shared scene on the browser that answered
    assert staying.seen.index("UPSERT") < staying.seen.index("GRAB_RENDER")
    staying.vanish()


def test_get_render_uses_a_browser_that_connects_after_the_first_left(app):
    app.start(block=False)
    leaving = FakeBrowser(app.port, answer=False)
    assert wait_until(lambda: len(browsers(app)) == 1, 5)
    late = {}

    def reload():
        leaving.requests.get(timeout=5)
        leaving.vanish()
        time.sleep(0.3)  # the page loads again
        late["b"] = FakeBrowser(app.port, color="lime")

    t = threading.Thread(target=reload, name="test-reload")
    t.start()
    rgb = app.scene.get_render(timeout=10)
    t.join(5)
    assert rgb[..., 1].mean() > 200 and rgb[..., 0].mean() < 60   # from the reloaded tab
    late["b"].vanish()


def test_get_render_raises_session_closed_when_no_browser_is_left_by_the_deadline(app):
    app.start(block=False)
    only = FakeBrowser(app.port, answer=False)
    assert wait_until(lambda: len(browsers(app)) == 1, 5)
    t = threading.Thread(target=lambda: (only.requests.get(timeout=5), only.vanish()),
                         name="test-cut")
    t.start()
    t0 = time.monotonic()
    with pytest.raises(SessionClosed) as ei:
        app.scene.get_render(timeout=1.5)
    took = time.monotonic() - t0
    t.join(5)
    assert 1.3 < took < 3.0, took          # bounded by the timeout: no hang, no early give-up
    assert str(ei.value).endswith("no other client matching {'client': 'browser'} "
                                  "connected within 1.5 s")


def test_get_render_with_no_browser_at_all_times_out_naming_the_timeout(app):
    app.start(block=False)
    t0 = time.monotonic()
    with pytest.raises(RPCTimeout) as ei:
        app.scene.get_render(timeout=0.4)
    assert 0.35 < time.monotonic() - t0 < 1.5
    assert str(ei.value) == ("get_render(): no client matching {'client': 'browser'} "
                             "connected within 0.4 s")
