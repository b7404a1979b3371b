from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import pytest

from vuer_sync import Vuer, VuerClient
from vuer_sync.record import Recording, RecordingError, StateSerializer
from vuer_sync.schemas import Box, DefaultScene, PointCloud

from conftest import wait_until
from helpers import raw_client, recv_msg


def animate(app, frames=30):
    app.scene.set @ DefaultScene(Box(key="box", args=[1, 1, 1]))
    for i in range(frames):
        app.scene.update @ {"key": "box", "position": [math.sin(i / 5), 0.5, 0]}
        yield i


def strip(msg):
    return {k: v for k, v in msg.items() if k != "ts"}


def test_record_and_replay_to_a_python_client(no_thread_leak):
    app = Vuer(port=0)
    rec = app.scene.record()
    for _ in animate(app):
        rec.insert_sleep(1 / 30)
    data = rec.serialize()
    # what was sent, as the wire carries it (float32)
    expected = [{"etype": "SET", "data": app.scene.snapshot()}]
    loaded = Recording.load(data)
    assert len(loaded.records) == 31 and loaded.duration == pytest.approx(1.0)
    # SET and the first update at t=0, then one update per inserted 1/30 s
    assert [round(t, 6) for t, _ in loaded.records[:3]] == [0, 0, round(1 / 30, 6)]
    positions = [m["data"]["nodes"][0]["position"] for _, m in loaded.records[1:]]
    assert positions == [[pytest.approx(math.sin(i / 5), abs=1e-6), 0.5, 0] for i in range(30)]
    with Vuer(port=0) as player:
        with VuerClient(f"ws://127.0.0.1:{player.port}") as c:
            s = player.wait_for_session(5)
            t0 = time.monotonic()
            assert loaded.play(s, speed=4.0) == 31
            elapsed = time.monotonic() - t0
            replayed = [c.recv(timeout=5) for _ in range(31)]
    assert elapsed >= 0.2  # paced: 1 s of script time at 4x
    assert [(e.etype, e.data) for e in replayed] == [
        (m["etype"], m["data"]) for _, m in loaded.records]
    final = loaded.final_scene()
    assert final["children"][0]["position"] == positions[-1]
    assert final["children"] == expected[0]["data"]["children"]


def test_late_start_records_the_current_scene_first():
    app = Vuer(port=0)
    app.scene.upsert @ Box(key="before")
    rec = app.scene.record()
    app.scene.upsert @ Box(key="after")
    r = Recording.load(rec.serialize())
    assert [m["etype"] for _, m in r.records] == ["SET", "UPSERT"]
    assert [n["key"] for n in r.records[0][1]["data"]["children"]] == ["before"]


def test_repeated_large_arrays_are_stored_once():
    import numpy as np

    app = Vuer(port=0)
    rec = app.scene.record()
    pts = np.random.default_rng(0).random((20_000, 3)).astype(np.float32)
    for i in range(10):
        app.scene.upsert @ PointCloud(key="pc", vertices=pts, position=[i, 0, 0])
    one = len(PointCloud(key="pc", vertices=pts).serialize()["vertices"])
    data = rec.serialize()
    assert len(data) < 2 * one
    r = Recording.load(data)
    assert all(m["data"]["nodes"][0]["vertices"] == r.records[0][1]["data"]["nodes"][0][
        "vertices"] for _, m in r.records)
    assert len(r.records[0][1]["data"]["nodes"][0]["vertices"]) == one


def make_recording():
    app = Vuer(port=0)
    rec = app.scene.record()
    for i in range(5):
        app.scene.upsert @ Box(key=f"b{i}", args=[1, 1, 1], blob=bytes([i]) * 2000)
        rec.insert_sleep(0.1)
    return rec.serialize()


def test_truncated_recordings_name_the_offset():
    data = make_recording()
    for cut in (5, 20, len(data) // 3, len(data) // 2, len(data) - 3):
        with pytest.raises(RecordingError, match=r"byte \d+"):
            Recording.load(data[:cut])


def test_corrupt_recordings_name_the_offset():
    data = bytearray(make_recording())
    assert Recording.load(bytes(data))  # the original is fine
    for pos in range(30, len(data), max(1, len(data) // 25)):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        with pytest.raises(RecordingError, match=r"byte \d+|version|magic"):
            Recording.load(bytes(bad))
    with pytest.raises(RecordingError, match="magic"):
        Recording.load(b"PK\x03\x04" + bytes(data[4:]))
    with pytest.raises(RecordingError, match="unexpected bytes"):
        Recording.load(bytes(data) + b"\x00")


def test_session_recording_and_filter_and_wall_clock(app):
    app.start(block=False)
    a, b = raw_client(app.port), raw_client(app.port)
    wait_until(lambda: len(app.sessions) == 2)
    sa = app.sessions[0]
    rec = sa.record(clock="wall", filter=lambda m: m["etype"] != "REMOVE")
    sa.upsert @ Box(key="mine")
    app.sessions[1].upsert @ Box(key="theirs")
    time.sleep(0.05)
    app.scene.remove @ "nothing"
    app.scene.upsert @ Box(key="shared")
    rec.stop()
    sa.upsert @ Box(key="after-stop")
    r = Recording.load(rec.serialize())
    keys = [m["data"]["nodes"][0]["key"] for _, m in r.records]
    assert keys == ["mine", "shared"]
    assert r.records[1][0] >= 0.04  # wall-clock time
    with pytest.raises(ValueError):
        StateSerializer().insert_sleep(-1)
    a.close()
    b.close()


def test_cli_play_serves_a_recording(tmp_path):
    path = tmp_path / "anim.vsrec"
    path.write_bytes(make_recording())
    proc = subprocess.Popen([sys.executable, "-m", "vuer_sync.cli", "play", str(path),
                             "--port", "0", "--speed", "10", "--seconds", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for _ in range(20):
            line = proc.stdout.readline()
            if "Local:" in line:
                port = int(line.rsplit(":", 1)[1].strip(" /\n"))
                break
        assert port
        with VuerClient(f"ws://127.0.0.1:{port}") as c:
            got = [c.recv(timeout=10) for _ in range(5)]
        assert [e.data["nodes"][0]["key"] for e in got] == [f"b{i}" for i in range(5)]
    finally:
        proc.terminate()
        proc.wait(10)


def test_play_stops_on_event_and_loops(app):
    r = Recording.load(make_recording())
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    stop = threading.Event()
    t = threading.Thread(target=r.play, args=(s,), kwargs={"speed": 50, "loop": True,
                                                           "stop": stop})
    t.start()
    keys = [recv_msg(ws)["data"]["nodes"][0]["key"] for _ in range(12)]  # looped twice+
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert keys == [f"b{i % 5}" for i in range(12)]
    ws.close()


def test_cli_export_writes_an_offline_folder(tmp_path):
    from conftest import require

    require("vuer")  # the web client comes from the vuer wheel
    path = tmp_path / "anim.vsrec"
    path.write_bytes(make_recording())
    out = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "vuer_sync.cli", "export", str(path),
                           "--out", str(out)], check=False, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    view = (out / "view.html").read_text()
    scene = Recording.load(path.read_bytes()).scene_param()
    assert f"index.html?scene={scene}" in view and (out / "assets").is_dir()
    bad = tmp_path / "bad.vsrec"
    bad.write_bytes(make_recording()[:-10])
    done = subprocess.run([sys.executable, "-m", "vuer_sync.cli", "export", str(bad),
                           "--out", str(out)], check=False, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "truncated" in done.stderr
