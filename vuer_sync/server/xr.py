"""Keep-latest handles on a headset's streams: ``session.hands``, ``session.controllers``,
and ``app.hands``/``app.controllers`` for whichever headset sent last.

The session's dispatcher (on the I/O thread) parses each ``HAND_MOVE``/``CONTROLLER_MOVE``
once (:mod:`vuer_sync.xr`) and publishes the sample here: one slot holds the latest, a
condition wakes :meth:`XrStream.wait_update`, and each :meth:`XrStream.stream` iterator has
its own bounded queue. Nothing grows with the rate: a 90 Hz stream read by a 50 Hz loop
replaces samples, and the ones replaced before anyone read them are counted
(``stats["replaced_unread"]``).

>>> from vuer_sync.server.xr import XrStream
>>> from vuer_sync.xr import parse_hands
>>> hands = XrStream("HAND_MOVE", parse_hands)
>>> hands.latest is None, hands.wait_update(timeout=0.01)
(True, None)
>>> hands.publish(parse_hands({"right": [1.0] * 400}, seq=0, ts=0.0))
>>> hands.latest.seq, hands.latest.left is None
(1, True)
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Generic, Iterator, List, Optional, TypeVar

from ..xr import ControllerSample, HandSample, parse_controllers, parse_hands

logger = logging.getLogger("vuer_sync.xr")

__all__ = ["XrStream", "controller_stream", "hand_stream"]

S = TypeVar("S", HandSample, ControllerSample)


class _Queue:
    __slots__ = ("items", "maxlen")

    def __init__(self, maxlen: int):
        self.items: Deque[Any] = deque()
        self.maxlen = maxlen


class XrStream(Generic[S]):
    """The latest sample of one XR stream, and a way to wait for the next.

    * :attr:`latest`: the newest sample, or ``None`` before the first; a plain attribute
      read (well under 2 µs), never blocks. A side that is not tracked is ``None`` in it.
    * :meth:`wait_update`: the next sample not read yet (newer than ``after``), blocking
      until it arrives; ``None`` on timeout or when the stream closed (its session ended).
    * :meth:`stream`: every sample, in order, for recording (each iterator has its own
      bounded queue; the oldest are dropped and counted if it falls behind).
    * :attr:`stats`: ``received``, ``replaced_unread``, ``malformed``, ``left_missing``,
      ``right_missing`` (samples without that side), ``stream_dropped``.
    """

    def __init__(self, etype: str, parse: Callable[..., S],
                 parent: Optional[XrStream[S]] = None):
        self.etype = etype
        self._parse: Callable[..., S] = parse
        self._parent: Optional[XrStream[S]] = parent
        self._cond = threading.Condition()
        self._latest: Optional[S] = None
        self._read_seq = 0
        self._seq = 0
        self._closed = False
        self._queues: List[_Queue] = []
        self._stats: Dict[str, int] = {
            "received": 0, "replaced_unread": 0, "malformed": 0, "left_missing": 0,
            "right_missing": 0, "stream_dropped": 0}

    # -- the reader's side ----------------------------------------------------------------

    @property
    def latest(self) -> Optional[S]:
        """The newest sample (``None`` before the first); never blocks."""
        s = self._latest
        if s is not None:
            self._read_seq = s.seq  # for stats: this one was read
        return s

    @property
    def seq(self) -> int:
        """The ``seq`` of the newest sample (0 before the first)."""
        return self._seq

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_update(self, timeout: Optional[float] = None, after: Optional[int] = None
                    ) -> Optional[S]:
        """Block until a sample with ``seq > after`` is there and return it; ``None``
        after ``timeout`` seconds or once the stream is closed.

        ``after`` defaults to the last sample read (by this or :attr:`latest`): a loop
        gets a sample that arrived while it was busy at once, and otherwise waits for the
        next. Readers that share a stream pass their own ``after=sample.seq``."""
        with self._cond:
            if after is None:
                after = self._read_seq
            if not self._cond.wait_for(lambda: self._seq > after or self._closed, timeout):
                return None
            s = self._latest
            if s is None or s.seq <= after:
                return None
            self._read_seq = s.seq
            return s

    def stream(self, timeout: Optional[float] = None, maxlen: int = 4096) -> Iterator[S]:
        """Iterate over every sample from now on, in order; ends when the stream closes
        or no sample arrives for ``timeout`` seconds. Up to ``maxlen`` samples wait for a
        slow reader; beyond that the oldest are dropped and counted (``stream_dropped``)."""
        q = _Queue(max(1, int(maxlen)))
        with self._cond:
            self._queues.append(q)
        try:
            while True:
                with self._cond:
                    if not self._cond.wait_for(lambda: q.items or self._closed, timeout):
                        return
                    if not q.items:
                        return
                    item = q.items.popleft()
                yield item
        finally:
            with self._cond:
                self._queues.remove(q)

    @property
    def stats(self) -> Dict[str, int]:
        with self._cond:
            return dict(self._stats)

    # -- the dispatcher's side ------------------------------------------------------------

    def on_event(self, ev: Any) -> None:
        """A ``HAND_MOVE``/``CONTROLLER_MOVE`` event (called by the session's dispatcher):
        parse it, publish it here and on the app-wide stream."""
        try:
            sample = self._parse(ev.value, seq=0, ts=float(ev.ts), received=time.time(),
                                 key=getattr(ev, "key", None))
        except ValueError as e:
            with self._cond:
                self._stats["malformed"] += 1
                n = self._stats["malformed"]
            if n <= 3:
                logger.warning("ignored malformed %s: %s", self.etype, e)
            return
        self.publish(sample)
        if self._parent is not None:
            self._parent.publish(copy.copy(sample))

    def publish(self, sample: S) -> None:
        """Make ``sample`` the latest (numbered here: ``sample.seq`` is overwritten) and
        wake the waiters."""
        with self._cond:
            if self._closed:
                return
            old = self._latest
            st = self._stats
            if old is not None and self._read_seq != old.seq:
                st["replaced_unread"] += 1
            self._seq += 1
            sample.seq = self._seq
            st["received"] += 1
            if sample.left is None:
                st["left_missing"] += 1
            if sample.right is None:
                st["right_missing"] += 1
            self._latest = sample
            for q in self._queues:
                if len(q.items) >= q.maxlen:
                    q.items.popleft()
                    st["stream_dropped"] += 1
                q.items.append(sample)
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept samples again after :meth:`close` (the app started again)."""
        with self._cond:
            self._closed = False

    def close(self) -> None:
        """End the stream: waiters return ``None``, iterators stop (the session ended)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __repr__(self) -> str:
        return f"<XrStream {self.etype} seq={self._seq} closed={self._closed}>"


def hand_stream(parent: Optional[XrStream[HandSample]] = None) -> XrStream[HandSample]:
    """A ``HAND_MOVE`` stream (``session.hands``, ``app.hands``)."""
    return XrStream("HAND_MOVE", parse_hands, parent)


def controller_stream(parent: Optional[XrStream[ControllerSample]] = None
                      ) -> XrStream[ControllerSample]:
    """A ``CONTROLLER_MOVE`` stream (``session.controllers``, ``app.controllers``)."""
    return XrStream("CONTROLLER_MOVE", parse_controllers, parent)
