from __future__ import annotations

import re

from vuer_sync import VuerClient, events
from vuer_sync.events import ClientEvent, ServerEvent
from vuer_sync.infra import generate_typescript_interfaces

from conftest import wait_until
from helpers import raw_client, recv_msg


class Progress(ServerEvent):
    etype = "PROGRESS"

    def redundancy_key(self):
        return f"progress:{self.data['task']}"


class Hello(ClientEvent):
    etype = "HELLO"


def test_redundancy_key_replaces_unsent_message(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    # a big message the client does not read yet keeps the sender busy, so the progress
    # messages below are still queued when their successors arrive
    s.send(ServerEvent(b"\0" * (16 << 20), etype="BIG"))
    for i in range(100):
        s.send(Progress({"task": "a", "pct": i}))
        s.send(Progress({"task": "b", "pct": i}))
    got = []
    while len(got) < 3 or got[-1]["data"] != {"task": "b", "pct": 99}:
        m = recv_msg(ws)
        got.append(m)
    progress = [m["data"] for m in got if m["etype"] == "PROGRESS"]
    assert progress[-2:] == [{"task": "a", "pct": 99}, {"task": "b", "pct": 99}]
    assert len(progress) < 200 and s.stats["coalesced"] == 200 - len(progress)
    ws.close()


def test_register_and_unregister_handler(app):
    seen = []

    def cb(session, ev):
        seen.append((session.id, ev.value))

    app.register_handler(Hello, cb)
    app.start(block=False)
    with VuerClient(f"ws://127.0.0.1:{app.port}") as c:
        c.send(Hello(value=1))
        assert wait_until(lambda: len(seen) == 1)
        app.unregister_handler(Hello, cb)
        c.send(Hello(value=2))
        app.wait_for_session(5).flush()
        c.send(Hello(value=3), timeout=5)
    assert [v for _, v in seen] == [1]


def test_typescript_interfaces_cover_the_catalogue():
    ts = generate_typescript_interfaces()
    assert ts.count("{") == ts.count("}")
    for cls in (events.Set, events.Add, events.Upsert, events.Update, events.Remove,
                events.GrabRender, events.HapticActuatorPulse, events.InitEvent):
        assert f"export interface {cls.__name__} {{" in ts
        assert f'etype: "{cls.etype}";' in ts
    union = re.search(r"export type ServerMessage = (.*);", ts).group(1).split(" | ")
    assert {"Set", "Upsert", "GrabRender", "Progress"} <= set(union)
    assert "Frame" not in union  # never on the wire
    block = ts.split("export interface GrabRender {")[1].split("\n}\n")[0]
    assert "rtype: string;" in block and "uuid: string;" in block
