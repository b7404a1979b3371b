"""Record an animation to a ``.vsrec`` file, then play it back to every browser that connects.

    python examples/record_playback.py --out bounce.vsrec     # open http://localhost:8012/
    python examples/record_playback.py --port 0 --check --speed 4   # bounded, as CI runs it
    vuer-sync play bounce.vsrec                               # the same file, from the CLI

Recording uses *script time*: ``insert_sleep(dt)`` advances the recording's clock, so the
playback is smooth however long the script took to compute each frame. ``--check`` connects a
Python client in place of a browser and verifies it receives exactly what was recorded.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
from pathlib import Path

from vuer_sync import Vuer, VuerClient
from vuer_sync.record import Recording
from vuer_sync.schemas import DefaultScene, Sphere


def record(path: Path, seconds: float = 2.0, fps: int = 30) -> Path:
    """Record a bouncing ball. No server is started: recording needs no client."""
    studio = Vuer(port=0)
    rec = studio.scene.record()  # the current scene first, then every change
    studio.scene.set @ DefaultScene(Sphere(key="ball", args=[0.1, 32, 16], position=[0, 0.1, 0],
                                           materialType="standard", material={"color": "#39f"}))
    for i in range(int(seconds * fps)):
        t = i / fps
        height = 0.1 + abs(math.sin(math.pi * t)) * 0.8
        studio.scene.update @ {"key": "ball", "position": [0.5 * math.cos(t), height, 0]}
        rec.insert_sleep(1 / fps)  # advance script time by one frame
    rec.stop()
    return rec.save(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8012, help="0 = any free port")
    p.add_argument("--out", default=None, help="where to save the recording "
                   "(default: bounce.vsrec in a temporary directory)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed")
    p.add_argument("--seconds", type=float, default=None, help="stop serving after this long")
    p.add_argument("--check", action="store_true",
                   help="play to a Python client, verify it, and exit")
    args = p.parse_args()

    tmp = tempfile.TemporaryDirectory()
    path = record(Path(args.out) if args.out else Path(tmp.name) / "bounce.vsrec")
    recording = Recording.load(path)  # checks every record before anything is played
    print(f"recorded {len(recording.records)} messages, {recording.duration:.2f} s of "
          f"script time, {path.stat().st_size} bytes: {path}")

    app = Vuer(port=args.port)
    stop = threading.Event()

    @app.spawn
    def play(session):  # every client gets its own playback, from the start
        recording.play(session, speed=args.speed, loop=not args.check, stop=stop)
        session.forever()

    app.start(block=False)
    ok = True
    try:
        if args.check:
            with VuerClient(f"ws://localhost:{app.port}") as client:
                got = [client.recv(timeout=10) for _ in recording.records]
            ok = None not in got and [(e.etype, e.data) for e in got] == [
                (m["etype"], m["data"]) for _, m in recording.records]
            print(f"python client received {len([e for e in got if e is not None])} messages: "
                  f"{'the same as' if ok else 'DIFFERENT from'} the recording")
        else:
            stop.wait(args.seconds)  # until Ctrl-C (or --seconds)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        app.stop()
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
