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


def start_play(path):
    """``vuer-sync play path`` in a subprocess (bounded: --seconds 20); (process, port)."""
    proc = subprocess.Popen([sys.executable, "-m", "vuer_sync.cli", "play", str(path),
                             "--port", "0", "--speed", "10", "--seconds", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = None
    for _ in range(20):
        line = proc.stdout.readline()
        if "Local:" in line:
            port = int(line.rsplit(":", 1)[1].strip(" /\n"))
            break
    if not port:
        proc.kill()
        proc.wait(5)
    assert port, "vuer-sync play did not print its URL"
    return proc, port

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
    proc, port = start_play(path)
    try:
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


# -- crash safety: atomic save, streamed recordings ------------------------------------------

RECORD_THREAD = "vuer-record"


def record_threads():
    return [t for t in threading.enumerate() if t.name.startswith(RECORD_THREAD)]


def keys_and_positions(rec):
    return [(m["data"]["nodes"][0]["key"], m["data"]["nodes"][0].get("position"))
            for _, m in rec.records]


def frame_starts(data):
    """Byte offsets of the version-2 records of ``data`` (and of its end)."""
    import struct

    pos, out = 8, []
    while pos < len(data):
        out.append(pos)
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 8 + length
    assert pos == len(data)
    return out


SAVE_UNDER_KILL = r"""
import os, sys, time
from vuer_sync import Vuer
from vuer_sync.schemas import Box

target = sys.argv[1]
app = Vuer(port=0)
rec = app.scene.record()
for i in range(48):  # 48 distinct 1 MiB buffers: a 50 MB file that takes a while to save
    app.scene.upsert @ Box(key=f"b{i}", blob=os.urandom(1 << 20))
t0 = time.monotonic()
rec.save(target)
print("saved-1", time.monotonic() - t0, flush=True)
app.scene.upsert @ Box(key="one-more")
print("saving-2", flush=True)
rec.save(target)
print("saved-2", flush=True)
time.sleep(60)
"""


def test_kill_9_during_save_leaves_the_old_or_the_new_file(tmp_path):
    """A process killed (SIGKILL) at five moments of a save over a good 50 MB recording (once
    while it encodes, four times once it has started writing): the target always loads,
    with the old content or the new, and temporary files never pass for recordings."""
    import signal

    interrupted = 0
    # (phase, delay): "encode": a fraction of the first save's time after the second
    # starts; "write": seconds after the save starts touching the folder
    moments = [("encode", 0.3), ("write", 0.0), ("write", 0.01), ("write", 0.03),
               ("write", 0.08)]
    for attempt, (phase, delay) in enumerate(moments):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        target = folder / "run.vsrec"
        proc = subprocess.Popen([sys.executable, "-c", SAVE_UNDER_KILL, str(target)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline().split()
            assert first and first[0] == "saved-1", proc.stderr.read()
            first_size = target.stat().st_size
            assert proc.stdout.readline().strip() == "saving-2"
            if phase == "encode":
                time.sleep(delay * float(first[1]))
            else:  # wait (bounded) until the save writes: a new file, or the target changes
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and target.stat().st_size == first_size \
                        and len(list(folder.iterdir())) == 1:
                    time.sleep(0.0005)
                time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            rest = proc.stdout.read()
        finally:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
        if "saved-2" not in rest:
            interrupted += 1
        loaded = Recording.load(target)  # never broken
        assert len(loaded.records) in (48, 49), attempt
        assert loaded.records[0][1]["data"]["nodes"][0]["key"] == "b0"
        others = [p.name for p in folder.iterdir() if p != target]
        assert all(n.startswith(".run.vsrec.") and n.endswith(".tmp") for n in others), others
        assert [p.name for p in folder.glob("*.vsrec")] == ["run.vsrec"]
    assert interrupted >= 3, f"only {interrupted} of 5 kills landed during the save"


STREAM_UNDER_KILL = r"""
import sys, time
from vuer_sync import Vuer
from vuer_sync.schemas import Box

app = Vuer(port=0)
app.start(block=False)
rec = app.scene.record(path=sys.argv[1], flush_interval=0.25)
for i in range(100_000):
    app.scene.upsert @ Box(key="box", position=[i, 0, 0])
    print(f"sent {i}", flush=True)
    time.sleep(0.004)
"""


def test_streamed_recording_survives_kill_9(tmp_path):
    """A server streaming a recording is killed (SIGKILL) while it publishes: the file loads,
    in order, every message reported sent more than a second before the kill, and says it is
    incomplete."""
    import os
    import signal

    path = tmp_path / "live.vsrec"
    proc = subprocess.Popen([sys.executable, "-c", STREAM_UNDER_KILL, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []  # (i, when the test read "sent i")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            if line.startswith("sent "):
                seen.append((int(line.split()[1]), time.monotonic()))
                if len(seen) >= 200 and seen[-1][1] - seen[0][1] >= 1.5:
                    break
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert len(seen) >= 200
    size = os.path.getsize(path)
    r = Recording.load(path)
    assert not r.complete and r.truncated_at is not None and r.truncated_at <= size
    positions = [m["data"]["nodes"][0]["position"][0] for _, m in r.records]
    assert positions == list(range(len(positions)))  # in order, nothing missing
    must_have = max(i for i, when in seen if when < killed_at - 1.0)
    assert len(positions) > must_have, (len(positions), must_have, seen[-1][0])


def make_streamed(path, frames=6):
    app = Vuer(port=0)
    rec = app.scene.record(path=path, flush_interval=0.05)
    shared = bytes(range(256)) * 8  # 2 KiB, stored once
    for i in range(frames):
        app.scene.upsert @ Box(key=f"b{i}", args=[1, 1, 1], blob=bytes([i]) * 2000,
                               shared=shared)
        rec.insert_sleep(0.1)
    rec.stop()
    return path.read_bytes()


def test_truncated_streamed_recording_loads_its_intact_prefix(tmp_path, caplog):
    data = make_streamed(tmp_path / "s.vsrec")
    full = Recording.load(data)
    assert full.complete and full.truncated_at is None and len(full.records) == 6
    assert full.duration == pytest.approx(0.6)
    starts = frame_starts(data)
    end_record = starts[-1]
    for cut in sorted({starts[2] + 3, starts[4] + 9, len(data) // 2, len(data) - 5,
                       end_record, *starts[3:6]}):
        caplog.clear()
        with caplog.at_level("WARNING", logger="vuer_sync.record"):
            r = Recording.load(data[:cut])
        intact = max(s for s in starts if s <= cut)  # the last record boundary
        assert not r.complete and r.truncated_at == intact, cut
        assert r.records == full.records[:len(r.records)]
        assert f"byte {intact}" in caplog.text
    # a final record whose checksum fails is a torn write, not corruption; so is a tail of
    # zero bytes (what a power cut can leave)
    bad_tail = bytearray(data)
    bad_tail[-2] ^= 0xFF
    assert Recording.load(bytes(bad_tail)).truncated_at == end_record
    r = Recording.load(data[:end_record] + bytes(100))
    assert r.truncated_at == end_record and len(r.records) == 6
    with pytest.raises(RecordingError, match="byte 8"):
        Recording.load(data[:12])  # not even a header


def test_corrupt_streamed_recording_names_the_offset(tmp_path):
    data = make_streamed(tmp_path / "s.vsrec")
    starts = frame_starts(data)
    for k in range(1, len(starts) - 1):  # a byte inside each record's payload but the last
        start = starts[k]
        for where in (start + 8, (start + 8 + starts[k + 1]) // 2, starts[k + 1] - 1):
            bad = bytearray(data)
            bad[where] ^= 0x5A
            with pytest.raises(RecordingError, match=f"byte {start}\\b"):
                Recording.load(bytes(bad))
    with pytest.raises(RecordingError, match="magic"):
        Recording.load(b"PK" + data[2:])
    with pytest.raises(RecordingError, match="version 3.0 at byte 6"):
        Recording.load(b"VSREC\x00\x03\x00" + data[8:])
    with pytest.raises(RecordingError, match=f"after the end record at byte {len(data)}"):
        Recording.load(data + b"\x01")


def test_streamed_and_in_memory_recordings_hold_the_same_records(app, tmp_path):
    import numpy as np

    mem = app.scene.record()
    streamed = app.scene.record(path=tmp_path / "s.vsrec", flush_interval=0.02)
    assert streamed.streaming and not mem.streaming
    rng = np.random.default_rng(1)
    cloud = rng.random((5000, 3)).astype(np.float32)  # 60 KB, re-sent: stored once
    for i in range(40):
        if i % 10 == 5:
            time.sleep(0.05)  # several batches
        vertices = cloud if i % 2 else rng.random((3000, 3)).astype(np.float32)
        app.scene.upsert @ PointCloud(key="pc", vertices=vertices, position=[i, 0, 0])
        app.scene.update @ {"key": "pc", "small": bytes(100)}
        mem.insert_sleep(1 / 30)
        streamed.insert_sleep(1 / 30)
    live = Recording.load(streamed.serialize())  # while recording: complete bytes
    assert live.complete and len(live.records) == len(streamed) == 80
    streamed.stop()
    mem.stop()
    a, b = Recording.load(mem.serialize()), Recording.load(streamed.path)
    assert b.complete and a.records == b.records and a.duration == b.duration
    assert b.header["buffers"] == a.header["buffers"] == 21  # one shared + 20 distinct
    assert streamed.path.stat().st_size < len(mem.serialize()) + 10_000
    copy = streamed.save(tmp_path / "copy.vsrec")
    assert Recording.load(copy).records == a.records
    assert "?scene=" in streamed.as_html()
    # plays back in a real server, message for message
    with Vuer(port=0) as player, VuerClient(f"ws://127.0.0.1:{player.port}") as c:
        s = player.wait_for_session(5)
        assert b.play(s, speed=0) == 80
        got = [c.recv(timeout=5) for _ in range(80)]
    assert [(e.etype, e.data) for e in got] == [(m["etype"], m["data"]) for _, m in b.records]


def test_stream_needs_a_new_file_and_a_short_interval(tmp_path):
    from vuer_sync.record import StateSerializer

    old = tmp_path / "old.vsrec"
    old.write_bytes(make_recording())
    app = Vuer(port=0)
    with pytest.raises(FileExistsError):
        app.scene.record(path=old)  # never overwrites a recording
    assert Recording.load(old)
    with pytest.raises(ValueError, match="flush_interval"):
        StateSerializer(path=tmp_path / "x.vsrec", flush_interval=2.0)
    assert not (tmp_path / "x.vsrec").exists() and not record_threads()


def test_save_is_atomic_and_cleans_up_after_a_failure(tmp_path, monkeypatch):
    import os
    import stat

    target = tmp_path / "r.vsrec"
    target.write_bytes(make_recording())
    os.chmod(target, 0o640)
    before = target.read_bytes()
    app = Vuer(port=0)
    rec = app.scene.record()
    app.scene.upsert @ Box(key="new")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        rec.save(target)
    monkeypatch.undo()
    assert target.read_bytes() == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.vsrec"]  # no temporary file
    rec.save(target)
    assert [m["etype"] for _, m in Recording.load(target).records] == ["UPSERT"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the file's mode is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.vsrec"]


def writer_switches(thread):
    """Context switches of a thread so far (Linux): a sleeping thread makes none."""
    status = f"/proc/self/task/{thread.native_id}/status"
    with open(status) as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


def test_writer_threads_end_on_stop_app_stop_and_session_end(no_thread_leak, tmp_path):
    import os

    # stop(): the thread ends, the file is complete
    app = Vuer(port=0)
    rec = app.scene.record(path=tmp_path / "a.vsrec", flush_interval=0.05)
    (writer,) = record_threads()
    assert writer.daemon and writer.name == "vuer-record:a.vsrec"
    app.scene.upsert @ Box(key="a")
    assert wait_until(lambda: Recording.load(rec.path).records, 3.0)  # flushed on its own
    if os.path.exists(f"/proc/self/task/{writer.native_id}/status"):
        before = writer_switches(writer)
        time.sleep(0.5)  # idle: the writer sleeps on its event, no periodic wake-ups
        assert writer_switches(writer) == before
    rec.stop()
    assert not writer.is_alive() and Recording.load(rec.path).complete
    rec.stop()  # twice is fine

    # app.stop() finishes app.scene recordings nobody stopped (started server or not)
    for started in (False, True):
        app = Vuer(port=0)
        if started:
            app.start(block=False)
        rec = app.scene.record(path=tmp_path / f"app{started}.vsrec", flush_interval=1.0)
        app.scene.upsert @ Box(key="b")
        app.stop()
        assert not record_threads()
        r = Recording.load(rec.path)
        assert r.complete and keys_and_positions(r) == [("b", None)]

    # a session's recording ends with the session
    app = Vuer(port=0)
    app.start(block=False)
    try:
        ws = raw_client(app.port)
        s = app.wait_for_session(5)
        rec = s.record(path=tmp_path / "session.vsrec", flush_interval=1.0)
        s.upsert @ Box(key="c")
        assert recv_msg(ws)["etype"] == "UPSERT"
        ws.close()
        assert wait_until(lambda: not record_threads(), 5.0)
        r = Recording.load(rec.path)
        assert r.complete and keys_and_positions(r) == [("c", None)]
    finally:
        app.stop()


def test_many_producers_and_a_stop_while_they_run(app, tmp_path):
    mem = app.scene.record()
    rec = app.scene.record(path=tmp_path / "p.vsrec", flush_interval=0.01)
    app.start(block=False)
    ws = raw_client(app.port)
    s = app.wait_for_session(5)
    srec = s.record(path=tmp_path / "s.vsrec", flush_interval=0.01)
    started = threading.Barrier(5)

    def produce(k):
        started.wait(5)
        for i in range(400):
            app.scene.upsert @ Box(key=f"k{k}", position=[i, 0, 0])
            s.upsert @ Box(key=f"s{k}", position=[i, 0, 0])

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    started.wait(5)
    time.sleep(0.02)
    rec.stop()  # while the producers run
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    r = Recording.load(rec.path)
    assert r.complete and 0 < len(r.records) <= 1600
    per_key = {}
    for key, pos in keys_and_positions(r):
        per_key.setdefault(key, []).append(pos[0])
    for positions in per_key.values():  # each producer's messages: in order, none missing
        assert positions == list(range(len(positions)))
    assert r.records == Recording.load(mem.serialize()).records[:len(r.records)]
    ws.close()
    assert wait_until(lambda: not record_threads(), 5.0)  # the session ended: finished
    sr = Recording.load(srec.path)  # the session got its own messages and the broadcasts
    assert sr.complete and len(sr.records) == 3200
    assert sum(key.startswith("s") for key, _ in keys_and_positions(sr)) == 1600


def test_streamed_recording_keeps_no_records_in_memory(tmp_path):
    import os
    import tracemalloc

    app = Vuer(port=0)
    rec = app.scene.record(path=tmp_path / "big.vsrec", flush_interval=0.0)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(100):  # 100 distinct 256 KiB clouds: 25 MiB recorded
            app.scene.upsert @ Box(key="pc", blob=os.urandom(256 << 10))
        rec.flush()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        rec.stop()
    assert held < 4 << 20, f"{held} bytes still held after 25 MiB streamed"
    assert len(Recording.load(rec.path).records) == 100


def test_cli_play_serves_a_truncated_streamed_recording(tmp_path):
    data = make_streamed(tmp_path / "full.vsrec")
    starts = frame_starts(data)
    # header, buffer (b0's blob), buffer (shared), b0, buffer, b1, buffer, b2 (cut short)
    cut = starts[7] + 10
    path = tmp_path / "cut.vsrec"
    path.write_bytes(data[:cut])
    proc, port = start_play(path)
    try:
        with VuerClient(f"ws://127.0.0.1:{port}") as c:
            got = [c.recv(timeout=10) for _ in range(2)]
        assert [e.data["nodes"][0]["key"] for e in got] == ["b0", "b1"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "truncated recording" in err and f"byte {starts[7]}" in err, err


DISK_FULL = r"""
import logging, resource, signal, sys, threading, time
from vuer_sync import Vuer
from vuer_sync.record import Recording, RecordingError
from vuer_sync.schemas import Box

logging.basicConfig(level=logging.ERROR)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # a "disk" of 20 kB
app = Vuer(port=0)
rec = app.scene.record(path=sys.argv[1], flush_interval=0.01)
for i in range(200):
    app.scene.upsert @ Box(key=f"b{i}", label="x" * 500)
    time.sleep(0.002)
try:
    rec.stop()
except RecordingError as e:
    print("stop raised:", e)
print("writer threads:", [t.name for t in threading.enumerate()
                          if t.name.startswith("vuer-record")])
r = Recording.load(sys.argv[1])
print("loaded", len(r.records), r.complete, r.truncated_at)
"""


def test_a_full_disk_stops_the_recording_and_leaves_a_loadable_file(tmp_path):
    path = tmp_path / "full.vsrec"
    done = subprocess.run([sys.executable, "-c", DISK_FULL, str(path)], check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "stop raised: writing the recording" in out and "File too large" in out, out
    assert "writer threads: []" in out
    loaded = [line.split() for line in out.splitlines() if line.startswith("loaded")][0]
    assert 0 < int(loaded[1]) < 200 and loaded[2] == "False"
    assert "recording to" in done.stderr and "writing failed" in done.stderr
