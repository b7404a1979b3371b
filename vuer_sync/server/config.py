"""Configuration helpers of the server: they live in :mod:`vuer_sync.config` (the client uses
them too); this module keeps the old import path."""

from __future__ import annotations

from ..config import env_bool, env_int, env_str, parse_bool

__all__ = ["env_bool", "env_int", "env_str", "parse_bool"]
