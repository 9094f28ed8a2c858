"""Configuration shared by the library, the CLI and the training code.

Everything tunable lives here, as frozen dataclasses with explicit defaults,
so a run can be described completely by the values it was given.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

#: The project's one label order (FER2013's original order).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: One colour per emotion, kept across every picture (plots, report, annotated video).
EMOTION_COLORS: dict[str, str] = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#f5b800",
                                  "sad": "#1f77b4", "surprise": "#17becf", "neutral": "#9a9a9a"}


def rgb(hex_color: str) -> tuple[int, int, int]:
    """``"#d62728"`` as ``(214, 39, 40)``."""
    return int(hex_color[1:3], 16), int(hex_color[3:5], 16), int(hex_color[5:7], 16)


#: Where shipped models live (inside the source tree, next to the package).
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_VISUAL_MODEL = MODELS_DIR / "visual_default.tflite"
DEFAULT_AUDIO_MODEL = MODELS_DIR / "audio_default.tflite"
DEFAULT_FACE_DETECTOR = MODELS_DIR / "face_detector.tflite"
DEFAULT_SPEECH_DETECTOR = MODELS_DIR / "speech_detector.onnx"

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS | IMAGE_EXTENSIONS

#: JSON Schema of analysis.json, shipped in the package.
SCHEMA_FILE = Path(__file__).resolve().parent / "schema" / "analysis.schema.json"

#: JSON output schema version; bump on any incompatible change.
SCHEMA_VERSION = "1.1"  # 1.1: "options" records every option of the analysis


@dataclass(frozen=True)
class AudioFeatureConfig:
    """MFCC front end shared by audio training and inference.

    Training and ``analyze`` must compute identical features, so both read
    them from the model card, which stores these values.
    """

    sample_rate: int = 16000  # Hz
    n_mfcc: int = 40
    n_fft: int = 512  # samples (32 ms)
    hop_length: int = 160  # samples (10 ms)
    n_mels: int = 64
    deltas: bool = True
    window_seconds: float = 3.0  # fixed training window; inference pools over time
    # Each clip is scaled so that its loud frames sit at this level before the
    # features are computed, so the recording level cannot change the answer
    # (see multimodal.audio.normalize_level). None: features of the raw level,
    # as models trained before this option were.
    level_dbfs: float | None = -20.0
    # Three more channels after the MFCCs: the voice's pitch in octaves re
    # 200 Hz, the same re the clip's median pitch, and the latter's delta
    # (see multimodal.audio.pitch_contour). Models trained before this option
    # have none.
    pitch: bool = False
    # The n_mels log-mel energies (dB) the MFCCs are computed from, as
    # channels after the MFCC blocks: the spectral detail the 40 kept
    # cepstral coefficients smooth away. Models trained before this option
    # have none.
    log_mel: bool = False


@dataclass(frozen=True)
class AnalyzeConfig:
    """Options of ``multimodal analyze``."""

    fps: float = 2.0  # frames sampled per second of video
    segment: float = 3.0  # segment length, seconds
    fusion: str = "product"  # best on the fusion comparison; see README
    visual_model: Path = DEFAULT_VISUAL_MODEL
    audio_model: Path = DEFAULT_AUDIO_MODEL
    detector: str = "blazeface"  # see faces.py and benchmarks/bench_detectors.py
    max_faces: int = 20  # per frame, largest first
    min_face: int = 32  # pixels, on the decoded frame
    detect_width: int = 640  # frames are decoded at most this wide for detection
    # A segment is audio evidence when the speech detector hears at least this
    # much speech in it (silero-vad's own minimum speech duration), whatever its level.
    min_speech: float = 0.25  # seconds
    batch_size: int = 64
    detect_workers: int = 2  # threads detecting faces ahead of tracking and classification
    # Small faces (under about a sixth of the frame's height) are looked for this
    # often; larger ones in every sampled frame. Searching for small faces is
    # two thirds of detection; tracks bridge the frames between.
    small_face_fps: float = 1.0
    quiet: bool = False
    force: bool = False


def config_dict(cfg) -> dict:
    """A configuration dataclass as JSON-ready values (paths as strings), for the record."""
    return {f.name: str(v) if isinstance(v := getattr(cfg, f.name), Path) else v for f in fields(cfg)}


@dataclass(frozen=True)
class LiveConfig:
    """Options of ``multimodal live``; the analysis options are ``analysis``."""

    source: str  # webcam index ("0"), device path, stream URL, or file
    analysis: AnalyzeConfig = AnalyzeConfig()
    hop: float = 1.0  # seconds of stream between emitted segments
    realtime: bool = False  # play a file at its own pace (as a camera would deliver it)
    out: Path | None = None  # also append the rows to OUT/segments.jsonl
    show: bool = False  # a window with boxes and labels
    verbose: bool = False  # delays and dropped frames on stderr
    retries: int = 3  # reconnections to a stream that drops
