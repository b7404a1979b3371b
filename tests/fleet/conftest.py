"""Fixtures of the fleet tests: a real ``redis-server`` per test (``redis_server``; with AOF:
``redis_aof``). Missing ``redis-server`` or ``redis``: skipped locally, FAILED under CI=true."""

from __future__ import annotations

import pytest

from .fleet_redis import RedisServer, need_redis


@pytest.fixture
def redis_server(tmp_path):
    srv = RedisServer(need_redis(), tmp_path, appendonly=False).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def redis_aof(tmp_path):
    srv = RedisServer(need_redis(), tmp_path, appendonly=True).start()
    try:
        yield srv
    finally:
        srv.stop()
