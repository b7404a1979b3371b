"""One ordered, thread-safe, coalescing, byte-bounded queue of outbound messages per connection.

Producers (any thread) ``push`` encoded messages and return at once; one sender thread per
connection takes batches with :meth:`Outbox.pop_batch` and reports them written with
:meth:`Outbox.mark_written`, which is what :meth:`Outbox.wait_written` (``flush``) waits for.

**Coalescing.** While a message is still queued, a newer one with the same merge key is merged
into it once the client is behind: more than ``coalesce_after`` frames queued (0 by default: at
once) while the transport is blocked or while updates come faster than one per
``coalesce_window`` (5 ms), or more than :data:`COALESCE_SLACK_BYTES`; a message with no key is
a barrier: nothing
queued before it is merged with anything queued after it. The outbox knows no message kinds:
its coalescing policy (by default :class:`~vuer_sync.coalesce.MessageCoalescing`, see
:mod:`vuer_sync.coalesce`) gives each message's key and does the merge. For Vuer messages: a
newer ``UPDATE`` (or an ``UPSERT`` with ``to=None``) of exactly the same node keys is merged,
property by property, latest value wins; a new large payload for a key (a point cloud)
therefore replaces the unsent one. Any other message (``SET``, ``ADD``, ``REMOVE``, an
``UPSERT`` into a parent, an RPC request, a custom event) is a barrier, so the client sees the
same final state, in the same order relative to every barrier, as without coalescing.
"Unchanged" is never guessed: values are merged, never compared.

**Byte budget.** When more than ``max_bytes`` are queued, ``policy="block"`` makes the producer
wait up to ``block_timeout`` seconds for the sender to catch up; if it does not (or with
``policy="disconnect"``), the outbox is closed with a reason, the connection is dropped by its
owner, and the producer gets :class:`~vuer_sync.errors.SessionClosed`. Nothing is dropped
silently; ``stats`` counts every message.

>>> import msgpack
>>> box = Outbox(encode=msgpack.packb, decode=msgpack.unpackb)
>>> for x in range(3):
...     _ = box.push(msgpack.packb({"etype": "UPDATE", "data": {"nodes": [{"key": "b", "x": x}]}}))
>>> [msgpack.unpackb(m.payload)["data"]["nodes"] for m in box.pop_batch(timeout=0)]
[[{'key': 'b', 'x': 2}]]
>>> box.stats["coalesced"]
2
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional

# coalesce_key, merge_info, one_node_props: re-exported from their old home
from .coalesce import (  # noqa: F401
    CoalesceKey,
    Coalescing,
    MergeInfo,
    MessageCoalescing,
    NodeProps,
    coalesce_key,
    merge_info,
    one_node_props,
)
from .errors import RPCTimeout, SessionClosed

__all__ = ["OutMessage", "Outbox", "coalesce_key", "merge_info"]

# memory a queued frame costs beyond its payload (the OutMessage, the bytes object, the
# deque slot), counted in the byte budget so many tiny messages cannot exceed it unseen
MESSAGE_OVERHEAD = 160

#: ``coalesce_after`` holds only while the queue is this small in bytes: past it, updates
#: merge at once (a stalled client's point clouds replace each other, never pile up)
COALESCE_SLACK_BYTES = 64 << 10

#: behind a socket that takes bytes, updates of the same nodes closer together than this
#: (seconds; 200 Hz, faster than any display) still merge past ``coalesce_after``
COALESCE_WINDOW = 0.005


class OutMessage:
    """One queued frame: its bytes, its position and (when coalescible) its merge key.

    ``decoded`` and ``props`` belong to the coalescing policy (what its ``merge`` returned).
    """

    __slots__ = ("ckey", "decoded", "merged", "nbytes", "payload", "props", "queued_at", "seq")

    def __init__(self, payload: bytes, seq: int, ckey: Optional[CoalesceKey],
                 props: Optional[NodeProps] = None):
        self.payload = payload
        self.nbytes = len(payload) + MESSAGE_OVERHEAD
        self.seq = seq
        self.ckey = ckey
        self.merged = 0  # how many later messages were merged into this one
        self.decoded: Optional[Dict[str, Any]] = None  # kept once merged (merges again)
        self.props = props  # each node's property names, when known
        self.queued_at = 0.0  # monotonic time it was queued (coalescible messages only)


class Outbox:
    """See the module docstring.

    ``coalescing``: the policy that keys and merges messages (see
    :class:`~vuer_sync.coalesce.Coalescing`); by default
    ``MessageCoalescing(encode, decode)``, where ``encode``/``decode`` turn a message map into
    frame bytes and back (used only to merge). ``coalesce_after``: how many queued frames
    a client may be behind before newer updates merge into the newest queued one with
    their key (a short backlog is sent as it is; see the module docstring).

    **Who is behind.** A sender that can tell when the socket stops taking bytes (a selector
    loop) reports it with :meth:`report_transport`. Then ``coalesce_after`` counts only while
    the socket is full, or for updates that come faster than one per ``coalesce_window``
    seconds (a burst no display can show): updates at a viewer's pace that wait because the
    *sender* was late (a GC pause, a busy core) while the client keeps reading are all sent,
    up to :data:`COALESCE_SLACK_BYTES`. With no such report (a blocking sender thread) the
    transport counts as blocked, and the frame count alone decides.
    """

    def __init__(
        self,
        *,
        encode: Optional[Callable[[Dict[str, Any]], Any]] = None,
        decode: Optional[Callable[[Any], Dict[str, Any]]] = None,
        max_bytes: int = 256 << 20,
        policy: str = "block",
        block_timeout: float = 2.0,
        coalescing: Optional[Coalescing] = None,
        coalesce_after: int = 0,
        coalesce_window: float = COALESCE_WINDOW,
    ):
        if policy not in ("block", "disconnect"):
            raise ValueError("policy must be 'block' or 'disconnect'")
        if coalescing is None:
            if encode is None or decode is None:
                raise ValueError("Outbox needs encode and decode, or a coalescing policy")
            coalescing = MessageCoalescing(encode, decode)
        self.coalescing = coalescing
        self._info = coalescing.info  # bound once: read on every push
        self._merge = coalescing.merge
        self.max_bytes = int(max_bytes)
        self.policy = policy
        self.block_timeout = float(block_timeout)
        if coalesce_after < 0:
            raise ValueError("coalesce_after must be >= 0")
        self.coalesce_after = int(coalesce_after)
        self.coalesce_window = float(coalesce_window)
        self._lock = threading.Lock()
        self._has_data = threading.Condition(self._lock)
        self._takers = 0  # threads waiting in pop_batch: push notifies only when there is one
        self._has_space = threading.Condition(self._lock)
        self._written = threading.Condition(self._lock)
        # threads waiting in wait_written / for space: mark_written notifies only then (it
        # runs once per frame written, on the I/O thread's hot path)
        self._waiters = 0
        self._queue: Deque[OutMessage] = deque()
        self._index: Dict[CoalesceKey, OutMessage] = {}
        self._key_owner: Dict[str, CoalesceKey] = {}  # node key -> the mergeable entry's key
        self._seq = 0
        self._written_seq = 0
        self._pending_bytes = 0
        self._in_flight = 0  # taken by the sender, not yet reported written
        self._direct = False  # a caller is writing one frame itself (see take_direct)
        # the socket takes no more bytes (report_transport); None: no sender said (counts as full)
        self._transport_blocked: Optional[bool] = None
        self._closed: Optional[str] = None
        self._drain_then_close = False
        # called (under the lock, must not block) when a message is queued or the outbox
        # closes: how a selector loop learns that this outbox has something (set_listener)
        self._listener: Optional[Callable[[], None]] = None
        # queued == sent + coalesced + depth + in_flight + sum(dropped.values())
        self.stats: Dict[str, Any] = {
            "queued": 0,  # messages accepted by push (before coalescing)
            "sent": 0,  # frames written to the socket
            "coalesced": 0,  # messages merged into an earlier queued one
            "bytes_sent": 0,
            "dropped": {},  # reason -> messages not delivered because the connection ended
        }

    # -- producer side ---------------------------------------------------------------------

    @property
    def closed(self) -> Optional[str]:
        """``None`` while open, else the reason it was closed."""
        return self._closed

    @property
    def depth(self) -> int:
        """Frames waiting to be written."""
        return len(self._queue)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def push(self, payload: bytes, msg: Optional[Dict[str, Any]] = None,
             redundancy_key: Optional[str] = None, info: Optional[MergeInfo] = None) -> int:
        """Queue one encoded frame; returns its sequence number (for :meth:`wait_written`).

        ``msg`` is the message map ``payload`` was encoded from, if the caller has it: it is
        only used to decide whether the message may coalesce. ``redundancy_key`` (viser's
        idea): a queued, unsent message with the same key is *replaced* by this one.
        ``info``: the coalescing policy's info of the message (for Vuer messages,
        :func:`~vuer_sync.coalesce.merge_info`), when the caller computed it already (one
        broadcast, many outboxes).
        """
        if info is None:
            info = self._info(payload, msg, redundancy_key)
        ckey, props = info
        with self._lock:
            if self._closed is not None:
                self._check_open()
            self.stats["queued"] += 1
            if ckey is not None:
                prev = self._index.get(ckey)
                if prev is not None and (self._pending_bytes > COALESCE_SLACK_BYTES or (
                        len(self._queue) > self.coalesce_after and (
                            self._transport_blocked is not False
                            or time.monotonic() - prev.queued_at < self.coalesce_window))):
                    # merged as the policy says (inlined: the hot path)
                    merged, prev.decoded, prev.props = self._merge(ckey, prev, payload, props)
                    nbytes = len(merged) + MESSAGE_OVERHEAD
                    self._pending_bytes += nbytes - prev.nbytes
                    prev.payload = merged
                    prev.nbytes = nbytes
                    prev.merged += 1
                    self.stats["coalesced"] += 1
                    if self._pending_bytes > self.max_bytes and len(self._queue) > 1:
                        self._wait_for_space(0)  # a merge that grew: the budget still holds
                    return self._seq
            if self._pending_bytes and self._pending_bytes + len(payload) + MESSAGE_OVERHEAD \
                    > self.max_bytes:
                self._wait_for_space(len(payload) + MESSAGE_OVERHEAD)
            return self._append(payload, ckey, props)

    def report_transport(self, blocked: bool) -> None:
        """The sender says whether the socket is full (``True``: the client is behind) or takes
        bytes again; see the class docstring. Cheap: called on the sender's hot path.

        >>> import msgpack
        >>> box = Outbox(encode=msgpack.packb, decode=msgpack.unpackb, coalesce_after=1,
        ...              coalesce_window=0)  # updates at any pace
        >>> def update(x):
        ...     return msgpack.packb({"etype": "UPDATE", "data": {"nodes": [{"key": "b", "x": x}]}})
        >>> box.report_transport(blocked=False)  # the sender is late, the client is not
        >>> for x in range(4):
        ...     _ = box.push(update(x))
        >>> box.depth, box.stats["coalesced"]
        (4, 0)
        >>> box.report_transport(blocked=True)  # the socket is full: newer updates merge
        >>> _ = box.push(update(9))
        >>> box.depth, box.stats["coalesced"]
        (4, 1)
        """
        self._transport_blocked = blocked

    def push_group(self, payloads: Iterable[bytes]) -> int:
        """Queue frames back to back: nothing else queued on this outbox lands between them,
        and none of them coalesces with anything before or after the group."""
        items = list(payloads)
        with self._lock:
            self._check_open()
            self.stats["queued"] += len(items)
            self._wait_for_space(sum(len(p) + MESSAGE_OVERHEAD for p in items))
            self._clear_index()
            for p in items:
                self._append(p, None)
            return self._seq

    def _check_open(self) -> None:
        if self._closed is not None:
            raise SessionClosed(f"connection closed: {self._closed}")

    def _append(self, payload: bytes, ckey: Optional[CoalesceKey],
                props: Optional[NodeProps] = None) -> int:
        self._seq += 1
        m = OutMessage(payload, self._seq, ckey, props)
        if ckey is None:
            self._clear_index()  # a barrier: nothing before it merges with anything after it
        else:
            m.queued_at = time.monotonic()
            # a queued message with another key about one of these subjects (node keys)
            # becomes a barrier for them (an UPDATE never jumps over an UPSERT of the same node)
            for k in ckey[1]:
                owner = self._key_owner.get(k)
                if owner is not None and owner != ckey:
                    self._index.pop(owner, None)
                self._key_owner[k] = ckey
            self._index[ckey] = m
        self._queue.append(m)
        self._pending_bytes += m.nbytes
        if self._takers:  # skip a no-op notify on the hot path
            self._has_data.notify()
        if self._listener is not None:
            self._listener()
        return self._seq

    def _clear_index(self) -> None:
        self._index.clear()
        self._key_owner.clear()

    def _wait_for_space(self, nbytes: int) -> None:
        if self._pending_bytes == 0 or self._pending_bytes + nbytes <= self.max_bytes:
            return
        if self.policy == "block":
            deadline = time.monotonic() + self.block_timeout
            while self._closed is None and self._pending_bytes > 0 and \
                    self._pending_bytes + nbytes > self.max_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._waiters += 1
                try:
                    self._has_space.wait(left)
                finally:
                    self._waiters -= 1
            self._check_open()
            if self._pending_bytes == 0 or self._pending_bytes + nbytes <= self.max_bytes:
                return
        reason = (
            f"send queue over budget: {self._pending_bytes + nbytes} bytes pending > "
            f"{self.max_bytes} (policy={self.policy!r})"
        )
        self._close_locked(reason)
        self.stats["dropped"]["over budget"] = self.stats["dropped"].get("over budget", 0) + 1
        raise SessionClosed(reason)

    # -- sender side -----------------------------------------------------------------------

    def pop_batch(
        self, max_items: int = 512, max_bytes: int = 4 << 20, timeout: Optional[float] = None
    ) -> Optional[List[OutMessage]]:
        """Take queued frames in order (at least one if any, up to the limits).

        Waits up to ``timeout`` for data; returns ``[]`` on timeout and ``None`` once the
        outbox is closed (after it is drained, when closed with ``drain=True``).
        """
        with self._lock:
            if (not self._queue or self._direct) and self._closed is None:
                self._takers += 1
                try:
                    self._has_data.wait(timeout)
                finally:
                    self._takers -= 1
            return self._take_locked(max_items, max_bytes)

    def take_batch(self, max_items: int = 512,
                   max_bytes: int = 4 << 20) -> Optional[List[OutMessage]]:
        """:meth:`pop_batch` without waiting (a selector loop's call): ``[]`` when nothing is
        queued, ``None`` once closed (and drained)."""
        with self._lock:
            return self._take_locked(max_items, max_bytes)

    def _take_locked(self, max_items: int, max_bytes: int) -> Optional[List[OutMessage]]:
        if self._closed is not None and not (self._drain_then_close and self._queue):
            return None
        if self._direct:
            return []  # a caller is writing: what follows it must wait (order)
        batch: List[OutMessage] = []
        size = 0
        q = self._queue
        while q and len(batch) < max_items and (not batch or size + q[0].nbytes <= max_bytes):
            m = q.popleft()
            ckey = m.ckey
            if ckey is not None and self._index.get(ckey) is m:
                del self._index[ckey]  # nothing queued is about these nodes any more
                owners = self._key_owner
                for k in ckey[1]:
                    if owners.get(k) == ckey:
                        del owners[k]
            batch.append(m)
            size += m.nbytes
        self._in_flight += len(batch)
        return batch

    def take_direct(self, payload: bytes) -> Optional[OutMessage]:
        """If nothing is queued or being written, reserve the socket for the caller to write
        ``payload`` itself (one thread hop less for an RPC request); ``None`` otherwise.

        The caller must write it, then call :meth:`mark_written` (or :meth:`abandon`) with
        ``[message]``; the sender takes nothing until then, so order is kept.
        """
        if self._queue or self._in_flight or self._direct:
            return None  # busy; read without the lock: a stale answer only queues the frame
        with self._lock:
            if self._queue or self._in_flight or self._direct or self._closed is not None:
                return None
            self.stats["queued"] += 1
            self._seq += 1
            m = OutMessage(payload, self._seq, None)
            self._clear_index()
            self._pending_bytes += m.nbytes
            self._in_flight += 1
            self._direct = True
            return m

    def set_listener(self, listener: Optional[Callable[[], None]]) -> None:
        """Call ``listener()`` whenever a message is queued, a message written by a caller
        (:meth:`take_direct`) lets the queue go on, or the outbox closes; None: stop. It runs
        under the outbox's lock and must only take note (a selector loop schedules the
        connection). The loop then takes batches with ``pop_batch(timeout=0)``."""
        with self._lock:
            self._listener = listener

    def _notify_listener(self) -> None:
        if self._listener is not None:
            self._listener()

    def requeue_front(self, batch: List[OutMessage]) -> None:
        """Put frames taken by :meth:`pop_batch` but not written back at the front, in order
        (a reconnecting client resends them on the new connection)."""
        with self._lock:
            if self._closed is not None and not self._drain_then_close:
                self._drop_in_flight(batch, self._closed)  # nowhere to send them any more
                return
            self._queue.extendleft(reversed(batch))
            self._in_flight -= len(batch)
            self._clear_index()
            self._has_data.notify()
            self._notify_listener()

    def abandon(self, batch: List[OutMessage], reason: str) -> None:
        """Frames taken by :meth:`pop_batch` could not be written: count them dropped."""
        if not batch:
            return
        with self._lock:
            self._drop_in_flight(batch, reason)

    def _drop_in_flight(self, batch: List[OutMessage], reason: str) -> None:
        self._in_flight -= len(batch)
        if self._direct:
            self._direct = False
            if self._queue:
                self._notify_listener()
        self._pending_bytes -= sum(m.nbytes for m in batch)
        d = self.stats["dropped"]
        d[reason] = d.get(reason, 0) + len(batch)
        self._written.notify_all()

    def wake(self) -> None:
        """Wake a sender waiting in :meth:`pop_batch` (it then gets ``[]``)."""
        with self._lock:
            self._has_data.notify_all()
            self._notify_listener()

    def mark_written(self, batch: List[OutMessage]) -> None:
        """Report frames taken by :meth:`pop_batch` as written to the socket."""
        if len(batch) == 1:
            n, payload_bytes = batch[0].nbytes, len(batch[0].payload)
        elif batch:
            n = sum(m.nbytes for m in batch)
            payload_bytes = sum(len(m.payload) for m in batch)
        else:
            return
        with self._lock:
            self._pending_bytes -= n
            self._in_flight -= len(batch)
            if self._direct:
                self._direct = False
                if self._queue:  # what was queued behind the caller's write may go now
                    self._has_data.notify()
                    self._notify_listener()
            self._written_seq = batch[-1].seq
            self.stats["sent"] += len(batch)
            self.stats["bytes_sent"] += payload_bytes
            if self._waiters:
                self._written.notify_all()
                self._has_space.notify_all()

    def wait_written(self, seq: Optional[int] = None, timeout: Optional[float] = None) -> None:
        """Block until every frame queued up to ``seq`` (default: all so far) is written.

        Raises :class:`~vuer_sync.errors.RPCTimeout` or
        :class:`~vuer_sync.errors.SessionClosed`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._seq if seq is None else seq
            while self._written_seq < target:
                # closed: what is still being written may yet complete (a peer that closes as
                # soon as it has everything); only once nothing is in flight is it lost
                if self._closed is not None and not self._drain_then_close \
                        and not self._in_flight:
                    raise SessionClosed(f"connection closed: {self._closed}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RPCTimeout(
                        f"flush timed out after {timeout} s with {len(self._queue)} frames "
                        f"({self._pending_bytes} bytes) still queued"
                    )
                self._waiters += 1
                try:
                    self._written.wait(left)
                finally:
                    self._waiters -= 1

    def close(self, reason: str, drain: bool = False) -> None:
        """Stop accepting messages. With ``drain``, the sender still writes what is queued;
        otherwise what is queued is counted as dropped under ``reason``."""
        with self._lock:
            if self._closed is None:
                self._drain_then_close = drain
                self._close_locked(reason)
            elif not drain and self._drain_then_close:
                self._drain_then_close = False
                self._close_locked(reason)

    def _close_locked(self, reason: str) -> None:
        self._closed = self._closed or reason
        if not self._drain_then_close and self._queue:
            d = self.stats["dropped"]
            d[reason] = d.get(reason, 0) + len(self._queue)
            self._pending_bytes -= sum(m.nbytes for m in self._queue)  # in-flight bytes stay
            self._queue.clear()
            self._clear_index()
        self._has_data.notify_all()
        self._has_space.notify_all()
        self._written.notify_all()
        self._notify_listener()

    def snapshot_stats(self) -> Dict[str, Any]:
        """A copy of ``stats`` plus the current queue depth, pending bytes and
        ``socket_full`` (what the sender last reported with :meth:`report_transport`; ``None``
        if it cannot tell)."""
        with self._lock:
            s = dict(self.stats)
            s["dropped"] = dict(self.stats["dropped"])
            s["depth"] = len(self._queue)
            s["in_flight"] = self._in_flight
            s["pending_bytes"] = self._pending_bytes
            s["socket_full"] = self._transport_blocked
            return s
