"""``Channel``: the one loop of a websocket connection, shared by both ends.

A channel joins an :class:`~vuer_sync.outbox.Outbox` to a
:class:`~vuer_sync.transport.WebSocketConnection`:

* the **sender** (:meth:`Channel.send_loop`, on its own thread): takes batches with
  ``pop_batch``, writes them with ``send_many``, reports them with ``mark_written``; sends a
  keepalive ping every ``ping_interval`` seconds and ends the connection when the previous
  one got no answer (nothing was read since it went out); on exit writes the close frame
  (:meth:`Channel.set_close`), waits up to a second for the reader, then drops the socket;
* the **reader** (:meth:`Channel.read_loop`, on the caller's thread): every message to a
  callback until the connection ends.

The server's :class:`~vuer_sync.server.core.SessionCore` and
:class:`~vuer_sync.client.VuerClient` each run one per connection; what differs between them
(the INIT deadline, what a failed write means, reconnecting) comes in as hooks.

>>> import socket
>>> from vuer_sync.outbox import Outbox
>>> from vuer_sync.transport import WebSocketConnection
>>> a, b = socket.socketpair()
>>> server = WebSocketConnection(a, is_server=True)
>>> client = WebSocketConnection(b, is_server=False)
>>> box = Outbox(encode=bytes, decode=lambda p: {})
>>> ch = Channel(client, box, name="doc")
>>> sender = ch.start()
>>> _ = box.push(b"hello")
>>> server.receive()
b'hello'
>>> box.close("done", drain=True); sender.join(5)
>>> got = []
>>> Channel(server, Outbox(encode=bytes, decode=lambda p: {})).read_loop(got.append)
ConnectionClosed(1000, '')
>>> a.close(); b.close()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, List, Optional

from ._threads import start_thread
from .outbox import Outbox, OutMessage
from .transport import ConnectionClosed, WebSocketConnection

logger = logging.getLogger("vuer_sync.channel")

__all__ = ["Channel"]

#: ``on_send_error(exc, batch)``: a write failed; ``batch`` (maybe empty) was not written.
SendErrorHook = Callable[[BaseException, List[OutMessage]], None]


class Channel:
    """The send, keepalive, read and close loop of one connection (see the module docstring).

    :param conn: the connection (either side).
    :param outbox: what to send, in order.
    :param ping_interval: seconds between keepalive pings (None or 0: no pings).
    :param name: for log messages and the sender thread's name.
    :param on_send_error: a write raised (``OSError``, ``ConnectionClosed``, or anything else);
        default: log and drop the batch. The sender ends after it.
    :param on_keepalive_timeout: the last ping got no answer; default: close with 1011
        ``"keepalive timeout"``. The sender ends after it.
    :param deadline: ``deadline()`` is a monotonic time the sender must wake at (or None);
        then ``on_deadline(now)`` runs, and the sender ends if it returns False.

    State read by the owner: ``last_write`` (monotonic time of the last written batch),
    ``reader_done`` (an ``Event``: the reader has stopped), ``sender`` (its thread).
    """

    def __init__(
        self,
        conn: WebSocketConnection,
        outbox: Outbox,
        *,
        ping_interval: Optional[float] = None,
        name: str = "channel",
        on_send_error: Optional[SendErrorHook] = None,
        on_keepalive_timeout: Optional[Callable[[], None]] = None,
        deadline: Optional[Callable[[], Optional[float]]] = None,
        on_deadline: Optional[Callable[[float], bool]] = None,
    ) -> None:
        self.conn = conn
        self.outbox = outbox
        self.ping_interval = ping_interval or 0.0
        self.name = name
        self.on_send_error = on_send_error or self._log_send_error
        self.on_keepalive_timeout = on_keepalive_timeout or self._keepalive_close
        self.deadline = deadline
        self.on_deadline = on_deadline
        self.last_write = 0.0
        self.reader_done = threading.Event()
        self.sender: Optional[threading.Thread] = None
        self._close_frame = (1000, "")
        self._stopped = False

    # -- control --------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Start the sender thread (``vuer-sender:<name>``) and return it."""
        self.sender = start_thread(self.send_loop, f"vuer-sender:{self.name}")
        return self.sender

    def set_close(self, code: int, reason: str = "") -> None:
        """The close frame the sender writes when it ends (default 1000, no reason)."""
        self._close_frame = (code, reason)

    def stop(self) -> None:
        """End the sender without closing the outbox: what it takes next goes back to the
        front of the outbox (a reconnecting client sends it on its next connection)."""
        self._stopped = True
        self.outbox.wake()

    def write_now(self, message: OutMessage) -> None:
        """Write one message the caller took with ``Outbox.take_direct`` (an RPC request:
        the caller waits anyway, so it writes itself), then report it written."""
        self.conn.send_many([message.payload])
        self.last_write = time.monotonic()
        self.outbox.mark_written([message])

    def read_until(self, reply: Any, timeout: Optional[float],
                   first: Callable[[], Any] = lambda: None) -> None:
        """``first()``; the reader thread reads (see ``LoopChannel.read_until``)."""
        first()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the sender thread to end; True if it has (or never started)."""
        if self.sender is None:
            return True
        self.sender.join(timeout)
        return not self.sender.is_alive()

    def abort(self) -> None:
        """Drop the connection now (from any thread)."""
        self.conn.abort()

    def threads(self) -> List[threading.Thread]:
        """This channel's threads (the sender), for joining."""
        return [self.sender] if self.sender is not None else []

    # -- the reader -----------------------------------------------------------------------

    def read_loop(self, on_message: Callable[[Any], Any]) -> BaseException:
        """Call ``on_message(data)`` for every message until the connection ends; return why
        it ended (:class:`~vuer_sync.transport.ConnectionClosed`, or the ``OSError``). Other
        exceptions (from ``on_message``) propagate. ``reader_done`` is set either way."""
        receive = self.conn.receive
        try:
            while True:
                on_message(receive())
        except (ConnectionClosed, OSError) as e:
            return e
        finally:
            self.reader_done.set()

    # -- the sender -----------------------------------------------------------------------

    def send_loop(self) -> None:
        """Write queued batches, keep the connection alive, close it on the way out."""
        conn = self.conn
        outbox = self.outbox
        interval = self.ping_interval
        ping_sent_at: Optional[float] = None
        next_ping = time.monotonic() + interval if interval else None
        deadline = self.deadline
        batch: Any = None
        try:
            while True:
                wake = next_ping
                due = deadline() if deadline is not None else None
                if due is not None:
                    wake = due if wake is None else min(wake, due)
                timeout = None if wake is None else max(0.0, wake - time.monotonic())
                batch = outbox.pop_batch(timeout=timeout)
                if batch is None:
                    break
                if self._stopped:
                    outbox.requeue_front(batch)
                    batch = None
                    return
                if batch:
                    conn.send_many([m.payload for m in batch])
                    self.last_write = time.monotonic()
                    outbox.mark_written(batch)
                    batch = None
                    continue
                now = time.monotonic()
                if due is not None and now >= due and self.on_deadline is not None \
                        and not self.on_deadline(now):
                    break
                if next_ping is not None and now >= next_ping:
                    if ping_sent_at is not None and conn.last_received < ping_sent_at:
                        logger.warning("%s: no answer to keepalive ping for %.0f s",
                                       self.name, now - ping_sent_at)
                        self.on_keepalive_timeout()
                        break
                    conn.ping(b"vs")
                    ping_sent_at = now
                    next_ping = now + interval
        except Exception as e:  # OSError, ConnectionClosed from the transport
            self.on_send_error(e, batch or [])
        finally:
            if not self._stopped:
                self._close_socket()

    def _close_socket(self) -> None:
        code, reason = self._close_frame
        if not self.reader_done.is_set():
            try:
                self.conn.close(code, reason)
            except Exception:
                pass
            if not self.reader_done.wait(1.0):
                self.conn.abort()

    def _keepalive_close(self) -> None:
        self.set_close(1011, "keepalive timeout")
        self.outbox.close("keepalive timeout", drain=False)

    def _log_send_error(self, exc: BaseException, batch: List[OutMessage]) -> None:
        logger.info("%s: send failed: %s", self.name, exc)
        self.outbox.abandon(batch, "send failed")
