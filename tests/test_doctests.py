"""Every docstring example in the package runs as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import vuer_sync

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(vuer_sync.__path__, "vuer_sync.")
    if not m.name.startswith("vuer_sync.rtc")  # the rtc package runs its own doctests
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, no_thread_leak):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
