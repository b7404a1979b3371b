"""The pending-request table and its one-shot replies (the pure core under rpc()/till())."""

from __future__ import annotations

import threading
import time

import pytest

from vuer_sync.errors import RPCTimeout, SessionClosed
from vuer_sync.rpc import PendingTable, Reply, Waiter, wait


def test_reply_set_once_first_wins():
    r = Reply()
    assert not r.done()
    r.set_result("a")
    r.set_result("b")
    r.set_exception(RuntimeError("late"))
    assert not r.cancel()
    assert r.done() and r.result(0) == "a" and r.result() == "a"  # readable again


def test_reply_exception_and_timeout():
    r = Reply()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        r.result(0.05)
    assert 0.04 <= time.monotonic() - t0 < 2
    r.set_exception(SessionClosed("gone"))
    with pytest.raises(SessionClosed, match="gone"):
        r.result(0)
    c = Reply()
    assert c.cancel()
    with pytest.raises(TimeoutError):
        c.result(0)


def test_reply_wakes_a_blocked_thread():
    r = Reply()
    got = []
    t = threading.Thread(target=lambda: got.append(r.result(5)))
    t.start()
    t.join(0.05)
    assert t.is_alive() and not got  # blocked until the result is set
    r.set_result(7)
    t.join(5)
    assert got == [7] and not t.is_alive()


def test_racing_finishers_finish_exactly_once():
    """resolve() and close() (or a cancel) may race on one reply: one wins, no error."""
    for _ in range(200):
        r = Reply()
        barrier = threading.Barrier(3)
        errors = []

        def finish(fn, *a, barrier=barrier, errors=errors):
            barrier.wait(5)
            try:
                fn(*a)
            except Exception as e:  # pragma: no cover - the failure this test looks for
                errors.append(e)

        ts = [threading.Thread(target=finish, args=(r.set_result, 1)),
              threading.Thread(target=finish, args=(r.set_exception, SessionClosed("x"))),
              threading.Thread(target=finish, args=(r.cancel,))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(5)
        assert not errors and r.done()
        try:
            assert r.result(0) == 1
        except (SessionClosed, TimeoutError):
            pass


def test_table_resolves_every_waiter_of_a_key_and_only_that_key():
    t = PendingTable()
    a1, a2, b = t.register("A"), t.register("A"), t.register("B")
    assert not t.resolve("C", 0)
    assert t.resolve("A", "ans")
    assert (a1.result(0), a2.result(0), b.done()) == ("ans", "ans", False)
    assert not t.resolve("A", "again")  # nothing waits on A any more
    t.discard("B", b)
    assert len(t) == 0 and not t.resolve("B", 1)


def test_table_close_fails_pending_and_later_registrations():
    t = PendingTable()
    r = t.register("A")
    t.close(SessionClosed("bye"))
    with pytest.raises(SessionClosed):
        wait(r, 1, "rpc")
    with pytest.raises(SessionClosed):
        wait(t.register("B"), 1, "rpc")


def test_wait_timeout_is_rpc_timeout_and_waiter_forgets_itself():
    t = PendingTable()
    w = Waiter(t, "DONE", "till('DONE')")
    with pytest.raises(RPCTimeout, match="till\\('DONE'\\)"):
        w.wait(0.02)
    assert len(t) == 0
