"""Loops survive viewers that come and go, with the real Vuer web client in headless Chromium.

* the README's robot-loop snippet, extracted from README.md and run as written, while the page
  showing it reloads twice: the snippet ends without an exception, and the last page holds
  the final pose (in the server's shared scene, in what that page received, and in the
  frame it renders);
* the Jupyter notebook's loop cell, run in a real kernel, likewise;
* a dataset-capture loop on ``app.scene.get_render`` keeps getting frames across reloads.

Playwright runs on the test thread only; the loops run on their own thread (or kernel).
"""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

from vuer_sync import Vuer, codec
from vuer_sync.scene import SceneMirror
from vuer_sync.schemas import Box, DefaultScene

from browser import module_chromium
from conftest import require, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
# small: the web client draws every scene message, and on a CPU (SwiftShader) a large
# viewport with the default grid cannot keep up with a 100 Hz loop (it falls seconds behind)
WIDTH, HEIGHT = 480, 270


@pytest.fixture(scope="module")
def chromium():
    yield from module_chromium(WIDTH, HEIGHT)


class PageWire:
    """Every websocket a page opens (one per load) and the messages it received, decoded.

    Playwright delivers these events while the test thread is inside a Playwright call:
    :meth:`pump_until` waits that way."""

    def __init__(self, page: Any):
        self.page = page
        self.sockets: List[List[Dict[str, Any]]] = []
        page.on("websocket", self._opened)

    def _opened(self, ws: Any) -> None:
        received: List[Dict[str, Any]] = []
        self.sockets.append(received)
        ws.on("framereceived", lambda payload: received.append(codec.decode(payload)))

    def pump_until(self, pred: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() > deadline:
                return v
            self.page.wait_for_timeout(20)

    def connected(self, n: int) -> bool:
        """The page's ``n``-th websocket (1-based) is open and has received something."""
        return len(self.sockets) >= n and bool(self.sockets[n - 1])

    def scene(self, n: int = -1) -> SceneMirror:
        """The scene the web client built from what its websocket ``n`` received (up to the
        first REMOVE: the tests remove the box themselves afterwards)."""
        graph = SceneMirror()
        for msg in self.sockets[n]:
            if msg["etype"] == "REMOVE":
                break
            graph.apply(msg)
        return graph


def reload_and_wait(wire: PageWire, timeout: float = 30.0) -> None:
    n = len(wire.sockets)
    wire.page.reload()
    assert wire.pump_until(lambda: wire.connected(n + 1), timeout), \
        "the reloaded page did not connect back and get the scene"


def box_position(graph: SceneMirror) -> List[float]:
    node = graph.find("box")
    assert node is not None, "no box in the scene"
    return [float(v) for v in node["position"]]


def where_the_box_is(with_box: np.ndarray, without: np.ndarray) -> Dict[str, float]:
    """The pixels that change when the box is removed: their share of the frame and their
    centroid (``cx``/``cy`` as fractions of width/height)."""
    diff = np.abs(with_box.astype(np.int16) - without.astype(np.int16)).sum(axis=2)
    mask = diff > 60
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return {"fraction": float(mask.mean()),
            "cx": float(xs.mean() / w) if len(xs) else float("nan"),
            "cy": float(ys.mean() / h) if len(ys) else float("nan")}


# -- the README's robot loop ---------------------------------------------------------------


def readme_robot_loop() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("From a robot loop or a Jupyter cell")
    m = re.search(r"^```python\n(.*?)^```", text[start:], re.S | re.M)
    assert m, "no python block after the robot-loop sentence of README.md"
    return m.group(1)


def test_readme_robot_loop_survives_two_reloads(chromium, no_thread_leak, monkeypatch):
    code = readme_robot_loop()
    assert "app.scene" in code and "app.stop()" in code
    ns: Dict[str, Any] = {"__name__": "__readme__"}
    arrivals: List[tuple] = []  # (session id, box x when it connected, monotonic time)
    look: Dict[str, Any] = {}
    real_stop = Vuer.stop

    def stop_and_look(self: Vuer, timeout: float = 1.0) -> None:
        """The snippet's own app.stop(): first look at the server and the last viewer (its
        frame as the loop left it, without the box, and with the box back at x = 0)."""
        try:
            if self is ns.get("app") and not look:
                with self.scene._lock:
                    look["box"] = box_position(self.scene.graph)
                if arrivals:  # the page needs a moment after INIT before frames show the scene
                    time.sleep(max(0.0, arrivals[-1][2] + 1.5 - time.monotonic()))
                look["rendered_by"] = self.viewer(client="browser").session.id
                look["final"] = self.scene.get_render(timeout=30)
                self.scene.remove @ "box"
                look["no_box"] = self.scene.get_render(timeout=30)
                self.scene.upsert @ Box(key="box", position=[0, 0.5, 0])
                look["at_zero"] = self.scene.get_render(timeout=30)
        except BaseException as e:  # noqa: BLE001 - reported by the test, not by the snippet
            look["error"] = e
        finally:
            real_stop(self, timeout)

    monkeypatch.setattr(Vuer, "stop", stop_and_look)
    outcome: Dict[str, Any] = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            exec(compile(code, "README.md (robot loop)", "exec"), ns)  # noqa: S102 - the test
        except BaseException as e:  # noqa: BLE001 - checked below
            outcome["error"] = e
        outcome["seconds"] = time.monotonic() - t0

    page = chromium.open("about:blank")
    wire = PageWire(page)
    loop = threading.Thread(target=run, name="test-readme-loop")
    loop.start()
    try:
        assert wait_until(lambda: ns.get("app") is not None and ns["app"].running, 10)
        app = ns["app"]

        def new_browser() -> bool:
            seen = {a[0] for a in arrivals}
            for s in app.sessions:
                if s.init is not None and s.init.value.get("client") == "browser" \
                        and s.id not in seen and not s.closed:
                    with app.scene._lock:
                        node = app.scene.graph.find("box")
                        x = float(node["position"][0]) if node else float("nan")
                    arrivals.append((s.id, x, time.monotonic()))
                    return True
            return False

        page.goto(f"http://127.0.0.1:{app.port}/")
        assert wire.pump_until(new_browser, 30), "the page did not connect"
        for _ in range(2):
            reload_and_wait(wire)
            assert wire.pump_until(new_browser, 10)
    finally:  # keep Playwright going meanwhile: it routes the page's requests
        wire.pump_until(lambda: not loop.is_alive(), 60)
        loop.join(5)
    assert not loop.is_alive(), "the README snippet did not finish"
    wire.pump_until(lambda: False, 0.5)  # deliver the frames the page received meanwhile
    page.close()

    assert "error" not in outcome, f"the README snippet raised: {outcome['error']!r}"
    assert "error" not in look, f"looking at the last viewer failed: {look['error']!r}"
    # the three page loads happened while the loop ran, the last one with the loop under way
    assert len(arrivals) == 3 and len(wire.sockets) == 3
    assert all(x < 0.999 for _, x, _ in arrivals), arrivals
    assert arrivals[-1][1] > 0, "the last reload came before the loop started moving the box"
    final = [0.999, 0.5, 0.0]
    assert np.allclose(look["box"], final, atol=1e-6)                  # the server's scene
    last = wire.sockets[-1]
    assert last[0]["etype"] == "SET"         # the reloaded page first got the current scene
    replayed = SceneMirror()
    replayed.apply(last[0])
    assert 0 < box_position(replayed)[0] < 0.999                        # ... mid-loop ...
    assert np.allclose(box_position(wire.scene()), final, atol=1e-6)    # ... then followed
    # the last page is the one that rendered, and it draws the box where x = 0.999 puts it:
    # right of where the same page draws it at x = 0 (the pixels that change when the box
    # is removed locate it)
    assert look["rendered_by"] == arrivals[-1][0]
    assert look["final"].shape == (HEIGHT, WIDTH, 3)
    final_spot = where_the_box_is(look["final"], look["no_box"])
    zero_spot = where_the_box_is(look["at_zero"], look["no_box"])
    assert final_spot["fraction"] > 0.002 and zero_spot["fraction"] > 0.002, (final_spot,
                                                                             zero_spot)
    assert final_spot["cx"] > zero_spot["cx"] + 0.02, (final_spot, zero_spot)


# -- the Jupyter notebook's loop cell ------------------------------------------------------


class Kernel:
    """A real IPython kernel (jupyter_client), cells run one at a time as Jupyter does."""

    def __init__(self, cwd: Path):
        jupyter_client = require("jupyter_client")
        require("ipykernel")
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 60) -> str:
        """Run a cell and wait for it; its stdout. Fails with the cell's error."""
        out: List[str] = []

        def hook(msg: Dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        content = reply["content"]
        assert content["status"] == "ok", \
            f"cell failed: {content.get('ename')}: {content.get('evalue')}\n{code}"
        return "".join(out)

    def start(self, code: str) -> str:
        """Start a cell without waiting; :meth:`finish` waits for it."""
        return self.kc.execute(code)

    def finish(self, msg_id: str, timeout: float = 60) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def test_notebook_loop_cell_survives_two_reloads(chromium, tmp_path, monkeypatch):
    from test_examples import subprocess_env

    nbformat = require("nbformat")
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # the kernel's sys.path
    nb = nbformat.read(str(ROOT / "examples" / "jupyter_quickstart.ipynb"), as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    loops = [i for i, src in enumerate(cells) if re.search(r"^for \S.* in .*:", src, re.M)]
    assert len(loops) == 1, "expected one loop cell in the notebook"
    loop = loops[0]
    assert "app.scene" in cells[loop] and "session" not in cells[loop]
    assert "app.stop()" in cells[-1]
    n = int(re.search(r"range\((\d+)\)", cells[loop]).group(1))
    final_x = math.sin((n - 1) / 10)  # the cell's last pose (checked against its formula)
    assert "position=[math.sin(i / 10), 0.15, 0]" in cells[loop]

    kernel = Kernel(tmp_path)
    page = None
    try:
        port = None
        for i in range(loop):  # start, scene, app.show(): as a user runs them
            out = kernel.run(cells[i])
            m = re.search(r"localhost:(\d+)", out)
            port = int(m.group(1)) if m and port is None else port
        assert port, "the first cells did not print the server's URL"
        page = chromium.open("about:blank")
        wire = PageWire(page)
        page.goto(f"http://127.0.0.1:{port}/")  # the viewer, as the IFrame shows it
        assert wire.pump_until(lambda: wire.connected(1), 30), "the page did not connect"
        running = kernel.start(cells[loop])
        for _ in range(2):
            reload_and_wait(wire)
        reply = kernel.finish(running, 60)
        assert reply["status"] == "ok", f"the loop cell raised {reply.get('ename')}: " \
                                        f"{reply.get('evalue')}"
        wire.pump_until(lambda: False, 0.5)
        assert len(wire.sockets) == 3
        # the last page got the scene mid-loop, then every later pose up to the last one
        replayed = SceneMirror()
        replayed.apply(wire.sockets[-1][0])
        assert wire.sockets[-1][0]["etype"] == "SET"
        assert not math.isclose(box_position(replayed)[0], final_x, abs_tol=1e-6)
        assert math.isclose(box_position(wire.scene())[0], final_x, abs_tol=1e-5)
        assert wire.scene().find("ball") is not None
        for i in range(loop + 1, len(cells) - 1):  # the notebook's own checks
            kernel.run(cells[i])
        # the kernel's shared scene, and a frame of it from the last page
        out = kernel.run(
            "import numpy as np\n"
            "print('x=%r' % app.scene.graph.find('box')['position'][0])\n"
            f"np.save({str(tmp_path / 'with.npy')!r}, app.scene.get_render(timeout=30))\n"
            "app.scene.remove @ 'box'\n"
            f"np.save({str(tmp_path / 'without.npy')!r}, app.scene.get_render(timeout=30))\n")
        assert math.isclose(float(re.search(r"x=(\S+)", out).group(1)), final_x, abs_tol=1e-5)
        spot = where_the_box_is(np.load(tmp_path / "with.npy"), np.load(tmp_path / "without.npy"))
        assert spot["fraction"] > 0.0005, spot
        assert (spot["cx"] < 0.5) == (final_x < 0), spot  # on the side the last pose says
        kernel.run(cells[-1])  # app.stop()
    finally:
        if page is not None and not page.is_closed():
            page.close()
        kernel.close()


# -- a capture loop on app.scene.get_render ------------------------------------------------


def test_capture_loop_on_the_shared_scene_survives_reloads(chromium, no_thread_leak):
    with Vuer(port=0) as app:
        app.scene.set @ DefaultScene(Box(key="box", args=[0.3, 0.3, 0.3]))
        page = chromium.open("about:blank")
        wire = PageWire(page)
        page.goto(f"http://127.0.0.1:{app.port}/")
        assert wire.pump_until(lambda: wire.connected(1), 30)
        done = threading.Event()
        result: Dict[str, Any] = {"frames": 0}

        def capture() -> None:
            try:
                for i in range(2000):  # until the reloads are done; bounded either way
                    if done.is_set():
                        return
                    app.scene.upsert @ Box(key="box", position=[(i % 20) / 20, 0.15, 0])
                    rgb = app.scene.get_render(timeout=30)
                    assert rgb.shape == (HEIGHT, WIDTH, 3)
                    result["frames"] += 1
            except BaseException as e:  # noqa: BLE001 - checked below
                result["error"] = e

        t = threading.Thread(target=capture, name="test-capture")
        t.start()
        try:
            assert wire.pump_until(lambda: result["frames"] >= 3 or "error" in result, 30)
            for _ in range(2):
                reload_and_wait(wire)
                frames = result["frames"]
                assert wire.pump_until(lambda f=frames: result["frames"] > f + 2
                                       or "error" in result, 30)
        finally:
            done.set()
            t.join(60)
        page.close()
        assert not t.is_alive()
        assert "error" not in result, f"the capture loop raised {result['error']!r}"
