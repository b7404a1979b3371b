"""Calls on a client connected to another node of the room (``app.fleet.session(sid)``).

Each node reads its own inbox, the stream ``vuer_sync:{room}:inbox:<node id>``, next to the
room's log. A caller (any link: a node or a publisher-only process) finds the node of the
session in the room's presence, appends a request to that node's inbox and, unless it is a
``send``, waits for the answer on a list only it reads (``BLPOP`` on
``vuer_sync:{room}:reply:<request id>``), in slices, checking between them that the node
is still alive: a node that disappears (killed, cut off) ends the call with
:class:`~vuer_sync.errors.SessionClosed` within its heartbeat's lifetime.

On the node, ``send`` requests run on the reader thread, in order (they only queue); the
others (``rpc``, ``get_render``, ``flush``...) each on a thread of their own (at most
``max_calls`` at once), so a slow browser never holds up the room.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import msgpack

from ..errors import RPCTimeout, SessionClosed
from .entry import RoomKeys

logger = logging.getLogger("vuer_sync.fleet")

__all__ = ["Execute", "RemoteCalls"]

INBOX_TTL_MS = 60_000  # an inbox (or an answer) nobody reads any more expires
_ERRORS = {"SessionClosed": SessionClosed, "RPCTimeout": RPCTimeout, "TimeoutError": RPCTimeout,
           "TypeError": TypeError, "ValueError": ValueError, "KeyError": KeyError}

# (sid, op, payload, args, timeout) -> the answer (msgpack-able)
Execute = Callable[[str, str, Optional[bytes], Dict[str, Any], float], Any]


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, default=str)


class RemoteCalls:
    """Both ends of remote session calls for one link (see the module docstring)."""

    def __init__(self, keys: RoomKeys, node_id: str, max_calls: int = 16):
        self.keys = keys
        self.node_id = node_id
        self.inbox = keys.inbox(node_id)
        self.last_id = "0-0"  # this node's inbox is new: every entry in it is for us
        self._slots = threading.BoundedSemaphore(max_calls)
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()

    # -- the caller -----------------------------------------------------------------------

    def request(self, r: Any, node: str, sid: str, op: str, payload: Optional[bytes] = None,
                args: Optional[Dict[str, Any]] = None, timeout: float = 10.0,
                reply: bool = True) -> Optional[str]:
        """Append a request to ``node``'s inbox; returns the answer's key (``None`` for a
        request without an answer)."""
        rid = uuid.uuid4().hex
        key = self.keys.reply(rid) if reply else None
        req = {"id": rid, "sid": sid, "op": op, "payload": payload, "args": args or {},
               "timeout": timeout, "reply": key}
        pipe = r.pipeline(transaction=False)
        inbox = self.keys.inbox(node)
        pipe.xadd(inbox, {"m": _pack(req)}, maxlen=10_000, approximate=True)
        pipe.pexpire(inbox, INBOX_TTL_MS)
        pipe.execute()
        return key

    def wait(self, r: Any, key: str, node: str, what: str, timeout: float) -> Any:
        """The answer on ``key``: its value, or its error raised here. ``RPCTimeout`` after
        ``timeout`` s; ``SessionClosed`` as soon as ``node`` stops heartbeating."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RPCTimeout(f"{what}: no answer within {timeout} s")
            got = r.blpop([key], timeout=min(0.25, left))
            if got is not None:
                return self._answer(msgpack.unpackb(got[1], raw=False), what)
            if r.exists(self.keys.node(node)) == 0:
                raise SessionClosed(f"{what}: node {node} left the room")

    @staticmethod
    def _answer(ans: Dict[str, Any], what: str) -> Any:
        if ans.get("ok"):
            return ans.get("value")
        cls = _ERRORS.get(ans.get("error", ""), RuntimeError)
        raise cls(f"{what}: {ans.get('message')}")

    # -- the node -------------------------------------------------------------------------

    def handle(self, r: Any, entries: List[Any], execute: Execute) -> None:
        """Requests read from this node's inbox: ``send`` here, in order; the others on
        threads of their own."""
        for eid, fields in entries:
            self.last_id = eid.decode() if isinstance(eid, bytes) else str(eid)
            try:
                req = msgpack.unpackb(fields[b"m"], raw=False)
            except (KeyError, ValueError, msgpack.UnpackException):
                logger.warning("fleet: malformed request %s skipped", self.last_id)
                continue
            if req.get("reply") is None:
                self._run(r, req, execute)
            elif not self._slots.acquire(blocking=False):
                self._reply(r, req, {"ok": False, "error": "RuntimeError",
                                     "message": "node busy: too many calls at once"})
            else:
                t = threading.Thread(target=self._worker, args=(r, req, execute),
                                     name="vuer-fleet-call", daemon=True)
                with self._lock:
                    self._threads = [x for x in self._threads if x.is_alive()] + [t]
                t.start()

    def _worker(self, r: Any, req: Dict[str, Any], execute: Execute) -> None:
        try:
            self._run(r, req, execute)
        finally:
            self._slots.release()

    def _run(self, r: Any, req: Dict[str, Any], execute: Execute) -> None:
        try:
            value = execute(req["sid"], req["op"], req.get("payload"), req.get("args") or {},
                            float(req.get("timeout") or 10.0))
            ans: Dict[str, Any] = {"ok": True, "value": value}
        except Exception as e:  # handed to the caller, whatever it is
            if req.get("reply") is None:
                logger.debug("fleet: %s on session %s failed: %s", req.get("op"),
                             req.get("sid"), e)
            ans = {"ok": False, "error": type(e).__name__, "message": str(e)}
        self._reply(r, req, ans)

    @staticmethod
    def _reply(r: Any, req: Dict[str, Any], ans: Dict[str, Any]) -> None:
        key = req.get("reply")
        if key is None:
            return
        try:
            pipe = r.pipeline(transaction=False)
            pipe.rpush(key, _pack(ans))
            pipe.pexpire(key, INBOX_TTL_MS)
            pipe.execute()
        except Exception as e:  # Redis gone: the caller times out
            logger.warning("fleet: answering request %s failed: %s", req.get("id"), e)

    def close(self, r: Any, timeout: float) -> None:
        """Wait for the running calls (up to ``timeout``), drop the inbox."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads, self._threads = self._threads, []
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            r.delete(self.inbox)
        except Exception:  # Redis gone: the inbox expires by itself
            pass
