"""Rendered frames per second from the real Vuer web client in headless Chromium, offline:
vuer_sync's blocking ``session.get_render()`` (GrabRender path: the main canvas, decoded to a
numpy array) against the real vuer 0.1.6 server's ``await session.grab_render(quality=0.9)``
(JPEG bytes), both at 640x480 and 1280x720 viewports, in the same run and the same browser,
with Chromium pacing frames at 60 Hz as on a display, and uncapped (``--pacing``).

    python benchmarks/bench_render.py [--n 100] [--seconds 20] [--rounds 3] [--smoke]

vuer runs in a subprocess (asyncio) and times its own loop; it prints one JSON line. Ours
runs here. Writes benchmarks/out/render.json (``--smoke``: render-smoke.json, so a smoke run
keeps the last full numbers). Loopback only; every loop is bounded in count (``--n``) and
time (``--seconds``); rounds alternate which server goes first.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="frames per measurement (at most)")
    ap.add_argument("--seconds", type=float, default=20.0, help="time per measurement (max)")
    ap.add_argument("--rounds", type=int, default=3, help="repeat, alternating server order")
    ap.add_argument("--smoke", action="store_true", help="tiny run, a few seconds")
    ap.add_argument("--pacing", choices=("display", "uncapped", "both"), default="both",
                    help="display: Chromium paces frames at 60 Hz as on a monitor; uncapped: "
                         "--disable-frame-rate-limit, frames as fast as the CPU renders them "
                         "(what a capture job wants); both (default)")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
