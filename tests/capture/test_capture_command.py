"""``vuer-sync capture``: how it finds the scene, and its one-line errors (no browser here:
the whole command runs in ``docs/recipes/dataset-capture.md``'s block via ``capture_scene``
and in ``tests/test_browser.py`` through ``examples/dataset_capture.py``)."""

from __future__ import annotations

import json

import pytest

from vuer_sync import cli
from vuer_sync.capture.command import load_scene
from vuer_sync.events import Set
from vuer_sync.schemas import Box, DefaultScene


def test_scene_from_a_file_entry_point_a_module_and_json(tmp_path):
    f = tmp_path / "scenes.py"
    f.write_text("from vuer_sync.schemas import Box, Scene\n"
                 "def one():\n    return Scene(Box(key='b'))\n")
    assert load_scene(f"{f}:one").serialize()["children"][0]["key"] == "b"
    assert isinstance(load_scene("vuer_sync.schemas:DefaultScene"), DefaultScene)
    j = tmp_path / "scene.json"
    j.write_text(json.dumps(DefaultScene(Box(key="jb")).serialize()))
    ev = load_scene(str(j))
    assert isinstance(ev, Set) and ev.data["children"][0]["key"] == "jb"
    with pytest.raises(ValueError, match="module:function"):
        load_scene("no-colon-here")


def test_missing_chromium_is_one_line_before_any_server(tmp_path, capsys):
    rc = cli.main(["capture", "vuer_sync.schemas:DefaultScene", "--n", "2", "--out",
                   str(tmp_path / "out"), "--chromium", str(tmp_path / "no-chromium")])
    err = capsys.readouterr().err
    assert rc == 1 and "vuer-sync capture:" in err and "Traceback" not in err
    assert "no Chromium at" in err or "needs Playwright" in err
    assert not (tmp_path / "out").exists()
    assert cli.main(["capture", "x:y", "--n", "0"]) == 2
