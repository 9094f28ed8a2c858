"""Aggregating individual face results into group and segment figures."""
from __future__ import annotations

import math

import numpy as np

from multimodal.config import EMOTIONS
from multimodal.results import AudioSegment, FaceRecord, Segment, segment_index

#: Valence groups, as group-emotion work reports them.
VALENCE = {"positive": ("happy", "surprise"), "negative": ("angry", "disgust", "fear", "sad"),
           "neutral": ("neutral",)}


def segment_bounds(duration: float, segment: float) -> list[tuple[float, float]]:
    """``(start, end)`` in seconds of the segments a recording is cut into.

    Segments are ``segment`` seconds long from time 0; the last one ends with
    the recording and may be shorter. A recording shorter than one segment is
    one segment.
    """
    n = max(1, math.ceil(duration / segment - 1e-6))
    return [(i * segment, min(duration, (i + 1) * segment)) for i in range(n)]


def group_distribution(probs: np.ndarray, areas: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    """Weighted mean of face distributions, weights = face area x detection score.

    Larger, surer faces count more: they are nearer the camera and their
    crops are sharper. ``probs`` (n, 7), ``areas`` and ``scores`` (n,).
    Returns shape (7,), or None when there are no faces.
    """
    if len(probs) == 0:
        return None
    w = np.asarray(areas, float) * np.asarray(scores, float)
    if w.sum() <= 0:
        w = np.ones(len(probs))
    return (np.asarray(probs, float) * w[:, None]).sum(axis=0) / w.sum()


def valence(dist: np.ndarray | None) -> dict[str, float] | None:
    """Positive / negative / neutral mass of a 7-class distribution."""
    if dist is None:
        return None
    return {k: float(sum(dist[EMOTIONS.index(e)] for e in names)) for k, names in VALENCE.items()}


def label_runs(times: list[tuple[float, float]], labels: list[str | None]) -> list[tuple[float, float, str]]:
    """Merge consecutive segments with the same label into ``(start, end, label)`` runs."""
    runs: list[list] = []
    for (start, end), label in zip(times, labels):
        if label is None:
            continue
        if runs and runs[-1][2] == label and abs(runs[-1][1] - start) < 1e-6:
            runs[-1][1] = end
        else:
            runs.append([start, end, label])
    return [tuple(r) for r in runs]


def build_segments(bounds: list[tuple[float, float]], segment: float, frame_times: list[float],
                   faces: list[FaceRecord], audio: list[AudioSegment] | None) -> list[Segment]:
    """Assign sampled frames, faces and audio evidence to segments (not yet fused).

    Parameters
    ----------
    bounds : ``(start, end)`` of each segment in seconds, from :func:`segment_bounds`
    segment : segment length in seconds
    frame_times : times of the sampled video frames, seconds
    faces : every face found, with its probabilities
    audio : one :class:`AudioSegment` per segment, or None without audio
    """
    n = len(bounds)
    frames = np.bincount(np.array([segment_index(t, segment, n) for t in frame_times], dtype=int), minlength=n)
    by_segment: dict[int, list[FaceRecord]] = {}
    for rec in faces:
        by_segment.setdefault(segment_index(rec.time, segment, n), []).append(rec)
    out = []
    for i, (start, end) in enumerate(bounds):
        recs = by_segment.get(i, [])
        visual = group_distribution(np.array([r.probs for r in recs]), np.array([r.face.area for r in recs]),
                                    np.array([r.face.score for r in recs]))
        a = audio[i] if audio is not None else AudioSegment(None, None, None)
        out.append(Segment(i, start, end, frames=int(frames[i]), faces=len(recs),
                           tracks=len({r.track_id for r in recs}), visual=visual, audio=a.probs,
                           audio_dbfs=a.dbfs, speech=a.speech))
    return out
