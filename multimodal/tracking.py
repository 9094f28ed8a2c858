"""Linking faces across sampled frames into per-person tracks.

A greedy IoU tracker: each new face joins the live track whose last box it
overlaps most (IoU above ``min_iou``). A face that overlaps no track that
well may still join the nearest one whose last box is of a similar size and
at most ``max_shift`` box sides away: at 2 sampled frames per second a head
turning or a walking person moves most of a face width between samples.
Otherwise the face starts a new track. A track that has not been matched for
``max_gap`` seconds ends.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from multimodal.faces import Face


def iou(a: Face, b: Face) -> float:
    """Intersection over union of two boxes, in [0, 1]."""
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def nearness(a: Face, b: Face, max_shift: float) -> float:
    """1 for boxes with the same centre, falling to 0 at ``max_shift`` sides apart; 0 when sizes differ by over 1.5x."""
    side = max(a.w, a.h, b.w, b.h)
    if side == 0 or max(a.w, b.w) > 1.5 * min(a.w, b.w):
        return 0.0
    dx, dy = (a.x + a.w / 2) - (b.x + b.w / 2), (a.y + a.h / 2) - (b.y + b.h / 2)
    return max(0.0, 1.0 - (dx * dx + dy * dy) ** 0.5 / (max_shift * side))


@dataclass
class IoUTracker:
    """Gives each face the id of the face it continues: the best overlap (IoU at
    least ``min_iou``) or, failing that, the nearest box of similar size, among
    faces seen in the last ``max_gap`` seconds."""

    min_iou: float = 0.3
    max_gap: float = 2.0  # seconds
    max_shift: float = 1.0  # box sides a face may move between matches without overlapping
    _tracks: dict = field(default_factory=dict)  # id -> (last time, last face)
    _next_id: int = 1

    def update(self, time: float, faces: list[Face]) -> list[int]:
        """Track ids for ``faces`` seen at ``time`` (seconds), in the same order."""
        live = {tid: f for tid, (t, f) in self._tracks.items() if time - t <= self.max_gap}
        # Overlap first; matches by nearness rank below every overlap match.
        pairs = sorted(((self._affinity(face, prev), i, tid) for i, face in enumerate(faces)
                        for tid, prev in live.items()), reverse=True)
        ids: list[int | None] = [None] * len(faces)
        used = set()
        for score, i, tid in pairs:
            if score <= 0:
                break
            if ids[i] is None and tid not in used:
                ids[i] = tid
                used.add(tid)
        for i, face in enumerate(faces):
            if ids[i] is None:
                ids[i] = self._next_id
                self._next_id += 1
            self._tracks[ids[i]] = (time, face)
        return [int(tid) for tid in ids if tid is not None]

    def _affinity(self, face: Face, prev: Face) -> float:
        """IoU + 1 for overlapping boxes (above ``min_iou``), else nearness in [0, 1]."""
        overlap = iou(face, prev)
        return 1.0 + overlap if overlap >= self.min_iou else nearness(face, prev, self.max_shift)
