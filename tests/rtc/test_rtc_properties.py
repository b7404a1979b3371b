"""Property-based convergence: random ops of every type, random delivery schedules
(FIFO, reordered, duplicated, delayed), undo/redo, cancel and compaction mixed in."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rtc_strategies import Net, any_op, assert_converged, canon, fresh_replay, scenario

from vuer_sync.rtc import create_graph, rebuild_graph

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(net: Net, seed: int) -> None:
    assert_converged(net, seed)
    agreed = canon(net.stores[0])
    for s in net.stores:
        st_ = s.get_state()
        assert st_.graph.stats["below_horizon"] == 0  # compaction never broke the order
        assert rebuild_graph(st_).canonical(True) == agreed  # incremental == replay


@SETTINGS
@given(
    n=st.integers(2, 4),
    mode=st.sampled_from(["fifo", "any"]),
    steps=scenario(),
    seed=st.integers(0, 2**16),
)
# c1 compacted its (final) edit of a key whose remove c0 could still undo; the undo then
# brought the key back without it on c1 (test_rtc_tombstones.py::test_compaction_keeps_*)
@example(
    n=2,
    mode="fifo",
    steps=[
        ("ec", 0, {"otype": "node.remove", "key": "", "path": "children", "value": "c"}),
        ("undo", 0, None),
        ("ec", 1, {"otype": "array.set", "key": "c", "path": "array", "value": []}),
        ("ack", 1, None),
        ("deliver", 0, 0),
        ("heartbeat", 1, True),
        ("compact", 1, None),
    ],
    seed=0,
)
def test_replicas_converge(n, mode, steps, seed):
    net = Net(n, mode)
    for act in steps:
        net.step(act)
    _check(net, seed)


@SETTINGS
@given(
    steps=scenario(40, 120),
    seed=st.integers(0, 2**16),
    extra=st.lists(st.tuples(st.sampled_from(["compact", "ack"]), st.integers(0, 2)), max_size=20),
)
def test_compaction_is_invisible(steps, seed, extra):
    """Compacting at any point (including after everything settled) changes nothing and
    keeps duplicates out."""
    net = Net(3, "any", undo_window=2)
    for act in steps:
        net.step(act)
    net.settle(seed)
    before = [canon(s) for s in net.stores]
    for name, r in extra:
        net.step((name, r, None))
    for s in net.stores:
        s.compact()
    assert [canon(s) for s in net.stores] == before
    # re-deliver every message again after compaction: still no effect (R08)
    for s in net.stores:
        for m in net.messages():
            s.receive(m)
    assert [canon(s) for s in net.stores] == before


@SETTINGS
@given(ops=st.lists(any_op, min_size=1, max_size=25), seed=st.integers(0, 2**16))
def test_delivery_order_does_not_matter(ops, seed):
    """One message per op from two authors; every permutation gives the same graph."""
    rnd = random.Random(seed)
    a = create_graph("a", epoch="")
    b = create_graph("b", epoch="")
    msgs = []
    for i, op in enumerate(ops):
        s = a if i % 2 == 0 else b
        s.edit(op)
        msgs.append(s.commit())
        if rnd.random() < 0.5:  # sometimes sync so ops build on each other
            for m in msgs:
                a.receive(m)
                b.receive(m)
    orders = [list(range(len(msgs))) for _ in range(3)]
    for o in orders:
        rnd.shuffle(o)
    results = [canon(fresh_replay(msgs, o)) for o in orders]
    assert results[0] == results[1] == results[2]
