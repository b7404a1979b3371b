"""The bounded attack suite: a server in its own process (tests/attack_server.py) under
slowloris, memory-bomb frame headers and a ping flood, with its RSS, threads and descriptors
read by psutil, while a well-behaved client keeps asking it questions.

Every loop is bounded in count and time. The figures are printed (``-s``) and recorded in
docs/reliability.md.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import websocket

from vuer_sync import VuerClient, codec
from vuer_sync.events import ClientEvent

from conftest import require

pytestmark = pytest.mark.slow

SERVER = Path(__file__).with_name("attack_server.py")


@contextmanager
def server_process(*args):
    psutil = require("psutil")
    proc = subprocess.Popen([sys.executable, str(SERVER), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(30), "the server did not start within 30 s"
        sel.close()
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield int(line.split()[1]), psutil.Process(proc.pid)
    finally:
        proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Probe:
    """A well-behaved client asking ``ECHO`` every 50 ms; ``latencies`` of the answers."""

    def __init__(self, port):
        self.client = VuerClient(f"ws://127.0.0.1:{port}").connect()
        self.latencies = []
        self.unanswered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe")
        self._thread.start()

    def _run(self):
        i = 0
        while not self._stop.wait(0.05) and i < 2000:  # at most 100 s of probes
            i += 1
            t0 = time.perf_counter()
            self.client.send(ClientEvent(etype="ECHO", value=i))
            deadline = t0 + 2.0
            while True:
                ev = self.client.recv(timeout=max(0.0, deadline - time.perf_counter()))
                if ev is None:
                    self.unanswered += 1
                    break
                if ev.etype == "ECHOED" and ev.data == i:
                    self.latencies.append(time.perf_counter() - t0)
                    break

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        self.client.close()
        lat = sorted(self.latencies)
        return {"answers": len(lat), "unanswered": self.unanswered,
                "p50_ms": 1e3 * lat[len(lat) // 2], "p95_ms": 1e3 * lat[int(len(lat) * .95)],
                "max_ms": 1e3 * lat[-1]}


def check_probe(stats, p95_ms=100):
    print("well-behaved client:", {k: round(v, 1) for k, v in stats.items()})
    assert stats["unanswered"] == 0 and stats["answers"] >= 20
    assert stats["p95_ms"] < p95_ms, stats
    assert stats["max_ms"] < 1000, stats


def ws_connect(port, init=True):
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=10,
                                     suppress_origin=True)
    if init:
        ws.send_binary(codec.encode({"etype": "INIT", "ts": 1.0, "value": {"client": "x"}}))
    return ws


def masked_header(opcode, length):
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + b"\x00\x00\x00\x00"


def settle(proc, seconds=0.5):
    time.sleep(seconds)
    return proc.memory_info().rss, proc.num_threads(), proc.num_fds()


def test_500_slowloris_connections_are_closed_within_the_header_timeout():
    timeout = 3.0
    with server_process("--header-timeout", str(timeout)) as (port, proc):
        rss0, threads0, fds0 = settle(proc)
        probe = Probe(port)
        sel = selectors.DefaultSelector()
        opened = {}
        for i in range(500):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow-%d: " % i)
            s.setblocking(False)
            opened[s] = time.monotonic()
            sel.register(s, selectors.EVENT_READ)
        peak_threads = proc.num_threads()
        closed_after = {}
        next_drip = time.monotonic() + 1.0
        end = time.monotonic() + timeout + 8.0
        while opened.keys() - closed_after.keys() and time.monotonic() < end:
            peak_threads = max(peak_threads, proc.num_threads())
            for key, _ in sel.select(0.1):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    closed_after[s] = time.monotonic() - opened[s]
                    sel.unregister(s)
            if time.monotonic() >= next_drip:  # one more header byte a second from each
                next_drip += 1.0
                for s in opened.keys() - closed_after.keys():
                    try:
                        s.send(b"x")
                    except OSError:
                        pass
        sel.close()
        for s in opened:
            s.close()
        stats = probe.stop()
        rss1, threads1, fds1 = settle(proc, 1.0)
        slowest = max(closed_after.values(), default=None)
        print(f"slowloris: 500 connections, peak {peak_threads} server threads; all closed "
              f"after {slowest:.2f} s at most; threads {threads0} -> {threads1}, fds {fds0} -> "
              f"{fds1}, RSS {rss0 >> 20} -> {rss1 >> 20} MB")
        assert len(closed_after) == 500
        assert slowest < timeout + 2.0
        assert threads1 <= threads0 + 5 and fds1 <= fds0 + 5
        check_probe(stats)


def test_8_clients_declaring_200mib_frames_add_under_20mb():
    with server_process() as (port, proc):
        probe = Probe(port)
        bombers = [ws_connect(port) for _ in range(8)]
        rss0, _, _ = settle(proc, 1.0)
        for ws in bombers:
            ws.sock.sendall(masked_header(0x2, 200 << 20) + b"0123456789")  # then stall
        rss1, _, _ = settle(proc, 2.0)
        stats = probe.stop()
        for ws in bombers:
            ws.sock.close()
        rss2, _, _ = settle(proc, 1.0)
        print(f"memory bomb: 8 x 200 MiB declared: RSS {rss0 >> 20} -> {rss1 >> 20} MB "
              f"(+{(rss1 - rss0) / 2**20:.1f}); after they left {rss2 >> 20} MB")
        assert rss1 - rss0 < 20 << 20
        check_probe(stats)


def test_a_million_pings_from_a_client_that_does_not_read_add_under_10mb():
    with server_process() as (port, proc):
        probe = Probe(port)
        flood = ws_connect(port)
        flood.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        flood.send_binary(codec.encode({"etype": "BIG", "ts": 1.0, "value": 64}))
        rss0, _, _ = settle(proc, 2.0)  # the 64 MiB answer is queued; its write is stuck
        ping = masked_header(0x9, 0)
        batch = ping * 10000
        sent = 0
        flood.sock.settimeout(30)
        t0 = time.monotonic()
        while sent < 1_000_000 and time.monotonic() - t0 < 60:
            flood.sock.sendall(batch)
            sent += 10000
        took = time.monotonic() - t0
        rss1, _, _ = settle(proc, 1.0)
        stats = probe.stop()
        flood.sock.close()
        print(f"ping flood: {sent} pings in {took:.1f} s from a client that does not read: "
              f"RSS {rss0 >> 20} -> {rss1 >> 20} MB (+{(rss1 - rss0) / 2**20:.1f})")
        assert sent == 1_000_000
        assert rss1 - rss0 < 10 << 20
        # one I/O thread serves the flood and the probe: a run of empty pings is counted,
        # not parsed frame by frame (transport/nonblocking.py), so the probe waits as long
        # as with a thread per connection
        check_probe(stats)


def test_attack_server_stops_cleanly():
    # the harness itself: stdin closed -> the process exits 0 within the bound
    with server_process() as (port, proc):
        pid = proc.pid
    assert not os.path.exists(f"/proc/{pid}") or proc.status() == "zombie"
