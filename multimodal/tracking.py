"""Linking faces across sampled frames into per-person tracks.

A greedy IoU tracker: each new face joins the live track whose last box it
overlaps most (IoU above ``min_iou``), else starts a new track. A track that
has not been matched for ``max_gap`` seconds ends. At 1–5 sampled frames per
second people move little between frames, which is what makes IoU enough.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from multimodal.faces import Face


def iou(a: Face, b: Face) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass
class IoUTracker:
    min_iou: float = 0.3
    max_gap: float = 2.0  # seconds
    _tracks: dict = field(default_factory=dict)  # id -> (last time, last face)
    _next_id: int = 1

    def update(self, time: float, faces: list[Face]) -> list[int]:
        """Track ids for ``faces`` seen at ``time`` (seconds), in the same order."""
        live = {tid: f for tid, (t, f) in self._tracks.items() if time - t <= self.max_gap}
        pairs = sorted(((iou(face, prev), i, tid) for i, face in enumerate(faces) for tid, prev in live.items()),
                       reverse=True)
        ids: list[int | None] = [None] * len(faces)
        used = set()
        for score, i, tid in pairs:
            if score < self.min_iou:
                break
            if ids[i] is None and tid not in used:
                ids[i] = tid
                used.add(tid)
        for i, face in enumerate(faces):
            if ids[i] is None:
                ids[i] = self._next_id
                self._next_id += 1
            self._tracks[ids[i]] = (time, face)
        return ids
