"""Shared fixtures: servers on 127.0.0.1 with port 0, thread-leak checks, required extras."""

from __future__ import annotations

import importlib
import os
import threading
import time

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(module: str):
    """Import an optional test dependency: skip locally when missing, FAIL under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if IN_CI:
            pytest.fail(f"{module} is required under CI=true but is not importable: {e}")
        pytest.skip(f"{module} not installed")


def our_threads():
    return {t for t in threading.enumerate() if t.name.startswith("vuer")}


def wait_until(pred, timeout=5.0, interval=0.005):
    """Poll ``pred`` (bounded) in tests only; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


@pytest.fixture
def no_thread_leak():
    before = our_threads()
    yield
    leftover = wait_until(lambda: not (our_threads() - before), 3.0) or (our_threads() - before)
    assert not leftover or leftover is True, f"threads left running: {leftover}"


@pytest.fixture
def app(no_thread_leak):
    from vuer_sync import Vuer

    server = Vuer(port=0)
    yield server
    server.stop()
