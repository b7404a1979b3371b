"""``VuerClient``: a blocking client for a Vuer server (ours or the real asyncio one).

websocket-client does the HTTP upgrade (headers, TLS, proxies); then the connection runs on our
own transport (:class:`~vuer_sync.transport.WebSocketConnection`) and the same
:class:`~vuer_sync.channel.Channel` loop as the server's sessions. ``client.send @ event``
enqueues and returns; ``client.send(event)`` blocks until the event is written; ``recv()`` and
``for event in client`` read server events.

On the wire, as any RFC 6455 endpoint: the reply to a server's close frame echoes its code
(websocket-client replied 1000); a text message that is not valid UTF-8 closes the connection
with 1007, a message over ``max_size`` with 1009.

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
from typing import Any, Callable, Dict, Iterator, List, Optional

import msgpack

from . import codec
from ._threads import start_thread
from ._version import __version__
from .channel import Channel
from .client_transport import open_socket
from .config import env_bool, env_int, env_str
from .errors import ProtocolError, SessionClosed
from .events import ClientEvent
from .logsafe import redact_secrets
from .outbox import Outbox, OutMessage
from .transport import ConnectionClosed, WebSocketConnection

logger = logging.getLogger("vuer_sync.client")

__all__ = ["VuerClient", "client_info"]

_CLOSED = object()


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
        self._conn: Optional[WebSocketConnection] = None
        self._channel: Optional[Channel] = None
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._outbox = self._new_outbox()
        self._responders: Dict[str, Callable[[ClientEvent], Any]] = {}
        self._rtc: Any = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._reader: Optional[threading.Thread] = None
        self._sender: Optional[threading.Thread] = None
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
        self.close()
        self._closing.clear()
        if self._outbox.closed is not None:
            self._outbox = self._new_outbox()
        self._kwargs["sslopt"] = self._sslopt()
        self._open()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued (up to ``timeout``), close the websocket, join threads."""
        conn = self._conn
        if conn is None:
            return
        self._closing.set()
        if self.connected:
            try:
                self._outbox.wait_written(timeout=timeout)
            except Exception:
                pass
        self._outbox.close("client closed", drain=False)  # the sender sends the close frame
        me = threading.current_thread()
        for t in (self._sender, self._reader):
            if t is not None and t is not me:
                t.join(timeout)
        conn.abort()
        self._conn = None
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
        if self._conn is None and self._inbox.empty():
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

    def _read_loop(self, conn: WebSocketConnection, channel: Channel) -> None:
        try:
            end: BaseException = channel.read_loop(self._on_message)
        except Exception as e:  # a bug of ours: end this connection
            logger.exception("VuerClient reader failed")
            end = e
        self._connected.clear()
        # the server's close frame (or the answer to ours) is a clean end, as before
        err = None if isinstance(end, ConnectionClosed) and conn.close_received else end
        self.last_error = err
        if err is not None and not self._closing.is_set():
            logger.info("VuerClient connection to %s ended: %r", redact_secrets(self.uri), err)
        channel.stop()  # what the sender takes next goes back to the outbox
        if channel.sender is not None:
            channel.sender.join(2.0)
        conn.abort()
        if self.auto_reconnect and not self._closing.is_set():
            self._reconnect()
            return
        self._outbox.close("connection closed", drain=False)
        self._inbox.put(_CLOSED)

    def _on_message(self, data: Any) -> None:
        """One message from the server (reader thread)."""
        if isinstance(data, str):
            self._bad("text frame ignored (the protocol is binary msgpack)")
            return
        try:
            msg = codec.decode(data)
        except ProtocolError as e:
            self._bad(str(e))
            return
        ev = ClientEvent.from_dict(msg)
        self.stats["received"] += 1
        value = getattr(ev, "data", None)  # server events carry `data`
        if ev.etype == "RTC" and self._rtc is not None and isinstance(value, dict):
            self._rtc.on_envelope(value)
            return
        responder = self._responders.get(ev.etype)
        if responder is not None and isinstance(getattr(ev, "rtype", None), str):
            self._answer(responder, ev)
            return
        self._inbox.put(ev)

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

    def _send_failed(self, conn: WebSocketConnection, exc: BaseException,
                     batch: List[OutMessage]) -> None:
        """The channel's write failed: keep the batch for the next connection (with
        ``auto_reconnect``) or fail what is queued; drop the socket (the reader then ends)."""
        self.stats["send_errors"] += 1
        self.last_error = exc
        if self.auto_reconnect and not self._closing.is_set():
            if batch:
                self._outbox.requeue_front(batch)
        else:
            logger.warning("VuerClient send failed: %r", exc)
            self._outbox.abandon(batch, "send failed")
            self._outbox.close(f"send failed: {exc}", drain=False)
        conn.abort()

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
        sslopt = self._kwargs.get("sslopt", {})
        kwargs = {k: v for k, v in self._kwargs.items() if k != "sslopt"}
        sock, initial = open_socket(self.uri, sslopt=sslopt, timeout=self.connect_timeout,
                                    **kwargs)
        conn = WebSocketConnection(sock, is_server=False, max_message_size=self.max_size,
                                   initial_data=initial)
        try:
            conn.send(codec.encode(ClientEvent(etype="INIT", value=client_info()).serialize()))
        except ConnectionClosed as e:
            conn.abort()
            raise ConnectionError(f"cannot connect to {redact_secrets(self.uri)}: {e}") from e
        channel = Channel(conn, self._outbox, ping_interval=self.ping_interval,
                          name="VuerClient",
                          on_send_error=lambda e, batch: self._send_failed(conn, e, batch),
                          on_keepalive_timeout=conn.abort)
        self._conn = conn
        self._channel = channel
        self._connected.set()
        self._sender = channel.sender = start_thread(channel.send_loop, "vuer-client-sender")
        self._reader = start_thread(self._read_loop, "vuer-client-reader", conn, channel)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<VuerClient {redact_secrets(self.uri)} {state}>"

