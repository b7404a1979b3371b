"""12 MB client->server uploads: websocket-client's own send path (pure-Python mask, a copy of
the rest of the frame after every partial send; a bare websocket-client connection) vs
VuerClient (websocket-client only for the handshake, then our transport: numpy mask, zero-copy
writes).

    python benchmarks/bench_client_upload.py [--mb 12] [--n 10] [--smoke]

Writes benchmarks/out/client_upload.json. Loopback only; bounded loops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

from vuer_sync import Vuer, VuerClient, client_transport, codec
from vuer_sync.events import ClientEvent


class Blob(ClientEvent):
    etype = "BLOB"


def run(mb: float, n: int, fast: bool) -> dict:
    import websocket

    got = threading.Semaphore(0)
    with Vuer(port=0, WEBSOCKET_MAX_SIZE=int(mb * 2**20) + 4096) as app:
        app.add_handler("BLOB", lambda ev, s: got.release())
        payload = os.urandom(int(mb * 2**20))
        times = []
        if fast:
            with VuerClient(f"ws://127.0.0.1:{app.port}", max_size=2**30) as c:
                for _ in range(n):
                    t0 = time.perf_counter()
                    c.send(Blob(value=payload), timeout=60)
                    got.acquire(timeout=60)
                    times.append(time.perf_counter() - t0)
        else:  # websocket-client sending by itself, its stock mask
            client_transport.uninstall_websocket_client_mask()
            ws = websocket.create_connection(f"ws://127.0.0.1:{app.port}", timeout=60)
            try:
                ws.send_binary(codec.encode(ClientEvent(etype="INIT", value={}).serialize()))
                frame = codec.encode(Blob(value=payload).serialize())
                for _ in range(n):
                    t0 = time.perf_counter()
                    ws.send_binary(frame)
                    got.acquire(timeout=60)
                    times.append(time.perf_counter() - t0)
            finally:
                ws.close()
    best = sorted(times)[len(times) // 2]
    return {"mask": "VuerClient" if fast else "websocket-client", "mb": mb, "n": n,
            "median_s": best, "MB_per_s": mb / best}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=12)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    args = ap.parse_args()
    if args.smoke:
        args.mb, args.n = 0.5, 2
    stock = run(args.mb, args.n, fast=False)
    fast = run(args.mb, args.n, fast=True)
    result = {"machine": platform.platform(), "python": platform.python_version(),
              "cpus": os.cpu_count(), "rows": [stock, fast],
              "speedup": fast["MB_per_s"] / stock["MB_per_s"]}
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "client_upload.json").write_text(json.dumps(result, indent=2))
    print(f"{args.mb:g} MB client->server, median of {args.n}")
    for r in result["rows"]:
        print(f"  {r['mask']:>17}: {r['MB_per_s']:8.1f} MB/s")
    print(f"  speedup: {result['speedup']:.1f}x")


if __name__ == "__main__":
    main()
