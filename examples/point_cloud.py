"""Stream a changing point cloud (a rippling surface) to every connected browser.

    python examples/point_cloud.py                    # open http://localhost:8012/
    python examples/point_cloud.py --frames 30 --port 0 --check      # bounded, as CI runs it

Each frame is one ``PointCloud`` upsert (float16 vertices and uint8 colors: 9 bytes a point).
A client that cannot keep up is not sent a backlog: an unsent frame is replaced by the newer
one. ``--check`` connects a Python client in place of a browser and verifies that the last
frame it received is, byte for byte, the last frame produced.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from vuer_sync import Vuer, VuerClient
from vuer_sync.events import ServerEvent
from vuer_sync.schemas import DefaultScene, PointCloud


def surface(n_side: int):
    """The fixed (x, z) grid of the surface."""
    u = np.linspace(-1.0, 1.0, n_side, dtype=np.float32)
    x, z = np.meshgrid(u, u)
    return x.ravel(), z.ravel()


def frame(x: np.ndarray, z: np.ndarray, t: float) -> PointCloud:
    r = np.sqrt(x * x + z * z)
    y = 0.15 * np.sin(8 * r - 3 * t) / (1 + 2 * r) + 0.4
    vertices = np.stack([x, y, z], axis=1)
    h = (y - y.min()) / max(float(np.ptp(y)), 1e-6)
    colors = np.stack([h, 0.4 + 0.3 * h, 1 - h], axis=1)  # floats in [0, 1]
    return PointCloud(key="cloud", vertices=vertices, colors=colors, size=0.01)


class PythonViewer:
    """A Python client standing in for a browser: keeps the last cloud it received."""

    def __init__(self, port: int):
        self.client = VuerClient(f"ws://localhost:{port}").connect()
        self.frames = 0
        self.last = None
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for ev in self.client:
            if ev.etype == "UPSERT":
                self.frames += 1
                self.last = ev.data["nodes"][0]
            elif ev.etype == "DONE":
                self.done.set()
                return


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8012, help="0 = any free port")
    p.add_argument("--points", type=int, default=100_000, help="points per frame")
    p.add_argument("--hz", type=float, default=30.0, help="frames per second")
    p.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--check", action="store_true",
                   help="connect a Python client and verify what it received")
    args = p.parse_args()

    app = Vuer(port=args.port)
    app.scene.set @ DefaultScene()
    app.start(block=False)
    viewer = None
    if args.check:
        viewer = PythonViewer(app.port)
        app.wait_for_session(timeout=10)

    x, z = surface(int(args.points ** 0.5))
    sent = 0
    pc = None
    t0 = next_t = time.monotonic()
    try:
        while args.frames is None or sent < args.frames:
            pc = frame(x, z, time.monotonic() - t0)
            app.scene.upsert @ pc  # returns at once; replaces an unsent older frame
            sent += 1
            next_t += 1 / args.hz
            time.sleep(max(0.0, next_t - time.monotonic()))
    except KeyboardInterrupt:
        pass
    ok = True
    try:
        if viewer is not None:
            app.broadcast(ServerEvent(None, etype="DONE"))
            app.flush(timeout=10)
            ok = viewer.done.wait(10) and viewer.last is not None
            if pc is not None and ok:
                wire = pc.serialize()
                ok = (viewer.last["vertices"] == wire["vertices"]
                      and viewer.last["colors"] == wire["colors"])
            viewer.client.close()
        stats = app.stats
    finally:
        app.stop()
    mb = stats["bytes_sent"] / 2**20
    print(f"{sent} frames of {len(x)} points produced; {stats['sent']} messages "
          f"({mb:.1f} MiB) written, {stats['coalesced']} frames replaced before sending")
    if viewer is not None:
        print(f"python viewer received {viewer.frames} frames; last frame "
              f"{'identical to' if ok else 'DIFFERENT from'} the last one produced")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
