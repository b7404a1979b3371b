"""``app.rtc``'s relay journal on Redis: a durable room that several nodes serve.

The room's journal is one Redis Stream (``vuer_sync:{room}:rtc:log``). A node appends the
records of its clients (joins, ``crdt`` messages, leaves: :mod:`vuer_sync.rtc.journal`)
with ``XADD`` from one publisher thread (pipelined, in the order they were queued), and
one consumer thread per node reads the stream with ``XREAD BLOCK`` and hands every record,
in stream order, to the node's relay. Every node's relay therefore applies the same
records in the same order: the stream order is the total order (``serverSeq``), and every
node computes the same acks, broadcasts and ``state`` envelopes (but for the ack of a
duplicate that one node already baked: it may lack the ``serverSeq`` and ``lt`` another
node still has; :meth:`~vuer_sync.rtc.RelayCore.submit`). A client's message is
acked when its node reads it back from the stream, so only after Redis acknowledged the
``XADD`` (with ``appendonly yes`` and ``appendfsync always``: after it is on disk).

A message is de-duplicated by the relay, as in one process: the same id (or session and
``seq``) written again is acked with the ``lt`` the relay holds it at. That is how the
re-stamped copy of a message (:func:`vuer_sync.rtc.store._rejoin`) is answered when its
old copy, written to the stream by the node of the client's previous connection, came
first: every node holds the old copy at its ``lt`` and broadcast it so, the client's new
node too, and the client re-keys its own copy there. An entry written twice (a lost
``XADD`` acknowledgement) is dropped before the relay, by its producer's number (``s``).

Snapshots: the node holding the lease (``SET NX PX``, renewed) writes, every
``snapshot_every`` records or ``snapshot_interval`` seconds, the relay's compacted state
and the stream id it reflects (hash ``vuer_sync:{room}:rtc:snapshot``), and trims the
stream behind the previous snapshot (``XTRIM MINID``), so a node that starts (or
restarts) loads the snapshot and the tail: O(live graph + tail), not O(history).

Entry fields: ``v`` (format, 1), ``p`` (producer: the node id), ``s`` (the producer's
number of the entry: an entry written twice after a lost acknowledgement is applied
once), ``r`` (the record, msgpack).

>>> j = RedisRelayJournal("redis://127.0.0.1:6379/0", "lab")  # nothing connects yet
>>> j.keys.log, j.started
('vuer_sync:{lab}:rtc:log', False)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

import msgpack

from ..rtc.journal import JournalSink
from .entry import RoomKeys
from .link import connect, safe_url, stream_id, write_snapshot

logger = logging.getLogger("vuer_sync.fleet.rtc")

__all__ = ["RedisRelayJournal", "RtcKeys", "decode_record", "encode_record"]

FORMAT = 1
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


class RtcKeys:
    """The Redis keys of one room's rtc relay (next to the fleet's, same hash tag).

    >>> k = RtcKeys("lab")
    >>> k.log, k.snapshot, k.leader
    ('vuer_sync:{lab}:rtc:log', 'vuer_sync:{lab}:rtc:snapshot', 'vuer_sync:{lab}:rtc:leader')
    """

    __slots__ = ("leader", "log", "snapshot")

    def __init__(self, room: str):
        prefix = RoomKeys(room).prefix
        self.log = f"{prefix}:rtc:log"  # the stream of records
        self.snapshot = f"{prefix}:rtc:snapshot"  # hash: id, data, seen, trimmed, time
        self.leader = f"{prefix}:rtc:leader"  # the snapshot writer's lease


def encode_record(producer: str, seq: int, record: Dict[str, Any]) -> Dict[str, Any]:
    """The ``XADD`` fields of one record.

    >>> decode_record(encode_record("n1", 3, {"k": "join", "c": "n1|s"}))
    ('n1', 3, {'k': 'join', 'c': 'n1|s'})
    """
    return {"v": FORMAT, "p": producer, "s": seq,
            "r": msgpack.packb(record, use_bin_type=True)}


def _field(fields: Dict[Any, Any], name: str) -> Any:
    v = fields.get(name.encode())
    return fields.get(name) if v is None else v


def decode_record(fields: Dict[Any, Any]) -> tuple:
    """``(producer, seq, record)`` of an entry's fields; ``ValueError`` if not ours."""
    v, p, s, r = (_field(fields, n) for n in ("v", "p", "s", "r"))
    if v is None or int(v) != FORMAT or p is None or s is None or r is None:
        raise ValueError("not an rtc journal entry")
    record = msgpack.unpackb(r, raw=False, strict_map_key=False)
    if not isinstance(record, dict):
        raise ValueError("rtc journal record is not a map")
    return (p.decode() if isinstance(p, bytes) else str(p)), int(s), record


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _redis_error() -> Any:
    import redis
    return redis.RedisError


class RedisRelayJournal:
    """A :class:`~vuer_sync.rtc.RelayJournal` on a Redis Stream (see the module docstring).

    ``snapshot_every`` records or ``snapshot_interval`` seconds: how often the lease holder
    writes the relay's snapshot; ``lease_ms``: its lease; ``block_ms``: one ``XREAD``'s
    wait (how fast :meth:`close` returns).
    """

    def __init__(self, url: str, room: str = "default", *, snapshot_every: int = 1000,
                 snapshot_interval: float = 5.0, lease_ms: int = 5000, block_ms: int = 200,
                 node_id: Optional[str] = None,
                 live_nodes: Optional[Callable[[], Iterable[str]]] = None):
        self.url = url
        self.room = room
        self.keys = RtcKeys(room)
        self.node_id = node_id or \
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: the ids of the room's live nodes (the fleet's presence), or None: then the
        #: clients of a node that died are not retired (see :meth:`_retire_orphans`)
        self.live_nodes = live_nodes
        self._retiring: Set[str] = set()
        self.snapshot_every = int(snapshot_every)
        self.snapshot_interval = float(snapshot_interval)
        self.lease_ms = int(lease_ms)
        self.block_ms = int(block_ms)
        self._sink: Optional[JournalSink] = None
        self._redis: Any = None
        self._cv = threading.Condition()
        self._queue: List[Dict[str, Any]] = []
        self._closing = False
        self._seq = 0
        self._stop = threading.Event()
        self._applied = threading.Condition()
        self._applied_id = "0-0"
        self._seen: Dict[str, int] = {}
        self._threads: List[threading.Thread] = []
        self._leader = False
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._snapshot_requests: List[threading.Event] = []
        self._counts: Dict[str, int] = {
            "appended": 0, "published": 0, "publish_errors": 0, "lost": 0, "applied": 0,
            "duplicates": 0, "bad_entries": 0, "snapshots_written": 0, "snapshots_loaded": 0,
            "resyncs": 0}

    # -- RelayJournal ---------------------------------------------------------------------

    @property
    def leader(self) -> bool:
        """This node holds the lease: it writes the snapshots (and mirrors the graph)."""
        return self._leader

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def start(self, sink: JournalSink) -> None:
        """Connect, load the snapshot and the stream's tail into ``sink`` (in this thread),
        then start the publisher and consumer threads. ``ConnectionError`` if Redis does
        not answer."""
        if self.started:
            return
        self._sink = sink
        self._redis = connect(self.url)
        try:
            self._redis.ping()
            self._catch_up()
            self._housekeeping(time.monotonic())
        except _redis_error() as e:
            self._redis.close()
            raise ConnectionError(f"rtc journal: Redis at {safe_url(self.url)} unavailable: "
                                  f"{e}") from e
        self._stop.clear()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._publish_loop, name="vuer-rtc-pub", daemon=True),
            threading.Thread(target=self._consume_loop, name="vuer-rtc-sub", daemon=True)]
        for t in self._threads:
            t.start()
        logger.info("rtc journal: node %s follows room %r", self.node_id, self.room)

    def append(self, record: Dict[str, Any]) -> None:
        """Queue one record for the stream (returns at once)."""
        with self._cv:
            self._queue.append(record)
            self._counts["appended"] += 1
            self._cv.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for up to ``timeout`` s), stop the threads, give up
        the lease."""
        if not self._threads:
            return
        deadline = time.monotonic() + timeout
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._threads[0].join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for t in self._threads[1:]:
            t.join(max(0.0, deadline - time.monotonic()) + self.block_ms / 1000)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            logger.warning("rtc journal close(): threads still running: %s", alive)
        self._threads = []
        if self._leader:
            try:
                self._redis.eval(_RELEASE, 1, self.keys.leader, self.node_id)
            except _redis_error():
                pass
            self._leader = False
        self._redis.close()

    # -- waiting and counters -------------------------------------------------------------

    @property
    def applied_id(self) -> str:
        """The id of the last stream entry this node applied."""
        return self._applied_id

    @property
    def stats(self) -> Dict[str, Any]:
        """Counters: ``appended`` (records queued), ``published`` (acknowledged by Redis),
        ``applied``, ``duplicates``, ``snapshots_written``/``snapshots_loaded``,
        ``resyncs``, ``publish_errors``, ``lost`` (given up on at close), ``pending``."""
        with self._cv:
            st: Dict[str, Any] = dict(self._counts)
            st["pending"] = len(self._queue)
        st["leader"] = self._leader
        st["applied_id"] = self._applied_id
        return st

    def wait_applied(self, sid: str, timeout: Optional[float] = 10.0) -> None:
        """Block until this node applied the stream up to ``sid`` (``TimeoutError``)."""
        want = stream_id(sid)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._applied:
            while stream_id(self._applied_id) < want:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"rtc journal: entry {sid} not applied in {timeout} s")
                self._applied.wait(left)

    def sync(self, timeout: Optional[float] = 10.0) -> str:
        """Block until this node applied everything the stream holds now; its last id."""
        if not self.started:
            raise RuntimeError("the rtc journal is not started")
        top = self._redis.xrevrange(self.keys.log, count=1)
        last = _text(top[0][0]) if top else self._applied_id
        self.wait_applied(last, timeout)
        return last

    def snapshot_now(self, timeout: float = 10.0) -> Optional[str]:
        """Have the consumer thread write a snapshot now (if this node holds the lease) and
        wait for it; returns the id of the room's snapshot afterwards (``None``: none)."""
        done = threading.Event()
        with self._cv:
            self._snapshot_requests.append(done)
        if not done.wait(timeout):
            raise TimeoutError("rtc journal: the consumer did not answer")
        snap_id = self._redis.hget(self.keys.snapshot, "id")
        return None if snap_id is None else _text(snap_id)

    @property
    def _tick(self) -> float:
        return min(1.0, self.lease_ms / 3000)

    # -- publisher thread -----------------------------------------------------------------

    def _publish_loop(self) -> None:
        delay = 0.05
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            entries = []
            for rec in batch:
                self._seq += 1
                entries.append(encode_record(self.node_id, self._seq, rec))
            while True:
                try:
                    pipe = self._redis.pipeline(transaction=False)
                    for fields in entries:
                        pipe.xadd(self.keys.log, fields)
                    pipe.execute()
                    with self._cv:
                        self._counts["published"] += len(entries)
                    delay = 0.05
                    break
                except _redis_error() as e:
                    with self._cv:
                        self._counts["publish_errors"] += 1
                        closing = self._closing
                    if closing and self._stop.is_set():
                        with self._cv:
                            self._counts["lost"] += len(entries)
                        logger.error("rtc journal: %d record(s) not written (Redis "
                                     "unreachable while closing); their clients retry",
                                     len(entries))
                        break
                    logger.warning("rtc journal: XADD failed (%s); retrying in %.2f s", e,
                                   delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)

    # -- consumer thread ------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Load the snapshot, then apply the stream's tail after it."""
        assert self._sink is not None
        r = self._redis
        for _ in range(10):  # again if the stream is trimmed past us meanwhile
            snap = r.hgetall(self.keys.snapshot)
            if snap.get(b"data") is not None:
                self._sink.journal_load(snap[b"data"])
                self._seen = msgpack.unpackb(snap.get(b"seen") or b"\x80", raw=False)
                self._set_applied(_text(snap[b"id"]))
                self._counts["snapshots_loaded"] += 1
            while True:
                entries = r.xrange(self.keys.log, min=f"({self._applied_id}", count=1000)
                if not entries:
                    return
                if not self._apply_checked(entries):
                    break
        logger.error("rtc journal: the stream kept being trimmed past this node")

    def _apply_checked(self, entries: List[Any]) -> bool:
        """Apply entries read after :attr:`applied_id`, unless the stream was trimmed past
        it (entries may be missing): then ``False``, nothing applied."""
        trimmed = self._redis.hget(self.keys.snapshot, "trimmed")
        if trimmed and stream_id(self._applied_id) < stream_id(trimmed):
            return False
        self._apply(entries)
        return True

    def _apply(self, entries: List[Any]) -> None:
        assert self._sink is not None
        last = None
        for eid, fields in entries:
            last = _text(eid)
            try:
                producer, seq, record = decode_record(fields)
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                self._counts["bad_entries"] += 1
                logger.warning("rtc journal: entry %s skipped: %s", last, e)
                continue
            if seq <= self._seen.get(producer, 0):
                self._counts["duplicates"] += 1
                continue
            self._seen[producer] = seq
            try:
                self._sink.journal_apply(record)
            except Exception:
                logger.exception("rtc journal: applying entry %s failed", last)
            self._counts["applied"] += 1
            self._since_snapshot += 1
        if last is not None:
            self._set_applied(last)

    def _set_applied(self, sid: str) -> None:
        with self._applied:
            self._applied_id = sid
            self._applied.notify_all()

    def _consume_loop(self) -> None:
        last_check = 0.0
        delay = 0.05
        while not self._stop.is_set():
            try:
                resp = self._redis.xread({self.keys.log: self._applied_id}, count=1000,
                                         block=self.block_ms)
                for _, entries in (resp.items() if isinstance(resp, dict) else resp or []):
                    if not self._apply_checked(entries):
                        logger.warning("rtc journal: this node fell behind the trimmed "
                                       "stream; reloading the room")
                        self._counts["resyncs"] += 1
                        self._catch_up()
                now = time.monotonic()
                with self._cv:
                    asked, self._snapshot_requests = self._snapshot_requests, []
                if asked or now - last_check >= self._tick or (
                        self._leader and self._since_snapshot >= self.snapshot_every):
                    last_check = now
                    self._housekeeping(now, force=bool(asked))
                for ev in asked:
                    ev.set()
                delay = 0.05
            except _redis_error() as e:
                logger.warning("rtc journal: Redis error (%s); retrying in %.2f s", e, delay)
                self._leader = False
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)

    def _housekeeping(self, now: float, force: bool = False) -> None:
        """Hold or take the lease; write a snapshot when one is due."""
        r = self._redis
        if self._leader:
            self._leader = bool(r.eval(_RENEW, 1, self.keys.leader, self.node_id,
                                       self.lease_ms))
        if not self._leader:
            self._leader = bool(r.set(self.keys.leader, self.node_id, nx=True,
                                      px=self.lease_ms))
        if self._leader:
            self._retire_orphans()
        if self._leader and (self._since_snapshot or force) and (
                force or self._since_snapshot >= self.snapshot_every
                or now - self._last_snapshot >= self.snapshot_interval):
            self._write_snapshot()

    def _retire_orphans(self) -> None:
        """(Lease holder.) Journal a leave for every connection of a node that is no longer
        live (it died without saying so), so its clients stop holding the room's stability
        horizon (and compaction) back; they rejoin through another node."""
        if self.live_nodes is None or self._sink is None:
            return
        conns = getattr(self._sink, "journal_conns", None)
        if conns is None:
            return
        try:
            live = set(self.live_nodes())
        except (RuntimeError, _redis_error()) as e:
            logger.debug("rtc journal: live nodes unknown (%s)", e)
            return
        if self.node_id not in live:
            return  # our own heartbeat is missing: presence is not trustworthy now
        for conn in conns():
            node, sep, _ = conn.rpartition("|")
            if sep and node not in live and conn not in self._retiring:
                self._retiring.add(conn)
                logger.info("rtc journal: retiring %s (its node is gone)", conn)
                self.append({"k": "leave", "c": conn})

    def _write_snapshot(self) -> None:
        """The relay at the applied id, then the stream trimmed behind the previous one."""
        assert self._sink is not None
        size = write_snapshot(self._redis, self.keys, self._applied_id,
                              self._sink.journal_dump, {"seen": self._seen}, exact=True)
        self._since_snapshot = 0
        if size is None:
            return  # a newer one is there (written by the previous lease holder)
        with self._cv:
            self._counts["snapshots_written"] += 1
        self._last_snapshot = time.monotonic()
        logger.debug("rtc journal: snapshot at %s (%d bytes)", self._applied_id, size)
