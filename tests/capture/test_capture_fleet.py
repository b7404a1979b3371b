"""A fleet session counts: the pool on node A renders on a headless page connected to node
B, through the room (``app.fleet.session(sid)``: ``upsert`` + ``rpc``, one frame at a time,
each frame tag-checked). Real ``redis-server``, real Chromium."""

from __future__ import annotations

import pytest
from fleet.fleet_redis import RedisServer, need_redis

from vuer_sync import Vuer
from vuer_sync.capture import HeadlessPages, RenderPool
from vuer_sync.schemas import DefaultScene

from .test_capture_browser import FOV, H, W, assert_shows_its_pose, place_box, poses
from browser import require_chromium
from conftest import wait_until

pytestmark = pytest.mark.browser


def test_a_page_on_another_node_renders_through_the_fleet(tmp_path):
    require_chromium()
    redis = RedisServer(need_redis(), tmp_path, appendonly=False).start()
    try:
        with Vuer(port=0, fleet=redis.url, room="cap") as a, \
                Vuer(port=0, fleet=redis.url, room="cap") as b:
            a.scene.set @ DefaultScene(bgChildren=[])
            a.scene.flush(10)
            with HeadlessPages(b, 1) as hp:
                sid = hp.sessions[0].id
                assert wait_until(lambda: sid in {s["sid"] for s in a.fleet.sessions()}, 10)
                remote = a.fleet.session(sid)
                assert remote.node == b.fleet.node_id
                ps = poses(6)
                pool = RenderPool([remote], width=W, height=H, fov=FOV, timeout=30.0,
                                  prepare=place_box)
                got = list(pool.render(ps))
    finally:
        redis.stop()
    assert [f.index for f in got] == list(range(6))
    assert {f.session for f in got} == {sid}
    for f in got:
        assert_shows_its_pose(f.rgb, ps[f.index], f.index)
