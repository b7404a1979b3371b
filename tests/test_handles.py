from __future__ import annotations

import re
import threading
import urllib.request

import pytest

from vuer_sync import codec

from conftest import wait_until
from helpers import raw_client, recv_msg

# a CAMERA_MOVE exactly as the web client sends it (no ts; quaternion [x, y, z, w])
CAMERA_MOVE = {"etype": "CAMERA_MOVE", "key": "defaultCamera", "value": {"camera": {
    "position": [0, 5.0, 10], "rotation": [-0.4636, 0, 0],
    "quaternion": [-0.2298, 0, 0, 0.9732],
    "matrix": [1, 0, 0, 0, 0, 0.894, -0.447, 0, 0, 0.447, 0.894, 0, 0, 5, 10, 1],
    "near": 0.1, "far": 2000, "zoom": 1, "width": 1280, "height": 720,
    "ctype": "perspective", "fov": 60, "aspect": 1.778}}}


def test_camera_state_and_callbacks(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    seen = []
    s.camera.on_update(lambda cam: seen.append((cam.fov, threading.current_thread().name)))
    assert s.camera.position is None and not s.camera.wait_for_update(0.01)
    ws.send_binary(codec.encode(CAMERA_MOVE))
    assert s.camera.wait_for_update(5)
    assert s.camera.position == [0, 5.0, 10]
    assert s.camera.wxyz == pytest.approx([0.9732, -0.2298, 0, 0])
    assert (s.camera.fov, s.camera.width, s.camera.height) == (60.0, 1280, 720)
    assert s.camera.matrix[12:15] == [0, 5, 10]
    assert wait_until(lambda: seen) and seen[0][0] == 60.0
    assert seen[0][1].startswith("vuer-handlers")
    s.camera.move(position=[1, 2, 3], look_at=[0, 0, 0], fov=45)
    m = recv_msg(ws)
    assert m["etype"] == "UPDATE" and m["data"]["nodes"] == [
        {"key": "SceneCamera", "position": [1.0, 2.0, 3.0], "lookAt": [0.0, 0.0, 0.0],
         "fov": 45.0}]
    ws.close()


def test_notification_lifecycle(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    n = s.add_notification("Saving", "please wait", loading=True, color="blue")
    js = recv_msg(ws)  # once per session: the script that lets the close button hide it
    assert js["etype"] == "TIMEOUT" and "vuer-sync-notification" in js["data"]["fn"]
    m = recv_msg(ws)
    assert m["etype"] == "ADD" and m["data"]["to"] == "htmlChildren"
    node = m["data"]["nodes"][0]
    assert node["key"] == n.key and node["tag"] == "Div"
    assert "Saving" in str(node) and "please wait" in str(node)
    n.body = "done"
    n.loading = False
    upd = [recv_msg(ws), recv_msg(ws)]
    assert all(u["etype"] == "UPSERT" and u["data"]["to"] == "htmlChildren" for u in upd)
    assert "done" in str(upd[-1]["data"]["nodes"][0])
    # the close button's CLICK removes it
    ws.send_binary(codec.encode({"etype": "CLICK", "key": f"{n.key}-close"}))
    m = recv_msg(ws)
    assert m["etype"] == "REMOVE" and m["data"]["keys"] == [n.key]
    assert n.removed
    n.remove()  # idempotent: nothing more is sent
    n2 = s.add_notification("Hi", "auto", auto_close=50, with_close_button=False)
    assert recv_msg(ws)["etype"] == "ADD"
    m = recv_msg(ws)  # removed by itself after 50 ms
    assert m["etype"] == "REMOVE" and m["data"]["keys"] == [n2.key]
    ws.close()


def test_file_download_is_served_once(app):
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    content = bytes(range(256)) * 5000
    url = s.send_file_download("data.bin", content, chunk_size=4096)
    m = recv_msg(ws)
    assert m["etype"] == "TIMEOUT" and url in m["data"]["fn"] and "data.bin" in m["data"]["fn"]
    assert re.match(rf"http://127\.0\.0\.1:{app.port}/download/[\w-]+/data\.bin$", url)
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.read() == content
        assert "attachment" in r.headers["Content-Disposition"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=5)
    assert e.value.code == 404
    late = s.send_file_download("late.bin", b"x")
    token = late.split("/")[-2]
    f, c, n, _ = app.downloads.offers[token]
    app.downloads.offers[token] = (f, c, n, 0.0)  # as if offered more than 10 minutes ago
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(late, timeout=5)
    assert e.value.code == 404
    ws.close()
