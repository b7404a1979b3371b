"""The room's keys beside its stream: the epoch (and re-seeding a room Redis lost) and the
browser-facing token its nodes share. Each :class:`~vuer_sync.fleet.link.FleetLink` keeps
them on its consumer thread (a node's housekeeping, every heartbeat).

A room whose epoch key is gone was lost by Redis (restarted empty, flushed).
:func:`reseed` puts one node's scene back, atomically (one Lua script, so two nodes never
both seed): the seed entry (a ``SET`` of the scene, with the producer sequence numbers it
reflects, field ``seed``) goes first in the stream; the entries published since Redis came
back are appended again behind it (``XTRIM MAXLEN 0`` keeps the stream's last id, so their
new ids are higher than any a node read before); the snapshot of the lost era is dropped.
Every node that reads the seed replaces its scene and its sequence numbers with it, then
applies each re-appended entry it does not reflect, once.

>>> SharedToken(RoomKeys("lab"), "node-1").token is None
True
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

import msgpack

from .entry import RoomKeys, encode_entry

logger = logging.getLogger("vuer_sync.fleet")

__all__ = ["SharedToken", "reseed"]

# KEYS: epoch, log, snapshot. ARGV: token, v, p, s, m, seed.
_SEED = ("if redis.call('exists', KEYS[1]) == 1 then return false end "
         "local old = redis.call('xrange', KEYS[2], '-', '+') "
         "redis.call('xtrim', KEYS[2], 'MAXLEN', 0) "
         "redis.call('del', KEYS[3]) "
         "local id = redis.call('xadd', KEYS[2], '*', 'v', ARGV[2], 'p', ARGV[3], 's', "
         "ARGV[4], 'm', ARGV[5], 'seed', ARGV[6]) "
         "for _, e in ipairs(old) do redis.call('xadd', KEYS[2], '*', unpack(e[2])) end "
         "redis.call('set', KEYS[1], ARGV[1]) "
         "return id")


def reseed(r: Any, keys: RoomKeys, token: bytes, snapshot: bytes, seen: Dict[str, int]
           ) -> Optional[str]:
    """Seed the room Redis lost with ``snapshot`` (an encoded ``SET``; ``seen``: the
    producer sequence numbers it reflects) and take the epoch ``token``, unless the room
    has an epoch again (another node seeded it): then ``None``, else the seed's id."""
    fields = encode_entry(f"seed:{token.decode()}", 1, [snapshot])
    sid = r.eval(_SEED, 3, keys.epoch, keys.log, keys.snapshot, token, fields["v"],
                 fields["p"], fields["s"], fields["m"], msgpack.packb(seen, use_bin_type=True))
    if not sid:
        return None
    return sid.decode() if isinstance(sid, bytes) else str(sid)


class SharedToken:
    """The browser-facing token a node requires, shared through the room's key
    (``docs/fleet.md``): a node with a token writes it if the room has none; a node without
    one adopts the room's (and follows it when it changes); a node whose own token differs
    from the room's is refused at start (``ValueError``), later only logged.

    ``token``: this node's (``None``: none); ``source``: read at start for it (the app's
    token, whenever it was set); ``on_token``: called with the room's token when the node
    adopts it.
    """

    def __init__(self, keys: RoomKeys, node_id: str):
        self.keys = keys
        self.node_id = node_id
        self.token: Optional[str] = None
        self.source: Optional[Callable[[], Optional[str]]] = None
        self.on_token: Optional[Callable[[str], None]] = None
        self._adopted = False
        self._conflict = False

    def sync(self, r: Any, at_start: bool = False) -> None:
        """Write, adopt or check the room's token (see the class docstring)."""
        if at_start and self.source is not None:
            self.token = self.source() or None
            self._adopted = self._conflict = False
        raw = r.get(self.keys.token)
        if raw is None and self.token:  # (one round trip a heartbeat while it is there)
            r.set(self.keys.token, self.token, nx=True)
            raw = r.get(self.keys.token)
        room = None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)
        if room is None or room == self.token:
            return
        if self.token and not self._adopted:
            msg = (f"fleet: this node's token differs from the one room "
                   f"{self.keys.room!r} requires (its nodes share one token; see "
                   "docs/fleet.md)")
            if at_start:
                raise ValueError(msg)
            if not self._conflict:
                logger.error(msg)
                self._conflict = True
            return
        self.token = room
        self._adopted = True
        logger.info("fleet: node %s requires room %r's token", self.node_id, self.keys.room)
        if self.on_token is not None:
            self.on_token(room)
