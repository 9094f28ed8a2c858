"""``analyze``: one media file in, fused emotions per time segment out."""
from __future__ import annotations

import json
import queue
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multimodal import __version__
from multimodal.aggregate import group_distribution, segment_bounds
from multimodal.audio import AudioModel, audio_evidence, to_project_labels
from multimodal.config import EMOTIONS, MODELS_DIR, AnalyzeConfig
from multimodal.decode import AudioReader, MediaInfo, extract_audio, iter_frames, probe
from multimodal.errors import InputError, ModelError
from multimodal.faces import Face, crop_faces, largest, make_detector, to_gray
from multimodal.fusion import make_strategy
from multimodal.speech import SpeechDetector
from multimodal.tracking import IoUTracker
from multimodal.visual import VisualModel

MIN_DURATION = 0.5  # seconds; anything shorter holds no usable evidence


@dataclass
class FaceRecord:
    time: float  # seconds
    track_id: int
    face: Face  # in the pixel coordinates of the original video
    probs: np.ndarray  # (7,)


@dataclass
class Segment:
    index: int
    start: float
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
        present = [m for m, p in (("visual", self.visual), ("audio", self.audio)) if p is not None]
        return "+".join(present) if present else "none"

    @property
    def label(self) -> str | None:
        return None if self.fused is None else EMOTIONS[int(np.argmax(self.fused))]

    @property
    def confidence(self) -> float | None:
        return None if self.fused is None else float(np.max(self.fused))


@dataclass
class Analysis:
    info: MediaInfo
    segments: list[Segment]
    faces: list[FaceRecord]
    options: dict
    models: dict
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the analysis
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    #: per track, up to THUMBNAILS_PER_TRACK (score, time, 96x96 uint8 face) of its clearest detections
    thumbnails: dict[int, list[tuple[float, float, np.ndarray]]] = field(default_factory=dict)


THUMBNAILS_PER_TRACK = 3


def load_fusion_state(name: str, path: Path = MODELS_DIR / "fusion.json") -> dict | None:
    """Fitted parameters of a fusion strategy, as ``compare-fusion --save`` stored them."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("strategies", {}).get(name)
    except ValueError:
        raise ModelError(f"{path}: unreadable fusion parameters") from None


class Analyzer:
    """Holds the loaded models and analyses files one after another."""

    def __init__(self, cfg: AnalyzeConfig):
        self.cfg = cfg
        state = load_fusion_state(cfg.fusion)
        self.fusion = make_strategy(cfg.fusion, state)
        if self.fusion.requires_fit and not state:
            raise ModelError(f"--fusion {cfg.fusion} needs fitted parameters in {MODELS_DIR / 'fusion.json'} "
                             "(written by 'multimodal compare-fusion --save')")
        self._visual: VisualModel | None = None
        self._audio: AudioModel | None = None
        self._speech: SpeechDetector | None = None
        self._detectors: list = []  # one per detection thread, the first also describes the detector

    # Models load on first use: an audio-only batch never loads the visual model.
    @property
    def visual(self) -> VisualModel:
        if self._visual is None:
            self._visual = VisualModel(self.cfg.visual_model)
        return self._visual

    @property
    def audio(self) -> AudioModel:
        if self._audio is None:
            self._audio = AudioModel(self.cfg.audio_model)
        return self._audio

    @property
    def speech(self) -> SpeechDetector:
        if self._speech is None:
            self._speech = SpeechDetector()
        return self._speech

    @property
    def detector(self):
        if not self._detectors:
            self._detectors.append(make_detector(self.cfg.detector, self.cfg.min_face))
        return self._detectors[0]

    def analyze(self, path: str | Path) -> Analysis:
        started = time.perf_counter()
        cfg = self.cfg
        info = probe(path)
        if info.duration < MIN_DURATION:
            raise InputError(f"{info.path}: too short to analyse ({info.duration:.2f} s < {MIN_DURATION} s)")
        warnings = []
        if info.duration < cfg.segment:
            warnings.append(f"{info.path.name}: clip ({info.duration:.1f} s) is shorter than one segment "
                            f"({cfg.segment:g} s); it is analysed as one shorter segment")
        segments = [Segment(i, a, b) for i, (a, b) in enumerate(segment_bounds(info.duration, cfg.segment))]
        models = {}
        timings = {}
        t0 = time.perf_counter()
        for name in ("visual", "detector") if info.has_video else ():
            getattr(self, name)  # loads now, so that loading is timed apart from the stage
        timings["model_loading"] = time.perf_counter() - t0
        # The audio stage (mostly ffmpeg and librosa) runs beside the video
        # stage (ffmpeg and TFLite); on two cores this nearly halves the wall
        # time of short clips. They write to different fields of the segments.
        stop = threading.Event()  # set when the video stage fails or is interrupted
        with ThreadPoolExecutor(max_workers=1) as pool:
            audio_job = pool.submit(self._audio_stage, info, segments, timings, stop) if info.has_audio else None
            faces: list[FaceRecord] = []
            thumbnails: dict = {}
            if info.has_video:
                t0 = time.perf_counter()
                try:
                    faces = self._visual_pass(info, segments, thumbnails)
                except BaseException:
                    stop.set()
                    raise
                timings["video"] = time.perf_counter() - t0
                models["visual"] = _model_entry(self.visual.card)
                models["detector"] = {"name": self.cfg.detector}
                card = getattr(self.detector, "card", None)  # the detectors whose weights ship in models/
                if card is not None:
                    models["detector"].update(file=card.name, sha256=card.sha256)
                if not faces:
                    warnings.append(f"{info.path.name}: no faces found in the video")
            if audio_job is not None:
                audio_job.result()
                models["audio"] = _model_entry(self.audio.card)
                models["speech_detector"] = {"file": self.speech.card.name, "sha256": self.speech.card.sha256}
                if not any(s.audio is not None for s in segments):
                    warnings.append(f"{info.path.name}: no speech heard in the audio track; "
                                    "the voice contributes nothing" + (" and the faces decide alone"
                                                                      if info.has_video else ""))
        if not any(s.visual is not None or s.audio is not None for s in segments):
            raise InputError(f"{info.path}: no usable evidence ("
                             + ("no faces found" if info.has_video else "no video") + " and "
                             + ("no speech in the audio" if info.has_audio else "no audio track") + ")")
        pv = np.array([s.visual if s.visual is not None else np.full(7, np.nan) for s in segments])
        pa = np.array([s.audio if s.audio is not None else np.full(7, np.nan) for s in segments])
        fused = self.fusion.predict_proba(pv, pa)
        for s, p in zip(segments, fused):
            s.fused = None if np.isnan(p).any() else p
        models["fusion"] = {"strategy": self.fusion.name, "parameters": self.fusion.get_state()}
        options = {"fps": cfg.fps, "segment": cfg.segment, "fusion": cfg.fusion, "detector": cfg.detector,
                   "max_faces": cfg.max_faces, "min_face": cfg.min_face, "detect_width": cfg.detect_width,
                   "small_face_fps": cfg.small_face_fps, "min_speech": cfg.min_speech}
        return Analysis(info, segments, faces, options, models, warnings, time.perf_counter() - started,
                        timings, thumbnails)

    def _audio_stage(self, info: MediaInfo, segments: list[Segment], timings: dict, stop: threading.Event) -> None:
        """Load the audio model if needed and score the segments; times both."""
        t0 = time.perf_counter()
        # The first load also imports librosa, which takes a second or more.
        model, _ = self.audio, self.speech
        timings["audio_model_loading"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._audio_pass(info, segments, model, stop)
        timings["audio"] = time.perf_counter() - t0

    def _audio_pass(self, info: MediaInfo, segments: list[Segment], model: AudioModel, stop: threading.Event) -> None:
        """Score each segment's audio through :func:`multimodal.audio.audio_evidence`:
        segments without speech carry no audio evidence. Returns early on ``stop``."""
        speech = self.speech
        with tempfile.TemporaryDirectory(prefix="multimodal-") as tmp:
            wav = extract_audio(info, Path(tmp) / "audio.wav", model.sample_rate)
            with AudioReader(wav) as reader:
                for first in range(0, len(segments), self.cfg.batch_size):
                    if stop.is_set():
                        return
                    batch = segments[first:first + self.cfg.batch_size]
                    clips = [reader.read(s.start, s.end) for s in batch]
                    for s, y, e in zip(batch, clips, audio_evidence(clips, model, speech, self.cfg.min_speech)):
                        if not y.size:
                            continue
                        s.audio_dbfs = e.dbfs
                        s.speech = min(1.0, e.speech / max(s.end - s.start, 1e-9))
                        if e.probs is not None:
                            s.audio = to_project_labels(e.probs[None], model.card.labels)[0]

    def _detected(self, frames: Iterator[tuple[float, np.ndarray]], color: bool
                  ) -> Iterator[tuple[float, np.ndarray, list[Face]]]:
        """``(time, frame, faces)`` for each frame, in order.

        Detection is most of the video stage's work and releases the GIL, so
        ``cfg.detect_workers`` threads, each with its own detector (neither
        OpenCV's cascades nor TFLite interpreters may be shared between
        threads), work on the next frames while this thread tracks and
        classifies. At most ``2 * detect_workers`` frames wait in memory.
        Small faces are looked for ``cfg.small_face_fps`` times a second,
        larger ones in every frame.
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

    def _visual_pass(self, info: MediaInfo, segments: list[Segment], thumbnails: dict) -> list[FaceRecord]:
        """Detect, track and classify faces in frames sampled at ``cfg.fps``.

        Fills ``thumbnails`` with each track's clearest faces, for reports.
        """
        from tqdm import tqdm
        cfg = self.cfg
        color = getattr(self.detector, "needs_color", False)
        tracker = IoUTracker(max_gap=max(2.0, 2.5 / cfg.fps))
        records: list[FaceRecord] = []
        pending: list[tuple[FaceRecord, np.ndarray]] = []
        scale = None
        total = int(info.duration * cfg.fps) + 1
        show = not cfg.quiet and sys.stderr.isatty()
        bar = tqdm(total=total, unit="frame", desc=info.path.name[:30], disable=not show, leave=False)

        def flush():
            if pending:
                probs = self.visual.predict_proba(np.stack([c for _, c in pending]), cfg.batch_size)
                for (rec, _), p in zip(pending, probs):
                    rec.probs = p
                pending.clear()

        seg_len = cfg.segment
        for t, frame, found in self._detected(iter_frames(info, cfg.fps, cfg.detect_width, color=color), color):
            bar.update(1)
            if scale is None:
                scale = info.width / frame.shape[1] if info.width else 1.0
            seg = segments[min(len(segments) - 1, int(t / seg_len))]
            seg.frames += 1
            found = largest(found, cfg.max_faces)
            if not found:
                continue
            gray = to_gray(frame)
            crops = crop_faces(gray, found, self.visual.input_size)
            for face, track, crop in zip(found, tracker.update(t, found), crops):
                rec = FaceRecord(t, track, face.scaled(scale), np.zeros(7))
                records.append(rec)
                pending.append((rec, crop))
                _keep_thumbnail(thumbnails.setdefault(track, []), face.score * face.area, t, gray, face)
            if len(pending) >= cfg.batch_size:
                flush()
        flush()
        bar.close()
        by_segment: dict[int, list[FaceRecord]] = {}
        for rec in records:
            by_segment.setdefault(min(len(segments) - 1, int(rec.time / seg_len)), []).append(rec)
        for i, recs in by_segment.items():
            s = segments[i]
            s.faces, s.tracks = len(recs), len({r.track_id for r in recs})
            s.visual = group_distribution(np.array([r.probs for r in recs]), np.array([r.face.area for r in recs]),
                                          np.array([r.face.score for r in recs]))
        return records


def _keep_thumbnail(kept: list, quality: float, t: float, gray: np.ndarray, face: Face) -> None:
    """Keep the ``THUMBNAILS_PER_TRACK`` best faces of a track (by score x area)."""
    if len(kept) < THUMBNAILS_PER_TRACK or quality > kept[-1][0]:
        kept.append((quality, t, crop_faces(gray, [face], 96)[0]))
        kept.sort(key=lambda k: -k[0])
        del kept[THUMBNAILS_PER_TRACK:]


def _model_entry(card) -> dict:
    return {"file": card.name, "sha256": card.sha256, "labels": list(card.labels),
            "metrics": card.data.get("metrics", {})}


def tool_version() -> str:
    return __version__
