"""Cross-site websocket hijacking, tried with a real browser: a page on another origin
must not be able to open our websocket, while our own page can."""

from __future__ import annotations

import functools
import http.server
import threading

import browser
from browser import Chromium, require_chromium
from conftest import wait_until

EVIL = "evil.test"


class _Letting(Chromium):
    """Our Chromium, with one extra host name (mapped to 127.0.0.1 by the test's
    --host-resolver-rules) let through the offline route."""

    host = EVIL

    def _route(self, route):
        if (route.request.url.split("/")[2].split(":")[0]) == self.host:
            route.continue_()
        else:
            super()._route(route)


def resolving_to_loopback(monkeypatch, name):
    """Chromium's flags with ``name`` resolving to 127.0.0.1 (and nothing else off-box)."""
    rules = f"--host-resolver-rules=MAP {name} 127.0.0.1 , MAP * ~NOTFOUND , " \
            "EXCLUDE localhost , EXCLUDE 127.0.0.1 , EXCLUDE [::1]"
    monkeypatch.setattr(browser, "CHROMIUM_ARGS", tuple(
        rules if a.startswith("--host-resolver-rules") else a for a in browser.CHROMIUM_ARGS))


def test_a_page_from_another_origin_cannot_connect(app, tmp_path, monkeypatch):
    require_chromium()
    app.start(block=False)
    (tmp_path / "attack.html").write_text(
        "<title>pending</title><script>"
        f"const ws = new WebSocket('ws://127.0.0.1:{app.port}/');"
        "ws.onopen = () => { document.title = 'open'; };"
        "ws.onerror = () => { document.title = 'refused'; };"
        "</script>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=site.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    resolving_to_loopback(monkeypatch, EVIL)
    try:
        with _Letting(800, 600) as chrome:
            page = chrome.open(f"http://{EVIL}:{site.server_address[1]}/attack.html")
            assert wait_until(lambda: page.title() != "pending", 15)
            assert page.title() == "refused"
            assert not app.sessions  # the upgrade was refused (403), nothing connected
            own = chrome.open(f"http://127.0.0.1:{app.port}/")
            session = app.wait_for_session(30, client="browser")
            assert session.origin == f"http://127.0.0.1:{app.port}"
            own.close()
            # the same page connects once its origin is explicitly allowed
            app.allowed_origins.append(f"http://{EVIL}:{site.server_address[1]}")
            page.reload()
            assert wait_until(lambda: page.title() == "open", 15)
            page.close()
    finally:
        site.shutdown()
        site.server_close()
        t.join(5)


REBOUND = "attacker.example"


class _LettingRebound(_Letting):
    host = REBOUND


def test_a_page_whose_name_rebinds_to_loopback_gets_nothing(app, tmp_path, monkeypatch):
    """DNS rebinding: the attacker's page, once its name points at 127.0.0.1, is same-origin
    with our server (Origin == Host), so only the Host allow-list stands in its way."""
    require_chromium()
    (tmp_path / "secret.txt").write_text("secret")
    app.workspace = str(tmp_path)
    app.start(block=False)
    resolving_to_loopback(monkeypatch, REBOUND)
    base = f"http://{REBOUND}:{app.port}"
    with _LettingRebound(800, 600) as chrome:
        page = chrome.open(f"{base}/")
        assert (f"{base}/", 403) in chrome.responses
        assert "host not allowed" in page.content()
        # the page's own script: a websocket and a file read, both same-origin after rebinding
        page.evaluate(
            "() => { document.title = 'pending';"
            f" const ws = new WebSocket('ws://{REBOUND}:{app.port}/');"
            " ws.onopen = () => { document.title = 'open'; };"
            " ws.onerror = () => { document.title = 'refused'; }; }")
        assert wait_until(lambda: page.title() != "pending", 15)
        assert page.title() == "refused"
        status = page.evaluate("async () => (await fetch('/workspace/secret.txt')).status")
        assert status == 403
        assert not app.sessions
        # a deployment that serves under that name says so, and then it works
        app.allowed_hosts.append(REBOUND)
        page.goto(f"{base}/")
        session = app.wait_for_session(30, client="browser")
        assert session.origin == base
        assert page.evaluate("async () => (await fetch('/workspace/secret.txt')).status") == 200
        page.close()
