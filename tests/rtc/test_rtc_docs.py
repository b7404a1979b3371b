"""The Python blocks of docs/rtc.md run as written (one session per page, in order)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "rtc.md"
FENCE = re.compile(r"^```python\n(?P<body>.*?)^```$", re.M | re.S)


def test_rtc_md_python_blocks_run():
    blocks = [m.group("body") for m in FENCE.finditer(DOC.read_text())]
    assert len(blocks) >= 2
    ns: dict = {"__name__": "docs_rtc"}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 - our own documentation
    assert ns["store_a"].get_state().graph.nodes["obj"].get_property("health") == 65
    assert ns["retire"] == {"mtype": "retire", "sids": [ns["alice"].sid]}
