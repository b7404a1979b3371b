"""Rendered frames per second from the real Vuer web client in headless Chromium, offline.

**Pose sweep** (the default; issue 22): N poses on a circle around a scene, each frame from
an off-screen camera at its pose, quality 0.9, at 640x480 and 1280x720, RGB and RGB+depth,
for four rows in the same run:

* ``get_render x1``: one page, today's loop: ``session.get_render(w, h, position=...,
  wxyz=..., fov=...)`` per pose (its fixed 50 ms settle after the pose is written);
* ``pool x2`` / ``pool x4``: ``vuer_sync.capture.RenderPool`` over 2 and 4 pages (pipelined,
  each frame checked by its freshness tag, stale ones rendered again);
* ``vuer 0.1.6``: what a Vuer user writes: ``session.upsert @ CameraView(stream="ondemand",
  ...)`` at the pose, ``await asyncio.sleep(0.05)`` (the same settle), ``await
  session.grab_render(key=...)``, the JPEG decoded.

Every row's server runs in its own process (``--worker``), which times its own loop and
reports its CPU time (``time.process_time``: every thread of the server process, the user's
loop included, not the browsers) and the whole machine's (``/proc/stat``) over the timed
pass; the driver starts the Chromium pages (one browser process each, the flags of
``vuer_sync.capture.headless``, a 160x120 page view; the pool rows' pages also draw their
own view at 5 Hz, as ``HeadlessPages`` does) and rotates the rows' order between
repetitions. Frames
are decoded to numpy in every row (that is what a capture needs), not written. Our rows'
workers also report the browsers' CPU per frame by Chromium process kind (``gpu-process``:
software WebGL draws the frame; ``renderer``: the page's JavaScript and JPEG encoding): on
a machine with no GPU that, not the server, bounds how fast any pool can go.

**Freshness** (``--stale N``, default 1000 in a full run): the pool over 2 pages with a CPU
hog process per core beside the browsers; each pose also moves a red box to a place of its
own, and every frame is checked for it, independently of the pool's tag check.

    python benchmarks/bench_render.py [--n 100] [--reps 3] [--stale 1000] [--smoke]
    python benchmarks/bench_render.py --fixed     # the earlier fixed-view rows instead

Writes benchmarks/out/render.json (``--smoke``: render-smoke.json). Loopback only; every
loop is bounded in count (``--n``) and time (``--seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout; tests/browser.py

from vuer_sync import Vuer  # noqa: E402
from vuer_sync.schemas import Box, DefaultScene, GrabRender  # noqa: E402

from browser import CHROMIUM, Chromium, red_stats  # noqa: E402

QUALITY = 0.9
VIEWPORTS = [(640, 480), (1280, 720)]

VUER_SERVER = textwrap.dedent('''
    import asyncio, json, os, sys, time
    from vuer import Vuer, VuerSession
    from vuer.schemas import Box, DefaultScene, GrabRender

    port, n, seconds, quality = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), \\
        float(sys.argv[4])
    app = Vuer(host="127.0.0.1", port=port, queue_len=1000)

    def red_fraction(jpeg):
        import io
        import numpy as np
        from PIL import Image
        a = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)
        return float(((a[..., 0] > 150) & (a[..., 1] < 80) & (a[..., 2] < 80)).mean())

    @app.spawn(start=True)
    async def main(session: VuerSession):
        session.set @ DefaultScene(
            Box(key="box", args=[2, 2, 2], materialType="basic", material={"color": "red"}),
            GrabRender(key="DEFAULT"))
        # warm-up (bounded): until the web client has mounted the scene and shows the box
        deadline = time.monotonic() + 60
        while True:
            try:
                ev = await session.grab_render(quality=quality, ttl=2.0)
                if red_fraction(ev.value["frame"]) > 0.005:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                print(json.dumps({"error": "warm-up failed"}), flush=True)
                os._exit(1)
            await asyncio.sleep(0.1)
        for _ in range(5):
            await session.grab_render(quality=quality, ttl=10.0)
        times, sizes = [], []
        t0 = time.perf_counter()
        c0 = time.process_time()
        for _ in range(n):
            t = time.perf_counter()
            ev = await session.grab_render(quality=quality, ttl=10.0)
            times.append(time.perf_counter() - t)
            sizes.append(len(ev.value["frame"]))
            if time.perf_counter() - t0 > seconds:
                break
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
        print(json.dumps({"times": times, "total": total, "sizes": sizes, "cpu": cpu,
                          "width": ev.value["width"], "height": ev.value["height"]}),
              flush=True)
        os._exit(0)
''')


def row(name: str, times: List[float], total: float, sizes: List[int], shape: Any,
        cpu: float) -> dict:
    ts = sorted(times)
    return {"what": name, "n": len(ts), "seconds": total, "fps": len(ts) / total,
            "server_cpu_pct": 100.0 * cpu / total,
            "median_ms": 1000 * statistics.median(ts),
            "p95_ms": 1000 * ts[min(len(ts) - 1, int(0.95 * len(ts)))],
            "jpeg_kb": (sum(sizes) / len(sizes) / 1024) if sizes else None,
            "frame": list(shape)}


# Chromium flags per frame pacing: headless Chromium paces requestAnimationFrame at 60 Hz like a
# display, so both servers sit at ~16.7 ms per frame; uncapped, the CPU (shared with the
# server) sets the rate.
PACING_ARGS: Dict[str, Tuple[str, ...]] = {
    "display": (),
    "uncapped": ("--disable-frame-rate-limit", "--disable-gpu-vsync"),
}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_vuer(chromium: Chromium, w: int, h: int, n: int, seconds: float) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", VUER_SERVER, str(port), str(n), str(seconds), str(QUALITY)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    page = None
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded: until the port listens or 30 s
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vuer did not start: {proc.stderr.read()[-2000:]}")
                time.sleep(0.05)
        page = chromium.open(f"http://127.0.0.1:{port}/", w, h)
        out, err = proc.communicate(timeout=seconds + 120)
    finally:
        if page is not None:
            page.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"vuer run failed ({proc.returncode}): {out[-500:]} {err[-2000:]}")
    res = json.loads(lines[-1])
    return row("vuer 0.1.6 grab_render (JPEG bytes)", res["times"], res["total"],
               res["sizes"], (res["height"], res["width"], 3), res["cpu"])


def run_ours(chromium: Chromium, w: int, h: int, n: int, seconds: float) -> List[dict]:
    arrivals: queue.Queue = queue.Queue()
    app = Vuer(port=0)

    @app.spawn(client="browser")
    def main(session):
        arrivals.put(session)
        session.forever()

    app.start(block=False)
    page = None
    try:
        page = chromium.open(f"http://127.0.0.1:{app.port}/", w, h)
        session = arrivals.get(timeout=60)
        session.set @ DefaultScene(
            Box(key="box", args=[2, 2, 2], materialType="basic", material={"color": "red"}),
            GrabRender(key="DEFAULT"))
        deadline = time.monotonic() + 60
        while red_stats(session.get_render(quality=QUALITY))["fraction"] <= 0.005:
            if time.monotonic() > deadline:  # bounded warm-up, as for vuer
                raise RuntimeError("warm-up failed: the box never showed")
            session.wait_closed(0.1)
        for _ in range(5):
            session.get_render(quality=QUALITY)
        rows = []
        for name in ("get_render", "grab_render"):
            times, sizes = [], []
            t0 = time.perf_counter()
            c0 = time.process_time()
            for _ in range(n):
                t = time.perf_counter()
                if name == "get_render":
                    frame = session.get_render(quality=QUALITY)
                    shape = frame.shape
                else:
                    ev = session.grab_render(quality=QUALITY, ttl=10.0)
                    sizes.append(len(ev.value["frame"]))
                    shape = (ev.value["height"], ev.value["width"], 3)
                times.append(time.perf_counter() - t)
                if time.perf_counter() - t0 > seconds:
                    break
            label = ("vuer_sync get_render (numpy)" if name == "get_render"
                     else "vuer_sync grab_render (JPEG bytes)")
            rows.append(row(label, times, time.perf_counter() - t0, sizes, shape,
                            time.process_time() - c0))
        return rows
    finally:
        if page is not None:
            page.close()
        app.stop()


def fixed_main(argv: List[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="frames per measurement (at most)")
    ap.add_argument("--seconds", type=float, default=20.0, help="time per measurement (max)")
    ap.add_argument("--rounds", type=int, default=3, help="repeat, alternating server order")
    ap.add_argument("--smoke", action="store_true", help="tiny run, a few seconds")
    ap.add_argument("--pacing", choices=("display", "uncapped", "both"), default="both",
                    help="display: Chromium paces frames at 60 Hz as on a monitor; uncapped: "
                         "--disable-frame-rate-limit, frames as fast as the CPU renders them "
                         "(what a capture job wants); both (default)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.seconds, args.rounds = 5, 5.0, 1
    if not os.path.exists(CHROMIUM):
        sys.exit(f"no Chromium at {CHROMIUM}")

    results: Dict[str, Dict[str, List[dict]]] = {}
    leftover: List[int] = []
    pacings = ("display", "uncapped") if args.pacing == "both" else (args.pacing,)
    for pacing in pacings:
        extra = PACING_ARGS[pacing]
        with Chromium(1280, 720, extra_args=extra) as chromium:
            for r in range(args.rounds):
                for w, h in VIEWPORTS:
                    key = f"{w}x{h}" + ("" if pacing == "display" else f" {pacing}")
                    vp = results.setdefault(key, {"vuer": [], "ours": []})
                    order = ("vuer", "ours") if r % 2 == 0 else ("ours", "vuer")
                    for who in order:
                        if who == "vuer":
                            vp["vuer"].append(run_vuer(chromium, w, h, args.n, args.seconds))
                        else:
                            vp["ours"].append(run_ours(chromium, w, h, args.n, args.seconds))
                    print(f"round {r + 1} {key}: vuer {vp['vuer'][-1]['fps']:.1f} fps, "
                          f"ours {vp['ours'][-1][0]['fps']:.1f} fps", flush=True)
        leftover += chromium.leftover

    summary = []
    for vp, runs in results.items():
        ours = statistics.median(rs[0]["fps"] for rs in runs["ours"])
        ours_raw = statistics.median(rs[1]["fps"] for rs in runs["ours"])
        vuer = statistics.median(x["fps"] for x in runs["vuer"])
        cpu_ours = statistics.median(rs[1]["server_cpu_pct"] for rs in runs["ours"])
        cpu_vuer = statistics.median(x["server_cpu_pct"] for x in runs["vuer"])
        summary.append({"viewport": vp, "vuer_sync_get_render_fps": ours,
                        "vuer_sync_grab_render_fps": ours_raw, "vuer_grab_render_fps": vuer,
                        "vuer_sync_server_cpu_pct": cpu_ours, "vuer_server_cpu_pct": cpu_vuer,
                        "ratio_get_render_vs_vuer": ours / vuer,
                        "ratio_grab_render_vs_vuer": ours_raw / vuer})
    result = {"machine": platform.platform(), "python": platform.python_version(),
              "cpus": os.cpu_count(), "quality": QUALITY, "n": args.n,
              "rounds": args.rounds, "smoke": args.smoke, "summary": summary,
              "runs": results, "chromium_leftover_pids": leftover}
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    name = "render-smoke.json" if args.smoke else "render.json"
    (out / name).write_text(json.dumps(result, indent=2))
    print(f"\nframes per second, quality {QUALITY}, median of {args.rounds} round(s)")
    print(f"{'viewport':>19} {'vuer_sync get_render':>21} {'(grab_render)':>14} "
          f"{'vuer grab_render':>17} {'ratio':>6} {'server CPU % ours / vuer':>25}")
    for s in summary:
        print(f"{s['viewport']:>19} {s['vuer_sync_get_render_fps']:21.1f} "
              f"{s['vuer_sync_grab_render_fps']:14.1f} {s['vuer_grab_render_fps']:17.1f} "
              f"{s['ratio_get_render_vs_vuer']:5.2f}x {s['vuer_sync_server_cpu_pct']:13.1f} / "
              f"{s['vuer_server_cpu_pct']:.1f}")


# -- the pose sweep (issue 22) --------------------------------------------------------------

SETTLE = 0.05
SWEEP_CONFIGS = [(640, 480, False), (640, 480, True), (1280, 720, False), (1280, 720, True)]
ROWS = [("get_render x1", 1), ("pool x2", 2), ("pool x4", 4), ("vuer 0.1.6", 1)]
FOV, NEAR, FAR = 50.0, 0.1, 20.0

VUER_SWEEP = textwrap.dedent('''
    import asyncio, io, json, os, sys, time
    import numpy as np
    from PIL import Image
    from vuer import Vuer, VuerSession
    from vuer.schemas import Box, CameraView, DefaultScene, Sphere, TorusKnot
    from vuer_sync.capture.pose import circle_poses
    from vuer_sync.server.render import wxyz_to_euler
    sys.path.insert(0, sys.argv[1])
    from bench_render import cpu_snapshot, machine_pct

    port, n, w, h, depth, seconds = (int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                     int(sys.argv[5]), sys.argv[6] == "1", float(sys.argv[7]))
    app = Vuer(host="127.0.0.1", port=port, queue_len=1000)
    poses = circle_poses(n)

    def camera(pose):
        return CameraView(key="cam", stream="ondemand", width=w, height=h, fov=50.0, near=0.1,
                          far=20.0, renderDepth=depth, downsample=1, showCamera=False,
                          showFrustum=False, monitor=False, position=list(pose.position),
                          rotation=list(wxyz_to_euler(pose.wxyz)))

    def decode(ev):
        out = [np.asarray(Image.open(io.BytesIO(ev.value["frame"])).convert("RGB"))]
        if depth:
            out.append(np.asarray(Image.open(io.BytesIO(ev.value["depthFrame"]))))
        return out

    @app.spawn(start=True)
    async def main(session: VuerSession):
        session.set @ DefaultScene(
            Box(key="box", args=[1.2, 1.2, 1.2], position=[0, 0.6, 0], materialType="basic",
                material={"color": "red"}),
            Sphere(key="sphere", args=[0.5, 32, 16], position=[1.6, 0.5, 0.4],
                   materialType="standard", material={"color": "#2a9d8f"}),
            TorusKnot(key="knot", args=[0.4, 0.12, 128, 16], position=[-1.5, 0.9, -0.6],
                      materialType="standard", material={"color": "#e9c46a"}))
        deadline = time.monotonic() + 60
        while True:  # bounded warm-up: until the camera mounted and answers
            session.upsert @ camera(poses[0])
            await asyncio.sleep(SETTLE_S)
            try:
                decode(await session.grab_render(key="cam", quality=0.9, ttl=2.0))
                break
            except Exception:
                if time.monotonic() > deadline:
                    print(json.dumps({"error": "warm-up failed"}), flush=True)
                    os._exit(1)
        t0, c0, m0 = time.perf_counter(), time.process_time(), cpu_snapshot()
        done = 0
        for pose in poses:
            session.upsert @ camera(pose)
            await asyncio.sleep(SETTLE_S)
            decode(await session.grab_render(key="cam", quality=0.9, ttl=10.0))
            done += 1
            if time.perf_counter() - t0 > seconds:
                break
        total = time.perf_counter() - t0
        print(json.dumps({"frames": done, "seconds": total,
                          "server_cpu_pct": 100 * (time.process_time() - c0) / total,
                          "machine_cpu_pct": machine_pct(m0, cpu_snapshot())}), flush=True)
        os._exit(0)
''').replace("SETTLE_S", repr(SETTLE))


def cpu_snapshot() -> Tuple[float, float]:
    """``(busy, total)`` jiffies of the whole machine, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def machine_pct(a: Tuple[float, float], b: Tuple[float, float]) -> float:
    """The machine's CPU use between two snapshots, in % of one core (200 = 2 cores)."""
    total = (b[1] - a[1]) or 1.0
    return 100.0 * (os.cpu_count() or 1) * (b[0] - a[0]) / total


def browser_cpu() -> Dict[str, float]:
    """CPU seconds used so far by the machine's Chromium processes, by kind (``gpu-process``:
    software WebGL, where the frames are drawn; ``renderer``: the page's JavaScript and the
    JPEG encoding; ``browser``: the rest), for the breakdown per frame."""
    import psutil

    out: Dict[str, float] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if not cmd or "chrom" not in os.path.basename(cmd[0]):
                continue
            kind = next((a[7:] for a in cmd if a.startswith("--type=")), "browser")
            kind = kind if kind in ("gpu-process", "renderer") else "browser"
            t = p.cpu_times()
            out[kind] = out.get(kind, 0.0) + t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def per_frame_ms(before: Dict[str, float], after: Dict[str, float], frames: int
                 ) -> Dict[str, float]:
    """Browser CPU per frame (ms) by process kind between two :func:`browser_cpu` calls."""
    return {k: 1000.0 * (after.get(k, 0.0) - before.get(k, 0.0)) / max(1, frames)
            for k in sorted(set(before) | set(after))}


def sweep_scene() -> Any:
    sys.path.insert(0, str(ROOT / "examples"))
    from dataset_capture import scene

    return scene()


def worker(argv: List[str]) -> None:
    """One row's server process: ``--worker ROW PORT_FILE N W H DEPTH SECONDS K``; prints
    ``PORT n`` then, after the sweep, one JSON line."""
    from vuer_sync.capture import RenderPool, circle_poses

    row, n, w, h, depth, seconds, k = (argv[0], int(argv[1]), int(argv[2]), int(argv[3]),
                                       argv[4] == "1", float(argv[5]), int(argv[6]))
    app = Vuer(port=0)
    app.start(block=False)
    try:
        app.scene.set @ sweep_scene()
        print(f"PORT {app.port}", flush=True)
        deadline = time.monotonic() + 120
        while len([s for s in app.sessions if s.init is not None]) < k:  # bounded
            if time.monotonic() > deadline:
                raise RuntimeError("the pages did not connect")
            time.sleep(0.05)
        sessions = [s for s in app.sessions if s.init is not None][:k]
        poses = circle_poses(n)
        if row.startswith("pool"):
            pool = RenderPool(sessions, width=w, height=h, fov=FOV, near=NEAR, far=FAR,
                              depth=depth, quality=QUALITY, timeout=30.0)
            list(pool.render(circle_poses(2 * k)))  # warm-up: every page mounts its camera
            b0 = browser_cpu()
            t0, c0, m0 = time.perf_counter(), time.process_time(), cpu_snapshot()
            done = 0
            for _ in pool.render(poses):
                done += 1
                if time.perf_counter() - t0 > seconds:
                    break
            extra = {"stale_caught": pool.stats["stale"]}
        else:
            s = sessions[0]

            def one(pose: Any, timeout: float = 30.0) -> Any:
                return s.get_render(w, h, position=pose.position, wxyz=pose.wxyz, fov=FOV,
                                    near=NEAR, far=FAR, depth=depth, quality=QUALITY,
                                    timeout=timeout, settle=SETTLE)

            one(poses[0], 60.0)  # warm-up: the helper camera mounts
            b0 = browser_cpu()
            t0, c0, m0 = time.perf_counter(), time.process_time(), cpu_snapshot()
            done = 0
            for pose in poses:
                one(pose)
                done += 1
                if time.perf_counter() - t0 > seconds:
                    break
            extra = {}
        total = time.perf_counter() - t0
        print(json.dumps({"frames": done, "seconds": total,
                          "server_cpu_pct": 100 * (time.process_time() - c0) / total,
                          "server_cpu_ms_per_frame": 1000 * (time.process_time() - c0)
                          / max(1, done),
                          "machine_cpu_pct": machine_pct(m0, cpu_snapshot()),
                          "browser_cpu_ms_per_frame": per_frame_ms(b0, browser_cpu(), done),
                          **extra}), flush=True)
    finally:
        app.stop()


def run_row(row: str, k: int, n: int, w: int, h: int, depth: bool, seconds: float) -> dict:
    """Start the row's server process, then its ``k`` pages; its JSON line, with fps."""
    from playwright.sync_api import sync_playwright

    from vuer_sync.capture.headless import CHROMIUM_ARGS, slow_animation_frames

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    if row.startswith("vuer"):
        port = free_port()
        cmd = [sys.executable, "-c", VUER_SWEEP, str(Path(__file__).parent), str(port), str(n),
               str(w), str(h), "1" if depth else "0", str(seconds)]
    else:
        port = 0
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", row, str(n), str(w),
               str(h), "1" if depth else "0", str(seconds), str(k)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    pw = sync_playwright().start()
    browsers: List[Any] = []
    try:
        if port == 0:
            line = ""
            for _ in range(50):  # bounded: the banner, then our PORT line
                line = proc.stdout.readline() if proc.stdout else ""
                if not line or line.startswith("PORT "):
                    break
            if not line.startswith("PORT "):
                raise RuntimeError(f"{row}: no port: {line!r} {proc.stderr.read()[-2000:]}")
            port = int(line.split()[1])
        deadline = time.monotonic() + 30
        while True:  # bounded: until the port listens or 30 s
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{row}: server did not start")
                time.sleep(0.05)
        for _ in range(k):
            b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                   args=list(CHROMIUM_ARGS), timeout=60_000)
            browsers.append(b)
            page = b.new_page(viewport={"width": 160, "height": 120})
            if row.startswith("pool"):  # the pool's own pages (HeadlessPages): main view 5 Hz
                page.add_init_script(slow_animation_frames(5.0))
            page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
        out, err = proc.communicate(timeout=seconds + 180)
    finally:
        for b in browsers:
            b.close()
        pw.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{row} failed ({proc.returncode}): {out[-500:]} {err[-2000:]}")
    res = json.loads(lines[-1])
    res["fps"] = res["frames"] / res["seconds"]
    return res


def stale_check(n: int, w: int, h: int, hogs: int) -> dict:
    """``n`` poses on 2 pages with ``hogs`` busy processes beside: each pose also moves a red
    box to its own place; frames whose box is not where that pose put it are stale."""
    import numpy as np

    from vuer_sync.capture import HeadlessPages, RenderPool, circle_poses

    target = np.array([0.0, 0.5, 0.0])

    def off(i: int) -> float:
        return -1.0 + 2.0 * ((i * 0.6180339887) % 1.0)

    def place(session: Any, i: int, pose: Any) -> None:
        fwd = target - np.array(pose.position)
        right = np.cross(fwd, [0.0, 1.0, 0.0])
        p = target + off(i) * right / np.linalg.norm(right)
        session.upsert @ Box(key="pose-box", args=[0.3, 0.3, 0.3], materialType="basic",
                             material={"color": "red"}, position=p.tolist())

    fy = (h / 2) / np.tan(np.radians(FOV / 2))
    app = Vuer(port=0)
    app.start(block=False)
    hog_procs = []
    try:
        app.scene.set @ DefaultScene(bgChildren=[])
        with HeadlessPages(app, 2) as hp:
            poses = circle_poses(n, radius=4.0, elevation=1.0, target=target)
            pool = RenderPool(hp.sessions, width=w, height=h, fov=FOV, timeout=60.0,
                              prepare=place)
            list(pool.render(poses[:4]))  # warm-up
            pool.stats["stale"] = 0
            hog_procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                         for _ in range(hogs)]
            t0 = time.perf_counter()
            wrong, done = [], 0
            for f in pool.render(poses):
                s = red_stats(f.rgb)
                dist = np.linalg.norm(target - np.array(f.pose.position))
                want = 0.5 + off(f.index) * fy / dist / w
                if not s["fraction"] > 0.002 or abs(s["cx"] - want) > 0.03:
                    wrong.append(f.index)
                done += 1
            total = time.perf_counter() - t0
    finally:
        for p in hog_procs:
            p.kill()
            p.wait(10)
        app.stop()
    return {"poses": n, "frames": done, "size": [w, h], "pages": 2, "cpu_hogs": hogs,
            "stale_in_output": len(wrong), "stale_indices": wrong[:20],
            "stale_caught_and_rerendered": pool.stats["stale"], "seconds": total,
            "fps": done / total}


def spread(xs: List[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def sweep_main(argv: List[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="poses per row (at most)")
    ap.add_argument("--seconds", type=float, default=40.0, help="time per row (max)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--stale", type=int, default=1000, help="poses of the freshness check")
    ap.add_argument("--smoke", action="store_true", help="tiny run, about a minute")
    args = ap.parse_args(argv)
    configs = SWEEP_CONFIGS
    rows = ROWS
    stale_size = (320, 240)
    if args.smoke:
        args.n, args.seconds, args.reps, args.stale = 8, 10.0, 1, 24
        configs = [(160, 120, False)]
        rows = [("get_render x1", 1), ("pool x2", 2), ("vuer 0.1.6", 1)]
        stale_size = (160, 120)
    if not os.path.exists(CHROMIUM):
        sys.exit(f"no Chromium at {CHROMIUM}")
    runs: Dict[str, Dict[str, List[dict]]] = {}
    failed: List[dict] = []
    for r in range(args.reps):
        for w, h, depth in configs:
            key = f"{w}x{h}" + (" rgb+depth" if depth else " rgb")
            order = rows[r % len(rows):] + rows[:r % len(rows)]  # rotate: interleaved
            for name, k in order:
                try:
                    res = run_row(name, k, args.n, w, h, depth, args.seconds)
                except RuntimeError as e:  # kept in the JSON; the other rows go on
                    failed.append({"config": key, "row": name, "rep": r + 1,
                                   "error": str(e)[-1500:]})
                    print(f"rep {r + 1} {key} {name}: FAILED {str(e)[:200]}", flush=True)
                    continue
                runs.setdefault(key, {}).setdefault(name, []).append(res)
                print(f"rep {r + 1} {key} {name}: {res['fps']:.2f} fps, server CPU "
                      f"{res['server_cpu_pct']:.0f}%, machine {res['machine_cpu_pct']:.0f}%",
                      flush=True)
    summary = []
    for key, by_row in runs.items():
        fps = {name: spread([x["fps"] for x in xs]) for name, xs in by_row.items()}
        entry: Dict[str, Any] = {"config": key, "fps": fps}
        entry["server_cpu_pct"] = {name: statistics.median(x["server_cpu_pct"] for x in xs)
                                   for name, xs in by_row.items()}
        entry["machine_cpu_pct"] = {name: statistics.median(x["machine_cpu_pct"] for x in xs)
                                    for name, xs in by_row.items()}
        # where a frame's CPU goes (our rows; the browsers are the same for Vuer's)
        entry["browser_cpu_ms_per_frame"] = {
            name: {kind: statistics.median(x["browser_cpu_ms_per_frame"].get(kind, 0.0)
                                           for x in xs)
                   for kind in xs[0]["browser_cpu_ms_per_frame"]}
            for name, xs in by_row.items() if "browser_cpu_ms_per_frame" in xs[0]}
        base = fps.get("get_render x1", {}).get("median", float("nan"))
        vuer = fps.get("vuer 0.1.6", {}).get("median", float("nan"))
        for name in by_row:
            if name.startswith("pool"):
                entry[f"{name} vs get_render x1"] = fps[name]["median"] / base
                entry[f"{name} vs vuer"] = fps[name]["median"] / vuer
        summary.append(entry)
    hogs = os.cpu_count() or 1
    fresh = stale_check(args.stale, *stale_size, hogs=hogs) if args.stale else None
    result = {"workload": "pose sweep", "machine": platform.platform(),
              "python": platform.python_version(), "cpus": os.cpu_count(),
              "quality": QUALITY, "settle_s": SETTLE, "n": args.n, "reps": args.reps,
              "smoke": args.smoke, "summary": summary, "freshness": fresh, "runs": runs,
              "failed_rows": failed}
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / ("render-smoke.json" if args.smoke else "render.json")).write_text(
        json.dumps(result, indent=2))
    print(f"\npose sweep, frames per second (median [min-max] of {args.reps} rep(s)), "
          f"quality {QUALITY}; CPU in % of one core")
    for e in summary:
        print(e["config"])
        for name, f in e["fps"].items():
            print(f"  {name:>14}: {f['median']:6.2f} fps [{f['min']:.2f}-{f['max']:.2f}]  "
                  f"server {e['server_cpu_pct'][name]:5.1f}%  machine "
                  f"{e['machine_cpu_pct'][name]:5.1f}%")
    if fresh:
        print(f"freshness: {fresh['stale_in_output']} stale of {fresh['frames']} frames in "
              f"the output ({fresh['stale_caught_and_rerendered']} caught by the tag and "
              f"rendered again), {fresh['cpu_hogs']} CPU hog(s) beside, "
              f"{fresh['fps']:.1f} fps")


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
    elif "--fixed" in argv:
        fixed_main([a for a in argv if a != "--fixed"])
    else:
        sweep_main(argv)


if __name__ == "__main__":
    main()
