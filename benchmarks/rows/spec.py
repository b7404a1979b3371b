"""How a row module states its row: :func:`row` builds the definition that ``run.py`` and
``report.py`` read (id, title, what it measures, which servers have the feature, metrics)
from text laid out as the report shows it."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from common import IMPLS

Metric = Tuple[str, str, str, Optional[str]]


def text(prose: str) -> str:
    """Prose written over several lines, as one line (each run of whitespace one space)."""
    return " ".join(prose.split())


def metrics(table: str) -> List[Metric]:
    """``name | label | unit | better`` lines (better: ``lower``, ``higher`` or ``-`` for
    neither; blank lines skipped) as ``(name, label, unit, better)``."""
    out: List[Metric] = []
    for line in table.strip().splitlines():
        if line.strip():
            name, label, unit, better = (cell.strip() for cell in line.split("|"))
            out.append((name, label, unit, None if better == "-" else better))
    return out


def row(rid: str, title: str, measures: str, table: str, without: Sequence[str] = (),
        floor: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """A row's definition: ``without`` the servers that lack the feature (their cells say
    ``n/a``); ``floor``: a metric's resolution (ratios count smaller values as it)."""
    spec: Dict[str, Any] = {"id": rid, "title": title, "measures": text(measures),
                            "supported": {impl: impl not in without for impl in IMPLS},
                            "metrics": metrics(table)}
    if floor:
        spec["floor"] = floor
    return spec


def variant(spec: Dict[str, Any], suffix: str, label: str,
            names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Add to ``spec`` a copy of its metrics (or of ``names``) for a variant of vuer_sync run
    in the same invocation (``run.py`` records them with :meth:`Results.record`'s ``suffix``):
    named ``<metric><suffix>``, labelled ``<label of the metric> [<label>]``; only the
    vuer_sync column has numbers for them (the others say ``n/a``)."""
    base = [m for m in spec["metrics"] if names is None or m[0] in names]
    spec["metrics"] = spec["metrics"] + [(n + suffix, f"{lab} [{label}]", unit, better)
                                         for n, lab, unit, better in base]
    spec.setdefault("variants", {})[suffix] = label
    floors = spec.get("floor", {})
    for n, *_ in base:
        if n in floors:
            floors[n + suffix] = floors[n]
    return spec
