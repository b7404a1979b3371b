"""The fleet: one scene across many processes and machines, on Redis (``docs/fleet.md``).

Pure parts (:mod:`~vuer_sync.fleet.entry`: key names and the stream entry format;
:mod:`~vuer_sync.fleet.batcher`: batching and coalescing before Redis) and the shell
(:mod:`~vuer_sync.fleet.link`: the publisher and consumer threads, snapshots). Imports
nothing above :mod:`vuer_sync.coalesce`/:mod:`vuer_sync.codec`; ``vuer_sync.server`` builds
``app.scene``'s fleet mode and ``vuer_sync.Fleet`` on it. The ``redis`` package is imported
only when a link starts.
"""

from .batcher import Batcher, split_batches
from .entry import Entry, RoomKeys, decode_entry, encode_entry
from .link import FleetLink, FleetSink, FleetUnavailable
from .local import LocalRedis

__all__ = ["Batcher", "Entry", "FleetLink", "FleetSink", "FleetUnavailable", "LocalRedis",
           "RoomKeys",
           "decode_entry", "encode_entry", "split_batches"]
