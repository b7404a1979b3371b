"""The I/O loop's poller: epoll driven directly on Linux, selectors elsewhere; both keep
the same contract (an fd may wait for nothing and stay registered; what was not asked
for is never reported)."""

from __future__ import annotations

import select
import socket

import pytest

from vuer_sync.transport.poller import READ, WRITE, EpollPoller, SelectorPoller, make_poller

KINDS = [SelectorPoller] + ([EpollPoller] if hasattr(select, "epoll") else [])


@pytest.fixture(params=KINDS, ids=lambda k: k.__name__)
def poller(request):
    p = request.param()
    yield p
    p.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_reports_what_was_asked_for(poller, pair):
    a, b = pair
    poller.register(a.fileno(), READ, "a")
    assert poller.select(0.0) == []  # writable, but only reading was asked for
    b.send(b"x")
    assert poller.select(1.0) == [("a", READ)]
    poller.modify(a.fileno(), READ | WRITE, "a2")
    assert poller.select(1.0) == [("a2", READ | WRITE)]
    poller.modify(a.fileno(), READ | WRITE, "a3")  # the same events, other data
    assert poller.select(1.0) == [("a3", READ | WRITE)]


def test_waiting_for_nothing_keeps_the_fd(poller, pair):
    a, b = pair
    poller.register(a.fileno(), READ, "a")
    b.send(b"x")
    poller.modify(a.fileno(), 0, "a")  # a caller reads it meanwhile
    assert poller.select(0.0) == []
    assert poller.values() == ["a"]
    b.close()  # a hang-up while nothing is asked for is not reported either
    assert poller.select(0.0) == []
    poller.modify(a.fileno(), READ, "a")  # reading is given back
    assert poller.select(1.0) == [("a", READ)]


def test_registered_with_nothing_then_given_events(poller, pair):
    a, b = pair
    poller.register(a.fileno(), 0, "a")
    assert poller.values() == ["a"] and poller.select(0.0) == []
    poller.modify(a.fileno(), WRITE, "a")
    assert poller.select(1.0) == [("a", WRITE)]


def test_unregister_forgets_and_tolerates_a_closed_socket(poller, pair):
    a, b = pair
    fd = a.fileno()
    poller.register(fd, READ, "a")
    a.close()
    poller.unregister(fd)
    assert poller.values() == []
    poller.unregister(fd)  # twice: no error


def test_register_twice_fails(poller, pair):
    a, _ = pair
    poller.register(a.fileno(), READ, "a")
    with pytest.raises((KeyError, ValueError, OSError)):
        poller.register(a.fileno(), READ, "a")


def test_make_poller_picks_epoll_on_linux():
    p = make_poller()
    try:
        assert isinstance(p, EpollPoller if hasattr(select, "epoll") else SelectorPoller)
    finally:
        p.close()
