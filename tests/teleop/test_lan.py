"""A headset on the LAN: tls="self-signed" (certificate made once, SAN, key mode), the token,
the banner with the LAN URL and its QR code, Host/Origin for that address, the real web client
over the self-signed HTTPS origin in headless Chromium, and the teleop example replayed."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import websocket

from vuer_sync import Vuer, lan

from browser import Chromium, require_chromium
from conftest import require

ROOT = Path(__file__).resolve().parents[2]
RECORDING = Path(__file__).resolve().parent / "hand_move.msgpack"
NO_VERIFY = {"cert_reqs": ssl.CERT_NONE}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    require("cryptography")
    require("segno")
    monkeypatch.setenv("VUER_SYNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VUER_TOKEN", raising=False)
    return tmp_path / "cache"


def wss(app, address, host_header, origin, token):
    q = f"?token={token}" if token else ""
    return websocket.create_connection(f"wss://{address}:{app.port}/{q}", timeout=5,
                                       sslopt=NO_VERIFY, host=host_header, origin=origin)


def test_certificate_is_made_once_for_the_addresses(cache):
    cert, key = lan.ensure_certificate(["198.51.100.7"])
    dns, ips = lan.certificate_names(cert)
    assert {"127.0.0.1", "::1", "198.51.100.7"} <= set(ips) and "localhost" in dns
    assert os.stat(key).st_mode & 0o777 == 0o600
    first = Path(cert).read_bytes()
    assert lan.ensure_certificate(["198.51.100.7"]) == (cert, key)
    assert Path(cert).read_bytes() == first  # cached: not made again
    lan.ensure_certificate(["203.0.113.9"])  # a new network: made again, old address kept
    assert {"198.51.100.7", "203.0.113.9"} <= set(lan.certificate_names(cert)[1])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)  # a pair the server can load


def test_lan_server_banner_token_san_and_origin(cache, capsys):
    """A server bound to one address (what a headset opens) prints that LAN URL with its
    token and a QR code, puts the address in the certificate and accepts exactly that
    origin. The tests stay on loopback: 127.0.0.2 stands for the LAN address (any address
    of 127/8 is this machine on Linux); what ``host="0.0.0.0"`` would advertise is every
    address of :func:`lan.lan_addresses`, checked without binding to it."""
    with pytest.raises(ValueError, match="self-signed"):
        Vuer(tls="letsencrypt")
    assert lan.advertised_addresses("0.0.0.0") == lan.lan_addresses()
    assert lan.advertised_addresses("127.0.0.1") == []  # loopback: adb reverse, no LAN URL
    lan_ip = "127.0.0.2"
    app = Vuer(host=lan_ip, port=0, tls="self-signed")  # token required: one is made
    try:
        assert app.token and len(app.token) >= 16 and app.cert and app.key
        app.start(block=False)
        out = capsys.readouterr().out
        assert app.lan_addresses == [lan_ip]
        url = f"https://{lan_ip}:{app.port}/?ws=wss://{lan_ip}:{app.port}/%3Ftoken%3D{app.token}"
        assert f"LAN:     {url}" in out
        assert "█" in out and "▀" in out  # the QR code (segno, compact)
        assert lan_ip in lan.certificate_names(app.cert)[1]
        own = f"{lan_ip}:{app.port}"
        ws = wss(app, lan_ip, own, f"https://{own}", app.token)  # the page at the LAN URL
        ws.close()
        for origin, token in ((f"https://198.51.100.99:{app.port}", app.token),  # another
                              (f"https://{own}:1", app.token),
                              (f"https://{own}", None), (f"https://{own}", "wrong")):
            with pytest.raises(websocket.WebSocketBadStatusException) as e:
                wss(app, lan_ip, own, origin, token)
            assert e.value.status_code == 403, origin
    finally:
        app.stop()
    again = Vuer(host=lan_ip, port=0, tls="self-signed", token="given")
    assert again.cert == app.cert and again.token == "given"  # the cached certificate


def test_web_client_over_self_signed_https(cache):
    require_chromium()
    require("vuer")
    app = Vuer(port=0, tls="self-signed")
    app.start(block=False)
    try:
        with Chromium(800, 600, extra_args=("--ignore-certificate-errors",)) as chrome:
            page = chrome.open(app.local_url)
            session = app.wait_for_session(30, client="browser")
            assert session.origin == f"https://localhost:{app.port}"
            assert session.base_url == f"https://localhost:{app.port}"
            assert (f"https://localhost:{app.port}/", 200) in [
                (u.split("?")[0], st) for u, st in chrome.responses]
            # the session above came over wss:// with the token (required: one was made)
            assert session.init.value["client"] == "browser" and app.token
            assert not chrome.failed_loopback, chrome.failed_loopback  # every asset over TLS
            page.close()
        assert not chrome.leftover
    finally:
        app.stop()


def test_teleop_example_replays_the_recording(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "teleop.py"), "--replay",
                        str(RECORDING), "--port", "0", "--seconds", "2.5"], cwd=str(tmp_path),
                       env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60, check=False)
    assert r.returncode == 0 and "Traceback" not in r.stdout, r.stdout
    assert re.search(r"\d{3} control steps in 2\.5 s", r.stdout), r.stdout
    assert "replayed 60 HAND_MOVE frames; received 60," in r.stdout, r.stdout
    assert "right hand missing in 6" in r.stdout, r.stdout
    m = re.search(r"pinches: 1; target moved ([\d.]+) m while pinched", r.stdout)
    assert m and float(m.group(1)) > 0.05, r.stdout


def test_demo_lan_command(cache, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", VUER_SYNC_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # --host: one address (127.0.0.2 stands for the LAN one), so the test stays on loopback
    r = subprocess.run([sys.executable, "-m", "vuer_sync", "demo", "--lan", "--host",
                        "127.0.0.2", "--port", "0", "--seconds", "1", "--points", "100"],
                       cwd=str(tmp_path), env=env,
                       text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                       check=False)
    assert r.returncode == 0 and "Traceback" not in r.stdout, r.stdout
    assert re.search(r"Local:\s+https://localhost:\d+/\?ws=wss://localhost:\d+/%3Ftoken%3D\S{16,}",
                     r.stdout), r.stdout
    assert re.search(r"LAN:\s+https://127\.0\.0\.2:\d+/", r.stdout), r.stdout
    assert (cache / lan.CERT_FILE).is_file()
