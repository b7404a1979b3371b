"""Run the docstring examples of every vuer_sync.rtc module."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import vuer_sync.rtc

MODULES = ["vuer_sync.rtc"] + [
    m.name for m in pkgutil.walk_packages(vuer_sync.rtc.__path__, "vuer_sync.rtc.")
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0


def test_examples_exist_on_main_entry_points():
    from vuer_sync.rtc import graph, relay, store, wire

    for obj in (vuer_sync.rtc, store, store.GraphStore, store.create_graph, graph, relay, wire):
        assert ">>>" in (obj.__doc__ or ""), obj
