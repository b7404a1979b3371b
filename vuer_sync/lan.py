"""A headset on the LAN: the machine's addresses, a cached self-signed certificate for them,
the URL with its token, and a QR code of it for the terminal.

WebXR needs a secure origin, so a Quest, Vision Pro or Pico browser that opens this server by
its LAN address needs HTTPS. ``Vuer(host="0.0.0.0", tls="self-signed")`` (or
``vuer-sync demo --lan``) calls :func:`ensure_certificate` once: the key and certificate are
kept in :func:`cache_dir` and made again only when they no longer cover the machine's
addresses or are about to expire. Needs the ``lan`` extra (``pip install
"vuer-sync[lan]"``: ``cryptography`` for the certificate, ``segno`` for the QR code).

>>> from vuer_sync import lan
>>> lan.lan_url("192.168.1.20", 8012, "s3cret")
'https://192.168.1.20:8012/?ws=wss://192.168.1.20:8012/%3Ftoken%3Ds3cret'
>>> lan.advertised_addresses("127.0.0.1")
[]
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Set, Tuple

logger = logging.getLogger("vuer_sync.lan")

__all__ = [
    "advertised_addresses", "cache_dir", "certificate_names", "ensure_certificate",
    "lan_addresses", "lan_banner", "lan_url", "qr_text",
]

CERT_FILE, KEY_FILE = "lan-cert.pem", "lan-key.pem"
#: Apple's limit for TLS server certificates (Vision Pro's Safari): at most 398 days
VALID_DAYS = 397
_RENEW_BEFORE = datetime.timedelta(days=7)
_ANY = ("0.0.0.0", "", "::", "*")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _usable(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def lan_addresses() -> List[str]:
    """This machine's IPv4 addresses that another device could reach (loopback and
    link-local left out), the one of the default route first. Sends no packet: the route
    is asked with a UDP ``connect``."""
    found: List[str] = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.254.254.254", 9))  # no packet: only picks the outgoing interface
        found.append(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    if sys.platform.startswith("linux"):
        found += _linux_interface_addresses()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.append(str(info[4][0]))
    except OSError:
        pass
    out: List[str] = []
    for a in found:
        if _usable(a) and a not in out:
            out.append(a)
    return out


def _linux_interface_addresses() -> List[str]:
    import fcntl
    import struct

    siocgifaddr = 0x8915
    out = []
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), siocgifaddr, req)
                out.append(socket.inet_ntoa(res[20:24]))
            except OSError:
                continue  # no IPv4 address on that interface
    finally:
        s.close()
    return out


def advertised_addresses(host: str) -> List[str]:
    """The addresses a headset should use for a server bound to ``host``: every LAN
    address for ``0.0.0.0``/``::``, ``host`` itself for one address, none for loopback (over
    USB, ``adb reverse`` makes ``localhost`` on the headset this machine)."""
    if host in _ANY:
        return lan_addresses()
    if host in _LOOPBACK_NAMES:
        return []
    return [host]


def cache_dir() -> Path:
    """Where the certificate is kept: ``$VUER_SYNC_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/vuer_sync``, else ``~/.cache/vuer_sync``."""
    env = os.environ.get("VUER_SYNC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vuer_sync"


def _need_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ImportError("tls='self-signed' makes a certificate with the 'cryptography' "
                          "package: pip install 'vuer-sync[lan]'") from None


def certificate_names(cert_path: str) -> Tuple[List[str], List[str]]:
    """The subject alternative names of a PEM certificate: ``(dns_names, ip_addresses)``."""
    _need_cryptography()
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (list(san.get_values_for_type(x509.DNSName)),
            [str(ip) for ip in san.get_values_for_type(x509.IPAddress)])


def _still_good(cert_path: Path, names: Set[str], ips: Set[str]) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        have_dns, have_ip = certificate_names(str(cert_path))
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    not_after = cert.not_valid_after_utc if hasattr(cert, "not_valid_after_utc") \
        else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return not_after - now > _RENEW_BEFORE and names <= set(have_dns) and ips <= set(have_ip)


def ensure_certificate(addresses: Iterable[str] = (), names: Sequence[str] = (),
                       directory: Optional[Path] = None) -> Tuple[str, str]:
    """The paths ``(cert, key)`` of a self-signed certificate for ``localhost``,
    ``127.0.0.1``, ``::1``, this machine's name and ``addresses``/``names``.

    Made once and kept in ``directory`` (default :func:`cache_dir`; the key is readable by
    its owner only); made again, with the old addresses kept, only when one is missing
    from it or it expires within a week.
    """
    _need_cryptography()
    directory = Path(directory) if directory is not None else cache_dir()
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    want_ips = {"127.0.0.1", "::1"} | {str(ipaddress.ip_address(a)) for a in addresses}
    want_dns = {n.lower() for n in ("localhost", socket.gethostname(), *names)
                if n and n.isascii()}
    if cert_path.is_file() and key_path.is_file() and _still_good(cert_path, want_dns,
                                                                  want_ips):
        return str(cert_path), str(key_path)
    if cert_path.is_file():  # keep what it covered (a laptop moving between networks)
        try:
            old_dns, old_ip = certificate_names(str(cert_path))
            want_dns |= set(old_dns)
            want_ips |= set(old_ip)
        except Exception:
            pass
    _write_certificate(cert_path, key_path, sorted(want_dns), sorted(want_ips))
    logger.info("made a self-signed certificate for %s in %s",
                ", ".join(sorted(want_dns) + sorted(want_ips)), directory)
    return str(cert_path), str(key_path)


def _write_certificate(cert_path: Path, key_path: Path, dns: List[str], ips: List[str]
                       ) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vuer_sync on the LAN")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in dns] + \
        [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    os.replace(tmp_key, key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_cert, cert_path)


def lan_url(address: str, port: int, token: Optional[str]) -> str:
    """The web client's URL on ``address`` over HTTPS, its websocket carrying ``token``."""
    host = f"[{address}]" if ":" in address else address
    url = f"https://{host}:{port}/"
    if token:
        url += f"?ws=wss://{host}:{port}/%3Ftoken%3D{token}"
    return url


def qr_text(data: str) -> Optional[str]:
    """``data`` as a QR code drawn with block characters for a terminal, or ``None`` when
    ``segno`` is not installed."""
    try:
        import segno
    except ImportError:
        return None
    import io

    out = io.StringIO()
    segno.make(data, error="l", micro=False).terminal(out=out, compact=True, border=2)
    return out.getvalue().rstrip("\n")


def lan_banner(urls: Sequence[str], port: int, loopback: bool = False, qr: bool = True
               ) -> List[str]:
    """The banner lines for a headset: each LAN URL, and a QR code of the first."""
    usb = (f"a headset on USB: adb reverse tcp:{port} tcp:{port}, then open the Local URL "
           "on it")
    if not urls:
        why = "bound to loopback (host='0.0.0.0' for the LAN)" if loopback \
            else "no LAN address found"
        return [f"LAN:     {why}; {usb}"]
    lines = [f"LAN:     {u}" for u in urls]
    lines.append("         (self-signed certificate: the headset's browser warns once; "
                 "choose Advanced, then Proceed)")
    if qr:
        code = qr_text(urls[0])
        if code is None:
            lines.append("         (pip install 'vuer-sync[lan]' for a QR code here)")
        else:
            lines += ["", code]
    return lines
