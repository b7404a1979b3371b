"""The rows of ``run.py``: one module per row, each with its definition and its workload.

A row module has ``ROW`` (id, title, what it measures, which servers have the feature, its
metrics with units and whether lower or higher is better; ``floor``: a metric's resolution;
``variants``: suffixes of metrics measured on a variant of vuer_sync, see ``spec.variant``)
and a ``run`` function returning ``{"values": {...}, "raw": {...}}`` for one server.
``run.py`` decides which rows run, interleaves them by server and collects the results;
``report.py`` writes them. :data:`ROWS` is the order of the table in ``RESULTS.md``.
"""

from __future__ import annotations

from typing import Any, Dict, List

from . import (
    broadcast_clients,
    idle_cpu,
    large_messages,
    loop_lateness,
    many_viewers,
    pose_updates,
    producer_call,
    rpc_round_trip,
    rpc_websockets,
    small_messages,
)

ROWS: List[Dict[str, Any]] = [
    producer_call.ROW,
    small_messages.ROW,
    rpc_round_trip.ROW,
    rpc_websockets.ROW,
    large_messages.ROW,
    loop_lateness.ROW,
    broadcast_clients.ROW,
    idle_cpu.ROW,
    pose_updates.ROW_8A,
    pose_updates.ROW_8B,
    many_viewers.ROW_9,
    many_viewers.ROW_10,
    many_viewers.ROW_11,
]
ROW_BY_ID = {r["id"]: r for r in ROWS}
