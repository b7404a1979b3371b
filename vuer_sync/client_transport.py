"""The client's side of the transport: what :class:`~vuer_sync.client.VuerClient` needs from
websocket-client beyond its public calls.

* :func:`install_websocket_client_mask` -- replace websocket-client's pure-Python masking (about
  0.27 GB/s) with :func:`vuer_sync.transport.frames.mask_bytes` (numpy).
* :func:`write_binary` -- one masked binary frame written whole with ``sendall``.

This module is the only place that knows websocket-client's layout; the transport
(:mod:`vuer_sync.transport`) does not import websocket-client.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Union

from .transport.frames import OP_BINARY, encode_header, mask_bytes

__all__ = ["install_websocket_client_mask", "uninstall_websocket_client_mask", "write_binary"]

_WSC_ORIGINALS: Dict[str, Any] = {}


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


def write_binary(ws: Any, payload: Any) -> None:
    """Write ``payload`` as one masked, final binary frame on websocket-client's connection
    ``ws``: the numpy mask, then ``sendall`` of the header and the body.

    websocket-client's own ``send_frame`` re-slices the rest of a large frame after every
    partial send (a copy each time). This uses only public attributes of its ``WebSocket``:
    ``sock``, the connected socket, and ``lock``, the lock its ``send_frame``, ``ping``,
    ``pong`` and ``send_close`` hold while writing. Sharing that lock is what keeps frames
    whole: websocket-client's reader answers pings itself, and its pong must never land
    inside one of these frames. The wire bytes are the same as ``ws.send_binary(payload)``'s
    (one frame, a fresh random mask key).
    """
    key = os.urandom(4)
    header = encode_header(len(payload), OP_BINARY, mask_key=key)
    body = mask_bytes(payload, key)
    sock = ws.sock
    with ws.lock:
        sock.sendall(header)
        sock.sendall(body)
