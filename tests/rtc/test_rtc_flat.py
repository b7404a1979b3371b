"""Per-op work does not grow with the journal (issue 21's "flat from journal 0 to 100k").

No timing: each test counts the Python lines and calls one operation executes
(``sys.settrace``) with a short and with a long journal. A per-op scan, sort or copy of the
journal written in Python (a loop, a comprehension, a ``key=`` function) adds lines per
entry and fails these tests; the speed itself is ``benchmarks/bench_rtc.py``'s job.
"""

from __future__ import annotations

import gc
import sys
from typing import Any, Callable, Dict, List

from vuer_sync.rtc import CRDTMessage, RelayCore, create_graph

from helpers import tracked_after

NODES = 20


def _filler(i: int, lt: int, client: str) -> Dict[str, Any]:
    if i % 2:
        op = {"otype": "number.add", "key": f"n{i % NODES}", "path": "hp", "value": 1}
    else:
        op = {"otype": "vector3.set", "key": f"n{i % NODES}", "path": "position",
              "value": [i, 0, 0]}
    return {"id": f"{client}:{lt}", "client": client, "clock": {client: lt}, "lt": lt,
            "ts": 0.0, "seq": lt, "ops": [op]}


def _journal(n: int) -> List[CRDTMessage]:
    first = {"id": "filler:1", "client": "filler", "clock": {"filler": 1}, "lt": 1, "ts": 0.0,
             "seq": 1, "ops": [{"otype": "node.insert", "key": "", "path": "children",
                                "value": {"key": f"n{i}", "position": [0, 0, 0], "hp": 0}}
                               for i in range(NODES)]}
    return [CRDTMessage(**first)] + [CRDTMessage(**_filler(i, i + 1, "filler"))
                                     for i in range(1, n)]


def _store(n: int) -> Any:
    store = create_graph("me", epoch="")
    for m in _journal(n):
        store.receive(m)
    assert len(store.get_state().graph.msgs) == n
    return store


def _count(fn: Callable[[int], None], ops: int, warm: int = 5) -> int:
    """Lines + calls executed by ``fn(i)`` for ``i`` in ``warm..warm+ops`` (after ``warm``
    untraced calls)."""
    for i in range(warm):
        fn(i)
    events = [0]

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        events[0] += 1
        return tracer

    sys.settrace(tracer)
    try:
        for i in range(warm, warm + ops):
            fn(i)
    finally:
        sys.settrace(None)
    return events[0]


def _edit_commit(store: Any) -> Callable[[int], None]:
    def step(i: int) -> None:
        store.edit({"otype": "vector3.set", "key": f"n{i % NODES}", "path": "position",
                    "value": [i, 1, 2]})
        store.commit()
    return step


def _receive(store: Any, base: int) -> Callable[[int], None]:
    msgs = [CRDTMessage(**_filler(i, base + i, "remote")) for i in range(60)]
    for j, m in enumerate(msgs):
        m.seq, m.id = j + 1, f"remote:{j + 1}"
    return lambda i: store.receive(msgs[i])


def test_edit_commit_and_receive_do_the_same_work_at_journal_50_and_5000():
    short, long = _store(50), _store(5000)
    ec = [_count(_edit_commit(s), 40) for s in (short, long)]
    rc = [_count(_receive(s, s.get_state().lt + 1), 40) for s in (short, long)]
    # the same ops touch registers of the same shape: the counts are equal, whatever
    # the journal length (a per-op O(journal) step would add >= 4950 lines per op)
    assert ec[0] == ec[1], ec
    assert rc[0] == rc[1], rc
    assert ec[0] > 40 and rc[0] > 40  # the tracer saw the work


def test_relay_submit_does_the_same_work_with_a_long_tail():
    def relay(n: int) -> RelayCore:
        r = RelayCore(compact_every=10**9)  # no compaction: the tail keeps every message
        r.join(conn="A")
        for m in _journal(n):
            r.submit({"mtype": "crdt", "msg": m.to_dict()}, conn="F")
        assert len(r.tail) == n
        return r

    def submit(r: RelayCore) -> Callable[[int], None]:
        envs = [{"mtype": "crdt", "msg": CRDTMessage(**_filler(i, 10**6 + i, "w")).to_dict()}
                for i in range(60)]
        return lambda i: r.submit(envs[i], conn="W")

    counts = [_count(submit(relay(n)), 40) for n in (50, 3000)]
    assert counts[0] == counts[1], counts
    assert counts[0] > 40


def test_a_journal_entry_leaves_few_objects_for_the_gc_to_walk():
    """A long journal is walked by every full collection of the cyclic GC: a received
    one-op message keeps its record, and nothing else tracked (its register entry is four
    list slots of its register; the inverse of a vector ``set`` is a flat tuple of numbers,
    which the GC stops tracking, and the old value's list is freed). See test_rtc_gc.py
    for messages the store owns alone."""
    store = _store(200)
    msgs = [CRDTMessage(**_filler(2 * i, 10**6 + i, "remote")) for i in range(300)]  # vector3
    for j, m in enumerate(msgs):
        m.seq, m.id = j + 1, f"remote:{j + 1}"
    grew = tracked_after(lambda: [store.receive(m) for m in msgs])  # msgs exist already
    assert grew <= len(msgs) + 20, grew / len(msgs)  # was 5 per entry, then 2
    rec = store.get_state().graph.msgs[msgs[-1].id]
    ((reg, key),) = rec.entries
    inv = reg.invs[reg.keys.index(key)]
    assert inv[0] == "vt" and not gc.is_tracked(inv)
    # and it still rolls back: a late set re-folds the adds after it (rewind, then replay)
    def msg(client: str, seq: int, lt: int, op: Dict[str, Any]) -> CRDTMessage:
        return CRDTMessage(id=f"{client}:{seq}", client=client, clock={client: lt}, lt=lt,
                           ts=0.0, seq=seq, ops=[op])

    for j in range(10):
        store.receive(msg("adder", j + 1, 2 * 10**6 + j, {
            "otype": "vector3.add", "key": "n3", "path": "position", "value": [1, 0, 0]}))
    reg = store.get_state().graph.reg("n3", "position")
    assert reg.value == [10, 0, 0]
    assert all(inv[0] == "vt" for inv in reg.invs[-10:])
    store.receive(msg("late", 1, 10**6 - 1, {
        "otype": "vector3.set", "key": "n3", "path": "position", "value": [100, 0, 0]}))
    assert reg.value == [110, 0, 0]
    assert store.get_state().graph.nodes["n3"].get_property("position") == [110, 0, 0]
