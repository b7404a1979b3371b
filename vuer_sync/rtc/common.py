"""Shared sentinels, constants and the package logger."""

from __future__ import annotations

import logging

__all__ = [
    "DEFAULT_UNDO_WINDOW",
    "MISSING",
    "PENDING_LT",
    "REJECT",
    "log",
]

#: Logger used by every module of :mod:`vuer_sync.rtc`.
log = logging.getLogger("vuer_sync.rtc")

#: Lamport time used for the ordering key of uncommitted (buffered) local edits.  It is
#: larger than every real Lamport time, so pending edits always sit on top of the
#: committed history ("rebase"); :func:`commit_edits` replaces it by the real one.
PENDING_LT = float("inf")

#: How many later messages of the same session may still undo/redo a message.  A session
#: may only emit ``meta.undo``/``meta.redo`` for a target whose ``seq`` is at most this many
#: below the undo message's own ``seq``.  Replicas use it to know when an undo can no longer
#: arrive, which is what makes compaction safe.  Carried per message as ``uw`` when it
#: differs from this default.
DEFAULT_UNDO_WINDOW = 1000


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:  # keep identity through copy/deepcopy/pickle
        return self.name


#: "No value" marker for a property register.
MISSING = _Sentinel("MISSING")
#: Returned by an op handler when the op is rejected (wrong type, malformed).
REJECT = _Sentinel("REJECT")
#: Returned by an op handler when the op is valid but changes nothing (e.g. a second
#: ``text.init``); it is not counted as a rejection.
NOCHANGE = _Sentinel("NOCHANGE")
__all__ += ["NOCHANGE"]
