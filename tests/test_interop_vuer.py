"""Interop with the real ``vuer`` 0.1.6 package, both ways (its async client on our server, our
blocking client on its asyncio server in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from vuer_sync import SessionClosed, VuerClient
from vuer_sync.events import ClientEvent, ServerRPC

from conftest import require, wait_until

pytestmark = pytest.mark.interop


class Ping(ServerRPC):
    etype = "PING"


def run_async(coro_fn, *args):
    """Run an asyncio coroutine function on its own loop in a thread; return (thread, box)."""
    box = {}

    def target():
        try:
            box["result"] = asyncio.run(coro_fn(*args))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            box["error"] = e

    t = threading.Thread(target=target, name="test-asyncio")
    t.start()
    return t, box


def test_real_vuer_client_on_our_server(app):
    vuer = require("vuer")
    from vuer.events import ClientEvent as VClientEvent

    class Hello(VClientEvent):
        etype = "HELLO"

    handled = []
    app.add_handler("HELLO", lambda ev, s: handled.append((s.id, ev.value)))
    spawned = {}

    @app.spawn(client="browser")
    def not_me(session):  # pragma: no cover - must not run
        spawned["browser"] = session

    @app.spawn(client="python")
    def main(session):
        for i in range(1000):
            session.upsert @ {"key": f"b{i}", "tag": "Box", "i": i}
        spawned["python"] = session  # the test's RPCs go after the 1000 upserts
        session.forever()

    app.start(block=False)
    uri = f"ws://127.0.0.1:{app.port}"

    async def client():
        async with vuer.VuerClient(uri=uri) as c:
            c.send @ Hello(value="fire-and-forget")
            await c.send(Hello(value="awaited"))
            got = []
            while len(got) < 1000:
                ev = await c.recv(timeout=10)
                assert ev is not None, f"timed out after {len(got)}"
                got.append(ev.data["nodes"][0]["i"])
            # answer one RPC like a browser would
            req = await c.recv(timeout=10)
            await c.send(VClientEvent(etype=req.rtype, value={"echo": req.data["n"]}))
            # then wait for the second RPC and close while it is pending
            req2 = await c.recv(timeout=10)
            return got, req.etype, req2.etype

    t, box = run_async(client)
    assert wait_until(lambda: "python" in spawned, 10)
    s = spawned["python"]
    assert s.init.value["client"] == "python"
    assert s.rpc(Ping({"n": 3}), ttl=10).value == {"echo": 3}
    err = {}

    def pending():
        try:
            s.rpc(Ping({"n": 4}), ttl=10)
        except SessionClosed:
            err["t"] = time.monotonic()

    p = threading.Thread(target=pending)
    p.start()
    t.join(20)
    closed_at = time.monotonic()
    p.join(5)
    assert "error" not in box, box.get("error")
    got, e1, e2 = box["result"]
    assert got == list(range(1000))
    assert (e1, e2) == ("PING", "PING")
    assert "browser" not in spawned
    # vuer's `send @` schedules a task, so its two sends may arrive in either order
    assert sorted(v for _, v in handled) == ["awaited", "fire-and-forget"]
    assert {sid for sid, _ in handled} == {s.id}
    assert "t" in err and err["t"] - closed_at < 0.1 + 0.05


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


VUER_SERVER = textwrap.dedent('''
    import json, sys
    from vuer import Vuer, VuerSession
    from vuer.schemas import DefaultScene, Box

    port, log_path = int(sys.argv[1]), sys.argv[2]
    log = open(log_path, "a", buffering=1)
    app = Vuer(host="127.0.0.1", port=port, queue_len=10000)

    @app.add_handler("HELLO")
    async def on_hello(event, session: VuerSession):
        log.write(json.dumps(["HELLO", event.value]) + "\\n")
        session.upsert @ Box(args=[0.3, 0.3, 0.3], key="box", position=[0, 0.5, 0])

    @app.add_handler("MOVE_BOX")
    async def on_move(event, session: VuerSession):
        log.write(json.dumps(["MOVE_BOX", event.value]) + "\\n")
        pos = event.value.get("position", [0, 0, 0])
        session.upsert @ Box(args=[0.3, 0.3, 0.3], key="box", position=pos)

    @app.add_handler("SET_POSITION")
    async def on_position(event, session: VuerSession):
        log.write(json.dumps(["SET_POSITION", event.value]) + "\\n")

    @app.spawn(start=True)
    async def main(session: VuerSession):
        session.set @ DefaultScene()
        await session.forever()
''')


@pytest.fixture
def real_vuer_server(tmp_path):
    require("vuer")
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(VUER_SERVER)
    log = tmp_path / "events.jsonl"
    log.write_text("")
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    if not wait_until(listening, 30, 0.05):
        proc.kill()
        pytest.fail(f"real vuer server did not start: {proc.stderr.read().decode()[-2000:]}")
    yield port, log
    proc.kill()
    proc.wait(10)


def read_log(log):
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


class HelloEvent(ClientEvent):
    etype = "HELLO"


class MoveBoxEvent(ClientEvent):
    etype = "MOVE_BOX"


class SetPositionEvent(ClientEvent):
    etype = "SET_POSITION"


def test_our_client_on_the_real_vuer_server(real_vuer_server, no_thread_leak):
    import math

    port, log = real_vuer_server
    with VuerClient(URI=f"ws://localhost:{port}") as client:  # the seed's spelling
        first = client.recv(timeout=10)
        assert first.etype == "SET" and first.data["tag"] == "Scene"
        client.send @ HelloEvent(value={"message": "Hi!"})
        client.send(MoveBoxEvent(value={"position": [1, 0.5, 0]}))
        ups = [client.recv(timeout=10), client.recv(timeout=10)]
        assert [u.etype for u in ups] == ["UPSERT", "UPSERT"]
        assert ups[1].data["nodes"][0]["position"] == [1, 0.5, 0]
        expected = []
        for i in range(200):
            t = i * 0.05
            pos = [math.sin(t) * 2, 0.5 + math.sin(t * 2) * 0.3, 0]
            expected.append(pos)
            client.send @ SetPositionEvent(value={"position": pos})
        client.send(SetPositionEvent(value={"position": "done"}), timeout=10)
        assert wait_until(lambda: len(read_log(log)) == 203, 10)
    events = read_log(log)
    assert events[0] == ["HELLO", {"message": "Hi!"}]
    assert events[1] == ["MOVE_BOX", {"position": [1, 0.5, 0]}]
    got = [e[1]["position"] for e in events[2:202]]
    assert all(e[0] == "SET_POSITION" for e in events[2:])
    for g, want in zip(got, expected):
        assert g == pytest.approx(want, abs=1e-6)  # float32 on the wire, as Vuer sends
    assert events[202][1]["position"] == "done"
