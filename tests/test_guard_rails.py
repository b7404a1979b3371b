"""Bad input gets a clear error in the caller, not a silent blank page: ``set`` takes a whole
scene, ``add``/``upsert``/``update`` take nodes, transform props have the right shape;
``get_render``'s timeout names the caller's timeout; a received event prints usefully; the
page's ``/favicon.ico`` is there."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from vuer_sync import RPCTimeout, VuerClient
from vuer_sync.events import ClientEvent, Remove, ServerEvent, ServerRPC, Update, Upsert
from vuer_sync.schemas import Box, DefaultScene, Frustum, Group, Scene, Sphere

# -- set / add / upsert / update / remove -----------------------------------------------------


@pytest.fixture
def session(app):
    """A session (a Python client stands in for the browser) and what that client receives."""
    app.start(block=False)
    client = VuerClient(f"ws://127.0.0.1:{app.port}").connect()
    s = app.wait_for_session(5)
    s.client = client
    yield s
    client.close()


def received(client, n, timeout=5):
    return [client.recv(timeout=timeout) for _ in range(n)]


@pytest.mark.parametrize("target", ["session", "app.scene"])
def test_set_takes_a_whole_scene(session, app, target):
    t = session if target == "session" else app.scene
    for bad in (Box(key="box"), Group(Box(key="b"), key="g"), {"tag": "Box", "key": "b"}, "box",
                None, [DefaultScene()]):
        with pytest.raises(TypeError, match=r"set takes the whole scene: a Scene or "
                                            r"DefaultScene") as ei:
            t.set @ bad
        if isinstance(bad, Box):
            assert "Box(key='box')" in str(ei.value) and "upsert @" in str(ei.value)
    with pytest.raises(TypeError, match="DefaultScene"):
        t.set(Box(key="box"))  # the call form too
    # whole scenes are fine: ours, a scene map, and nothing was queued for the bad ones
    t.set @ DefaultScene(Box(key="box"))
    t.set @ Scene(Box(key="b2"))
    t.set @ {"tag": "Scene", "children": [{"key": "b3", "tag": "Box"}]}
    sets = received(session.client, 3)
    assert [e.etype for e in sets] == ["SET"] * 3
    assert [[n["key"] for n in e.data["children"]] for e in sets] == [["box"], ["b2"], ["b3"]]


def test_set_accepts_vuers_own_scene(session):
    vuer_schemas = pytest.importorskip("vuer.schemas")
    session.set @ vuer_schemas.DefaultScene(vuer_schemas.Box(key="vbox"))
    [ev] = received(session.client, 1)
    assert ev.etype == "SET" and ev.data["children"][0]["key"] == "vbox"
    with pytest.raises(TypeError, match="vuer's Box"):
        session.set @ vuer_schemas.Box(key="vbox")


@pytest.mark.parametrize("target", ["session", "app.scene"])
def test_add_upsert_update_take_nodes(session, app, target):
    t = session if target == "session" else app.scene
    for op in ("add", "upsert", "update"):
        at = getattr(t, op)
        with pytest.raises(TypeError, match=rf"{op} takes scene elements such as "
                                            r"Box\(key=\.\.\.\).*got str 'box'") as ei:
            at @ "box"
        assert "remove @ 'box'" in str(ei.value)  # the likely mix-up, named
        for bad in (3, None, ["box"], [Box(key="ok"), 1.5], np.zeros(3)):
            with pytest.raises(TypeError, match=rf"{op} takes"):
                at @ bad
        with pytest.raises(TypeError, match=r"dicts with a 'key'.*without one"):
            at @ {"position": [0, 1, 0]}
        with pytest.raises(TypeError, match=rf"{op} takes"):
            at("box")  # the call form too
    # what is documented stays valid: elements, dicts with a key, lists of both; keys to remove
    t.upsert @ Box(key="box")
    t.upsert @ [Box(key="a"), {"key": "b", "tag": "Sphere"}]
    t.add(Sphere(key="s"), to="box")
    t.update @ {"key": "box", "position": [1, 0, 0]}
    t.update @ [Box(key="a", position=[0, 1, 0]), {"key": "b", "color": "red"}]
    t.remove @ "a"
    t.remove @ ["b", "s"]
    got = received(session.client, 7)
    assert [e.etype for e in got] == ["UPSERT", "UPSERT", "ADD", "UPDATE", "UPDATE", "REMOVE",
                                      "REMOVE"]
    assert got[3].data["nodes"] == [{"key": "box", "position": [1, 0, 0]}]
    assert got[6].data["keys"] == ["b", "s"]


def test_events_check_their_nodes_too():
    with pytest.raises(TypeError, match="upsert takes"):
        Upsert("box")
    with pytest.raises(TypeError, match="update takes"):
        Update(Box(key="b"), 7)
    with pytest.raises(TypeError, match="Remove takes node keys"):
        Remove(Box(key="b"))
    assert Upsert({"key": "b"}).data["nodes"] == [{"key": "b"}]


# -- transform props ---------------------------------------------------------------------------


@pytest.mark.parametrize("prop,value,want", [
    ("position", "x", "3 numbers"),
    ("position", [1, 2], "3 numbers"),
    ("position", [1, 2, 3, 4], "3 numbers"),
    ("position", ["a", "b", "c"], "3 numbers"),
    ("position", np.zeros((3, 3)), "array of shape (3, 3)"),
    ("position", 1.0, "3 numbers"),
    ("position", {"x": 1}, "3 numbers"),
    ("rotation", [0, 1], "Euler angles"),
    ("quaternion", [0, 0, 1], "4 numbers"),
    ("quaternion", np.zeros(3), "array of shape (3,)"),
    ("scale", [1, 2], "or one number"),
    ("scale", "2", "or one number"),
])
def test_misshapen_transforms_name_the_element_and_the_prop(prop, value, want):
    with pytest.raises(ValueError) as ei:
        Box(key="arm", **{prop: value})
    msg = str(ei.value)
    assert msg.startswith(f"Box(key='arm'): {prop} must be ") and want in msg, msg


@pytest.mark.parametrize("props", [
    {"position": [0, 1, 0]}, {"position": (0.5, 1, 2.0)}, {"position": np.array([0.0, 1, 2])},
    {"position": np.array([1, 2, 3], np.int32)}, {"position": [np.float32(1), 2, 3]},
    {"position": None}, {"rotation": [0, 1.5, 0]}, {"rotation": [0, 1.5, 0, "YXZ"]},
    {"quaternion": [0, 0, 0, 1]}, {"quaternion": np.array([0, 0, 0, 1.0])},
    {"scale": 2}, {"scale": 0.5}, {"scale": np.float64(2)}, {"scale": [1, 2, 3]},
    {"rotation": (0, np.float32(0.5), 0)},
])
def test_well_shaped_transforms_are_accepted(props):
    Box(key="b", **props)
    Frustum(key="f", scale=1.0)  # three.js / Vuer components take a single scale number


# -- get_render's timeout ---------------------------------------------------------------------


def test_get_render_timeout_names_the_callers_timeout_rounded(session):
    # the Python client never answers GRAB_RENDER: the call ends at its timeout
    with pytest.raises(RPCTimeout) as ei:
        session.get_render(timeout=1 / 3)
    msg = str(ei.value)
    assert "within 0.33 s" in msg and "0.333" not in msg, msg
    assert "browser" in msg and session.id in msg
    with pytest.raises(RPCTimeout) as ei:
        session.get_render(32, 24, position=[0, 0, 5], timeout=0.4)
    assert "within 0.4 s" in str(ei.value), str(ei.value)
    class Ping(ServerRPC):
        etype = "PING"

    with pytest.raises(RPCTimeout, match=r"no answer within 0\.25 s$"):
        session.rpc(Ping({}), ttl=0.25)


# -- printing events ---------------------------------------------------------------------------


def test_received_events_print_their_etype_and_a_short_value(session, app):
    session.set @ DefaultScene(Box(key="box", args=[1, 1, 1]))
    [ev] = received(session.client, 1)
    shown = repr(ev)
    assert shown.startswith("client<SET>(data={") and "'tag': 'Scene'" in shown, shown
    assert "None" not in shown[:20] and len(shown) < 200, shown
    assert str(ev) == shown
    big = ClientEvent("UPLOAD", value={"file": b"\0" * 10**6, "points": list(range(10**5))})
    s = repr(big)
    assert s.startswith("client<UPLOAD>({'file': <1000000 bytes>, 'points': [0, 1, 2")
    assert len(s) < 200, s
    assert repr(ClientEvent("CLICK", value={"key": "box"})) == "client<CLICK>({'key': 'box'})"
    arr = ServerEvent({"frame": np.zeros((480, 640, 3))}, etype="FRAME_DATA")
    assert "shape=(480, 640, 3)" in repr(arr)


# -- favicon ------------------------------------------------------------------------------------


def test_favicon_is_served(app):
    app.start(block=False)
    with urllib.request.urlopen(f"http://127.0.0.1:{app.port}/favicon.ico", timeout=5) as r:
        body = r.read()
        assert r.status == 200 and r.headers["Content-Type"].startswith("image/svg+xml")
    assert body.startswith(b"<svg") and b"</svg>" in body and len(body) < 2000
