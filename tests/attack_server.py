"""A vuer_sync server in its own process, for attack tests that read its RSS, threads and
descriptors with psutil. Prints ``PORT <n>`` once listening; stops when stdin closes.

Handlers: ``ECHO`` answers ``ECHOED`` with the same value (the well-behaved client's probe);
``BIG`` sends the asking session ``value`` MiB (to keep its sender busy writing to a client
that does not read).

    python tests/attack_server.py --header-timeout 3
"""

from __future__ import annotations

import argparse
import logging
import sys

from vuer_sync import Vuer
from vuer_sync.events import ServerEvent


class Echoed(ServerEvent):
    etype = "ECHOED"


class Big(ServerEvent):
    etype = "BIG_DATA"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--max-connections", type=int, default=None)
    ap.add_argument("--inbound-bytes", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = Vuer(port=0, header_timeout=args.header_timeout,
               max_connections=args.max_connections, inbound_bytes=args.inbound_bytes,
               outbox_timeout=600.0)

    @app.add_handler("ECHO")
    def echo(event, session):
        session.send(Echoed(data=event.value))

    @app.add_handler("BIG")
    def big(event, session):
        session.send(Big(data=bytes(int(event.value) << 20)))

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the banner
        app.start(block=False)
    print(f"PORT {app.port}", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    app.stop()


if __name__ == "__main__":
    main()
