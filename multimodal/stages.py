"""The two stages of ``analyze``: faces in the video, and the voice in the audio.

Each stage owns its models (loaded on first use, so an audio-only batch never
loads the visual model) and returns its results; :class:`multimodal.pipeline.Analyzer`
runs them side by side and assigns their results to segments.
"""
from __future__ import annotations

import queue
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from multimodal.audio import AudioModel, audio_evidence, to_project_labels
from multimodal.config import AnalyzeConfig
from multimodal.decode import AudioReader, MediaInfo, extract_audio, iter_frames
from multimodal.faces import Face, crop_faces, largest, make_detector, to_gray
from multimodal.results import AudioSegment, FaceRecord
from multimodal.speech import SpeechDetector
from multimodal.tracking import IoUTracker
from multimodal.visual import VisualModel

THUMBNAILS_PER_TRACK = 3


@dataclass(frozen=True)
class VideoResult:
    """What the video stage found."""

    frame_times: list[float]  # seconds, one per sampled frame
    faces: list[FaceRecord]
    #: per track, up to THUMBNAILS_PER_TRACK (score x area, time, 96x96 uint8 face), best first
    thumbnails: dict[int, list[tuple[float, float, np.ndarray]]] = field(default_factory=dict)


class VideoStage:
    """Faces in sampled frames: detected, tracked and classified.

    Parameters
    ----------
    cfg : the analysis options (``fps``, ``detector``, ``min_face``, ``max_faces``,
        ``detect_width``, ``small_face_fps``, ``detect_workers``, ``batch_size``,
        ``visual_model``, ``quiet``)
    """

    def __init__(self, cfg: AnalyzeConfig):
        self.cfg = cfg
        self._visual: VisualModel | None = None
        self._detectors: list = []  # one per detection thread; neither cascades nor interpreters may be shared

    @property
    def visual(self) -> VisualModel:
        """The facial-expression model."""
        if self._visual is None:
            self._visual = VisualModel(self.cfg.visual_model)
        return self._visual

    @property
    def detector(self):
        """The first face detector (the one that describes the others)."""
        if not self._detectors:
            self._detectors.append(make_detector(self.cfg.detector, self.cfg.min_face))
        return self._detectors[0]

    def load(self) -> None:
        """Load the models now, so that loading can be timed apart from the work."""
        _ = (self.visual, self.detector)  # the properties load on first access

    def models(self) -> dict:
        """File and checksum of the models this stage uses, for ``analysis.json``."""
        entry = {"name": self.cfg.detector}
        card = getattr(self.detector, "card", None)  # the detectors whose weights ship in models/
        if card is not None:
            entry.update(file=card.name, sha256=card.sha256)
        return {"visual": model_entry(self.visual.card), "detector": entry}

    def run(self, info: MediaInfo, progress: Callable[[str, float], None] | None = None) -> VideoResult:
        """Detect, track and classify faces in frames sampled at ``cfg.fps``; ``progress("faces",
        fraction)`` after each frame."""
        cfg = self.cfg
        color = getattr(self.detector, "needs_color", False)
        tracker = IoUTracker(max_gap=max(2.0, 2.5 / cfg.fps))
        times: list[float] = []
        found_faces: list[tuple[float, int, Face]] = []
        crops: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        thumbnails: dict[int, list] = {}
        scale = None
        show = not cfg.quiet and sys.stderr.isatty()
        bar = tqdm(total=int(info.duration * cfg.fps) + 1, unit="frame", desc=info.path.name[:30],
                   disable=not show, leave=False)
        # Faces are classified in batches: one call per face would cost more than the network.
        expected = int(info.duration * cfg.fps) + 1
        for done, (t, frame, found) in enumerate(
                self._detected(iter_frames(info, cfg.fps, cfg.detect_width, color=color), color), 1):
            bar.update(1)
            if progress is not None:
                progress("faces", min(1.0, done / expected))
            if scale is None:
                scale = info.width / frame.shape[1] if info.width else 1.0
            times.append(t)
            found = largest(found, cfg.max_faces)
            if not found:
                continue
            gray = to_gray(frame)
            crops.extend(crop_faces(gray, found, self.visual.input_size))
            for face, track in zip(found, tracker.update(t, found)):
                found_faces.append((t, track, face.scaled(scale)))
                _keep_thumbnail(thumbnails.setdefault(track, []), face.score * face.area, t, gray, face)
            if len(crops) >= cfg.batch_size:
                probs.extend(self.visual.predict_proba(np.stack(crops), cfg.batch_size))
                crops.clear()
        if crops:
            probs.extend(self.visual.predict_proba(np.stack(crops), cfg.batch_size))
        bar.close()
        faces = [FaceRecord(t, track, face, p) for (t, track, face), p in zip(found_faces, probs)]
        return VideoResult(times, faces, thumbnails)

    def faces_in_image(self, rgb: np.ndarray) -> tuple[list[Face], np.ndarray]:
        """The faces of one RGB image (largest first, at most ``cfg.max_faces``), in its
        pixel coordinates, and their crops for the visual model."""
        cfg = self.cfg
        h, w = rgb.shape[:2]
        scale = min(1.0, cfg.detect_width / w)
        view = rgb if scale >= 1 else cv2.resize(rgb, (round(w * scale), round(h * scale)),
                                                  interpolation=cv2.INTER_AREA)
        color = getattr(self.detector, "needs_color", False)
        # small=True: a photo gets the full search (tiles for small faces) a video gets once a second.
        found = largest(self.detector.detect(view if color else to_gray(view), small=True), cfg.max_faces)
        faces = [f.scaled(1 / scale) for f in found]
        return faces, crop_faces(to_gray(rgb), faces, self.visual.input_size)

    def _detected(self, frames: Iterator[tuple[float, np.ndarray]], color: bool
                  ) -> Iterator[tuple[float, np.ndarray, list[Face]]]:
        """``(time, frame, faces)`` for each frame, in order.

        Detection is most of the video stage's work and releases the GIL, so
        ``cfg.detect_workers`` threads, each with its own detector, work on
        the next frames while this thread tracks and classifies. At most
        ``2 * detect_workers`` frames wait in memory. Small faces are looked
        for ``cfg.small_face_fps`` times a second, larger ones in every frame.
        """
        workers = max(1, self.cfg.detect_workers)
        while len(self._detectors) < workers:
            self._detectors.append(make_detector(self.cfg.detector, self.cfg.min_face))
        idle: queue.SimpleQueue = queue.SimpleQueue()
        for det in self._detectors[:workers]:
            idle.put(det)

        def detect(frame: np.ndarray, small: bool) -> list[Face]:
            det = idle.get()
            try:
                return det.detect(frame if color else to_gray(frame), small=small)
            finally:
                idle.put(det)

        every = max(1, round(self.cfg.fps / self.cfg.small_face_fps))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ahead: deque = deque()
            for i, (t, frame) in enumerate(frames):
                ahead.append((t, frame, pool.submit(detect, frame, i % every == 0)))
                if len(ahead) > 2 * workers:
                    t0, f0, job = ahead.popleft()
                    yield t0, f0, job.result()
            while ahead:
                t0, f0, job = ahead.popleft()
                yield t0, f0, job.result()


class AudioStage:
    """The voice in each segment: speech presence, level and class probabilities.

    Parameters
    ----------
    cfg : the analysis options (``audio_model``, ``min_speech``, ``batch_size``)
    """

    def __init__(self, cfg: AnalyzeConfig):
        self.cfg = cfg
        self._model: AudioModel | None = None
        self._speech: SpeechDetector | None = None

    @property
    def model(self) -> AudioModel:
        """The speech-emotion model."""
        if self._model is None:
            self._model = AudioModel(self.cfg.audio_model)
        return self._model

    @property
    def speech(self) -> SpeechDetector:
        """The speech detector that decides which segments are evidence."""
        if self._speech is None:
            self._speech = SpeechDetector()
        return self._speech

    def load(self) -> None:
        """Load the models now (the first load also imports librosa: a second or more)."""
        _ = (self.model, self.speech)

    def models(self) -> dict:
        """File and checksum of the models this stage uses, for ``analysis.json``."""
        return {"audio": model_entry(self.model.card),
                "speech_detector": {"file": self.speech.card.name, "sha256": self.speech.card.sha256}}

    def run(self, info: MediaInfo, bounds: list[tuple[float, float]], stop: threading.Event | None = None,
            progress: Callable[[str, float], None] | None = None) -> list[AudioSegment]:
        """One :class:`AudioSegment` per ``(start, end)`` of ``bounds`` (seconds), scored
        through :func:`multimodal.audio.audio_evidence`. Stops early, returning what it
        has, when ``stop`` is set; ``progress("voice", fraction)`` after each batch."""
        model, cfg = self.model, self.cfg
        out: list[AudioSegment] = []
        with tempfile.TemporaryDirectory(prefix="multimodal-") as tmp:
            wav = extract_audio(info, Path(tmp) / "audio.wav", model.sample_rate)
            with AudioReader(wav) as reader:
                for first in range(0, len(bounds), cfg.batch_size):
                    if stop is not None and stop.is_set():
                        return out
                    batch = bounds[first:first + cfg.batch_size]
                    clips = [reader.read(start, end) for start, end in batch]
                    for (start, end), y, e in zip(batch, clips,
                                                  audio_evidence(clips, model, self.speech, cfg.min_speech)):
                        if not y.size:
                            out.append(AudioSegment(None, None, None))
                            continue
                        probs = None if e.probs is None else to_project_labels(e.probs[None], model.card.labels)[0]
                        out.append(AudioSegment(e.dbfs, min(1.0, e.speech / max(end - start, 1e-9)), probs))
                    if progress is not None:
                        progress("voice", len(out) / len(bounds))
        return out


def _keep_thumbnail(kept: list, quality: float, t: float, gray: np.ndarray, face: Face) -> None:
    """Keep the ``THUMBNAILS_PER_TRACK`` best faces of a track (by score x area)."""
    if len(kept) < THUMBNAILS_PER_TRACK or quality > kept[-1][0]:
        kept.append((quality, t, crop_faces(gray, [face], 96)[0]))
        kept.sort(key=lambda k: -k[0])
        del kept[THUMBNAILS_PER_TRACK:]


def model_entry(card) -> dict:
    """A model's file, checksum, labels and measured metrics, for ``analysis.json``."""
    return {"file": card.name, "sha256": card.sha256, "labels": list(card.labels),
            "metrics": card.data.get("metrics", {})}
