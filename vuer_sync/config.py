"""Configuration from keyword arguments and Vuer's environment variables, parsed to types."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, overload

__all__ = ["env_bool", "env_int", "env_str", "parse_bool"]

_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in _FALSE
    return bool(v)


def _env(name: str, conv: Callable[[str], Any], default: Any) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return conv(raw.strip())
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid value") from None


@overload
def env_str(name: str) -> Optional[str]: ...
@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: Optional[str]) -> Optional[str]: ...
def env_str(name: str, default: Optional[str] = None) -> Optional[str]:
    return _env(name, str, default)


@overload
def env_int(name: str) -> Optional[int]: ...
@overload
def env_int(name: str, default: int) -> int: ...
@overload
def env_int(name: str, default: Optional[int]) -> Optional[int]: ...
def env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    return _env(name, lambda s: int(float(s)) if "e" in s.lower() else int(s, 0), default)


def env_bool(name: str, default: bool) -> bool:
    return _env(name, parse_bool, default)
