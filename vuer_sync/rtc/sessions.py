"""Per-session delivery bookkeeping: duplicate detection that survives compaction, the
causal-stability horizon and undo finality.

A *session* is one run of one client (``sid`` = client id plus a random epoch, so a
restarted client never reuses message ids: R24).  Each session numbers its messages
``seq = 1, 2, 3 ...``.  For every session we keep the contiguous prefix that was received
(``floor_seq`` and the Lamport time ``floor_lt`` of that message) plus the out-of-order
messages above it.  That is O(sessions) memory instead of one entry per message, and it
is never discarded by compaction (fixes R08).

Messages without a ``seq`` (vuer-rtc 0.0.2 clients) are de-duplicated by id, and are
assumed to arrive in per-sender FIFO order for the stability horizon.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Set

from .common import DEFAULT_UNDO_WINDOW

__all__ = ["Session", "SessionTracker"]


class Session:
    __slots__ = (
        "above",
        "client",
        "fin",
        "floor_lt",
        "floor_seq",
        "foreign",
        "max_lt",
        "retired",
        "seals",
        "uw",
    )

    def __init__(self, client: str, uw: int = DEFAULT_UNDO_WINDOW) -> None:
        self.client = client
        self.floor_seq = 0
        self.floor_lt = 0
        self.above: Dict[int, int] = {}  # seq -> lt, received out of order
        self.max_lt = 0
        self.uw = uw
        self.foreign = False
        self.retired = False
        self.fin = 0  # messages with seq <= fin can no longer be undone (meta.seal)
        self.seals: Dict[int, int] = {}  # seal message seq -> fin, not yet contiguous

    def apply_seals(self) -> None:
        for sseq in [q for q in self.seals if q <= self.floor_seq]:
            self.fin = max(self.fin, self.seals.pop(sseq))

    def to_list(self) -> List[Any]:
        return [
            self.client,
            self.floor_seq,
            self.floor_lt,
            sorted([s, lt] for s, lt in self.above.items()),
            self.max_lt,
            self.uw,
            self.foreign,
            self.retired,
            self.fin,
            sorted([q, f] for q, f in self.seals.items()),
        ]

    @classmethod
    def from_list(cls, d: List[Any]) -> Session:
        s = cls(str(d[0]), int(d[5]))
        s.floor_seq, s.floor_lt = int(d[1]), int(d[2])
        s.above = {int(a): int(b) for a, b in d[3]}
        s.max_lt, s.foreign, s.retired = int(d[4]), bool(d[6]), bool(d[7])
        if len(d) > 9:
            s.fin, s.seals = int(d[8]), {int(q): int(f) for q, f in d[9]}
        return s


class SessionTracker:
    """Which messages were seen, per session; see the module docstring."""

    __slots__ = ("raw", "sessions")

    def __init__(self) -> None:
        self.sessions: Dict[str, Session] = {}
        self.raw: Set[str] = set()  # ids of seq-less (foreign) messages

    def is_dup(self, sid: str, seq: Optional[int], mid: str) -> bool:
        if seq is None:
            return mid in self.raw
        s = self.sessions.get(sid)
        return s is not None and (seq <= s.floor_seq or seq in s.above)

    def note(
        self, sid: str, client: str, seq: Optional[int], lt: int, mid: str, uw: Optional[int]
    ) -> None:
        """Record a newly accepted message."""
        s = self.sessions.get(sid)
        if s is None:
            s = self.sessions[sid] = Session(client)
        s.retired = False
        if uw is not None:
            s.uw = uw
        s.max_lt = max(s.max_lt, lt)
        if seq is None:
            self.raw.add(mid)
            s.foreign = True
            s.floor_lt = s.max_lt
            return
        if seq == s.floor_seq + 1:
            s.floor_seq, s.floor_lt = seq, lt
            above = s.above
            while s.floor_seq + 1 in above:
                s.floor_seq += 1
                s.floor_lt = above.pop(s.floor_seq)
            if s.seals:
                s.apply_seals()
        else:
            s.above[seq] = lt

    def lt_of(self, sid: str, seq: Optional[int]) -> Optional[int]:
        """The Lamport time of the received message ``(sid, seq)`` if this tracker still
        holds it: the session's newest contiguous message (``floor_seq``) or one received
        out of order; ``None`` otherwise (an older message, or one without ``seq``)."""
        s = self.sessions.get(sid)
        if s is None or seq is None or s.foreign:
            return None
        if seq == s.floor_seq:
            return s.floor_lt
        return s.above.get(seq)

    def restamp(self, sid: str, seq: Optional[int], lt: int) -> None:
        """Message ``(sid, seq)``, already noted, is now held at Lamport time ``lt`` (a
        store re-keys its own message to the relay's ``lt``): where this tracker keeps
        its ``lt`` (see :meth:`lt_of`), it keeps ``lt``; ``max_lt`` never goes back."""
        s = self.sessions.get(sid)
        if s is None or seq is None or s.foreign:
            return
        if seq == s.floor_seq:
            s.floor_lt = lt
        elif seq in s.above:
            s.above[seq] = lt
        s.max_lt = max(s.max_lt, lt)

    def seal(self, sid: str, seal_seq: Optional[int], fin: int) -> None:
        """Session ``sid`` promised (in its message ``seal_seq``) never to undo/redo its
        messages with ``seq <= fin``; effective once everything up to ``seal_seq`` arrived
        (earlier undos may still be in flight until then)."""
        s = self.sessions.get(sid)
        if s is None or seal_seq is None:
            return
        s.seals[seal_seq] = max(fin, s.seals.get(seal_seq, 0))
        s.apply_seals()

    def know(self, sid: str, client: Optional[str] = None) -> None:
        """Register a session we heard of (e.g. from a vector clock) but got nothing from."""
        if sid not in self.sessions:
            self.sessions[sid] = Session(client if client is not None else sid)

    def retire(self, sids: Iterable[str]) -> None:
        """Stop waiting for these sessions in :meth:`horizon` (they left for good)."""
        for sid in sids:
            s = self.sessions.get(sid)
            if s is not None:
                s.retired = True

    def horizon(
        self, peers: Iterable[str] = (), own: Optional[str] = None, own_lt: int = 0
    ) -> int:
        """Largest Lamport time ``H`` such that no message with ``lt <= H`` can still
        arrive from a session we know of (every future message of a session has a larger
        ``lt`` than its contiguously received ones).  ``peers`` are client ids that must
        have been heard from; until then the horizon is 0.  The replica's own session
        ``own`` counts with ``own_lt`` (its next message will be stamped above it)."""
        live = [(sid, s) for sid, s in self.sessions.items() if not s.retired]
        clients = {s.client for _, s in live}
        for p in peers:
            if p not in clients:
                return 0
        lts = [own_lt if sid == own else s.floor_lt for sid, s in live]
        if own is not None and own not in self.sessions:
            lts.append(own_lt)
        return min(lts, default=0)

    def undo_final(self, sid: str, seq: Optional[int]) -> bool:
        """True once no undo/redo of message ``(sid, seq)`` can still arrive."""
        s = self.sessions.get(sid)
        if s is None or seq is None or s.foreign:
            return False
        return seq <= s.fin or s.floor_seq >= seq + s.uw

    def clock(self) -> Dict[str, int]:
        """Version vector ``{sid: floor_seq}`` of the sessions heard from."""
        return {sid: s.floor_seq for sid, s in self.sessions.items() if s.floor_seq}

    def to_dict(self) -> Dict[str, Any]:
        return {
            "sessions": {sid: s.to_list() for sid, s in self.sessions.items()},
            "raw": sorted(self.raw),
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> SessionTracker:
        t = cls()
        t.sessions = {sid: Session.from_list(v) for sid, v in d.get("sessions", {}).items()}
        t.raw = set(d.get("raw", ()))
        return t
