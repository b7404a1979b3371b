"""Hello box: serve a scene and move a box from a plain loop.

    python examples/hello_box.py            # then open http://localhost:8012/
    python examples/hello_box.py --seconds 3 --port 0   (bounded run, as CI does)
"""

from __future__ import annotations

import argparse
import math
import time

from vuer_sync import Vuer
from vuer_sync.schemas import Box, DefaultScene


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8012)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = p.parse_args()

    app = Vuer(port=args.port)

    @app.spawn
    def scene(session):
        session.set @ DefaultScene(Box(key="box", args=[0.3, 0.3, 0.3], position=[0, 0.15, 0],
                                       materialType="standard", material={"color": "red"}))
        t0 = time.monotonic()
        while not session.wait_closed(1 / 60):  # 60 Hz, ends when the browser leaves
            t = time.monotonic() - t0
            session.upsert @ Box(key="box", position=[math.sin(t), 0.15, 0])

    app.start(block=args.seconds is None)
    if args.seconds is not None:
        time.sleep(args.seconds)
        app.stop()


if __name__ == "__main__":
    main()
