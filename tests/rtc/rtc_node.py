"""A fleet node serving ``app.rtc`` on a Redis journal, for the multi-process rtc tests.

``python rtc_node.py --url URL --room ROOM [--port P] [--snapshot-every N]`` starts
``Vuer(port=P, fleet=URL, room=ROOM)``, loads ``app.rtc`` (its journal: the fleet's Redis),
prints ``READY <port>`` and answers one command per stdin line:

- ``sync``: until the node applied the room's rtc stream as it is now; ``SYNCED <id>``;
- ``snapshot``: write a snapshot now if this node holds the lease; ``SNAPSHOT <id|None>``;
- ``dump``: ``DUMP {json}``: the node's graph (canonical), relay ``serverSeq``, the
  relay's connections, the node id, stats;
- ``quit``: stops the app; ``BYE``.
"""

from __future__ import annotations

import argparse
import json
import sys

from vuer_sync import Vuer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--room", default="test")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--snapshot-every", type=int, default=1000)
    args = ap.parse_args()
    app = Vuer(port=args.port, fleet=args.url, room=args.room)
    assert app.fleet is not None
    app.fleet.lease_ms = 1500  # presence: a killed node is gone within ~2 s
    app.start(block=False)
    room = app.rtc
    room.journal.snapshot_every = args.snapshot_every
    room.journal.lease_ms = 1500
    print(f"READY {app.port} {int(room.durable)}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "sync":
            print(f"SYNCED {room.journal.sync(30)}", flush=True)
        elif cmd[0] == "snapshot":
            print(f"SNAPSHOT {room.journal.snapshot_now(10)}", flush=True)
        elif cmd[0] == "dump":
            with room.replica.lock:
                graph = room.graph.canonical()
            print("DUMP " + json.dumps({"graph": graph, "seq": room.relay.server_seq,
                                        "conns": room.journal_conns(),
                                        "node": room.journal.node_id,
                                        "stats": room.journal.stats}, default=str), flush=True)
        elif cmd[0] == "quit":
            break
    app.stop()
    print("BYE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
