"""The seed's client ("Connecting a Python Client to Vuer", step 2) as blocking Python.

    python examples/seed_server.py     # first, in another terminal
    python examples/seed_client.py     # ws://localhost:8012, or $VUER_CLIENT_URI, or --uri

Sends HELLO (fire-and-forget) and MOVE_BOX (blocks until written), then waits, at most
``--timeout`` seconds, for the server to answer with the moved box.
"""

from __future__ import annotations

import argparse
import time

from vuer_sync import VuerClient
from vuer_sync.events import ClientEvent


class HelloEvent(ClientEvent):
    etype = "HELLO"


class MoveBoxEvent(ClientEvent):
    etype = "MOVE_BOX"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uri", default=None,
                   help="server address (default: $VUER_CLIENT_URI or ws://localhost:8012)")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()

    with VuerClient(URI=args.uri) as client:  # sends INIT automatically
        # fire-and-forget with @ (enqueues, returns at once)
        client.send @ HelloEvent(value={"message": "Hi!"})
        # blocking with parentheses: returns once the event is written to the socket
        client.send(MoveBoxEvent(value={"position": [1, 0.5, 0]}))
        print("Events sent!", flush=True)

        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            event = client.recv(timeout=deadline - time.monotonic())  # None on timeout
            if event is None:
                break
            print(f"server sent {event.etype}", flush=True)
            if event == "UPSERT" and event.data["nodes"][0].get("position") == [1, 0.5, 0]:
                print("box moved to [1, 0.5, 0]", flush=True)
                return 0
    print("no answer from the server", flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
