"""The seed's remote-control client: animate the box with SET_POSITION events.

    python examples/remote_control_server.py     # first, in another terminal
    python examples/remote_control_client.py     # ws://localhost:8012 or $VUER_CLIENT_URI

Sends ``--n`` (200) position updates at ``--fps`` (60). ``send @`` enqueues and returns at
once; leaving the ``with`` block waits until every queued event is written.
"""

from __future__ import annotations

import argparse
import math
import time

from vuer_sync import VuerClient
from vuer_sync.events import ClientEvent


class SetPositionEvent(ClientEvent):
    etype = "SET_POSITION"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uri", default=None,
                   help="server address (default: $VUER_CLIENT_URI or ws://localhost:8012)")
    p.add_argument("--n", type=int, default=200, help="how many updates")
    p.add_argument("--fps", type=float, default=60.0, help="updates per second")
    args = p.parse_args()

    with VuerClient(URI=args.uri) as client:
        next_t = time.monotonic()
        for i in range(args.n):
            t = i * 0.05
            x = math.sin(t) * 2
            y = 0.5 + math.sin(t * 2) * 0.3
            client.send @ SetPositionEvent(value={"position": [x, y, 0]})
            next_t += 1 / args.fps  # a steady rate, whatever the loop body costs
            time.sleep(max(0.0, next_t - time.monotonic()))
    print(f"sent {args.n} SET_POSITION events", flush=True)


if __name__ == "__main__":
    main()
