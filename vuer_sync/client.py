"""``VuerClient``: a blocking client for a Vuer server (ours or the real asyncio one).

Built on websocket-client. ``client.send @ event`` enqueues and returns; ``client.send(event)``
blocks until the event is written; ``recv()`` and ``for event in client`` read server events.

>>> from vuer_sync import Vuer, VuerClient
>>> from vuer_sync.events import ClientEvent
>>> class Hello(ClientEvent):
...     etype = "HELLO"
>>> with Vuer(port=0) as app:  # doctest: +ELLIPSIS
...     seen = []
...     _ = app.add_handler("HELLO", lambda ev, s: seen.append(ev.value))
...     with VuerClient(f"ws://localhost:{app.port}") as client:
...         client.send(Hello(value="hi"))
...         app.wait_for_session(5).flush()
Vuer server (vuer_sync ...)
...
>>> seen
['hi']
"""

from __future__ import annotations

import datetime
import logging
import platform
import queue
import ssl
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional

import msgpack

from . import codec
from ._threads import start_thread
from ._version import __version__
from .client_transport import install_websocket_client_mask, write_binary
from .config import env_bool, env_int, env_str
from .errors import ProtocolError, SessionClosed
from .events import ClientEvent
from .logsafe import redact_secrets
from .outbox import Outbox

logger = logging.getLogger("vuer_sync.client")

__all__ = ["VuerClient", "client_info"]

_CLOSED = object()


FAST_WRITE = True  # False: websocket-client's own send path (for benchmarks)


def _write_binary(ws: Any, payload: bytes) -> None:
    """One masked binary frame: :func:`~vuer_sync.client_transport.write_binary` (numpy mask,
    one ``sendall``), or websocket-client's own ``send_binary`` when ``FAST_WRITE`` is off."""
    if not FAST_WRITE:
        ws.send_binary(payload)
        return
    write_binary(ws, payload)


def client_info() -> Dict[str, Any]:
    """The INIT ``value`` a Python client sends (the seed's fields)."""
    now = datetime.datetime.now().astimezone()
    tz = now.tzinfo
    name = getattr(tz, "key", None) or getattr(tz, "zone", None) or time.tzname[0]
    offset = now.utcoffset()
    minutes = 0 if offset is None else int(-offset.total_seconds() // 60)
    return {
        "client": "python",
        "clientVersion": __version__,
        "timezone": name,
        "timezoneOffset": minutes,
        "pythonVersion": platform.python_version(),
        "platform": platform.system(),
        "platformVersion": platform.release(),
        "machine": platform.machine(),
    }


class _Send:
    """``client.send @ ev`` enqueues; ``client.send(ev, timeout=None)`` blocks until written."""

    __slots__ = ("_client",)

    def __init__(self, client: VuerClient):
        self._client = client

    # VuerClient's own helper (same module): `client.send @ ev` / `client.send(ev)`
    def __matmul__(self, event: ClientEvent) -> None:
        self._client._enqueue(event)

    def __call__(self, event: ClientEvent, timeout: Optional[float] = None) -> None:
        if not self._client.connected:
            raise ConnectionError("VuerClient is not connected")
        seq = self._client._enqueue(event)  # noqa: SLF001
        self._client._outbox_wait(seq, timeout)  # noqa: SLF001


class VuerClient:
    """Blocking Vuer client.

    ``uri`` (alias ``URI``, env ``VUER_CLIENT_URI``, default ``ws://localhost:8012``),
    ``max_size`` (env ``WEBSOCKET_MAX_SIZE``, default 256 MiB: larger server messages close
    the connection with 1009), ``ssl_verify`` (env ``VUER_SSL_VERIFY``; ``false``/``0``/``no``
    turn verification off). Other keyword arguments go to ``websocket.WebSocket.connect``
    (e.g. ``header=``, ``sslopt=``); ``ssl=<SSLContext>`` is accepted as in Vuer.

    ``auto_reconnect=True`` reconnects with exponential backoff after the connection drops,
    sending a fresh INIT; events sent with ``send @`` meanwhile are kept and delivered after
    the reconnect.
    """

    def __init__(
        self,
        uri: Optional[str] = None,
        max_size: Optional[int] = None,
        ssl_verify: Optional[bool] = None,
        *,
        URI: Optional[str] = None,
        auto_reconnect: bool = False,
        reconnect_delay: float = 0.25,
        reconnect_max_delay: float = 8.0,
        ping_interval: Optional[float] = 20.0,
        connect_timeout: float = 10.0,
        queue_bytes: int = 256 << 20,
        **kwargs: Any,
    ):
        self.uri = uri or URI or env_str("VUER_CLIENT_URI", "ws://localhost:8012")
        self.max_size = int(max_size if max_size is not None
                            else env_int("WEBSOCKET_MAX_SIZE", 2**28))
        self.ssl_verify = ssl_verify if ssl_verify is not None else env_bool("VUER_SSL_VERIFY",
                                                                              True)
        self.auto_reconnect = auto_reconnect
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.ping_interval = ping_interval
        self.connect_timeout = connect_timeout
        self._queue_bytes = queue_bytes
        self._kwargs = kwargs
        self._ws: Any = None
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._outbox = self._new_outbox()
        self._responders: Dict[str, Callable[[ClientEvent], Any]] = {}
        self._rtc: Any = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._reader: Optional[threading.Thread] = None
        self._sender: Optional[threading.Thread] = None
        self._last_received = 0.0
        self.stats = {"received": 0, "bad_messages": 0, "send_errors": 0, "reconnects": 0}
        self.last_error: Optional[BaseException] = None

    def _new_outbox(self) -> Outbox:
        return Outbox(encode=codec.encode, decode=lambda b: msgpack.unpackb(b, raw=False),
                      max_bytes=self._queue_bytes, policy="block", block_timeout=30.0)

    # -- connection -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _sslopt(self) -> Dict[str, Any]:
        opt = dict(self._kwargs.pop("sslopt", {}) or {})
        ctx = self._kwargs.pop("ssl", None)
        if isinstance(ctx, ssl.SSLContext):
            opt["context"] = ctx
        if not self.ssl_verify and "context" not in opt:
            opt.update(cert_reqs=ssl.CERT_NONE, check_hostname=False)
        return opt

    def connect(self) -> VuerClient:
        """Connect (or reconnect), send INIT, start the reader and sender threads."""
        install_websocket_client_mask()
        self.close()
        self._closing.clear()
        if self._outbox.closed is not None:
            self._outbox = self._new_outbox()
        self._kwargs["sslopt"] = self._sslopt()
        self._open()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued (up to ``timeout``), close the websocket, join threads."""
        ws = self._ws
        if ws is None:
            return
        self._closing.set()
        if self.connected:
            try:
                self._outbox.wait_written(timeout=timeout)
            except Exception:
                pass
        self._outbox.close("client closed", drain=False)
        try:
            ws.send_close()
        except Exception:
            pass
        me = threading.current_thread()
        for t in (self._sender, self._reader):
            if t is not None and t is not me:
                t.join(timeout)
        try:
            ws.shutdown()
        except Exception:
            pass
        self._ws = None
        self._connected.clear()

    def __enter__(self) -> VuerClient:
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- sending --------------------------------------------------------------------------

    @property
    def send(self) -> _Send:
        """``client.send @ ev`` (enqueue, return at once) or ``client.send(ev)`` (block until
        written; ``ConnectionError`` if not connected)."""
        return _Send(self)

    def _enqueue(self, event: ClientEvent) -> int:
        if not isinstance(event, ClientEvent):
            raise TypeError(f"send takes a ClientEvent, got {type(event).__name__}")
        msg = event.serialize()
        payload = codec.encode(msg)
        if len(payload) > self.max_size:
            raise ValueError(f"message of {len(payload)} bytes exceeds max_size={self.max_size}")
        return self._outbox.push(payload, msg)

    def _outbox_wait(self, seq: int, timeout: Optional[float]) -> None:
        self._outbox.wait_written(seq, timeout)

    # -- receiving ------------------------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Optional[ClientEvent]:
        """The next server event, or ``None`` after ``timeout`` seconds.

        Raises :class:`~vuer_sync.errors.SessionClosed` (a ``ConnectionError``) once the
        connection is closed and every received event was read.
        """
        if self._ws is None and self._inbox.empty():
            raise SessionClosed("VuerClient is not connected")
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            self._inbox.put(_CLOSED)  # every later recv() sees the close too
            raise SessionClosed(f"connection closed: {self.last_error or 'by peer'}")
        return item

    def __iter__(self) -> Iterator[ClientEvent]:
        while True:
            try:
                ev = self.recv()
            except SessionClosed:
                return
            if ev is not None:
                yield ev

    def rtc(self, client_id: Optional[str] = None, **store_options: Any) -> Any:
        """The server's collaborative scene graph through this connection: returns a
        :class:`~vuer_sync.rtc_client.RtcClient` (call ``.join()`` first). Its events are
        handled on the reader thread and do not appear in :meth:`recv`."""
        from .rtc_client import RtcClient

        if self._rtc is None:
            import uuid

            self._rtc = RtcClient(self, client_id or f"py-{uuid.uuid4().hex[:8]}",
                                  **store_options)
        return self._rtc

    def respond(self, etype: str, fn: Optional[Callable[[ClientEvent], Any]] = None) -> Any:
        """Answer server RPCs of ``etype`` (e.g. ``"GRAB_RENDER"``): ``fn(request)`` returns the
        reply's ``value``, sent with ``etype = request.rtype``. Decorator or call form.
        Runs on the reader thread: keep it quick."""

        def register(f: Callable[[ClientEvent], Any]) -> Callable[[ClientEvent], Any]:
            self._responders[etype] = f
            return f

        return register if fn is None else register(fn)

    # -- threads --------------------------------------------------------------------------

    def _read_loop(self, ws: Any) -> None:
        import websocket

        err: Optional[BaseException] = None
        try:
            while True:
                opcode, data = ws.recv_data(control_frame=True)  # pings answered inside
                self._last_received = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
                    continue
                if opcode != websocket.ABNF.OPCODE_BINARY:
                    self._bad("text frame ignored (the protocol is binary msgpack)")
                    continue
                if len(data) > self.max_size:
                    ws.send_close(1009, b"message too big")
                    err = ConnectionError(f"message of {len(data)} bytes over max_size")
                    break
                try:
                    msg = codec.decode(data)
                except ProtocolError as e:
                    self._bad(str(e))
                    continue
                ev = ClientEvent.from_dict(msg)
                self.stats["received"] += 1
                data = getattr(ev, "data", None)  # server events carry `data`
                if ev.etype == "RTC" and self._rtc is not None and isinstance(data, dict):
                    self._rtc.on_envelope(data)
                    continue
                responder = self._responders.get(ev.etype)
                if responder is not None and isinstance(getattr(ev, "rtype", None), str):
                    self._answer(responder, ev)
                    continue
                self._inbox.put(ev)
        except Exception as e:
            err = e
        self._connected.clear()
        self.last_error = err
        if err is not None and not self._closing.is_set():
            logger.info("VuerClient connection to %s ended: %r", redact_secrets(self.uri), err)
        if self.auto_reconnect and not self._closing.is_set():
            self._outbox.wake()  # the old sender sees the new connection and leaves
            self._reconnect()
            return
        self._outbox.close("connection closed", drain=False)
        self._inbox.put(_CLOSED)

    def _bad(self, why: str) -> None:
        self.stats["bad_messages"] += 1
        n = self.stats["bad_messages"]
        if n <= 10 or n % 1000 == 0:
            logger.warning("VuerClient ignored a bad message from the server: %s", why)

    def _answer(self, responder: Callable[[ClientEvent], Any], req: ClientEvent) -> None:
        try:
            value = responder(req)
        except Exception:
            logger.exception("responder for %s raised", req.etype)
            return
        key = getattr(req, "key", None)
        extra = {} if key is None else {"key": key}  # the responder it answers for
        reply = ClientEvent(etype=getattr(req, "rtype", None), value=value, **extra)
        try:
            self._enqueue(reply)
        except SessionClosed:
            pass

    def _send_loop(self, ws: Any) -> None:
        ping_sent_at: Optional[float] = None
        interval = self.ping_interval
        next_ping = time.monotonic() + interval if interval else None
        batch: Any = None
        try:
            while True:
                timeout = None if next_ping is None else max(0.0, next_ping - time.monotonic())
                batch = self._outbox.pop_batch(timeout=timeout)
                if batch is None:
                    return
                if self._ws is not ws or not self._connected.is_set():
                    self._outbox.requeue_front(batch)  # for the next connection
                    return
                if batch:
                    for m in batch:
                        _write_binary(ws, m.payload)
                    self._outbox.mark_written(batch)
                    batch = None
                    continue
                now = time.monotonic()
                if next_ping is not None and now >= next_ping:
                    if ping_sent_at is not None and self._last_received < ping_sent_at:
                        logger.warning("VuerClient: no answer to keepalive ping; closing")
                        ws.shutdown()
                        return
                    ws.ping(b"vs")
                    ping_sent_at = now
                    next_ping = now + (interval or 0.0)
        except Exception as e:
            self.stats["send_errors"] += 1
            self.last_error = e
            if self.auto_reconnect and not self._closing.is_set():
                if batch:
                    self._outbox.requeue_front(batch)
            else:
                logger.warning("VuerClient send failed: %r", e)
                self._outbox.close(f"send failed: {e}", drain=False)
            try:
                ws.shutdown()
            except Exception:
                pass

    def _reconnect(self) -> None:
        delay = self.reconnect_delay
        while not self._closing.is_set():
            if self._closing.wait(delay):
                break
            try:
                self._open()
                self.stats["reconnects"] += 1
                logger.info("VuerClient reconnected to %s", redact_secrets(self.uri))
                return
            except Exception as e:
                logger.debug("reconnect to %s failed: %r", redact_secrets(self.uri), e)
                delay = min(delay * 2, self.reconnect_max_delay)
        self._outbox.close("client closed", drain=False)
        self._inbox.put(_CLOSED)

    def _open(self) -> None:
        """Open the websocket, send INIT, start the reader and sender threads."""
        import websocket

        sslopt = self._kwargs.get("sslopt", {})
        ws = websocket.WebSocket(sslopt=sslopt, skip_utf8_validation=True,
                                 enable_multithread=True)
        kwargs = {k: v for k, v in self._kwargs.items() if k != "sslopt"}
        try:
            ws.connect(self.uri, timeout=self.connect_timeout, **kwargs)
        except websocket.WebSocketException as e:  # handshake refused, closed during it...
            ws.shutdown()
            raise ConnectionError(f"cannot connect to {redact_secrets(self.uri)}: {e}") from e
        ws.settimeout(None)
        ws.send_binary(codec.encode(ClientEvent(etype="INIT", value=client_info()).serialize()))
        self._ws = ws
        self._last_received = time.monotonic()
        self._connected.set()
        self._reader = start_thread(self._read_loop, "vuer-client-reader", ws)
        self._sender = start_thread(self._send_loop, "vuer-client-sender", ws)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<VuerClient {redact_secrets(self.uri)} {state}>"

