"""Micro-benchmark for vuer_sync.transport on loopback.

Two parts:

1. Masking speed for 12 MB: websocket-client's stock ``ABNF.mask`` vs the numpy one installed by
   ``install_websocket_client_mask()``, plus ``apply_mask`` / ``mask_bytes`` directly.
2. Throughput and server CPU: a server *subprocess* (so that its CPU time is its own) does a hand
   HTTP upgrade and then serves with either ``WebSocketConnection`` ("fast") or stock
   ``simple_websocket.Server`` with its reader thread ("stock", deflate offer removed). The client
   is websocket-client with the numpy mask installed. Server CPU is ``time.process_time()`` of the
   server process (all threads) over the transfer.

Usage::

    python benchmarks/bench_transport.py                 # both servers, default sizes
    python benchmarks/bench_transport.py --impl fast --repeat 5
    python benchmarks/bench_transport.py --tls --no-mask-bench  # wss://

Every figure is the median of three repetitions (of five for the masking speeds). Numbers on a
shared 2-vCPU VM move a lot between runs (see ``docs/performance.md``); the per-MB CPU column
is the steadier one.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MB = 2**20


# --------------------------------------------------------------------------- server side


def _read_request(sock: socket.socket) -> Tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError
        data += chunk
    return tuple(data.split(b"\r\n\r\n", 1))  # type: ignore[return-value]


def serve(port_file: str, impl: str, tls_dir: str = "") -> None:
    """Serve one connection. Commands arrive as text messages:
    ``s2c N SIZE`` -> send N binary messages of SIZE bytes, then text ``cpu <seconds>``;
    ``s2cmany N SIZE`` -> the same with one send_many call (fast only);
    ``c2s N`` -> receive N messages, then reply ``cpu <seconds>``; ``quit``."""
    lsock = socket.create_server(("127.0.0.1", 0))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(lsock.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    lsock.settimeout(60)
    sock, _ = lsock.accept()
    lsock.close()
    if tls_dir:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(tls_dir, "cert.pem"), os.path.join(tls_dir, "key.pem"))
        sock = ctx.wrap_socket(sock, server_side=True)
    head, rest = _read_request(sock)

    if impl == "fast":
        from vuer_sync.transport import ConnectionClosed, WebSocketConnection

        headers = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        accept = base64.b64encode(hashlib.sha1(headers[b"sec-websocket-key"] + WS_GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        conn = WebSocketConnection(sock, initial_data=rest)
        recv, send = conn.receive, conn.send
    else:
        import simple_websocket
        from simple_websocket import ConnectionClosed  # type: ignore[no-redef]

        environ = {"werkzeug.socket": sock}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            environ["HTTP_" + k.strip().upper().replace("-", "_")] = v.strip()
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        ws = simple_websocket.Server(environ)  # stock: reader thread, receive_bytes=4096
        recv, send = ws.receive, ws.send
        conn = None

    try:
        while True:
            cmd = recv()
            if not isinstance(cmd, str):
                continue
            parts = cmd.split()
            if parts[0] == "quit":
                break
            t0 = time.process_time()
            if parts[0] == "s2c":
                payload = os.urandom(int(parts[2]))
                t0 = time.process_time()
                for _ in range(int(parts[1])):
                    send(payload)
            elif parts[0] == "s2cmany":
                payload = os.urandom(int(parts[2]))
                t0 = time.process_time()
                conn.send_many([payload] * int(parts[1]))  # type: ignore[union-attr]
            elif parts[0] == "c2s":
                for _ in range(int(parts[1])):
                    recv()
            send(f"cpu {time.process_time() - t0:.6f}")
    except ConnectionClosed:
        pass
    finally:
        sock.close()


# --------------------------------------------------------------------------- client side


def bench_mask() -> List[str]:
    import numpy as np
    from websocket._abnf import ABNF

    from vuer_sync.client_transport import (
        install_websocket_client_mask,
        uninstall_websocket_client_mask,
    )
    from vuer_sync.transport import apply_mask, mask_bytes

    data = np.random.default_rng(0).integers(0, 256, 12 * MB, dtype=np.uint8).tobytes()
    key = os.urandom(4)

    def best(fn, reps=5):  # the median of reps (not the best: a skeptic reads medians)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return len(data) / statistics.median(times) / 1e9

    uninstall_websocket_client_mask()
    frame = ABNF.create_frame(data, ABNF.OPCODE_BINARY)
    rows = [f"stock   ABNF.mask 12 MB:   {best(lambda: ABNF.mask(key, data)):6.2f} GB/s"]
    rows.append(f"stock   ABNF.format 12 MB: {best(frame.format):6.2f} GB/s")
    install_websocket_client_mask()
    rows.append(f"numpy   ABNF.mask 12 MB:   {best(lambda: ABNF.mask(key, data)):6.2f} GB/s")
    rows.append(f"numpy   ABNF.format 12 MB: {best(frame.format):6.2f} GB/s")
    buf = bytearray(data)
    rows.append(f"apply_mask (in place):     {best(lambda: apply_mask(buf, key)):6.2f} GB/s")
    rows.append(f"mask_bytes (copying):      {best(lambda: mask_bytes(data, key)):6.2f} GB/s")
    return rows


def run_server(impl: str, tls_dir: str) -> Tuple[subprocess.Popen, int, str]:
    port_file = f"/tmp/bench_transport_{os.getpid()}_{impl}.port"
    if os.path.exists(port_file):
        os.unlink(port_file)
    cmd = [sys.executable, __file__, "--serve", port_file, "--impl", impl]
    if tls_dir:
        cmd += ["--tls-dir", tls_dir]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    with open(port_file) as f:
        port = int(f.read())
    os.unlink(port_file)
    return proc, port, port_file


def bench_impl(
    impl: str, sizes: List[int], repeat: int, small_n: int, tls_dir: str = ""
) -> List[str]:
    import ssl

    import websocket

    from vuer_sync.client_transport import install_websocket_client_mask

    install_websocket_client_mask()
    proc, port, _ = run_server(impl, tls_dir)
    rows = []
    ws = websocket.create_connection(
        f"{'wss' if tls_dir else 'ws'}://127.0.0.1:{port}/",
        timeout=60,
        skip_utf8_validation=True,
        sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False},
    )
    impl = impl + ("+tls" if tls_dir else "")
    try:

        def cpu_reply() -> float:
            msg = ws.recv()
            assert isinstance(msg, str) and msg.startswith("cpu "), msg
            return float(msg[4:])

        for size in sizes:
            n = max(1, min(repeat, (200 * MB) // size)) if size >= MB else small_n
            payload = os.urandom(size)
            # server -> client
            results = []
            for _ in range(3):
                ws.send(f"s2c {n} {size}")
                t = time.perf_counter()
                for _ in range(n):
                    op, data = ws.recv_data()
                    assert len(data) == size
                wall = time.perf_counter() - t
                results.append((wall, cpu_reply()))
            wall, cpu = _median(results)
            rows.append(_row(impl, "s->c", size, n, wall, cpu))
            if impl.startswith("fast") and size < MB:
                results = []
                for _ in range(3):
                    ws.send(f"s2cmany {n} {size}")
                    t = time.perf_counter()
                    for _ in range(n):
                        ws.recv_data()
                    wall = time.perf_counter() - t
                    results.append((wall, cpu_reply()))
                wall, cpu = _median(results)
                rows.append(_row(impl + "+send_many", "s->c", size, n, wall, cpu))
            # client -> server
            results = []
            for _ in range(3):
                ws.send(f"c2s {n}")
                t = time.perf_counter()
                for _ in range(n):
                    ws.send_binary(payload)
                cpu = cpu_reply()
                wall = time.perf_counter() - t
                results.append((wall, cpu))
            wall, cpu = _median(results)
            rows.append(_row(impl, "c->s", size, n, wall, cpu))
        ws.send("quit")
    finally:
        ws.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return rows


def _median(results: List[Tuple[float, float]]) -> Tuple[float, float]:
    """The (wall, cpu) pair of the median wall time of the repetitions."""
    return sorted(results)[len(results) // 2]


def _row(impl: str, direction: str, size: int, n: int, wall: float, cpu: float) -> str:
    total = size * n
    if size >= MB:
        return (
            f"{impl:16s} {direction} {size / MB:5.0f} MB x{n:<4d}  {total / MB / wall:8.0f} MB/s   "
            f"server CPU {cpu * 1e3 / (total / MB):5.2f} ms/MB"
        )
    return (
        f"{impl:16s} {direction} {size:5d} B  x{n:<6d} {n / wall / 1e3:8.1f} k msg/s  "
        f"server CPU {cpu * 1e6 / n:5.2f} us/msg"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=["fast", "stock", "both"], default="both")
    ap.add_argument("--sizes", default="100,1048576,12582912,52428800")
    ap.add_argument("--repeat", type=int, default=8, help="large messages per measurement")
    ap.add_argument("--small-n", type=int, default=20000, help="small messages per measurement")
    ap.add_argument("--no-mask-bench", action="store_true")
    ap.add_argument("--tls", action="store_true", help="wss:// with a throw-away self-signed cert")
    ap.add_argument("--tls-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.impl, args.tls_dir or "")
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if not args.no_mask_bench:
        for row in bench_mask():
            print(row)
    sizes = [int(s) for s in args.sizes.split(",")]
    impls = ["fast", "stock"] if args.impl == "both" else [args.impl]
    with tempfile.TemporaryDirectory() as tls_dir:
        if args.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=localhost", "-keyout", os.path.join(tls_dir, "key.pem"),
                 "-out", os.path.join(tls_dir, "cert.pem")],
                check=True, capture_output=True,
            )  # fmt: skip
        for impl in impls:
            rows = bench_impl(impl, sizes, args.repeat, args.small_n, tls_dir if args.tls else "")
            for row in rows:
                print(row, flush=True)


if __name__ == "__main__":
    main()
