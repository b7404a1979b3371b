"""The client's side of the transport: what :class:`~vuer_sync.client.VuerClient` needs from
websocket-client.

* :func:`open_socket` -- websocket-client's HTTP upgrade (headers, TLS options, proxies,
  redirects, ``suppress_origin``...), then the connected socket is handed over: the client
  runs on our own :class:`~vuer_sync.transport.WebSocketConnection`, websocket-client reads
  and writes nothing after the handshake.
* :func:`install_websocket_client_mask` -- replace websocket-client's pure-Python masking
  (about 0.27 GB/s) with :func:`vuer_sync.transport.frames.mask_bytes` (numpy), for code that
  sends frames through websocket-client itself (``benchmarks/bench_transport.py`` uses it as a
  peer). ``VuerClient`` does not need it any more (our transport masks with numpy) and no
  longer installs it.

This module is the only place that knows websocket-client's layout; the transport
(:mod:`vuer_sync.transport`) does not import websocket-client.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, Optional, Tuple, Union

from .logsafe import redact_secrets
from .transport.frames import mask_bytes

__all__ = ["install_websocket_client_mask", "open_socket", "uninstall_websocket_client_mask"]

_WSC_ORIGINALS: Dict[str, Any] = {}


def open_socket(uri: str, *, sslopt: Dict[str, Any], timeout: float,
                **options: Any) -> Tuple[socket.socket, bytes]:
    """Connect to ``uri`` and do the websocket upgrade with websocket-client; return the
    connected socket (plain or ``ssl.SSLSocket``, timeout cleared) and the bytes read past
    the ``101`` response (for ``WebSocketConnection(initial_data=...)``).

    ``options`` go to ``websocket.WebSocket.connect`` (``header=``, ``suppress_origin=``,
    ``http_proxy_host=``...). websocket-client reads the response one byte at a time
    (``recv_line``), so nothing past it is read from the socket; anything its frame buffer
    held (it holds nothing before its first ``recv``) is returned all the same. The
    ``WebSocket`` object is detached (``sock = None``, ``connected = False``: its public
    attributes) so that it never touches the socket again.

    Raises ``ConnectionError`` if the upgrade is refused, ``OSError``/``ssl.SSLError`` if
    the connection or the TLS handshake fails.

    >>> open_socket("ws://127.0.0.1:9", sslopt={}, timeout=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ConnectionRefusedError: ...
    """
    import websocket

    ws = websocket.WebSocket(sslopt=sslopt, skip_utf8_validation=True)
    try:
        ws.connect(uri, timeout=timeout, **options)
    except websocket.WebSocketException as e:  # handshake refused, closed during it...
        ws.shutdown()
        raise ConnectionError(f"cannot connect to {redact_secrets(uri)}: {e}") from e
    sock: Optional[socket.socket] = ws.sock
    if sock is None:  # pragma: no cover - connect() returned without a socket
        raise ConnectionError(f"cannot connect to {redact_secrets(uri)}: no socket")
    fb = getattr(ws, "frame_buffer", None)
    initial = b"".join(getattr(fb, "recv_buffer", None) or [])
    ws.sock = None
    ws.connected = False
    sock.settimeout(None)
    return sock, initial


def _wsc_mask(mask_key: Union[str, bytes], data: Union[str, bytes, None]) -> bytes:
    """Drop-in for ``websocket._abnf.ABNF.mask`` (same str/None handling)."""
    if data is None:
        data = b""
    if isinstance(mask_key, str):
        mask_key = mask_key.encode("latin-1")
    if isinstance(data, str):
        data = data.encode("latin-1")
    return mask_bytes(data, mask_key)


def _wsc_module_mask(mask_value: Any, data_value: Any) -> bytes:
    """Drop-in for ``websocket._abnf._mask(array('B', key), array('B', data))``."""
    return mask_bytes(data_value, bytes(mask_value))


_wsc_mask.vuer_sync_numpy = True  # type: ignore[attr-defined]
_wsc_module_mask.vuer_sync_numpy = True  # type: ignore[attr-defined]


def install_websocket_client_mask() -> bool:
    """Make websocket-client mask outgoing frames with numpy instead of pure Python.

    websocket-client 1.x masks every frame it sends through the static method
    ``websocket._abnf.ABNF.mask``, which copies both arguments into ``array('B')`` and calls
    the module-level ``websocket._abnf._mask`` (big-int XOR, about 0.27 GB/s). Both are replaced:
    ``ABNF.mask`` by a version that skips the array copies, ``_mask`` for any other caller.

    Only for code that sends through websocket-client itself: :class:`~vuer_sync.VuerClient`
    writes with our transport and does not call this.

    Idempotent. Returns True if the numpy mask is in place after the call (installed now or
    before), False if websocket-client is not importable or does not have the expected layout.
    """
    try:
        from websocket import _abnf
    except ImportError:
        return False
    abnf_cls = getattr(_abnf, "ABNF", None)
    if abnf_cls is None or "mask" not in vars(abnf_cls) or not hasattr(_abnf, "_mask"):
        return False
    if getattr(abnf_cls.mask, "vuer_sync_numpy", False):
        return True
    _WSC_ORIGINALS["ABNF.mask"] = vars(abnf_cls)["mask"]
    # websocket-client's own (private) masking function, replaced on purpose: this is the
    # one place we touch another package's private name (restored by uninstall)
    _WSC_ORIGINALS["_mask"] = _abnf._mask  # noqa: SLF001
    _abnf._mask = _wsc_module_mask  # noqa: SLF001
    abnf_cls.mask = staticmethod(_wsc_mask)
    return True


def uninstall_websocket_client_mask() -> bool:
    """Undo :func:`install_websocket_client_mask`. Returns True if something was restored."""
    if not _WSC_ORIGINALS:
        return False
    from websocket import _abnf

    _abnf.ABNF.mask = _WSC_ORIGINALS.pop("ABNF.mask")  # type: ignore[method-assign]
    _abnf._mask = _WSC_ORIGINALS.pop("_mask")  # noqa: SLF001 - see install
    return True
