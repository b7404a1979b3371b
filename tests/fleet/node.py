"""A fleet node (or a publisher-only process) for the multi-process fleet tests.

``python node.py node --url URL --room ROOM`` starts ``Vuer(port=0, fleet=URL, room=ROOM)``,
prints ``READY <port>`` and then answers one command per stdin line:

- ``produce PREFIX N SEED``: N seeded random scene operations on ``app.scene``, then
  ``flush()``; prints ``PRODUCED PREFIX``;
- ``upsert KEY X``: one ``upsert @ Box(key=KEY, position=[X, 0, 0])``, flushed; ``UPSERTED``;
- ``wait ID``: until this node applied the room's stream up to ``ID``; ``APPLIED``;
- ``sync``: until this node applied the whole stream as it is now; ``SYNCED <id>``;
- ``dump``: ``DUMP {json}``: the scene and the order in which this node applied messages;
- ``proc``: ``PROC {json}``: threads, open fds, RSS (KiB), clients (``/proc``, Linux);
- ``quit``: stops the app; ``BYE``.

``python node.py publish --url URL --room ROOM --prefix P --n N --seed S`` is a robot:
``vuer_sync.Fleet``, the same operations, ``flush()``, prints ``PUBLISHED {json stats}``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any, Dict, List

from vuer_sync import Fleet, Vuer
from vuer_sync.schemas import Box, DefaultScene, Sphere


def produce(target: Any, prefix: str, n: int, seed: int) -> None:
    """N random operations: upserts and updates of a few own nodes, updates of the one node
    every producer writes ("shared"), now and then a remove and re-add."""
    rng = random.Random(seed)
    for i in range(n):
        roll = rng.random()
        key = f"{prefix}{rng.randrange(5)}"
        if roll < 0.4:
            target.upsert @ Box(key=key, position=[i, rng.randrange(100), 0])
        elif roll < 0.7:
            target.update @ {"key": "shared", "position": [i, 0, 0], "by": prefix}
        elif roll < 0.9:
            target.update @ {"key": key, "color": f"#{rng.randrange(1 << 24):06x}"}
        else:
            target.remove(key)
            target.add(Sphere(key=key, position=[i, 1, 0]))
    target.flush(30)


def dump(app: Vuer, order: List[Any]) -> Dict[str, Any]:
    return {"scene": app.scene.snapshot(), "order": list(order),
            "applied_id": app.fleet.applied_id if app.fleet else None,
            "stats": app.fleet.stats if app.fleet else None}


def proc_levels(app: Vuer) -> Dict[str, Any]:
    """This process's threads, open fds, resident memory (KiB) and clients."""
    import os
    import threading

    rss = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"threads": threading.active_count(), "fds": len(os.listdir("/proc/self/fd")),
            "rss_kb": rss, "sessions": len(app.sessions),
            "thread_names": sorted(t.name for t in threading.enumerate()),
            "fd_kinds": fd_kinds()}


def fd_kinds() -> Dict[str, int]:
    """This process's open fds by kind: a TCP socket by its peer's port, else what it is."""
    import collections
    import os

    peers = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                for row in list(f)[1:]:
                    cols = row.split()
                    local, remote, inode = cols[1], cols[2], cols[9]
                    lport = int(local.rsplit(":", 1)[1], 16)
                    rport = int(remote.rsplit(":", 1)[1], 16)
                    peers[inode] = f"tcp:{lport}->{rport}" if rport else f"listen:{lport}"
        except OSError:
            pass
    kinds: Dict[str, int] = collections.Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            target = peers.get(target[8:-1], "socket")
        elif not target.startswith("anon_inode:"):
            target = "file" if target.startswith("/") else target.split(":")[0]
        kinds[target] += 1
    return dict(kinds)


def run_node(args: argparse.Namespace) -> int:
    app = Vuer(port=0, fleet=args.url, room=args.room)
    assert app.fleet is not None
    app.fleet.snapshot_every = args.snapshot_every
    app.fleet.snapshot_interval = args.snapshot_interval
    app.fleet.lease_ms = args.lease_ms
    app.fleet.merge_backlog = not args.no_merge
    order: List[Any] = []

    def observe(msg: Dict[str, Any]) -> bool:  # every message applied, in order
        nodes = msg.get("data", {}).get("nodes") or msg.get("data", {}).get("keys") or []
        order.append([msg.get("etype"), [n if isinstance(n, str) else
                                         [n.get("key"), n.get("position"), n.get("by")]
                                         for n in nodes]])
        return False

    app.scene.record(filter=observe)
    app.start(block=False)
    print(f"READY {app.port}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "produce":
            produce(app.scene, cmd[1], int(cmd[2]), int(cmd[3]))
            print(f"PRODUCED {cmd[1]}", flush=True)
        elif cmd[0] == "set":
            app.scene.set @ DefaultScene(Box(key="shared"))
            app.scene.flush(10)
            print("SET", flush=True)
        elif cmd[0] == "upsert":
            app.scene.upsert @ Box(key=cmd[1], position=[float(cmd[2]), 0, 0])
            app.scene.flush(10)
            print("UPSERTED", flush=True)
        elif cmd[0] == "wait":
            app.fleet.wait_applied(cmd[1], 30)
            print("APPLIED", flush=True)
        elif cmd[0] == "sync":
            print(f"SYNCED {app.fleet.sync(30)}", flush=True)
        elif cmd[0] == "proc":
            print("PROC " + json.dumps(proc_levels(app)), flush=True)
        elif cmd[0] == "dump":
            print("DUMP " + json.dumps(dump(app, order), default=str), flush=True)
        elif cmd[0] == "quit":
            break
    app.stop()
    print("BYE", flush=True)
    return 0


def run_publisher(args: argparse.Namespace) -> int:
    with Fleet(args.url, room=args.room) as fleet:
        produce(fleet, args.prefix, args.n, args.seed)
        print("PUBLISHED " + json.dumps(fleet.stats), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["node", "publish"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--room", default="test")
    ap.add_argument("--snapshot-every", type=int, default=1000)
    ap.add_argument("--snapshot-interval", type=float, default=5.0)
    ap.add_argument("--lease-ms", type=int, default=5000)
    ap.add_argument("--no-merge", action="store_true",
                    help="apply the stream entry by entry (no backlog merging)")
    ap.add_argument("--prefix", default="robot")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    return run_node(args) if args.mode == "node" else run_publisher(args)


if __name__ == "__main__":
    sys.exit(main())
