"""``analyze``: one media file in, fused emotions per time segment out."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from multimodal.aggregate import build_segments, segment_bounds
from multimodal.config import EMOTIONS, IMAGE_EXTENSIONS, MODELS_DIR, AnalyzeConfig
from multimodal.decode import MediaInfo, probe, read_image
from multimodal.errors import InputError, ModelError
from multimodal.faces import crop_faces, to_gray
from multimodal.fusion import FusionStrategy, make_strategy
from multimodal.results import Analysis, AudioSegment, FaceRecord, Segment
from multimodal.stages import AudioStage, VideoResult, VideoStage

MIN_DURATION = 0.5  # seconds; anything shorter holds no usable evidence


def load_fusion_state(name: str, path: Path = MODELS_DIR / "fusion.json") -> dict | None:
    """Fitted parameters of a fusion strategy, as ``compare-fusion --save`` stored them."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("strategies", {}).get(name)
    except ValueError:
        raise ModelError(f"{path}: unreadable fusion parameters") from None


def load_fusion(name: str) -> FusionStrategy:
    """The fusion strategy ``name`` with its shipped fitted parameters."""
    state = load_fusion_state(name)
    strategy = make_strategy(name, state)
    if strategy.requires_fit and not state:
        raise ModelError(f"--fusion {name} needs fitted parameters in {MODELS_DIR / 'fusion.json'} "
                         "(written by 'multimodal compare-fusion --save')")
    return strategy


def fuse(segments: list[Segment], strategy: FusionStrategy) -> list[Segment]:
    """The segments with their fused distribution (None where neither modality has evidence)."""
    missing = np.full(len(EMOTIONS), np.nan)
    pv = np.array([s.visual if s.visual is not None else missing for s in segments])
    pa = np.array([s.audio if s.audio is not None else missing for s in segments])
    fused = strategy.predict_proba(pv, pa)
    return [replace(s, fused=None if np.isnan(p).any() else p) for s, p in zip(segments, fused)]


class Analyzer:
    """Analyses files one after another with models loaded once.

    Parameters
    ----------
    cfg : every option of the analysis; recorded as is in each result

    Examples
    --------
    >>> analysis = Analyzer(AnalyzeConfig(fps=4)).analyze("talk.mp4")  # doctest: +SKIP
    >>> [s.label for s in analysis.segments]  # doctest: +SKIP
    """

    def __init__(self, cfg: AnalyzeConfig):
        self.cfg = cfg
        self.fusion = load_fusion(cfg.fusion)
        self.video = VideoStage(cfg)
        self.audio = AudioStage(cfg)

    def analyze(self, source: str | Path | np.ndarray,
                progress: Callable[[str, float], None] | None = None) -> Analysis:
        """Analyse one media file, or the faces of one photo (a file or an RGB array).

        ``progress(stage, fraction)`` is called as the work advances: stage
        "faces" (video) or "voice" (audio only), fraction from 0 to 1. It may
        be called from another thread.

        Raises
        ------
        InputError : the file cannot be read, is too short, or holds no usable evidence
        ModelError : a model cannot be loaded
        """
        if isinstance(source, np.ndarray) or Path(source).suffix.lower() in IMAGE_EXTENSIONS:
            return self.analyze_image(source)
        path = source
        started = time.perf_counter()
        cfg = self.cfg
        info = probe(path)
        if info.duration < MIN_DURATION:
            raise InputError(f"{info.path}: too short to analyse ({info.duration:.2f} s < {MIN_DURATION} s)")
        warnings = []
        if info.duration < cfg.segment:
            warnings.append(f"{info.path.name}: clip ({info.duration:.1f} s) is shorter than one segment "
                            f"({cfg.segment:g} s); it is analysed as one shorter segment")
        bounds = segment_bounds(info.duration, cfg.segment)
        timings: dict[str, float] = {}
        models: dict = {}
        t0 = time.perf_counter()
        if info.has_video:
            self.video.load()
        timings["model_loading"] = time.perf_counter() - t0
        # The audio stage (mostly ffmpeg and librosa) runs beside the video
        # stage (ffmpeg and TFLite); on two cores this nearly halves the wall
        # time of short clips.
        stop = threading.Event()  # set when the video stage fails or is interrupted
        video = VideoResult([], [])
        audio: list[AudioSegment] | None = None
        with ThreadPoolExecutor(max_workers=1) as pool:
            # With video, the faces set the pace; an audio file reports its voice.
            voice = None if info.has_video else progress
            audio_job = pool.submit(self._timed_audio, info, bounds, stop, voice) if info.has_audio else None
            if info.has_video:
                t0 = time.perf_counter()
                try:
                    video = self.video.run(info, progress)
                except BaseException:
                    stop.set()
                    raise
                timings["video"] = time.perf_counter() - t0
                models.update(self.video.models())
                if not video.faces:
                    warnings.append(f"{info.path.name}: no faces found in the video")
            if audio_job is not None:
                audio, audio_timings = audio_job.result()
                timings.update(audio_timings)
                models.update(self.audio.models())
                if not any(a.probs is not None for a in audio):
                    warnings.append(f"{info.path.name}: no speech heard in the audio track; "
                                    "the voice contributes nothing" + (" and the faces decide alone"
                                                                      if info.has_video else ""))
        segments = build_segments(bounds, cfg.segment, video.frame_times, video.faces, audio)
        if not any(s.visual is not None or s.audio is not None for s in segments):
            raise InputError(f"{info.path}: no usable evidence ("
                             + ("no faces found" if info.has_video else "no video") + " and "
                             + ("no speech in the audio" if info.has_audio else "no audio track") + ")")
        segments = fuse(segments, self.fusion)
        models["fusion"] = {"strategy": self.fusion.name, "parameters": self.fusion.get_state()}
        return Analysis(info, cfg, segments, video.faces, models, warnings, time.perf_counter() - started,
                        timings, video.thumbnails)

    def analyze_image(self, image: str | Path | np.ndarray) -> Analysis:
        """Every face in a photo: one zero-length segment at time 0, one person per face.

        ``image`` is a file OpenCV reads or an RGB ``uint8`` array (h, w, 3)
        (or gray, (h, w)). Faces are looked for as in a video frame, at most
        ``cfg.detect_width`` pixels wide.
        """
        started = time.perf_counter()
        cfg = self.cfg
        rgb, info = read_image(image)
        self.video.load()
        faces, crops = self.video.faces_in_image(rgb)
        if not faces:
            raise InputError(f"{info.path}: no faces found in the image")
        probs = self.video.visual.predict_proba(crops, cfg.batch_size)
        records = [FaceRecord(0.0, i + 1, face, p) for i, (face, p) in enumerate(zip(faces, probs))]
        segments = fuse(build_segments([(0.0, 0.0)], cfg.segment, [0.0], records, None), self.fusion)
        thumbnails = {r.track_id: [(1.0, 0.0, crop_faces(to_gray(rgb), [r.face], 96)[0])] for r in records}
        models = {**self.video.models(),
                  "fusion": {"strategy": self.fusion.name, "parameters": self.fusion.get_state()}}
        return Analysis(info, cfg, segments, records, models, [], time.perf_counter() - started, {}, thumbnails)

    def _timed_audio(self, info: MediaInfo, bounds: list[tuple[float, float]], stop: threading.Event,
                     progress: Callable[[str, float], None] | None = None
                     ) -> tuple[list[AudioSegment], dict[str, float]]:
        t0 = time.perf_counter()
        self.audio.load()
        t1 = time.perf_counter()
        result = self.audio.run(info, bounds, stop, progress)
        return result, {"audio_model_loading": t1 - t0, "audio": time.perf_counter() - t1}
