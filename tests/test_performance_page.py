"""docs/performance.md is generated from the committed benchmarks/results.json (no figure
typed by hand), and its template holds no figures."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402


def test_page_is_what_the_generator_makes_of_results_json():
    data = json.loads((BENCH / "results.json").read_text(encoding="utf-8"))
    data["goals"] = report.goals(data)
    page = report.PERFORMANCE_PAGE.read_text(encoding="utf-8")
    assert page == report.performance_page(data), (
        "docs/performance.md is out of date: run "
        "`python benchmarks/run.py --render benchmarks/results.json`")


def test_template_has_no_figures():
    text = report.PERFORMANCE_TEMPLATE.read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # commands may hold numbers
    figures = re.findall(r"\d[\d.,]*\s*(?:µs|ms|MB|KB|GiB|%|x\b|fps|msg/s)", prose)
    assert figures == [], f"figures typed into the template: {figures}"
    for marker in ("{{TABLE}}", "{{GOALS}}", "{{HEAD}}"):
        assert marker in text
