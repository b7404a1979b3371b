"""Row 4, its optional part: 12 MB messages server->client into headless Chromium
(``/usr/bin/chromium``, started directly), reported as two more row-4 metrics."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Dict, Optional

from common import Agent, client_event, hangup, stop_process, viser_subprotocol

CHROMIUM = "/usr/bin/chromium"

#: (row-4 metric, label, unit, better, key in :func:`browser_s2c`'s result)
METRICS = [("browser_s2c_MB_per_s", "server->client (big) into headless Chromium (Vuer: "
            "deflate, as aiohttp negotiates it by default)", "MB/s", "higher", "MB_per_s"),
           ("browser_s2c_cpu_ms_per_MB", "server->client (big) into Chromium, server CPU "
            "(Vuer: deflate)", "ms/MB", "lower", "cpu_ms_per_MB")]
#: the same with Vuer's compression off (``compress=False``), in a server of its own;
#: vuer_sync (which strips the deflate offer) and viser repeat their line above
PLAIN_METRICS = [("browser_plain_MB_per_s", "into Chromium, no compression anywhere "
                  "(Vuer: compress=False)", "MB/s", "higher", "MB_per_s"),
                 ("browser_plain_cpu_ms_per_MB", "into Chromium, no compression anywhere, "
                  "server CPU", "ms/MB", "lower", "cpu_ms_per_MB")]

_PAGE = """<!doctype html><title>bench</title><script>
const q = new URLSearchParams(location.search);
const target = Number(q.get("target"));
const proto = q.get("proto");
const init = Uint8Array.from(atob(q.get("init")), (c) => c.charCodeAt(0));
const ws = proto ? new WebSocket(q.get("ws"), [proto]) : new WebSocket(q.get("ws"));
ws.binaryType = "arraybuffer";
let got = 0, reported = false;
const report = (what) => fetch("/report?" + what, {cache: "no-store"});
ws.onopen = () => { if (!proto) ws.send(init); report("event=open"); };
ws.onerror = () => report("event=error");
ws.onmessage = (e) => {
  if (reported) return;
  got += e.data.byteLength;
  if (got >= target) {
    reported = true;
    report("event=done&b=" + got + "&t=" + (performance.timeOrigin + performance.now()));
    ws.close();
  }
};
</script>"""


def browser_available() -> bool:
    return os.path.exists(CHROMIUM)


class _PageServer:
    """Serves the counting page and collects its reports (127.0.0.1, a thread)."""

    def __init__(self) -> None:
        import http.server
        import threading
        from urllib.parse import parse_qs, urlsplit

        reports: Dict[str, Dict[str, str]] = {}
        cv = threading.Condition()
        self.reports, self.cv = reports, cv

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                u = urlsplit(self.path)
                if u.path == "/report":
                    q = {k: v[0] for k, v in parse_qs(u.query).items()}
                    with cv:
                        reports[q.get("event", "?")] = q
                        cv.notify_all()
                    body, ctype = b"ok", "text/plain"
                else:
                    body, ctype = _PAGE.encode(), "text/html"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={
            "poll_interval": 0.05}, name="bench-page", daemon=True)
        self.thread.start()

    def wait(self, event: str, timeout: float) -> Optional[Dict[str, str]]:
        with self.cv:
            self.cv.wait_for(lambda: event in self.reports or "error" in self.reports, timeout)
            return self.reports.get(event)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def browser_s2c(agent: Agent, impl: str, P: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Big server->client messages into headless Chromium: a page on a loopback origin counts
    bytes in ``onmessage`` and reports back over HTTP. Chromium is started directly (no
    Playwright: its CDP session receives a copy of every websocket frame, which would make
    Playwright, not the browser, the bottleneck)."""
    import base64
    import shutil
    import tempfile
    from urllib.parse import urlencode

    prep = agent.call("prepare_big", size=P["big_size"], timeout=120)
    k = P["browser_k"]
    target = k * prep["payload"]
    ps = _PageServer()
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    proc = None
    try:
        query = {"ws": f"ws://127.0.0.1:{agent.port}/", "target": str(target),
                 "init": base64.b64encode(client_event("INIT", {"client": "browser"})).decode()}
        if impl == "viser":
            query["proto"] = viser_subprotocol()
        url = f"http://127.0.0.1:{ps.port}/page?{urlencode(query)}"
        proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
             "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessChecks", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if ps.wait("open", 60) is None:
            raise RuntimeError(f"the page did not connect: {ps.reports}")
        agent.call("wait_clients", n=1, wait=30, timeout=60)
        time.sleep(0.3)  # let viser's initial replay through
        cpu0 = agent.cpu_s()
        t0 = time.time()
        agent.call("send_big", k=k, timeout=600)
        done = ps.wait("done", 300)
        cpu1 = agent.cpu_s()
        if done is None:
            raise RuntimeError(f"the page did not receive {target} B: {ps.reports}")
    finally:
        if proc is not None:
            stop_process(proc, 10)
        ps.close()
        shutil.rmtree(profile, ignore_errors=True)
        hangup(agent, None)
    mb = target / 1e6
    return {"MB_per_s": mb / max(1e-9, float(done["t"]) / 1e3 - t0),
            "cpu_ms_per_MB": (cpu1 - cpu0) * 1e3 / mb}
