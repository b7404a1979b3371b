"""The seed's remote-control server: a client moves the box with SET_POSITION events.

    python examples/remote_control_server.py     # serves http://localhost:8012/
    python examples/remote_control_client.py     # in another terminal: 200 updates

``--port 0`` picks a free port (printed in the banner); ``--seconds N`` stops after N seconds
(Ctrl-C stops it too).
"""

from __future__ import annotations

import argparse
import threading

from vuer_sync import Vuer, VuerSession
from vuer_sync.schemas import Box, DefaultScene


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8012, help="0 = any free port")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = p.parse_args()

    app = Vuer(port=args.port)
    # the shared scene: every client gets it when it connects, then every change
    app.scene.set @ DefaultScene(Box(args=[0.3, 0.3, 0.3], key="box", position=[0, 0.5, 0]))
    received = {"n": 0}

    @app.add_handler("SET_POSITION")
    def on_position(event, session: VuerSession):  # runs in arrival order, per client
        pos = event.value["position"]
        received["n"] += 1
        if received["n"] % 50 == 0:
            print(f"SET_POSITION #{received['n']}: {[round(v, 3) for v in pos]}", flush=True)
        # app.scene, not session: the event comes from the remote control's session, and
        # the browsers watching are other sessions
        app.scene.upsert @ Box(args=[0.3, 0.3, 0.3], key="box", position=pos)

    if args.seconds is not None:
        timer = threading.Timer(args.seconds, app.stop)
        timer.daemon = True
        timer.start()

    @app.spawn(start=True)  # blocks here until Ctrl-C or app.stop()
    def main(session: VuerSession):
        print(f"{session.init.value.get('client')} client connected", flush=True)
        session.forever()

    print(f"server stopped after {received['n']} SET_POSITION events", flush=True)


if __name__ == "__main__":
    main()
