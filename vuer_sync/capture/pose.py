"""Camera poses for a capture: :class:`Pose` and :func:`circle_poses`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from ..server.render import look_at_wxyz

__all__ = ["Pose", "circle_poses"]


@dataclass(frozen=True)
class Pose:
    """A camera pose: ``position`` and orientation ``wxyz`` (three.js camera: looks along its
    local -Z, +Y up).

    >>> Pose.look_at([0, 0, 5], [0, 0, 0]).wxyz
    (1.0, 0.0, 0.0, 0.0)
    """

    position: Tuple[float, float, float]
    wxyz: Tuple[float, float, float, float]

    @classmethod
    def look_at(cls, position: Sequence[float], target: Sequence[float],
                up: Sequence[float] = (0.0, 1.0, 0.0)) -> Pose:
        pos = tuple(float(v) for v in position)
        return cls(pos, look_at_wxyz(pos, target, up))  # type: ignore[arg-type]


def circle_poses(n: int, radius: float = 5.0, elevation: float = 2.5,
                 target: Sequence[float] = (0.0, 0.6, 0.0)) -> List[Pose]:
    """``n`` poses evenly on a horizontal circle around ``target``, looking at it.

    >>> [round(c, 3) for c in circle_poses(4, radius=2, elevation=1)[1].position]
    [2.0, 1.0, 0.0]
    """
    out = []
    for i in range(n):
        a = 2 * math.pi * i / max(n, 1)
        out.append(Pose.look_at((radius * math.sin(a), elevation, radius * math.cos(a)),
                                target))
    return out
