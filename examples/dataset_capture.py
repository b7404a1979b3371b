"""Dataset capture: render an object from N camera poses on a circle, write PNGs and poses.

    python examples/dataset_capture.py --out captures/           # then open the printed URL
    python examples/dataset_capture.py --headless --n 36 --out captures/

Each frame comes from ``session.get_render(width, height, position=..., look_at=..., fov=...)``:
the browser renders it off-screen, so whoever watches the page keeps their own view. The
output directory gets ``frames/000.png ...`` (and ``depth/000.png ...`` with ``--depth``) and
``transforms.json``: the intrinsics (``fx, fy, cx, cy`` in pixels, from the vertical ``fov``
and the image size) and per frame the camera ``position``, its orientation ``wxyz``, the
``look_at`` point and the 4x4 camera-to-world ``transform_matrix`` (OpenGL/three.js camera:
it looks along its -Z axis with +Y up; flip the Y and Z columns for OpenCV).

``--headless`` starts Debian's Chromium through Playwright (``pip install
"vuer-sync[capture]"`` and ``apt-get install chromium``; no ``playwright install`` needed:
``--chromium`` points at the binary), offline, with software WebGL; both are checked before
the server starts. Without it the script waits for you to open the printed URL in any browser.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from PIL import Image

from vuer_sync import Vuer
from vuer_sync.schemas import Box, DefaultScene, Sphere, TorusKnot
from vuer_sync.server.render import look_at_wxyz

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio",
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    # nothing but loopback resolves: the page works offline (see docs/browser.md)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , "
    "EXCLUDE [::1]",
]


class HeadlessChromium:
    """Chromium on a throw-away profile, showing ``url``; ``close()`` ends it."""

    def __init__(self, url: str, executable: str, width: int = 1280, height: int = 720):
        from playwright.sync_api import sync_playwright  # checked by check_headless()
        self.profile = tempfile.mkdtemp(prefix="vuer-capture-chromium-")
        self._pw = sync_playwright().start()
        try:
            self.context = self._pw.chromium.launch_persistent_context(
                self.profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height}, timeout=60_000)
            page = self.context.pages[0] if self.context.pages else self.context.new_page()
            page.goto(url, timeout=60_000)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            if getattr(self, "context", None) is not None:
                self.context.close()
        finally:
            self._pw.stop()
            shutil.rmtree(self.profile, ignore_errors=True)


def check_headless(chromium: str) -> Optional[str]:
    """Why ``--headless`` cannot work here (``None`` when it can): Playwright missing, or no
    Chromium binary. Checked before the server starts, so the user gets one clear line."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        return (f"--headless needs Playwright ({e}): pip install 'vuer-sync[capture]' "
                f"(no `playwright install`: it drives Debian's chromium)")
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        return (f"--headless: no Chromium at {chromium} (apt-get install chromium, or pass "
                f"--chromium PATH)")
    return None


def scene() -> DefaultScene:
    """An object to capture: a flat red box with a lit sphere and torus knot around it."""
    return DefaultScene(
        Box(key="box", args=[1.2, 1.2, 1.2], position=[0, 0.6, 0], materialType="basic",
            material={"color": "red"}),
        Sphere(key="sphere", args=[0.5, 32, 16], position=[1.6, 0.5, 0.4],
               materialType="standard", material={"color": "#2a9d8f"}),
        TorusKnot(key="knot", args=[0.4, 0.12, 128, 16], position=[-1.5, 0.9, -0.6],
                  materialType="standard", material={"color": "#e9c46a"}),
    )


def intrinsics(width: int, height: int, fov_y_deg: float) -> dict:
    """Pinhole intrinsics in pixels for a vertical field of view (square pixels)."""
    fy = (height / 2) / math.tan(math.radians(fov_y_deg) / 2)
    return {"width": width, "height": height, "fov_y_deg": fov_y_deg,
            "fx": fy, "fy": fy, "cx": width / 2, "cy": height / 2}


def camera_to_world(position: Sequence[float], wxyz: Sequence[float]) -> List[List[float]]:
    """The 4x4 camera-to-world matrix (rows) of a camera at ``position`` rotated by ``wxyz``."""
    w, x, y, z = wxyz
    rot = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return [[*rot[i], float(position[i])] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]]


def progress(done: int, total: int, started: float, width: int = 30) -> None:
    """A one-line text progress bar on stderr."""
    filled = int(width * done / max(total, 1))
    rate = (time.monotonic() - started) / max(done, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'-' * (width - filled)}] {done}/{total} "
                     f"{rate:.2f} s/frame")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def wait_until_drawn(session: Any, args: argparse.Namespace, position: List[float],
                     target: List[float], timeout: float = 15.0) -> None:
    """Right after a page connects, the web client is still loading its scene components
    for a moment (about half a second here): frames then show the grid without the objects.
    No message says when it is done, so render the first pose until the red box shows up."""
    deadline = time.monotonic() + timeout
    while True:  # bounded by `timeout`
        rgb = session.get_render(args.width, args.height, position=position, look_at=target,
                                 fov=args.fov, depth=args.depth, near=args.near,
                                 far=args.far, timeout=args.timeout)
        rgb = rgb[0] if args.depth else rgb
        red = (rgb[..., 0] > 150) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
        if red.mean() > 0.001:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the object did not show up within {timeout} s")
        if session.wait_closed(0.1):
            return  # the next get_render raises SessionClosed


def circle_pose(args: argparse.Namespace, i: int) -> List[float]:
    angle = 2 * math.pi * i / args.n
    return [args.radius * math.cos(angle), args.elevation, args.radius * math.sin(angle)]


def capture(session: Any, args: argparse.Namespace, out: Path) -> dict:
    session.set @ scene()
    (out / "frames").mkdir(parents=True, exist_ok=True)
    if args.depth:
        (out / "depth").mkdir(exist_ok=True)
    target = [0.0, 0.5, 0.0]
    wait_until_drawn(session, args, circle_pose(args, 0), target)
    frames = []
    started = time.monotonic()
    progress(0, args.n, started)
    for i in range(args.n):  # bounded by --n
        position = circle_pose(args, i)
        wxyz = look_at_wxyz(position, target)
        result = session.get_render(args.width, args.height, position=position, wxyz=wxyz,
                                    fov=args.fov, depth=args.depth, near=args.near,
                                    far=args.far, timeout=args.timeout)
        rgb, depth = result if args.depth else (result, None)
        frame = {"file": f"frames/{i:03d}.png", "position": position, "wxyz": list(wxyz),
                 "look_at": target, "transform_matrix": camera_to_world(position, wxyz)}
        Image.fromarray(rgb).save(out / frame["file"])
        if depth is not None:
            frame["depth_file"] = f"depth/{i:03d}.png"
            Image.fromarray(depth).save(out / frame["depth_file"])
        frames.append(frame)
        progress(i + 1, args.n, started)
    meta = {
        "intrinsics": intrinsics(args.width, args.height, args.fov),
        "camera_convention": "OpenGL/three.js: the camera looks along -Z, +Y up; "
                             "transform_matrix is camera-to-world, row-major",
        "frames": frames,
    }
    if args.depth:
        meta["depth_encoding"] = {"near": args.near, "far": args.far,
                                  "value": "255 * (1 - (z - near) / (far - near)), 0 = nothing"}
    (out / "transforms.json").write_text(json.dumps(meta, indent=2))
    return meta


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("captures"))
    p.add_argument("--n", type=int, default=12, help="number of poses on the circle")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fov", type=float, default=50.0, help="vertical field of view, degrees")
    p.add_argument("--radius", type=float, default=5.0)
    p.add_argument("--elevation", type=float, default=2.5, help="camera height")
    p.add_argument("--depth", action="store_true", help="also write 8-bit depth PNGs")
    p.add_argument("--near", type=float, default=0.1)
    p.add_argument("--far", type=float, default=20.0)
    p.add_argument("--headless", action="store_true", help="start headless Chromium here")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary")
    p.add_argument("--port", type=int, default=None, help="default 8012; 0 with --headless")
    p.add_argument("--wait", type=float, default=300.0, help="seconds to wait for a browser")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per frame at most")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")

    if args.headless:
        problem = check_headless(args.chromium)
        if problem:
            sys.exit(f"dataset_capture.py: {problem}")
    port = args.port if args.port is not None else (0 if args.headless else 8012)
    app = Vuer(port=port)
    app.start(block=False)
    browser = None
    try:
        url = f"http://127.0.0.1:{app.port}/"
        if args.headless:
            browser = HeadlessChromium(url, args.chromium)
        else:
            print(f"Open {url} in a browser to start the capture.", flush=True)
        session = app.wait_for_session(args.wait if not args.headless else 60.0,
                                       client="browser")
        meta = capture(session, args, args.out)
        print(f"wrote {len(meta['frames'])} frames and transforms.json to {args.out}")
    finally:
        if browser is not None:
            browser.close()
        app.stop()


if __name__ == "__main__":
    main()
