"""Build ``hand_move.msgpack``: 2 s of ``HAND_MOVE`` frames at 30 Hz (the ``Hands``
default ``fps``), exactly as the web client sends them, from a synthetic hand.

    python tests/teleop/make_recording.py

Synthesised, not captured from a headset (see docs/teleop.md): the right hand wanders,
pinches from 0.5 s to 1.1 s and is lost from 1.3 s to 1.5 s; the left hand is tracked for
the first 0.8 s, then lost. The file is the frames' msgpack maps back to back.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wire import hand_move, hand_poses, pack, wrist_pose  # noqa: E402

OUT = Path(__file__).resolve().parent / "hand_move.msgpack"
FPS, SECONDS, T0 = 30, 2.0, 1796500000.0  # T0: an epoch time in December 2026


def pinch_at(t: float) -> float:
    if t < 0.4 or t > 1.25:
        return 0.0
    if t < 0.55:
        return (t - 0.4) / 0.15
    if t > 1.1:
        return 1.0 - (t - 1.1) / 0.15
    return 1.0


def main() -> None:
    frames = []
    for n in range(int(FPS * SECONDS)):
        t = n / FPS
        right = None if 1.3 <= t < 1.5 else hand_poses(
            wrist_pose(t), curl=0.3 + 0.2 * math.sin(t), pinch=pinch_at(t))
        left = hand_poses(wrist_pose(t, "left"), 0.2, 0.0, "left") if t < 0.8 else None
        frames.append(pack(hand_move(round(T0 + t, 3), left, right)))
    OUT.write_bytes(b"".join(frames))
    print(f"{OUT}: {len(frames)} frames, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
