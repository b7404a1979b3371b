"""The ``vuer-sync`` command: ``demo``, ``version``."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
from typing import List, Optional

from ._version import __version__

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from . import Vuer
    from .schemas import Box, DefaultScene, Sphere

    app = Vuer(host=args.host, port=args.port)

    @app.spawn
    def scene(session):  # one thread per connected browser
        session.set @ DefaultScene(
            Box(key="box", args=[0.4, 0.4, 0.4], position=[0, 0.2, 0],
                materialType="standard", material={"color": "#e33"}),
            Sphere(key="ball", args=[0.1, 32, 16], position=[0.8, 0.1, 0],
                   materialType="standard", material={"color": "#39f"}),
        )
        t = 0.0
        frames = args.frames
        while not session.closed and (frames is None or frames > 0):
            t += 1 / 30
            session.upsert @ Sphere(key="ball", position=[0.8 * math.cos(t), 0.1,
                                                           0.8 * math.sin(t)])
            if session.wait_closed(1 / 30):
                break
            if frames is not None:
                frames -= 1

    _serve(app, args.seconds)
    return 0


def _serve(app, seconds: Optional[float]) -> None:
    """Serve until Ctrl-C (``start`` blocks and stops cleanly), or for ``seconds``."""
    if seconds is None:
        app.start(block=True)
        return
    app.start(block=False)
    try:
        threading.Event().wait(seconds)
    finally:
        app.stop()


def _play(args: argparse.Namespace) -> int:
    from . import Vuer
    from .record import Recording, RecordingError

    try:
        rec = Recording.load(args.file)  # checked whole before anything is served
    except (OSError, RecordingError) as e:
        print(f"vuer-sync play: {e}", file=sys.stderr)
        return 2
    app = Vuer(host=args.host, port=args.port)

    @app.spawn
    def play(session):  # every browser gets its own playback from the start
        rec.play(session, speed=args.speed, loop=args.loop)
        session.forever()

    _serve(app, args.seconds)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .record import Recording, RecordingError

    try:
        view = Recording.load(args.file).export(args.out)
    except (OSError, RecordingError, RuntimeError) as e:
        print(f"vuer-sync export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {view}\nview it offline: python -m http.server -d {args.out} "
          f"then open http://localhost:8000/view.html")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vuer-sync",
        description="vuer_sync: drive Vuer 3D scenes from plain, blocking Python.",
    )
    parser.add_argument("--log-level", default=os.environ.get("VUER_SYNC_LOG", "WARNING"),
                        help="logging level (env VUER_SYNC_LOG), e.g. INFO or DEBUG")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="serve a demo scene with the local web client")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8012)
    demo.add_argument("--seconds", type=float, default=None,
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.add_argument("--frames", type=int, default=None, help=argparse.SUPPRESS)
    play = sub.add_parser("play", help="serve a recording (.vsrec) to browsers")
    play.add_argument("file", help="a recording made with app.scene.record() / serialize()")
    play.add_argument("--host", default="127.0.0.1")
    play.add_argument("--port", type=int, default=8012)
    play.add_argument("--speed", type=float, default=1.0,
                      help="playback speed (2 = twice as fast, 0 = all at once)")
    play.add_argument("--loop", action="store_true", help="play again from the start")
    play.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
    export = sub.add_parser("export", help="write a folder that shows a recording's final "
                                           "scene offline (with any static file server)")
    export.add_argument("file")
    export.add_argument("--out", required=True, help="output folder")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    logging.basicConfig(level=str(args.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "version":
        print(f"vuer-sync {__version__}")
        return 0
    if args.command == "demo":
        return _demo(args)
    if args.command == "play":
        return _play(args)
    if args.command == "export":
        return _export(args)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
