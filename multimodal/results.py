"""What an analysis produces: faces, segments and the analysis that holds them.

These types are plain data. The stages of :mod:`multimodal.pipeline` create
them and the writers (:mod:`multimodal.report`, :mod:`multimodal.plots`,
:mod:`multimodal.html_report`, :mod:`multimodal.annotate`) read them; neither
side needs the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from multimodal.config import EMOTIONS, AnalyzeConfig
from multimodal.decode import MediaInfo
from multimodal.faces import Face


@dataclass(frozen=True)
class FaceRecord:
    """One face found in one sampled frame, with its class probabilities."""

    time: float  # seconds
    track_id: int
    face: Face  # in the pixel coordinates of the original video
    probs: np.ndarray  # (7,), over EMOTIONS


@dataclass(frozen=True)
class AudioSegment:
    """What the voice says in one segment (see :func:`multimodal.audio.audio_evidence`)."""

    dbfs: float | None  # RMS level, floored at -100 dBFS; None when the segment has no samples
    speech: float | None  # fraction of the segment with a voice
    probs: np.ndarray | None  # (7,); None when the segment holds too little speech


@dataclass(frozen=True)
class Segment:
    """One time segment: the evidence of both modalities and their fusion."""

    index: int
    start: float  # seconds
    end: float
    frames: int = 0  # sampled frames in the segment
    faces: int = 0  # face detections in the segment
    tracks: int = 0  # distinct people
    visual: np.ndarray | None = None  # (7,) group distribution of the faces
    audio: np.ndarray | None = None  # (7,); None when the segment holds no speech
    audio_dbfs: float | None = None  # RMS level, floored at -100 dBFS; None without audio
    speech: float | None = None  # fraction of the segment with a voice; None without audio
    fused: np.ndarray | None = None  # (7,)

    @property
    def modalities(self) -> str:
        """``"visual+audio"``, ``"visual"``, ``"audio"`` or ``"none"``: the evidence the segment has."""
        present = [m for m, p in (("visual", self.visual), ("audio", self.audio)) if p is not None]
        return "+".join(present) if present else "none"

    @property
    def label(self) -> str | None:
        """The fused label, None when the segment has no evidence."""
        return None if self.fused is None else EMOTIONS[int(np.argmax(self.fused))]

    @property
    def confidence(self) -> float | None:
        """The fused probability of :attr:`label`."""
        return None if self.fused is None else float(np.max(self.fused))


@dataclass(frozen=True)
class Analysis:
    """The result of analysing one input."""

    info: MediaInfo
    config: AnalyzeConfig  # the options it was analysed with
    segments: list[Segment]
    faces: list[FaceRecord]
    models: dict  # file, checksum and parameters of each model used
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the analysis
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    #: per track, up to a few (score, time, 96x96 uint8 face) of its clearest detections
    thumbnails: dict[int, list[tuple[float, float, np.ndarray]]] = field(default_factory=dict)

    def segment_of(self, time: float) -> int:
        """Index of the segment that holds ``time`` (seconds)."""
        return segment_index(time, self.config.segment, len(self.segments))


def segment_index(time: float, segment: float, count: int) -> int:
    """Index of the ``segment``-second segment holding ``time``, among ``count``
    (the last segment also holds anything past its end)."""
    return min(count - 1, int(time / segment))
