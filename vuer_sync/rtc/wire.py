"""Messages and wire envelopes (transport-agnostic dicts, optionally msgpack).

A :class:`CRDTMessage` serialises to::

    {"id": "alice~3fa9c1:4", "client": "alice", "sid": "alice~3fa9c1", "seq": 4,
     "lt": 17, "ts": 1767225600.25, "clock": {"alice~3fa9c1": 4, "bob~01ab23": 9},
     "ops": [{"otype": "number.add", "key": "cube", "path": "x", "value": 1}]}

``spelling="vuer-rtc"`` writes ``"ot"`` instead of ``"otype"`` in ops (what vuer-rtc 0.0.2
stores require); ``spelling="legacy"`` writes ``sessionId``/``lamportTime``/``timestamp``.
All spellings are accepted on input.  ``sid``/``seq``/``uw``/``desc`` are extra fields that
vuer-rtc ignores.

>>> m = parse_message({"id": "a:1", "client": "a", "lt": 1, "ops": [{"ot": "number.set",
...                    "key": "n", "path": "x", "value": 2}]})
>>> m.ops[0]["otype"], to_wire(m, spelling="vuer-rtc")["ops"][0]["ot"]
('number.set', 'number.set')
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import msgpack

__all__ = [
    "SPELLINGS",
    "CRDTMessage",
    "WireError",
    "ack_envelope",
    "broadcast_envelope",
    "crdt_envelope",
    "error_envelope",
    "freeze_ops",
    "pack",
    "parse_message",
    "retire_envelope",
    "state_envelope",
    "thaw_ops",
    "to_wire",
    "unpack",
]

SPELLINGS = ("vuer-sync", "vuer-rtc", "legacy")


class WireError(ValueError):
    """A message or envelope that cannot be parsed."""


@dataclass
class CRDTMessage:
    """One committed batch of ops from one session.

    ``lt`` is the Lamport time, ``seq`` the per-session message number (dense),
    ``sid`` the session id (defaults to ``client``), ``ts`` the sender's wall clock in
    seconds (informational only: never used for ordering), ``uw`` the sender's undo
    window if not the default, ``desc`` the commit description.
    """

    id: str
    client: str
    lt: int
    ops: List[Dict[str, Any]] = field(default_factory=list)
    ts: float = 0.0
    clock: Dict[str, int] = field(default_factory=dict)
    sid: str = ""
    seq: Optional[int] = None
    uw: Optional[int] = None
    desc: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.sid:
            self.sid = self.client

    @property
    def key(self) -> Tuple[int, str, str]:
        """Ordering key of the message: ``(lt, client, id)``."""
        return (self.lt, self.client, self.id)

    def to_dict(self, spelling: str = "vuer-sync") -> Dict[str, Any]:
        return to_wire(self, spelling)

    toDict = to_dict


def _op_in(op: Any) -> Dict[str, Any]:
    if not isinstance(op, Mapping):
        return {"otype": ""}
    out = {k: v for k, v in op.items() if k not in ("ot", "otype")}
    ot = op.get("otype", op.get("ot"))
    out["otype"] = ot if type(ot) is str else ""
    return out


def _int(v: Any) -> Optional[int]:
    return v if type(v) is int else None


def parse_message(obj: Any) -> CRDTMessage:
    """Accept a :class:`CRDTMessage`, a message dict in any spelling, a ``crdt``/
    ``broadcast`` envelope, or an object with ``to_dict()``/``toDict()`` (e.g. a
    vuer-rtc ``CRDTMessage``).  Raises :class:`WireError` if it is not a message."""
    if isinstance(obj, CRDTMessage):
        for o in obj.ops:
            if type(o) is not dict or type(o.get("otype")) is not str:
                obj = obj.to_dict()
                break
        else:
            return obj
    if not isinstance(obj, Mapping):
        conv = getattr(obj, "to_dict", None) or getattr(obj, "toDict", None)
        if conv is None:
            raise WireError(f"not a message: {type(obj).__name__}")
        obj = conv()
        if not isinstance(obj, Mapping):
            raise WireError("to_dict() did not return a dict")
    if "msg" in obj and "mtype" in obj:
        return parse_message(obj["msg"])
    mid = obj.get("id")
    client = obj.get("client", obj.get("sessionId"))
    lt = obj.get("lt", obj.get("lamportTime"))
    ops = obj.get("ops", [])
    if type(mid) is not str or not mid:
        raise WireError("message 'id' must be a non-empty string")
    if type(client) is not str:
        raise WireError("message 'client' must be a string")
    if type(lt) is not int or lt < 0:
        raise WireError("message 'lt' must be a non-negative int")
    if type(ops) not in (list, tuple):
        raise WireError("message 'ops' must be a list")
    clock = obj.get("clock") or {}
    if not isinstance(clock, Mapping):
        clock = {}
    clock = {k: v for k, v in clock.items() if type(k) is str and type(v) is int}
    sid = obj.get("sid")
    sid = sid if type(sid) is str and sid else client
    seq = _int(obj.get("seq"))
    if seq is not None and seq < 1:
        seq = None
    uw = _int(obj.get("uw"))
    if uw is not None and uw < 1:
        uw = None
    ts = obj.get("ts", obj.get("timestamp", 0.0))
    desc = obj.get("desc")
    return CRDTMessage(
        id=mid,
        client=client,
        lt=lt,
        ops=[_op_in(o) for o in ops],
        ts=float(ts) if type(ts) in (int, float) else 0.0,
        clock=clock,
        sid=sid,
        seq=seq,
        uw=uw,
        desc=desc if type(desc) is str else None,
    )


def _op_out(op: Any, spelling: str) -> Any:
    if not isinstance(op, Mapping):
        return op  # malformed: left for the receiver to reject
    if spelling == "vuer-rtc":
        out = {"ot": op.get("otype", op.get("ot"))}
        out.update((k, v) for k, v in op.items() if k not in ("otype", "ot"))
        return out
    out = {k: v for k, v in op.items() if k != "ot"}
    out["otype"] = op.get("otype", op.get("ot"))
    return out


def to_wire(
    msg: Union[CRDTMessage, Mapping[str, Any]], spelling: str = "vuer-sync"
) -> Dict[str, Any]:
    """Serialise a message as a plain dict in the given spelling (see module doc)."""
    if spelling not in SPELLINGS:
        raise ValueError(f"spelling must be one of {SPELLINGS}")
    m = msg if isinstance(msg, CRDTMessage) else parse_message(msg)
    ops = [_op_out(op, spelling) for op in m.ops]
    if spelling == "legacy":
        d: Dict[str, Any] = {
            "id": m.id,
            "sessionId": m.client,
            "clock": dict(m.clock),
            "lamportTime": m.lt,
            "timestamp": m.ts,
            "ops": ops,
        }
    else:
        d = {"id": m.id, "client": m.client, "clock": dict(m.clock), "lt": m.lt, "ts": m.ts,
             "ops": ops}
    if m.sid != m.client:
        d["sid"] = m.sid
    if m.seq is not None:
        d["seq"] = m.seq
    if m.uw is not None:
        d["uw"] = m.uw
    if m.desc is not None:
        d["desc"] = m.desc
    return d


# -- envelopes ------------------------------------------------------------------------------
def crdt_envelope(msg: Any, spelling: str = "vuer-sync") -> Dict[str, Any]:
    """Client -> relay: ``{"mtype": "crdt", "msg": {...}}``."""
    return {"mtype": "crdt", "msg": to_wire(msg, spelling)}


def ack_envelope(
    msg_id: str,
    server_seq: Optional[int] = None,
    stable: Optional[int] = None,
    lt: Optional[int] = None,
) -> Dict[str, Any]:
    """Relay -> sender: ``{"mtype": "ack", "msgId", "serverSeq", "stable", "lt"}``.

    ``lt`` is the Lamport time under which the relay holds the message (the copy it
    accepted first: a re-stamped copy of a message whose old copy got there before it
    is a duplicate, acked with the old copy's ``lt``); the sender re-keys its own copy
    to it. Absent when the relay no longer knows it
    (see :meth:`~vuer_sync.rtc.relay.RelayCore.submit`).
    vuer-rtc 0.0.2 reads ``msgId`` only."""
    d: Dict[str, Any] = {"mtype": "ack", "msgId": msg_id}
    if server_seq is not None:
        d["serverSeq"] = server_seq
    if stable is not None:
        d["stable"] = stable
    if lt is not None:
        d["lt"] = lt
    return d


def broadcast_envelope(
    msg: Any, server_seq: int, stable: Optional[int] = None, spelling: str = "vuer-sync"
) -> Dict[str, Any]:
    """Relay -> everyone else: ``{"mtype": "broadcast", "serverSeq", "stable", "msg"}``."""
    d: Dict[str, Any] = {
        "mtype": "broadcast", "serverSeq": server_seq, "msg": to_wire(msg, spelling)
    }
    if stable is not None:
        d["stable"] = stable
    return d


def state_envelope(
    snapshot: Dict[str, Any],
    journal: List[Dict[str, Any]],
    server_seq: int,
    stable: Optional[int] = None,
) -> Dict[str, Any]:
    """Relay -> joiner: baked snapshot plus the not yet compacted tail of messages.
    (:meth:`RelayCore.join` also adds ``"retired"``: sessions that already left.)"""
    d: Dict[str, Any] = {
        "mtype": "state",
        "serverSeq": server_seq,
        "snapshot": snapshot,
        "journal": journal,
    }
    if stable is not None:
        d["stable"] = stable
    return d


def error_envelope(msg_id: Optional[str], error: str) -> Dict[str, Any]:
    """Relay -> sender: the message was refused (``msgId`` may be ``None``)."""
    return {"mtype": "error", "msgId": msg_id, "error": error}


def retire_envelope(sids: List[str]) -> Dict[str, Any]:
    """Relay -> everyone: these sessions left; stop waiting for them when compacting."""
    return {"mtype": "retire", "sids": list(sids)}


_local = threading.local()


def freeze_ops(ops: Any) -> Any:
    """``ops`` (a message's list of op dicts) as msgpack bytes, which the cyclic GC does
    not track, or ``ops`` itself if it does not round-trip exactly (a tuple, a subclass, a
    value msgpack cannot hold). A replica keeps every uncompacted message: its ops, kept
    as bytes, cost the GC's full collections nothing. :func:`thaw_ops` gives them back.

    >>> ops = [{"otype": "vector3.set", "key": "n", "path": "p", "value": [1, 2.5, 3]}]
    >>> frozen = freeze_ops(ops)
    >>> type(frozen) is bytes and thaw_ops(frozen) == ops
    True
    >>> freeze_ops(({"otype": "x"},))  # a tuple would come back as a list: kept as it is
    ({'otype': 'x'},)
    """
    try:
        packer = _local.packer
    except AttributeError:  # one per thread: a Packer holds a buffer
        packer = _local.packer = msgpack.Packer(use_bin_type=True, strict_types=True)
    try:
        return packer.pack(ops)
    except (TypeError, ValueError, OverflowError):
        return ops


def thaw_ops(frozen: Any) -> Any:
    """Inverse of :func:`freeze_ops` (new lists and dicts, equal to the frozen ones)."""
    if type(frozen) is bytes:
        return msgpack.unpackb(frozen, raw=False, strict_map_key=False)
    return frozen


def pack(envelope: Mapping[str, Any]) -> bytes:
    """msgpack-encode an envelope (``use_bin_type=True``)."""
    return msgpack.packb(envelope, use_bin_type=True)


def unpack(data: Union[bytes, bytearray, memoryview]) -> Dict[str, Any]:
    """Decode :func:`pack` output (strict map keys off: keys are strings anyway)."""
    out = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(out, dict):
        raise WireError("envelope is not a map")
    return out
