"""The seed's server ("Connecting a Python Client to Vuer", step 1) as blocking Python.

Run it, then the client in another terminal, and watch the box in a browser:

    python examples/seed_server.py          # serves http://localhost:8012/
    python examples/seed_client.py

``--port 0`` picks a free port (the banner prints it); ``--seconds N`` stops the server after
N seconds (Ctrl-C stops it too). CI runs ``--port 0 --seconds 20`` and Ctrl-C.
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

    app = Vuer(port=args.port)  # binds 127.0.0.1

    @app.add_handler("HELLO")
    def on_hello(event, session: VuerSession):  # a plain function, on the handler thread
        print(f"Received HELLO: {event.value}", flush=True)
        # update the scene in response
        session.upsert @ Box(args=[0.3, 0.3, 0.3], key="box", position=[0, 0.5, 0])

    @app.add_handler("MOVE_BOX")
    def on_move(event, session: VuerSession):
        pos = event.value.get("position", [0, 0, 0])
        print(f"Received MOVE_BOX: {pos}", flush=True)
        session.upsert @ Box(args=[0.3, 0.3, 0.3], key="box", position=pos)

    if args.seconds is not None:
        timer = threading.Timer(args.seconds, app.stop)
        timer.daemon = True
        timer.start()

    @app.spawn(start=True)  # blocks here, serving, until Ctrl-C or app.stop()
    def main(session: VuerSession):  # one thread per connected client
        session.set @ DefaultScene()
        print("Server ready, waiting for client events...", flush=True)
        session.forever()  # returns when this client disconnects

    print("server stopped", flush=True)


if __name__ == "__main__":
    main()
