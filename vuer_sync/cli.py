"""The ``vuer-sync`` command (also ``python -m vuer_sync``): ``demo``, ``play``, ``export``,
``capture``, ``version``."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import time
from typing import Any, Callable, List, Optional

from ._version import __version__

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from . import Vuer
    from .demo import Demo

    if args.lan:  # a headset on the LAN: every interface, HTTPS, a token (docs/teleop.md)
        app = Vuer(host="0.0.0.0" if args.host == "127.0.0.1" else args.host, port=args.port,
                   tls="self-signed")
    else:
        app = Vuer(host=args.host, port=args.port)
    demo = Demo(app, hz=args.hz, cloud_hz=min(args.cloud_hz, args.hz), points=args.points)
    return _serve(app, args.seconds, "demo", on_start=demo.start, on_stop=demo.stop)


def _bind_error(command: str, app: Any, e: OSError) -> str:
    """The one line printed when the server cannot listen."""
    where = f"{app.host}:{app.port}"
    if e.errno == errno.EADDRINUSE:
        return (f"vuer-sync {command}: port {app.port} is already in use (another vuer-sync "
                f"or Vuer server?). Stop it, or pick another port: --port N "
                f"(--port 0 = any free port).")
    if e.errno == errno.EACCES:
        return (f"vuer-sync {command}: not allowed to listen on {where} (ports below 1024 "
                f"need root): pick another port with --port N (--port 0 = any free port).")
    return f"vuer-sync {command}: cannot listen on {where}: {e.strerror or e}"


def _serve(app: Any, seconds: Optional[float], command: str,
           on_start: Optional[Callable[[], Any]] = None,
           on_stop: Optional[Callable[[], Any]] = None) -> int:
    """Serve until Ctrl-C, or for ``seconds``; then stop cleanly. Returns the exit status:
    1, with one line on stderr and no traceback, when the port cannot be bound."""
    try:
        app.start(block=False)
    except OSError as e:
        print(_bind_error(command, app, e), file=sys.stderr)
        return 1
    from .server.app import SIGNAL_CHECK_S

    try:
        if on_start is not None:
            on_start()
        if seconds is None:
            app.start(block=True)  # until Ctrl-C (then it stops the server itself)
        else:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(SIGNAL_CHECK_S, left))  # short: see SIGNAL_CHECK_S
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()  # first: ends any call still waiting on a browser
        if on_stop is not None:
            on_stop()
    return 0


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

    return _serve(app, args.seconds, "play")


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
    parser.add_argument("--version", action="version", version=f"vuer-sync {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("VUER_SYNC_LOG", "WARNING"),
                        help="logging level (env VUER_SYNC_LOG), e.g. INFO or DEBUG")
    sub = parser.add_subparsers(dest="command")
    seconds_help = "stop after this many seconds (default: serve until Ctrl-C)"
    port_help = "port to listen on (default 8012; 0 = any free port)"
    demo = sub.add_parser("demo", help="serve a demo scene (a robot arm, a live point cloud, "
                                       "a camera and its view) with the local web client")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8012, help=port_help)
    demo.add_argument("--seconds", type=float, default=None, help=seconds_help)
    demo.add_argument("--hz", type=float, default=30.0,
                      help="scene updates per second (the arm's joints; default 30; lower it "
                           "for a browser on software WebGL, e.g. 5)")
    demo.add_argument("--cloud-hz", type=float, default=10.0,
                      help="point cloud frames per second (default 10)")
    demo.add_argument("--points", type=int, default=6000, help="points in the point cloud")
    demo.add_argument("--lan", action="store_true",
                      help="for a headset on the LAN: serve on every interface over HTTPS "
                      "(a cached self-signed certificate), with a token; prints the URL and "
                      "its QR code (pip install 'vuer-sync[lan]')")
    play = sub.add_parser("play", help="serve a recording (.vsrec) to browsers")
    play.add_argument("file", help="a recording made with app.scene.record() / serialize()")
    play.add_argument("--host", default="127.0.0.1")
    play.add_argument("--port", type=int, default=8012, help=port_help)
    play.add_argument("--speed", type=float, default=1.0,
                      help="playback speed (2 = twice as fast, 0 = all at once)")
    play.add_argument("--loop", action="store_true", help="play again from the start")
    play.add_argument("--seconds", type=float, default=None, help=seconds_help)
    export = sub.add_parser("export", help="write a folder that shows a recording's final "
                                           "scene offline (with any static file server)")
    export.add_argument("file")
    export.add_argument("--out", required=True, help="output folder")
    sub.add_parser("version", help="print the version")
    from .capture import command as capture_command  # light: imports its parts when run

    capture_command.add_parser(sub)
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
    if args.command == "capture":
        return capture_command.run(args)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
