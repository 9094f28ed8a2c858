"""Speech-emotion features, the audio model, and the audio evidence of a clip.

Features are MFCCs (with first and second deltas; optionally followed by the
log-mel energies they come from and by the pitch contour) on 10 ms frames at
16 kHz of the level-normalised clip, computed identically for training,
evaluation and ``analyze``: the parameters live in
:class:`multimodal.config.AudioFeatureConfig` and are stored in the model card.

:func:`audio_evidence` is the one gate between a clip and the audio model:
a clip is scored only when the speech detector hears speech in it.
``analyze``, ``evaluate audio`` and the benchmarks all go through it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from multimodal.aggregate import segment_bounds
from multimodal.config import EMOTIONS, AudioFeatureConfig
from multimodal.models import ModelCard, load_model, read_card
from multimodal.speech import SpeechDetector

#: How the audio model's labels map onto the project's 7 classes.
#: RAVDESS "calm" has no FER2013 counterpart; it is closest to neutral.
AUDIO_LABEL_MAP = {"calm": "neutral", "fearful": "fear", "surprised": "surprise"}


def project_label(label: str) -> str:
    """A speech corpus's label as one of :data:`EMOTIONS` (``"calm"`` becomes ``"neutral"``)."""
    return AUDIO_LABEL_MAP.get(label, label)


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate`` Hz.

    Any sample rate, mono or stereo, WAV/FLAC/OGG (libsndfile) or anything
    librosa's fallback decoder reads.
    """
    import librosa
    import soundfile as sf
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
        y = y.mean(axis=1)
    except (sf.LibsndfileError, RuntimeError):
        y, sr = librosa.load(str(path), sr=None, mono=True)
    if sr != sample_rate:
        y = librosa.resample(y, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


#: Lowest level reported, in dBFS: about the noise floor of 16-bit audio, so
#: digital silence reads -100 rather than a meaningless -240.
LEVEL_FLOOR_DBFS = -100.0


def rms_dbfs(y: np.ndarray) -> float:
    """Root-mean-square level of a signal in dB relative to full scale, at least
    :data:`LEVEL_FLOOR_DBFS`; NaN for an empty signal."""
    if y.size == 0:
        return float("nan")
    rms = np.sqrt(np.mean(np.square(y, dtype=np.float64)))
    return float(max(LEVEL_FLOOR_DBFS, 20 * np.log10(rms + 1e-12)))


def normalize_level(y: np.ndarray, target_dbfs: float = -20.0, frame: int = 512) -> np.ndarray:
    """Scale a signal so that its loud frames sit at ``target_dbfs``.

    The reference is the 95th percentile of the RMS of ``frame``-sample
    frames: the voiced part of speech, whatever the pauses around it, and not
    thrown off by one click. Scaling the input by any gain gives the same
    output, so features computed after this do not depend on the recording
    level. Digital silence is returned unchanged.

    Parameters
    ----------
    y : float array, shape (n_samples,)
    target_dbfs : float, dB relative to full scale
    frame : int, samples per frame

    Returns
    -------
    float32 array, shape (n_samples,)
    """
    y = np.asarray(y, dtype=np.float32)
    n = y.size // frame
    frames = y[:n * frame].reshape(n, frame) if n else y[None]
    ref = float(np.percentile(np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)), 95))
    if ref < 1e-7:  # below -140 dBFS: nothing but rounding noise to amplify
        return y
    return y * np.float32(10 ** (target_dbfs / 20) / ref)


def pitch_contour(y: np.ndarray, cfg: AudioFeatureConfig = AudioFeatureConfig(), fmin: float = 70.0,
                  fmax: float = 500.0, voiced_db: float = 30.0) -> np.ndarray:
    """The voice's pitch per feature frame, as three channels.

    Pitch comes from YIN (``librosa.yin``, 50 ms frames). Frames more than
    ``voiced_db`` below the clip's loudest frame are taken as pauses and
    get the clip's median pitch, since YIN names a pitch even in silence.

    Parameters
    ----------
    y : float array, shape (n_samples,), at ``cfg.sample_rate``
    fmin, fmax : float, Hz, the pitch range searched
    voiced_db : float, dB below the loudest frame still counted as voice

    Returns
    -------
    float32 array, shape (n_frames, 3): pitch in octaves re 200 Hz (the
    speaker's register), pitch in octaves re the clip's median (the
    melody), and the delta of the latter; frames as :func:`mfcc_features`.
    """
    import librosa
    frame = int(0.05 * cfg.sample_rate)
    f0 = librosa.yin(y, fmin=fmin, fmax=fmax, sr=cfg.sample_rate, frame_length=frame, hop_length=cfg.hop_length)
    rms = librosa.feature.rms(y=y, frame_length=frame, hop_length=cfg.hop_length)[0]
    octaves = np.log2(f0 / 200.0)
    voiced = rms > max(float(rms.max()), 1e-7) * 10 ** (-voiced_db / 20)
    median = float(np.median(octaves[voiced])) if voiced.any() else 0.0
    octaves = np.where(voiced, octaves, median)
    melody = octaves - median
    width = min(9, melody.size if melody.size % 2 else melody.size - 1)
    slope = librosa.feature.delta(melody, width=width) if width >= 3 else np.zeros_like(melody)
    return np.stack([octaves, melody, slope], axis=1).astype(np.float32)


def mfcc_features(y: np.ndarray, cfg: AudioFeatureConfig = AudioFeatureConfig()) -> np.ndarray:
    """MFCC (+ deltas, + log-mel, + pitch contour) matrix of a mono signal,
    level-normalised first (:func:`normalize_level`) when ``cfg.level_dbfs`` is set.

    Parameters
    ----------
    y : float array, shape (n_samples,), at ``cfg.sample_rate``
    Returns
    -------
    float32 array, shape (n_frames, n_mfcc * 3) with deltas, else (n_frames, n_mfcc);
    then ``n_mels`` columns of log-mel energy (dB) with ``cfg.log_mel``, and three
    columns with ``cfg.pitch`` (:func:`pitch_contour`); one frame per
    ``cfg.hop_length`` samples.
    """
    import librosa
    if cfg.level_dbfs is not None:
        y = normalize_level(y, cfg.level_dbfs)
    if y.size < cfg.n_fft:
        y = np.pad(y, (0, cfg.n_fft - y.size))
    # What librosa.feature.mfcc(y=...) computes first, kept for the log-mel channels.
    log_mel = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels))
    m = librosa.feature.mfcc(S=log_mel, n_mfcc=cfg.n_mfcc)
    if cfg.deltas:
        width = min(9, m.shape[1] if m.shape[1] % 2 else m.shape[1] - 1)
        if width >= 3:
            m = np.concatenate([m, librosa.feature.delta(m, width=width),
                                librosa.feature.delta(m, order=2, width=width)])
        else:
            m = np.concatenate([m, np.zeros_like(m), np.zeros_like(m)])
    if cfg.log_mel:
        m = np.concatenate([m, log_mel])
    m = m.T.astype(np.float32)
    if cfg.pitch:
        p = pitch_contour(y, cfg)[:len(m)]
        m = np.concatenate([m, np.pad(p, ((0, len(m) - len(p)), (0, 0)), mode="edge")], axis=1)
    return m


def center_crop_or_pad(y: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop or zero-pad (both ends) a signal to exactly ``n`` samples.

    Unlike ``librosa.util.fix_length``, which keeps the start, this keeps the
    middle, where a RAVDESS utterance sits between silences.
    """
    if y.size >= n:
        start = (y.size - n) // 2
        return y[start:start + n]
    pad = n - y.size
    return np.pad(y, (pad // 2, pad - pad // 2))


def to_project_labels(probs: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """Sum an audio model's class probabilities into the project's 7 classes.

    ``probs`` has shape (n, len(labels)); the result has shape (n, 7).
    """
    out = np.zeros((probs.shape[0], len(EMOTIONS)), dtype=np.float64)
    for j, name in enumerate(labels):
        out[:, EMOTIONS.index(project_label(name))] += probs[:, j]
    return out


def features_from_card(card: ModelCard) -> AudioFeatureConfig:
    """The feature parameters a model was trained with, as its card records them.

    Cards written before level normalisation existed have no ``level_dbfs``:
    their models were trained on raw levels, so none is applied.
    """
    stored = card.data.get("features", {})
    known = asdict(AudioFeatureConfig())
    return AudioFeatureConfig(**{"level_dbfs": None, **{k: v for k, v in stored.items() if k in known}})


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax probabilities as if the logits had been divided by ``temperature``.

    ``softmax(z / T)`` is ``p ** (1 / T)`` renormalised, so no logits are needed.
    Shape (n, classes) in and out; ``temperature`` 1 returns ``probs`` unchanged.
    """
    if temperature == 1.0:
        return probs
    scaled = np.power(np.clip(probs, 1e-12, 1.0), 1.0 / temperature)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of labels ``y`` (n,)
    under ``probs`` (n, classes), searched on a log grid from 0.25 to 8."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 241))
    nll = [-np.mean(np.log(np.clip(apply_temperature(probs, t)[np.arange(len(y)), y], 1e-12, 1.0))) for t in grid]
    return float(grid[int(np.argmin(nll))])


class AudioModel:
    """The speech-emotion classifier behind a verified model card.

    Parameters
    ----------
    model_path : path
        A ``.tflite`` or ``.keras`` file with its card.
    """

    def __init__(self, model_path: str | Path):
        self.card: ModelCard = read_card(model_path, "audio")
        self.features = features_from_card(self.card)
        self.model = load_model(self.card)
        # Fitted on speakers the model never heard, so that its confidence matches
        # its accuracy on new voices and fusion weighs it fairly (1: as trained).
        self.temperature = float(self.card.data.get("calibration", {}).get("temperature", 1.0))
        # librosa's first call imports and compiles a good deal: pay it at load time, not mid-analysis.
        self.predict_proba([np.zeros(self.sample_rate, np.float32)])

    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz the model's features are computed at."""
        return self.features.sample_rate

    def predict_model_proba(self, clips: list[np.ndarray]) -> np.ndarray:
        """Probabilities over the model's own labels (``card.labels``) for each clip.

        Clips are mono float arrays at :attr:`sample_rate`, at any level; each
        is scored on its own because the network pools over time and lengths
        differ. Returns an array of shape (len(clips), len(card.labels)).
        """
        if not clips:
            return np.zeros((0, len(self.card.labels)))
        feats = [mfcc_features(c, self.features) for c in clips]
        lengths = {f.shape[0] for f in feats}
        if len(lengths) == 1:  # the usual case in analyze: one batch
            raw = self.model.predict_on_batch(np.stack(feats))
        else:
            raw = np.concatenate([self.model.predict_on_batch(f[None]) for f in feats])
        return apply_temperature(np.asarray(raw, dtype=np.float64), self.temperature)

    def predict_proba(self, clips: list[np.ndarray]) -> np.ndarray:
        """Class probabilities over :data:`EMOTIONS` for each clip, shape (len(clips), 7)."""
        return to_project_labels(self.predict_model_proba(clips), self.card.labels)


@dataclass(frozen=True)
class AudioEvidence:
    """What one clip of audio says.

    ``probs`` is None when the clip holds less than the minimum of speech:
    then the audio is *no evidence*, which is not the same as "neutral".
    """

    speech: float  # seconds of speech heard in the clip
    dbfs: float  # RMS level, at least LEVEL_FLOOR_DBFS; NaN for an empty clip
    probs: np.ndarray | None  # (len(model.card.labels),): the model's own labels


def audio_evidence(clips: list[np.ndarray], model: AudioModel, speech: SpeechDetector,
                   min_speech: float) -> list[AudioEvidence]:
    """Score the clips that hold speech; the others are no evidence.

    Parameters
    ----------
    clips : list of float arrays, mono at ``model.sample_rate`` (16 kHz)
    model : the speech-emotion model
    speech : the speech detector
    min_speech : float, seconds of speech a clip needs to be scored

    Returns
    -------
    One :class:`AudioEvidence` per clip, in order.
    """
    heard = [speech.speech_seconds(y) if y.size else 0.0 for y in clips]
    scored = [i for i, (y, s) in enumerate(zip(clips, heard)) if s >= min_speech]
    probs = dict(zip(scored, model.predict_model_proba([clips[i] for i in scored])))
    return [AudioEvidence(s, rms_dbfs(y), probs.get(i)) for i, (y, s) in enumerate(zip(clips, heard))]


def recording_distribution(y: np.ndarray, model: AudioModel, speech: SpeechDetector, segment: float,
                           min_speech: float) -> np.ndarray | None:
    """One distribution for a whole recording, as ``analyze`` would summarise it.

    The recording is cut into ``segment``-second segments exactly as
    ``analyze`` cuts a file; the segments with speech are scored and their
    distributions averaged, weighted by duration.

    Parameters
    ----------
    y : float array, shape (n_samples,), mono at ``model.sample_rate``
    segment : float, seconds

    Returns
    -------
    float array, shape (len(model.card.labels),), over the model's own labels;
    None when no segment holds speech.
    """
    sr = model.sample_rate
    bounds = segment_bounds(y.size / sr, segment)
    clips = [y[int(round(a * sr)):int(round(b * sr))] for a, b in bounds]
    found = [(b - a, e.probs) for (a, b), e in zip(bounds, audio_evidence(clips, model, speech, min_speech))
             if e.probs is not None]
    if not found:
        return None
    weights = np.array([w for w, _ in found])
    return (np.array([p for _, p in found]) * weights[:, None]).sum(axis=0) / weights.sum()
