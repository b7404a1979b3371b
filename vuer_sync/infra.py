"""The old name of :mod:`vuer_sync.typescript` (viser.infra-style helpers), kept importable.

>>> from vuer_sync.infra import generate_typescript_interfaces
>>> "export interface Upsert" in generate_typescript_interfaces()
True
"""

from __future__ import annotations

from .typescript import generate_typescript_interfaces

__all__ = ["generate_typescript_interfaces"]
