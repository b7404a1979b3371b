"""Collaborative editing across processes: one server, several editors, one converged scene.

    python examples/collab_edit.py serve                       # terminal 1; a browser at
                                                               # http://localhost:8012/ watches
    python examples/collab_edit.py edit --name alice --create --delta -1 --expect 110
    python examples/collab_edit.py edit --name bob --delta 2 --n 30 --expect 110   # terminal 3

Each editor applies its edits locally at once and sends them to the server's room
(``app.rtc``), which orders them, acknowledges them, and passes them on to the other editors;
every replica ends with the same scene, whatever the interleaving: here the box's ``hp`` is
100 - 50 + 60 = 110 and its colour is whichever ``color.set`` the room ordered last. Browsers
see the converged scene as ordinary scene updates (the room mirrors it into ``app.scene``).

``serve --port 0`` picks a free port (printed in the banner); ``--seconds N`` stops after N s.
"""

from __future__ import annotations

import argparse
import threading
import time

from vuer_sync import Vuer, VuerClient
from vuer_sync.schemas import DefaultScene

CUBE = {"key": "cube", "tag": "Box", "args": [0.3, 0.3, 0.3], "position": [0, 0.15, 0],
        "materialType": "standard", "material": {"color": "#888"}, "hp": 100}


def describe(graph) -> str:
    node = graph.nodes.get("cube")
    if node is None:
        return "no cube"
    color = (node.get_property("material") or {}).get("color")
    return f"cube hp={node.get_property('hp')} color={color}"


def serve(args: argparse.Namespace) -> int:
    app = Vuer(port=args.port)
    app.scene.set @ DefaultScene()  # browsers see the room's scene mirrored into app.scene
    room = app.rtc  # the collaborative room: relays the editors' messages
    if args.seconds is not None:
        timer = threading.Timer(args.seconds, app.stop)
        timer.daemon = True
        timer.start()
    app.start()  # blocks until Ctrl-C (or --seconds)
    print(f"server's converged view: {describe(room.graph)}", flush=True)
    return 0


def edit(args: argparse.Namespace) -> int:
    with VuerClient(URI=args.uri) as client:
        rtc = client.rtc(args.name).join()  # the room's current state first
        if args.create:
            rtc.edit({"otype": "node.insert", "key": "", "path": "children", "value": CUBE})
            rtc.commit("create the cube")
        rtc.wait_for(lambda g: "cube" in g.nodes, timeout=args.timeout)
        for i in range(args.n):
            rtc.edit({"otype": "number.add", "key": "cube", "path": "hp", "value": args.delta})
            if i == args.n // 2:  # concurrent last-writer-wins edits of the same property
                rtc.edit({"otype": "object.merge", "key": "cube", "path": "material",
                          "value": {"color": args.color}})
            rtc.commit(f"{args.name} #{i}")
            time.sleep(0.005)  # let the editors interleave
        rtc.wait_acked(timeout=args.timeout)  # the server has all of ours
        if args.expect is not None:  # and everyone else's, once the total shows it
            rtc.wait_for(lambda g: g.nodes["cube"].get_property("hp") == args.expect,
                         timeout=args.timeout)
        print(f"{args.name}'s converged view: {describe(rtc.graph)}", flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the server")
    s.add_argument("--port", type=int, default=8012, help="0 = any free port")
    s.add_argument("--seconds", type=float, default=None, help="stop after this long")
    e = sub.add_parser("edit", help="run an editor")
    e.add_argument("--uri", default=None,
                   help="server address (default: $VUER_CLIENT_URI or ws://localhost:8012)")
    e.add_argument("--name", required=True, help="this editor's name")
    e.add_argument("--create", action="store_true", help="create the cube")
    e.add_argument("--n", type=int, default=50, help="how many edits")
    e.add_argument("--delta", type=int, default=-1, help="added to hp by each edit")
    e.add_argument("--color", default=None, help="the colour this editor sets")
    e.add_argument("--expect", type=int, default=None,
                   help="wait until hp reaches this (everyone's edits arrived)")
    e.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    if args.command == "edit" and args.color is None:
        args.color = {"alice": "#e33"}.get(args.name, "#39f")
    return serve(args) if args.command == "serve" else edit(args)


if __name__ == "__main__":
    raise SystemExit(main())
