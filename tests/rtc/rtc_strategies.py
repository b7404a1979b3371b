"""Hypothesis strategies and a tiny in-memory network for the rtc property tests."""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Tuple

from hypothesis import strategies as st

from vuer_sync.rtc import CRDTMessage, GraphStore, create_graph

KEYS = ["a", "b", "c", "d"]
PARENTS = ["", "a", "b", "c", "d", "e"]

num = st.one_of(st.integers(-5, 5), st.sampled_from([0.1, 0.2, 0.3, -1.5, 2.25, 1e-3]))
vec3 = st.lists(num, min_size=3, max_size=3)
quat = st.sampled_from([[0, 0, 0, 1], [0, 0.7071, 0, 0.7071], [0.5, 0.5, 0.5, 0.5], [1, 0, 0, 0]])
color = st.sampled_from(["#ff0000", "#00ff00", "#0000ff", "#123456", "#fff"])
scalar = st.one_of(num, st.booleans(), st.sampled_from(["u", "v", "w"]))
small_obj = st.dictionaries(
    st.sampled_from(["p", "q", "r"]),
    st.one_of(scalar, st.dictionaries(st.sampled_from(["s", "t"]), scalar, max_size=2)),
    max_size=3,
)

VALUES = {
    "number.set": num, "number.add": num, "number.multiply": num,
    "number.min": num, "number.max": num,
    "vector3.set": vec3, "vector3.add": vec3, "vector3.multiply": vec3,
    "euler.set": vec3, "euler.add": vec3,
    "quaternion.set": quat, "quaternion.multiply": quat,
    "string.set": st.sampled_from(["s", "tt", ""]), "string.concat": st.sampled_from(["x", "yz"]),
    "boolean.set": st.booleans(), "boolean.or": st.booleans(), "boolean.and": st.booleans(),
    "color.set": color, "color.blend": color,
    "array.set": st.lists(scalar, max_size=3), "array.push": scalar, "array.remove": scalar,
    "array.union": st.lists(scalar, max_size=3),
    "object.set": small_obj, "object.merge": small_obj,
}


@st.composite
def value_op(draw) -> Dict[str, Any]:
    ot = draw(st.sampled_from(sorted(VALUES)))
    dtype = ot.split(".")[0]
    # mostly one path per dtype, sometimes a shared path so types collide (R22)
    path = draw(st.sampled_from([dtype, dtype, dtype, "x"]))
    op = {"otype": ot, "key": draw(st.sampled_from(KEYS)), "path": path,
          "value": draw(VALUES[ot])}
    if ot == "string.concat":
        op["separator"] = draw(st.sampled_from(["", "-"]))
    if ot == "color.blend":
        op["alpha"] = draw(st.sampled_from([0, 0.25, 0.5, 1]))
    return op


@st.composite
def node_op(draw) -> Dict[str, Any]:
    kind = draw(st.sampled_from(["insert", "insert", "remove", "move", "move"]))
    if kind == "insert":
        k = draw(st.sampled_from(KEYS + ["e"]))
        val: Dict[str, Any] = {"key": k, "tag": "M", "p": draw(num)}
        if draw(st.booleans()):
            val["children"] = [{"key": k + "1", "q": 1}]
        return {"otype": "node.insert", "key": draw(st.sampled_from(PARENTS)),
                "path": "children", "value": val}
    if kind == "remove":
        return {"otype": "node.remove", "key": "", "path": "children",
                "value": draw(st.sampled_from(KEYS))}
    return {"otype": "node.move", "key": "", "path": "children",
            "value": {"nodeKey": draw(st.sampled_from(KEYS + ["a1"])),
                      "newParent": draw(st.sampled_from(PARENTS))}}


@st.composite
def text_op(draw) -> Dict[str, Any]:
    kind = draw(st.sampled_from(["init", "insert", "insert", "insert", "delete", "replace"]))
    base = {"key": draw(st.sampled_from(["a", "doc"])), "path": "t"}
    if kind == "init":
        op = dict(base, otype="text.init")
        if draw(st.booleans()):
            op["value"] = draw(st.sampled_from(["hi", "xyz"]))
        return op
    pos = draw(st.integers(0, 8))
    if kind == "insert":
        return dict(base, otype="text.insert", position=pos,
                    value=draw(st.sampled_from(["a", "bc", "def"])))
    length = draw(st.integers(0, 4))
    if kind == "delete":
        return dict(base, otype="text.delete", position=pos, length=length)
    return dict(base, otype="text.replace", position=pos, length=length,
                value=draw(st.sampled_from(["Z", "YY"])))


any_op = st.one_of(value_op(), node_op(), text_op())

# actions: (name, replica index, extra)
action = st.one_of(
    st.tuples(st.just("ec"), st.integers(0, 3), any_op),
    st.tuples(st.just("ec"), st.integers(0, 3), any_op),
    st.tuples(st.just("ec"), st.integers(0, 3), any_op),
    st.tuples(st.just("edit"), st.integers(0, 3), any_op),
    st.tuples(st.just("commit"), st.integers(0, 3), st.none()),
    st.tuples(st.just("commit"), st.integers(0, 3), st.none()),
    st.tuples(st.just("undo"), st.integers(0, 3), st.none()),
    st.tuples(st.just("redo"), st.integers(0, 3), st.none()),
    st.tuples(st.just("cancel"), st.integers(0, 3), st.none()),
    st.tuples(st.just("deliver"), st.integers(0, 3), st.integers(0, 10_000)),
    st.tuples(st.just("deliver"), st.integers(0, 3), st.integers(0, 10_000)),
    st.tuples(st.just("deliver"), st.integers(0, 3), st.integers(0, 10_000)),
    st.tuples(st.just("dup"), st.integers(0, 3), st.integers(0, 10_000)),
    st.tuples(st.just("ack"), st.integers(0, 3), st.none()),
    st.tuples(st.just("compact"), st.integers(0, 3), st.none()),
    st.tuples(st.just("heartbeat"), st.integers(0, 3), st.booleans()),
)


def scenario(min_size: int = 30, max_size: int = 120):
    """A scenario of 30-120 actions."""
    return st.lists(action, min_size=min_size, max_size=max_size)


class Net:
    """``n`` stores that talk peer to peer; ``mode`` = fifo | any (reordering)."""

    def __init__(self, n: int, mode: str, undo_window: int = 3, peers: bool = True) -> None:
        clients = [f"c{i}" for i in range(n)]
        self.outbox: List[List[CRDTMessage]] = [[] for _ in range(n)]
        self.stores: List[GraphStore] = [
            create_graph(
                c,
                on_send=self.outbox[i].append,
                epoch="",
                peers=clients if peers else (),
                undo_window=undo_window,
            )
            for i, c in enumerate(clients)
        ]
        self.n = n
        self.mode = mode
        # delivered[src][dst] = set of outbox indices delivered
        self.delivered = [[set() for _ in range(n)] for _ in range(n)]
        self.all_msgs: List[CRDTMessage] = []

    def _pending(self, src: int, dst: int) -> List[int]:
        d = self.delivered[src][dst]
        return [i for i in range(len(self.outbox[src])) if i not in d]

    def step(self, act: Tuple[str, int, Any]) -> None:
        name, r, extra = act
        r %= self.n
        s = self.stores[r]
        if name == "edit":
            s.edit(extra)
        elif name == "ec":
            s.edit(extra)
            s.commit()
        elif name == "commit":
            s.commit()
        elif name == "undo":
            s.undo()
        elif name == "redo":
            s.redo()
        elif name == "cancel":
            s.cancel()
        elif name == "ack":
            un = s.get_state().unacked
            if un:
                s.ack(next(iter(un)))
        elif name == "compact":
            s.compact()
        elif name == "heartbeat":
            s.heartbeat(seal=extra)
        elif name in ("deliver", "dup"):
            src = r
            dst = (r + 1 + extra % max(self.n - 1, 1)) % self.n
            if dst == src:
                return
            if name == "dup":
                done = sorted(self.delivered[src][dst])
                if done:
                    self.stores[dst].receive(self.outbox[src][done[extra % len(done)]])
                return
            pend = self._pending(src, dst)
            if not pend:
                return
            i = pend[0] if self.mode == "fifo" else pend[extra % len(pend)]
            self.delivered[src][dst].add(i)
            self.stores[dst].receive(self.outbox[src][i])

    def settle(self, seed: int, ack_all: bool = True) -> None:
        """Commit everything, then deliver all in-flight messages in a random order."""
        rnd = random.Random(seed)
        for s in self.stores:
            s.commit()
        todo = [(src, dst, i) for src in range(self.n) for dst in range(self.n) if src != dst
                for i in self._pending(src, dst)]
        if self.mode == "fifo":
            todo.sort(key=lambda t: t[2])
        else:
            rnd.shuffle(todo)
        for src, dst, i in todo:
            self.delivered[src][dst].add(i)
            self.stores[dst].receive(self.outbox[src][i])
        if ack_all:
            for s in self.stores:
                for mid in list(s.get_state().unacked):
                    s.ack(mid)

    def messages(self) -> List[CRDTMessage]:
        return [m for box in self.outbox for m in box]


def canon(store: GraphStore) -> Dict[str, Any]:
    return store.get_state().graph.canonical(internals=True)


def fresh_replay(msgs: List[CRDTMessage], order: Optional[List[int]] = None) -> GraphStore:
    obs = create_graph("observer", epoch="")
    idx = order if order is not None else range(len(msgs))
    for i in idx:
        obs.receive(msgs[i])
    return obs


def check_invariants(store: GraphStore) -> None:
    """Structural invariants that convergence alone would not reveal."""
    g = store.get_state().graph
    tree = g.tree
    for k, n in g.nodes.items():
        # tombstones: marked, in no child list, their properties are frozen
        assert n.deleted == (k in tree.tomb)
        assert (n.deleted_at is not None) == n.deleted
        if n.deleted:
            assert all(k not in kids for kids in tree.kids.values())
            assert k not in g.reachable() and k not in g.live_nodes()
            continue
        # acyclic: walking up never revisits a node
        seen = {k}
        p = n.parent
        while p and p in g.nodes:
            assert p not in seen, f"cycle through {k}"
            seen.add(p)
            p = g.nodes[p].parent
        # single parent, listed exactly once, in attach order
        assert tree.kids[n.parent].count(k) == 1
        if n.parent in g.nodes:
            assert g.nodes[n.parent].children is tree.kids[n.parent]
    for p, kids in tree.kids.items():
        for c in kids:
            assert c in g.nodes and g.nodes[c].parent == p
        keys = [tree.akey[c] for c in kids]
        assert keys == sorted(keys)
    for reg in g.iter_regs():
        seq = g.text_seq(reg.nkey, reg.path)
        if seq is not None:
            assert len(set(seq.ids)) == len(seq.ids)
            assert seq.text() == "".join(c for _, c, v in seq.to_list() if v)


def assert_converged(net: Net, seed: int) -> None:
    """Deliver everything in flight; every replica ends equal, and equal to a replica that
    saw every message in a shuffled order; every store's invariants hold."""
    net.settle(seed)
    states = [canon(s) for s in net.stores]
    for i, c in enumerate(states[1:], 1):
        assert c == states[0], f"replica {i} diverged"
    msgs = net.messages()
    order = list(range(len(msgs)))
    random.Random(seed).shuffle(order)
    assert canon(fresh_replay(msgs, order)) == states[0]
    for s in net.stores:
        check_invariants(s)
