"""A fleet on one laptop: Redis, two nodes (servers) and a robot (a publisher-only process),
all showing one scene.

    python examples/fleet.py                  # then open http://localhost:8012/ and :8013/
    python examples/fleet.py --seconds 5 --port 0 --check   (bounded run, as CI does)
    python examples/fleet.py --url redis://127.0.0.1:6379/0   (your Redis)

Without ``--url`` (or ``VUER_SYNC_FLEET``) it starts a throwaway ``redis-server`` (it must be
on PATH). The robot runs in a process of its own (this script with ``robot``), publishing a
moving arm with ``vuer_sync.Fleet``; node A also moves a marker from ``app.scene``. Both
nodes apply the room's stream, so a browser on either one sees both.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack

from vuer_sync import Fleet, Vuer
from vuer_sync.fleet import LocalRedis
from vuer_sync.schemas import Box, DefaultScene, Sphere


def robot(args: argparse.Namespace) -> None:
    """The publisher-only process: no HTTP, only the room."""
    with Fleet(args.url, room=args.room) as fleet:
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < args.seconds:
            t = time.monotonic() - t0
            fleet.upsert @ Box(key="arm", position=[math.sin(t), 0.2, 0])
            n += 1
            time.sleep(1 / args.rate)
        fleet.upsert @ Box(key="arm", position=[9, 0.2, 0])  # the final pose
        fleet.flush(10)
        st = fleet.stats
        print(f"robot: {n + 1} updates, {st['coalesced']} coalesced, {st['entries']} stream "
              "entries", flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", nargs="?", choices=["run", "robot"], default="run")
    p.add_argument("--url", default=os.environ.get("VUER_SYNC_FLEET"))
    p.add_argument("--room", default="lab")
    p.add_argument("--port", type=int, default=8012, help="node A's port (B: +1; 0: free)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--rate", type=float, default=200.0, help="robot updates per second")
    p.add_argument("--check", action="store_true", help="check that both nodes agree")
    args = p.parse_args()
    if args.mode == "robot":
        robot(args)
        return 0
    with ExitStack() as stack:
        if args.url is None:
            if shutil.which("redis-server") is None:
                print("redis-server is not on PATH: install it, or pass --url", flush=True)
                return 1
            args.url = stack.enter_context(LocalRedis()).url
        print(f"Redis: {args.url}, room {args.room!r}", flush=True)
        a = stack.enter_context(Vuer(port=args.port, fleet=args.url, room=args.room))
        b = stack.enter_context(Vuer(port=args.port + 1 if args.port else 0,
                                     fleet=args.url, room=args.room))
        a.scene.set @ DefaultScene(Box(key="arm"), Sphere(key="marker", args=[0.05]))
        seconds = args.seconds if args.seconds is not None else 3600.0
        cmd = [sys.executable, __file__, "robot", "--url", args.url, "--room", args.room,
               "--seconds", str(seconds), "--rate", str(args.rate)]
        bot = subprocess.Popen(cmd)
        try:
            t0 = time.monotonic()
            while bot.poll() is None and time.monotonic() - t0 < seconds + 30:
                t = time.monotonic() - t0
                a.scene.upsert @ Sphere(key="marker", position=[0, 0.5 + 0.2 * math.sin(t), 0])
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        finally:
            if bot.poll() is None:
                bot.terminate()
            bot.wait(30)
        a.scene.flush(10)
        b.fleet.sync(10)  # type: ignore[union-attr]
        arm = b.scene.graph.find("arm")
        print(f"node B sees the robot's arm at {arm and arm['position']}", flush=True)
        agree = a.scene.snapshot() == b.scene.snapshot()
        print(f"nodes agree: {agree}", flush=True)
        if args.check and not (agree and arm and arm["position"][0] == 9):
            print("check failed", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
