"""A byte budget shared by connections for their incomplete inbound messages.

A frame header may declare up to 2^63 bytes; the connection only ever holds what has
arrived (it grows its buffers in bounded steps), and every step is first reserved here. A
server gives all its connections one budget, so a crowd of clients that each declare a huge
message and then stall can hold at most the budget in all, whatever they declare.

>>> budget = InboundBudget(limit=10 << 20)
>>> budget.reserve(8 << 20), budget.reserve(4 << 20)   # the second would go over
(True, False)
>>> budget.release(8 << 20); budget.held
0
"""

from __future__ import annotations

import logging
import threading

__all__ = ["InboundBudget"]

logger = logging.getLogger("vuer_sync.transport")


class InboundBudget:
    """At most ``limit`` bytes held at once by the incomplete inbound messages of every
    connection sharing this object. Thread-safe."""

    def __init__(self, limit: int):
        if limit <= 0:
            raise ValueError("the inbound budget must be positive")
        self.limit = int(limit)
        self.refused = 0  # reservations refused (each closed a connection)
        self._held = 0
        self._peak = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Bytes reserved now."""
        return self._held

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once."""
        return self._peak

    def reserve(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (and nothing reserved) if that would exceed the limit."""
        with self._lock:
            if self._held + n > self.limit:
                self.refused += 1
                refused = self.refused
            else:
                self._held += n
                self._peak = max(self._peak, self._held)
                return True
        if refused == 1 or refused % 1000 == 0:  # logged once, then every 1000th
            logger.warning("inbound memory budget of %d bytes exhausted (%d held): closing "
                           "the connection that asked for %d more with 1013 (%d so far)",
                           self.limit, self._held, n, refused)
        return False

    def release(self, n: int) -> None:
        """Give back ``n`` bytes reserved earlier."""
        with self._lock:
            self._held -= n
