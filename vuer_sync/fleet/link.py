"""The shell around the pure core: one process's link to a room on Redis.

A :class:`FleetLink` runs up to two threads:

- the **publisher** (``vuer-fleet-pub``) takes what the producers queued (coalesced by the
  :class:`~vuer_sync.fleet.batcher.Batcher` while it waits), cuts it into entries and
  appends them to the room's stream with one pipelined round trip (one ``XADD`` per entry);
- the **consumer** (``vuer-fleet-sub``, only with a *sink*: a node that serves clients)
  reads the stream with ``XREAD BLOCK`` from the last id it applied and hands each entry to
  the sink in stream order. It also keeps the room's snapshot: one node at a time holds a
  lease (``SET NX PX``) and writes the scene and the stream id it reflects every
  ``snapshot_every`` entries or ``snapshot_interval`` seconds, then trims the stream behind
  the previous snapshot.

A node that starts loads the snapshot and the stream's tail before it serves anyone
(:meth:`FleetLink.start`); a node that fell behind the trimmed part of the stream reloads the
snapshot (a resync: its clients get the scene as one ``SET``).

``redis`` is imported when a link starts, so ``import vuer_sync`` works without it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import msgpack

from ..coalesce import MergeInfo
from ..errors import SessionClosed
from .batcher import Batcher, merge_backlog, split_batches
from .entry import Item, RoomKeys, decode_entry, item_ops
from .presence import Presence
from .remote import RemoteCalls
from .room import SharedToken, reseed

logger = logging.getLogger("vuer_sync.fleet")

#: seconds without a pooled Redis use before a node closes its idle pooled connections
POOL_IDLE_S = 5.0

__all__ = ["FleetLink", "FleetSink", "FleetUnavailable", "OwnConnection", "connect", "safe_url",
           "stream_id", "stream_reply"]

_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end")
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


class FleetUnavailable(ConnectionError):
    """Redis could not be reached: when a link starts, or, for a producer, when more than
    the link's ``max_buffer_bytes`` waited for Redis for longer than ``buffer_timeout``."""


class FleetSink(Protocol):
    """What a consuming link needs of the scene it keeps (``app.scene`` is one)."""

    def fleet_apply(self, items: List[Item], direct: bool = False) -> int:
        """Apply one stream entry's items, in order, and send them to the local clients
        (``direct``: this node is not behind, the entry is small: write to idle clients from
        the calling thread rather than through their I/O loop). Returns how many messages
        were written from the calling thread."""

    def fleet_snapshot(self) -> bytes:
        """The current scene as one encoded ``SET`` message."""

    def fleet_load(self, payload: bytes) -> None:
        """Replace the scene with a snapshot (an encoded ``SET``) and send it to the clients."""

    def fleet_sessions(self) -> List[Dict[str, Any]]:
        """This node's sessions (``sid``, ``init`` fields, ``since``), for the heartbeat."""

    def fleet_call(self, sid: str, op: str, payload: Optional[bytes], args: Dict[str, Any],
                   timeout: float) -> Any:
        """Run a call from another process on the local session ``sid`` (``send``,
        ``rpc``, ``get_render``...); returns a msgpack-able answer."""


def stream_id(sid: Any) -> Tuple[int, int]:
    """A stream id (``"ms-seq"``, str or bytes) as a comparable tuple.

    >>> stream_id(b"1700000000000-3") < stream_id("1700000000001-0")
    True
    """
    s = sid.decode() if isinstance(sid, bytes) else str(sid)
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def connect(url: str, timeout: float = 30.0) -> Any:
    """A ``redis.Redis`` client for ``url`` (``redis://``, ``rediss://`` for TLS, a password
    in the URL); ``timeout``: for one command's answer (and, at most 5 s, to connect).
    ``ImportError`` with the install command if the ``redis`` package is missing."""
    try:
        import redis
    except ImportError:
        raise ImportError("the fleet needs the redis client: pip install 'vuer-sync[fleet]'"
                          ) from None
    return redis.Redis.from_url(url, socket_connect_timeout=min(5.0, timeout),
                                socket_timeout=timeout, health_check_interval=30)


def _redis_error() -> Any:
    import redis
    return redis.RedisError


class IdlePool:
    """Closes a redis-py pool's idle connections once per quiet spell: ``idle_s`` seconds in
    which nobody counted a use (``uses += 1``: remote calls, listings, presence writes,
    bursts that grow the pool to their concurrency). The next command connects again.

    >>> import redis
    >>> pool, idle = redis.ConnectionPool(), IdlePool(idle_s=5.0)
    >>> idle.check(pool, now=0.0), idle.check(pool, now=6.0), idle.check(pool, now=20.0)
    (False, True, False)
    >>> idle.uses += 1
    >>> idle.check(pool, now=21.0), idle.check(pool, now=26.0), idle.trims
    (False, True, 2)
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = float(idle_s)
        self.uses = 0
        self.trims = 0
        self._seen: Optional[Tuple[int, float, bool]] = None  # (uses, since when, trimmed)

    def check(self, pool: Any, now: float) -> bool:
        """Close ``pool``'s idle connections if a quiet spell just reached ``idle_s`` (the
        first check starts the first spell)."""
        if self._seen is None:
            self._seen = (self.uses, now, False)
            return False
        uses, since, trimmed = self._seen
        if self.uses != uses:
            self._seen = (self.uses, now, False)
        elif not trimmed and now - since >= self.idle_s:
            pool.disconnect(inuse_connections=False)
            self._seen = (uses, since, True)
            self.trims += 1
            return True
        return False


class OwnConnection:
    """One Redis connection used by one thread at a time, outside redis-py's pool: a command
    is one send and its replies read, nothing else. Through the client, each command also
    checks the pooled connection for stray data (a non-blocking read, its timeout set and
    reset), runs the pool's bookkeeping and observability hooks and the reply's callback:
    on a loaded 2-core machine 40-100 µs before the bytes leave and after they arrive, on
    the fleet's latency path (a producer's direct ``XADD``, the consumer's ``XREAD``).

    The connection takes the client's settings (URL, TLS, password, timeouts, protocol).
    Replies are as parsed, without the client's callbacks (see :func:`stream_reply`). Any
    error drops the connection (the next call connects again) and is raised."""

    def __init__(self, client: Any):
        self._pool = client.connection_pool
        self._conn: Any = None

    def call(self, *args: Any) -> Any:
        """One command's reply."""
        return self.calls([args])[0]

    def calls(self, commands: List[Tuple[Any, ...]]) -> List[Any]:
        """Several commands in one send (pipelined, not a transaction): their replies."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._pool.make_connection()
        try:  # the send connects first when not connected
            if len(commands) == 1:
                conn.send_packed_command(conn.pack_command(*commands[0]))
            else:
                conn.send_packed_command(conn.pack_commands(commands))
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse the socket as is
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()


def stream_reply(resp: Any) -> List[Tuple[Any, List[Tuple[Any, Dict[Any, Any]]]]]:
    """An ``XREAD`` reply as :class:`OwnConnection` returns it (RESP3: a map of stream to
    entries; RESP2: a list of ``[stream, entries]``; ``None`` when it timed out) as
    ``[(stream, [(id, {field: value})])]``, the shape redis-py's ``xread`` gives.

    >>> stream_reply({b"s": [[b"1-0", [b"a", b"1", b"b", b"2"]]]})
    [(b's', [(b'1-0', {b'a': b'1', b'b': b'2'})])]
    >>> stream_reply([[b"s", [[b"1-0", [b"a", b"1"]]]]]), stream_reply(None)
    ([(b's', [(b'1-0', {b'a': b'1'})])], [])
    """
    if not resp:
        return []
    pairs = resp.items() if isinstance(resp, dict) else resp
    out = []
    for name, entries in pairs:
        rows = []
        for eid, flat in entries or ():
            flat = flat or ()
            rows.append((eid, dict(zip(flat[::2], flat[1::2]))))
        out.append((name, rows))
    return out


class FleetLink:
    """One process's link to a fleet room (see the module docstring).

    >>> link = FleetLink("redis://127.0.0.1:6379/0", room="lab")  # nothing connects yet
    >>> link.keys.log, link.started
    ('vuer_sync:{lab}:log', False)

    ``publish``/``publish_group`` queue (any thread; they return at once while less than
    ``max_buffer_bytes`` wait for Redis, else block up to ``buffer_timeout`` seconds, then
    raise :class:`FleetUnavailable`); ``flush`` waits until Redis acknowledged what was
    queued before it; ``start``/``close`` run the threads. ``snapshot_every`` entries or
    ``snapshot_interval`` seconds: how often the elected node writes the room's snapshot;
    ``lease_ms``: that node's lease; ``max_entry_bytes``: the size of one stream entry (a
    larger message is an entry of its own).
    """

    def __init__(self, url: str, room: str = "default", *, sink: Optional[FleetSink] = None,
                 snapshot_every: int = 1000, snapshot_interval: float = 5.0,
                 lease_ms: int = 5000, max_entry_bytes: int = 1 << 20, block_ms: int = 200,
                 max_buffer_bytes: int = 64 << 20, buffer_timeout: float = 10.0):
        self.url = url
        self.keys = RoomKeys(room)
        self.room = room
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sink = sink
        self.snapshot_every = int(snapshot_every)
        self.snapshot_interval = float(snapshot_interval)
        self.lease_ms = int(lease_ms)
        self.max_entry_bytes = int(max_entry_bytes)
        self.block_ms = int(block_ms)
        self.max_buffer_bytes = int(max_buffer_bytes)
        self.buffer_timeout = float(buffer_timeout)
        self._inflight = 0  # bytes handed to Redis, not yet acknowledged
        #: producers write to Redis themselves when the link is idle (``publish``)
        self.direct = True
        #: ... when their last write ended at least this many times its duration ago
        self.direct_gap = 2.0
        self._sending = False  # a writer (the thread or a producer) has a job in flight
        self._handover: Optional[Tuple[List[Item], int, List[Any]]] = None
        self._write_s = 0.0  # how long a write takes (moving average)
        self._last_write_end = 0.0
        self._redis: Any = None
        self._direct_redis: Any = None
        self._direct_conn: Any = None  # the producers' direct writes (OwnConnection)
        self._reader: Any = None  # the consumer's XREAD (OwnConnection)
        self._writer: Any = None  # the publisher thread's XADDs (OwnConnection)
        self._direct_ok = True
        self._cv = threading.Condition()  # the batcher, acknowledgements
        self._batcher = Batcher()
        self._acked = 0
        self._seq = 0
        self._last_acked: Optional[str] = None
        self._closing = False
        self._give_up_at = float("inf")
        self._stop = threading.Event()
        self._applied = threading.Condition()
        self._applied_id = "0-0"
        self._seen: Dict[str, int] = {}
        self._threads: List[threading.Thread] = []
        self._leader = False
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._presence = Presence(self.keys, self.node_id, 3000, self._local_sessions)
        self._presence_dirty = False
        self._remote = RemoteCalls(self.keys, self.node_id)
        #: builds ``session(sid)``'s proxy (``vuer_sync.server`` hands it down)
        self.session_factory: Optional[Callable[[FleetLink, str], Any]] = None
        self._counts: Dict[str, int] = {
            "published": 0, "entries": 0, "publish_errors": 0, "applied_entries": 0,
            "applied_ops": 0, "duplicates": 0, "bad_entries": 0, "snapshots_written": 0,
            "snapshots_loaded": 0, "resyncs": 0, "blocked": 0, "lost": 0, "reseeds": 0,
            "backlog_coalesced": 0, "direct": 0, "direct_entries": 0,
            "direct_writes": 0}
        self._epoch: Optional[bytes] = None
        #: the pool's idle connections close after ``pool.idle_s`` s unused (:class:`IdlePool`)
        self.pool = IdlePool(POOL_IDLE_S)
        #: a node behind the stream merges the entries it reads at once before applying
        #: them (``False``: entry by entry, every message as published)
        self.merge_backlog = True
        #: an entry read alone (this node is not behind) with at most this many messages is
        #: delivered by the consumer thread itself to idle clients (``fleet_apply(direct=
        #: True)``: no wake-up of an I/O thread per delivery); ``0``: always through the loop
        self.direct_delivery = 4
        #: this node heartbeats its presence (a node serving clients; a publisher-only
        #: process that keeps a scene only for the snapshots does not)
        self.presence = True
        #: the browser-facing token the room's nodes share (:class:`~.room.SharedToken`)
        self.room_token = SharedToken(self.keys, self.node_id)

    # -- producers ------------------------------------------------------------------------

    def publish(self, payload: Any, msg: Optional[Dict[str, Any]], rkey: Optional[str] = None,
                info: Optional[MergeInfo] = None, exclude: Optional[Tuple[str, str]] = None
                ) -> None:
        """Queue one encoded message for the room (coalesced while Redis is behind).
        ``exclude``: ``(node id, session id)`` of a client not to send it to.

        On an idle link (nothing waiting or being written, the last write long enough ago:
        see ``direct``), the calling thread writes the entry itself, one round trip, instead
        of waking the publisher thread; under load, calls only queue."""
        with self._cv:
            self._room_for(len(payload))
            self._batcher.add(payload, msg, rkey, info, exclude)
            if self._take_direct():
                job = self._take_job()
            else:
                self._cv.notify_all()
                return
        self._send_direct(job)

    def publish_group(self, payloads: List[Any],
                      excludes: Optional[List[Optional[Tuple[str, str]]]] = None) -> None:
        """Queue an ``atomic()`` group: one item, delivered back to back everywhere.
        ``excludes``: per message, ``None`` or the ``(node id, session id)`` of a client not
        to send it to."""
        with self._cv:
            self._room_for(sum(len(p) for p in payloads))
            self._batcher.add_group(payloads, excludes)
            self._cv.notify_all()

    def _take_direct(self) -> bool:
        """(Under the lock.) May the producer write what it just queued itself? Only when
        the link is idle: one item waiting, nothing being written, not closing, and the last
        write ended at least ``direct_gap`` (2) times its duration ago (so a producer spends
        at most about a third of its time in direct writes; faster callers are batched by
        the thread). A write's duration includes waiting for the GIL while this node's
        consumer reads the same entry back (hundreds of µs on 2 cores): with 4, a 400 Hz
        producer went through the thread, one more wake-up, for 15-40 % of its calls."""
        if not self.direct or not self._direct_ok or self._sending or self._closing \
                or len(self._batcher) != 1 or not self._threads:
            return False
        return time.monotonic() - self._last_write_end >= self.direct_gap * self._write_s

    def _take_job(self) -> Tuple[List[Item], int]:
        """(Under the lock.) Take what waits for a writer; the caller is the writer now."""
        self._sending = True
        self._inflight = self._batcher.nbytes
        items = self._batcher.take()
        return items, self._batcher.accepted

    def _send_direct(self, job: Tuple[List[Item], int]) -> None:
        """Write one job from the producer's thread: one attempt; if Redis does not answer,
        the publisher thread takes the job over (and retries, as for its own)."""
        items, upto = job
        entries = split_batches(items, self.node_id, self._seq + 1, self.max_entry_bytes)
        self._seq = entries[-1][0]
        t0 = time.monotonic()
        try:
            ids = [_text(i) for i in self._direct_conn.calls(
                [_xadd(self.keys.log, fields) for _, fields, _ in entries])]
        except _redis_error() as e:
            logger.debug("fleet: direct publish failed (%s); the publisher thread retries", e)
            with self._cv:
                self._direct_ok = False  # until the thread's own write goes through
                self._counts["publish_errors"] += 1
                self._handover = (items, upto, entries)
                self._cv.notify_all()
            return
        self._write_s = 0.8 * self._write_s + 0.2 * (time.monotonic() - t0)
        with self._cv:
            self._counts["direct"] += 1
            self._done(items, upto, entries, ids)

    def _done(self, items: List[Item], upto: int,
              entries: List[Tuple[int, Dict[str, Any], int]], ids: Optional[List[str]]
              ) -> None:
        """(Under the lock.) A job was acknowledged (``ids``) or given up on (``None``)."""
        if ids is not None:
            self._last_acked = ids[-1]
            self._counts["entries"] += len(ids)
            self._counts["published"] += sum(n for _, _, n in entries)
        else:
            lost = sum(item_ops(it) for it in items)
            self._counts["lost"] += lost
            logger.error("fleet: %d operation(s) not published (Redis unreachable "
                         "while closing)", lost)
        self._acked = upto  # given up on or acknowledged: flush() stops waiting
        self._inflight = 0
        self._sending = False
        self._last_write_end = time.monotonic()
        self._cv.notify_all()

    def _room_for(self, nbytes: int) -> None:
        """(Under the lock.) Wait while the buffer is over budget; ``FleetUnavailable``
        after ``buffer_timeout`` s. One message larger than the budget alone goes through."""
        waiting = self._batcher.nbytes + self._inflight
        if not waiting or waiting + nbytes <= self.max_buffer_bytes:
            return
        self._counts["blocked"] += 1
        deadline = time.monotonic() + self.buffer_timeout
        while True:
            waiting = self._batcher.nbytes + self._inflight
            if not waiting or waiting + nbytes <= self.max_buffer_bytes:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise FleetUnavailable(
                    f"fleet: {waiting} bytes are waiting for Redis at {safe_url(self.url)} "
                    f"(max_buffer_bytes={self.max_buffer_bytes}) for more than "
                    f"{self.buffer_timeout} s: is Redis reachable?")
            self._cv.wait(left)

    def flush(self, timeout: Optional[float] = 10.0) -> Optional[str]:
        """Block until Redis acknowledged everything queued before the call; returns the id
        of the last entry acknowledged (``None`` if nothing was ever published).

        ``TimeoutError`` after ``timeout`` seconds; ``RuntimeError`` if the link is not
        started."""
        if not self.started:
            raise RuntimeError("the fleet link is not started (start the app first)")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            target = self._batcher.accepted
            lost = self._counts["lost"]
            while self._acked < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"fleet flush: {target - self._acked} operation(s) not "
                                       f"acknowledged by Redis within {timeout} s")
                self._cv.wait(left)
            if self._counts["lost"] > lost:
                raise FleetUnavailable(f"fleet flush: {self._counts['lost'] - lost} "
                                       "operation(s) dropped: Redis unreachable while closing")
            return self._last_acked

    def wait_applied(self, sid: str, timeout: Optional[float] = 10.0) -> None:
        """Block until the consumer applied the stream up to ``sid`` (``TimeoutError``)."""
        want = stream_id(sid)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._applied:
            while stream_id(self._applied_id) < want:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"fleet: entry {sid} not applied within {timeout} s")
                self._applied.wait(left)

    def sync(self, timeout: Optional[float] = 10.0) -> str:
        """Block until this node applied everything the room's stream holds now (what
        every producer had published when the call was made); returns that entry's id.

        ``TimeoutError`` after ``timeout`` seconds; ``RuntimeError`` without a sink (a
        publisher-only link applies nothing)."""
        if self.sink is None or not self.started:
            raise RuntimeError("sync() needs a started node (a link with a scene)")
        top = self._redis.xrevrange(self.keys.log, count=1)
        last = _text(top[0][0]) if top else self._applied_id
        self.wait_applied(last, timeout)
        return last

    def presence_changed(self) -> None:
        """A session joined or left: heartbeat now (not at the next tick)."""
        with self._cv:
            self._presence_dirty = True
            self._cv.notify_all()

    def nodes(self) -> Dict[str, Dict[str, Any]]:
        """The live nodes of the room (node id -> ``host``, ``pid``, ``since``, ``t`` of
        the last heartbeat, ``sessions``); a node that stopped heartbeating is gone within
        a few heartbeats (about ``3.5 * min(1, lease_ms / 3000)`` s, at least 1 s)."""
        if not self.started:
            raise RuntimeError("the fleet link is not started")
        self.pool.uses += 1
        return self._presence.nodes(self._redis)

    def sessions(self) -> List[Dict[str, Any]]:
        """Every client of the room on every live node: ``sid``, ``node``, ``init`` (its
        ``INIT`` fields, once received: a heartbeat later), ``since`` (epoch seconds)."""
        return [dict(s, node=node) for node, doc in self.nodes().items()
                for s in doc.get("sessions") or []]

    def session(self, sid: str) -> Any:
        """A proxy on the client ``sid`` of the room, whichever node it is connected to:
        ``send``/``@`` operations, ``rpc()``, ``grab_render()``, ``get_render()``,
        ``flush()`` (see :class:`vuer_sync.server.fleet_api.FleetSession`)."""
        if self.session_factory is None:
            raise RuntimeError("no session proxies on this link")
        return self.session_factory(self, sid)

    def node_of(self, sid: str) -> str:
        """The node the client ``sid`` is connected to; ``SessionClosed`` if it is not in
        the room (any more)."""
        for node, doc in self.nodes().items():
            if any(s.get("sid") == sid for s in doc.get("sessions") or []):
                return node
        raise SessionClosed(f"session {sid} is not connected to any node of room "
                            f"{self.room!r}")

    def call(self, node: str, sid: str, op: str, payload: Optional[bytes] = None,
             args: Optional[Dict[str, Any]] = None, timeout: float = 10.0,
             wait: bool = True) -> Any:
        """Run ``op`` on the session ``sid`` of ``node`` (see :mod:`vuer_sync.fleet.remote`)
        and return its answer; ``wait=False``: queue it and return (``send``)."""
        if not self.started:
            raise RuntimeError("the fleet link is not started")
        self.pool.uses += 1
        key = self._remote.request(self._redis, node, sid, op, payload, args, timeout,
                                   reply=wait)
        if key is None:
            return None
        return self._remote.wait(self._redis, key, node, f"{op} on session {sid}",
                                 timeout + 2.0)

    @property
    def heartbeat_s(self) -> float:
        """Seconds between two heartbeats (and lease checks) of a node."""
        return min(1.0, self.lease_ms / 3000)

    def _local_sessions(self) -> List[Dict[str, Any]]:
        return self.sink.fleet_sessions() if self.sink is not None else []

    def _heartbeat(self, busy: bool = True) -> None:
        if self.sink is None or not self.presence:
            return
        self.pool.uses += busy
        try:
            self._presence.write(self._redis)
        except _redis_error() as e:
            logger.debug("fleet: heartbeat failed: %s", e)

    @property
    def applied_id(self) -> str:
        """The id of the last stream entry this node applied."""
        return self._applied_id

    @property
    def started(self) -> bool:
        return bool(self._threads)

    @property
    def leader(self) -> bool:
        """This node holds the snapshot lease."""
        return self._leader

    @property
    def stats(self) -> Dict[str, Any]:
        """Counters: ``ops`` queued, ``coalesced`` before Redis, ``published`` (ops
        acknowledged), ``entries`` (stream entries written), ``pending`` (ops not yet
        acknowledged) and ``buffered_bytes``, ``blocked`` (producer calls that waited for
        the buffer), ``lost`` (dropped: Redis unreachable while closing),
        ``applied_entries``/``applied_ops``, ``backlog_coalesced`` (messages merged away
        because this node read several entries at once: it was behind),
        ``direct_entries`` (entries read alone and small: delivered by the consumer thread,
        ``direct_delivery``) and ``direct_writes`` (messages it wrote to idle clients
        itself), ``duplicates`` (entries applied once already),
        ``snapshots_written``/``snapshots_loaded``, ``resyncs``, ``pool_trims`` (IdlePool)."""
        with self._cv:
            st: Dict[str, Any] = dict(self._counts, pool_trims=self.pool.trims)
            st["ops"] = self._batcher.stats["ops"]
            st["coalesced"] = self._batcher.stats["coalesced"]
            st["pending"] = self._batcher.accepted - self._acked
            st["buffered_bytes"] = self._batcher.nbytes + self._inflight
        st["leader"] = self._leader
        st["applied_id"] = self._applied_id
        return st

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FleetLink:
        """Connect, load the room (snapshot + tail, with a sink) and start the threads.
        ``FleetUnavailable`` if Redis does not answer."""
        if self.started:
            return self
        self._redis = connect(self.url)
        # direct writes from a producer's thread: a short timeout, so a hung Redis costs a
        # producer at most that once (the thread then retries: the entry keeps its number)
        self._direct_redis = connect(self.url, timeout=0.25)
        self._direct_conn = OwnConnection(self._direct_redis)
        self._reader = OwnConnection(self._redis)
        self._writer = OwnConnection(self._redis)
        self._direct_ok = True
        try:
            self._redis.ping()
            self.room_token.sync(self._redis, at_start=True)
            if self.sink is not None:
                self._catch_up()
                self._check_epoch()
        except _redis_error() as e:
            self._redis.close()
            self._direct_redis.close()
            raise FleetUnavailable(f"fleet: Redis at {safe_url(self.url)} unavailable: {e}"
                                   ) from e
        except ValueError:
            self._redis.close()
            self._direct_redis.close()
            raise
        self._stop.clear()
        self._presence.ttl_ms = max(1000, int(3500 * self.heartbeat_s))
        self._heartbeat()
        with self._cv:
            self._closing = False
            self._give_up_at = float("inf")
        self._threads = [threading.Thread(target=self._publish_loop, name="vuer-fleet-pub",
                                          daemon=True)]
        if self.sink is not None:
            self._threads.append(threading.Thread(target=self._consume_loop,
                                                  name="vuer-fleet-sub", daemon=True))
        for t in self._threads:
            t.start()
        logger.info("fleet: node %s joined room %r", self.node_id, self.room)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for up to ``timeout`` s if Redis is down), stop the
        threads, give up the snapshot lease."""
        if not self._threads:
            return
        with self._cv:
            self._closing = True
            self._give_up_at = time.monotonic() + timeout
            self._cv.notify_all()
        deadline = time.monotonic() + timeout + 1.0
        pub = self._threads[0]
        pub.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for t in self._threads[1:]:
            t.join(max(0.0, deadline - time.monotonic()))
        # calls still waiting for a client end with it (app.stop() closes the clients next)
        self._remote.close(self._redis, min(0.2, max(0.0, deadline - time.monotonic())))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            logger.warning("fleet close(): threads still running: %s", alive)
        self._threads = []
        if self.sink is not None and self.presence:
            try:
                self._presence.leave(self._redis)
            except _redis_error():
                pass
        if self._leader:
            try:
                self._redis.eval(_RELEASE, 1, self.keys.leader, self.node_id)
            except _redis_error():
                pass
            self._leader = False
        for own in (self._reader, self._writer, self._direct_conn):
            own.close()
        self._redis.close()
        self._direct_redis.close()

    def __enter__(self) -> FleetLink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- publisher thread -----------------------------------------------------------------

    def _publish_loop(self) -> None:
        while True:
            with self._cv:
                while not self._publisher_work():
                    self._cv.wait()
                dirty, self._presence_dirty = self._presence_dirty, False
                handover, self._handover = self._handover, None
                if handover is not None:
                    items, upto, entries = handover
                elif len(self._batcher):
                    items, upto = self._take_job()
                    entries = []
                elif not dirty:
                    return  # closing, everything published
                else:
                    items = []
            if dirty:
                self._heartbeat()
            if not items:
                continue
            if not entries:
                entries = split_batches(items, self.node_id, self._seq + 1,
                                        self.max_entry_bytes)
                self._seq = entries[-1][0]
            t0 = time.monotonic()
            ids = self._send(entries)
            with self._cv:
                if ids is not None:
                    self._write_s = 0.8 * self._write_s + 0.2 * (time.monotonic() - t0)
                    self._direct_ok = True
                self._done(items, upto, entries, ids)

    def _publisher_work(self) -> bool:
        """(Under the lock.) Has the publisher thread something to do: a job a producer
        handed over, or (when no producer is writing) operations, a heartbeat, closing."""
        return self._handover is not None or (not self._sending and (
            bool(len(self._batcher)) or self._presence_dirty or self._closing))

    def _send(self, entries: List[Tuple[int, Dict[str, Any], int]]) -> Optional[List[str]]:
        """XADD the entries in one pipeline, retrying while Redis is unreachable (a retry may
        write an entry twice: consumers skip it by its producer sequence number)."""
        delay = 0.05
        while True:
            try:
                return [_text(i) for i in self._writer.calls(
                    [_xadd(self.keys.log, fields) for _, fields, _ in entries])]
            except _redis_error() as e:
                self._counts["publish_errors"] += 1
                if time.monotonic() >= self._give_up_at:
                    return None
                logger.warning("fleet: publishing failed (%s); retrying in %.2f s", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- consumer thread ------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Load the snapshot, then apply the stream's tail after it (at start, in the
        caller's thread; again when this node fell behind the trimmed stream)."""
        assert self.sink is not None
        r = self._redis
        for _ in range(10):  # again if the stream is trimmed past us meanwhile
            snap = r.hgetall(self.keys.snapshot)
            if snap.get(b"data") is not None:
                self.sink.fleet_load(snap[b"data"])
                self._seen = msgpack.unpackb(snap.get(b"seqs") or b"\x80", raw=False)
                self._set_applied(_text(snap[b"id"]))
                self._counts["snapshots_loaded"] += 1
            for _ in range(1_000_000):  # bounded: the stream's tail, 1000 entries per read
                pipe = r.pipeline(transaction=False)
                pipe.xrange(self.keys.log, min=f"({self._applied_id}", count=1000)
                pipe.hget(self.keys.snapshot, "trimmed")
                entries, trimmed = pipe.execute()
                if not entries:
                    return
                if not self._apply_checked(entries, trimmed):
                    break
        logger.error("fleet: the room's stream kept being trimmed past this node")

    def _execute(self, sid: str, op: str, payload: Optional[bytes], args: Dict[str, Any],
                 timeout: float) -> Any:
        assert self.sink is not None
        return self.sink.fleet_call(sid, op, payload, args, timeout)

    def _apply_checked(self, entries: List[Any], trimmed: Any) -> bool:
        """Apply entries read after :attr:`applied_id`, unless the stream was trimmed past
        it (entries may be missing in between): then ``False``, nothing applied.
        ``trimmed``: the snapshot's ``trimmed`` mark, read in the same pipeline right after
        the entries (no round trip of its own). The snapshot writer sets the mark before it
        trims (one transaction), so a read that raced a trim sees the mark."""
        if trimmed and stream_id(self._applied_id) < stream_id(trimmed):
            return False
        self._apply_entries(entries)
        return True

    def _consume_loop(self) -> None:
        check_every = self.heartbeat_s
        last_check = 0.0
        delay = 0.05
        while not self._stop.is_set():
            try:
                # on a connection of its own (no pool: the entry reaches the clients
                # sooner); the HGET runs when XREAD returns, its reply in the same read
                resp, trimmed = self._reader.calls([
                    ("XREAD", "COUNT", 500, "BLOCK", self.block_ms, "STREAMS", self.keys.log,
                     self._remote.inbox, self._applied_id, self._remote.last_id),
                    ("HGET", self.keys.snapshot, "trimmed")])
                for name, entries in stream_reply(resp):
                    if _text(name) == self._remote.inbox:
                        self.pool.uses += 1
                        self._remote.handle(self._redis, entries, self._execute)
                    elif not self._apply_checked(entries, trimmed):
                        logger.warning("fleet: this node fell behind the trimmed stream; "
                                       "reloading the room")
                        self._counts["resyncs"] += 1
                        self._catch_up()
                if self._leader and self._since_snapshot >= self.snapshot_every:
                    self._write_snapshot()
                now = time.monotonic()
                if now - last_check >= check_every:
                    last_check = now
                    self._housekeeping(now)
                delay = 0.05
            except _redis_error() as e:
                logger.warning("fleet: Redis error while following the room (%s); retrying in "
                               "%.2f s", e,
                               delay)
                self._leader = False
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)

    def _apply_entries(self, entries: List[Any]) -> None:
        """Apply entries read from the stream, in order. Several new entries at once (this
        node is behind) are merged first (:func:`~vuer_sync.fleet.batcher.merge_backlog`,
        counted in ``backlog_coalesced``) and applied, and sent to the clients, as one. A
        re-seed entry (:func:`~.room.reseed`) replaces the scene and the sequence numbers."""
        assert self.sink is not None
        last = None
        fresh: List[List[Item]] = []
        for eid, fields in entries:
            last = _text(eid)
            try:
                entry = decode_entry(fields)
                seed = fields.get(b"seed")
                seqs = None if seed is None else msgpack.unpackb(seed, raw=False)
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                self._counts["bad_entries"] += 1
                logger.warning("fleet: entry %s skipped: %s", last, e)
                continue
            if seqs is not None:
                self._apply_fresh(fresh, last)
                fresh = []
                self.sink.fleet_load(bytes(entry.items[0]))
                self._seen = dict(seqs)
                self._seen[entry.producer] = entry.seq
                self._counts["snapshots_loaded"] += 1
                continue
            if entry.seq <= self._seen.get(entry.producer, 0):
                self._counts["duplicates"] += 1
                continue
            self._seen[entry.producer] = entry.seq
            fresh.append(entry.items)
        self._apply_fresh(fresh, last)
        if last is not None:
            self._set_applied(last)

    def _apply_fresh(self, fresh: List[List[Item]], last: Optional[str]) -> None:
        if not fresh:
            return
        assert self.sink is not None
        direct = False
        if len(fresh) == 1:
            batches = fresh
            # alone and small: the latency case (under load entries come several per read)
            direct = sum(item_ops(it) for it in fresh[0]) <= self.direct_delivery
        elif not self.merge_backlog:
            batches = fresh
        else:
            items, merged = merge_backlog(fresh)
            self._counts["backlog_coalesced"] += merged
            batches = [items]
        self._counts["direct_entries"] += int(direct)
        for items in batches:
            try:
                self._counts["direct_writes"] += self.sink.fleet_apply(items, direct)
            except Exception:
                logger.exception("fleet: applying the entries up to %s failed", last)
        self._counts["applied_entries"] += len(fresh)
        self._counts["applied_ops"] += sum(item_ops(it) for b in fresh for it in b)
        self._since_snapshot += len(fresh)

    def _set_applied(self, sid: str) -> None:
        with self._applied:
            self._applied_id = sid
            self._applied.notify_all()

    def _housekeeping(self, now: float) -> None:
        """Hold or take the snapshot lease; write a snapshot when one is due."""
        self._heartbeat(busy=False)
        self._check_epoch()
        self.room_token.sync(self._redis)
        was, self._leader = self._leader, hold_lease(self._redis, self.keys.leader,
                                                     self.node_id, self.lease_ms, self._leader)
        if self._leader and not was:
            logger.info("fleet: node %s writes the snapshots of room %r", self.node_id, self.room)
        if self._leader and self._since_snapshot and (
                self._since_snapshot >= self.snapshot_every
                or now - self._last_snapshot >= self.snapshot_interval):
            self._write_snapshot()
        self.pool.check(self._redis.connection_pool, now)

    def _check_epoch(self) -> None:
        """The room's epoch token is gone: Redis lost the room (restarted empty, flushed).
        The first node to notice re-seeds the room with its scene (:func:`~.room.reseed`:
        one ``SET`` put before anything published since, atomically) and takes a new token;
        the others adopt the new token."""
        r = self._redis
        cur = r.get(self.keys.epoch)
        if cur is not None and cur == self._epoch:
            return
        if cur is None:
            token = uuid.uuid4().hex.encode()
            if self._epoch is None or self.sink is None:  # a new room (or nothing to seed)
                if r.set(self.keys.epoch, token, nx=True):
                    self._epoch = token
                    return
            else:  # seed the lost room with this node's scene, unless another node did
                sid = reseed(r, self.keys, token, self.sink.fleet_snapshot(), self._seen)
                if sid is not None:
                    logger.warning("fleet: Redis lost room %r (restarted empty?); re-seeded "
                                   "it from this node's scene (entry %s)", self.room, sid)
                    self._counts["reseeds"] += 1
                    self._epoch = token
                    return
            cur = r.get(self.keys.epoch)
        self._epoch = cur

    def _write_snapshot(self) -> None:
        """The scene at the applied id, then the stream trimmed behind the previous one."""
        assert self.sink is not None
        size = write_snapshot(self._redis, self.keys, self._applied_id,
                              self.sink.fleet_snapshot, {"seqs": self._seen}, exact=False)
        self._since_snapshot = 0
        if size is None:
            return  # a newer snapshot is there (written by the previous lease holder)
        self._counts["snapshots_written"] += 1
        self._last_snapshot = time.monotonic()
        logger.debug("fleet: snapshot at %s (%d bytes)", self._applied_id, size)


def hold_lease(r: Any, key: str, holder: str, lease_ms: int, held: bool) -> bool:
    """Renew the lease ``key`` that ``holder`` holds (``held``), or take it when it is free:
    whether ``holder`` holds it now."""
    if held and r.eval(_RENEW, 1, key, holder, lease_ms):
        return True
    return bool(r.set(key, holder, nx=True, px=lease_ms))


def write_snapshot(r: Any, keys: Any, applied: str, dump: Callable[[], bytes],
                   extra: Dict[str, Any], exact: bool) -> Optional[int]:
    """Write a room's snapshot (hash ``keys.snapshot``; its stream is ``keys.log``) at stream
    id ``applied`` (``dump()``, plus ``extra`` fields
    packed with msgpack), then trim the stream behind the previous snapshot (``exact``: to
    the entry, else approximately), in one transaction. ``None`` when the snapshot in Redis
    is as new already (``dump`` is then not called); else the snapshot's size in bytes."""
    prev = r.hget(keys.snapshot, "id")
    if prev is not None and stream_id(prev) >= stream_id(applied):
        return None
    data = dump()
    fields = {"id": applied, "data": data, "time": int(time.time() * 1000),
              "trimmed": _text(prev) if prev is not None else ""}
    fields.update({k: msgpack.packb(v, use_bin_type=True) for k, v in extra.items()})
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.snapshot, mapping=fields)
    if prev is not None:
        pipe.xtrim(keys.log, minid=_text(prev), approximate=not exact)
    pipe.execute()
    return len(data)


def _xadd(key: str, fields: Dict[str, Any]) -> Tuple[Any, ...]:
    """The ``XADD`` command of one entry (an id chosen by Redis)."""
    cmd: List[Any] = ["XADD", key, "*"]
    for k, v in fields.items():
        cmd += (k, v)
    return tuple(cmd)


def safe_url(url: str) -> str:
    """``url`` without its password (for messages)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
