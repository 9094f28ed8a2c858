"""Speech-emotion features and the audio model.

Features are MFCCs (with first and second deltas) on 10 ms frames at 16 kHz,
computed identically for training and for ``analyze``: the parameters live in
:class:`multimodal.config.AudioFeatureConfig` and are stored in the model card.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from multimodal.config import EMOTIONS, AudioFeatureConfig
from multimodal.models import ModelCard, load_model, read_card

#: How the audio model's labels map onto the project's 7 classes.
#: RAVDESS "calm" has no FER2013 counterpart; it is closest to neutral.
AUDIO_LABEL_MAP = {"calm": "neutral", "fearful": "fear", "surprised": "surprise"}


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


def rms_dbfs(y: np.ndarray) -> float:
    """Root-mean-square level of a signal in dB relative to full scale."""
    if y.size == 0:
        return -np.inf
    return float(20 * np.log10(np.sqrt(np.mean(np.square(y, dtype=np.float64))) + 1e-12))


def mfcc_features(y: np.ndarray, cfg: AudioFeatureConfig = AudioFeatureConfig()) -> np.ndarray:
    """MFCC (+ deltas) matrix of a mono signal.

    Parameters
    ----------
    y : float array, shape (n_samples,), at ``cfg.sample_rate``
    Returns
    -------
    float32 array, shape (n_frames, n_mfcc * 3) with deltas, else (n_frames, n_mfcc);
    one frame per ``cfg.hop_length`` samples.
    """
    import librosa
    if y.size < cfg.n_fft:
        y = np.pad(y, (0, cfg.n_fft - y.size))
    m = librosa.feature.mfcc(y=y, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft,
                             hop_length=cfg.hop_length, n_mels=cfg.n_mels)
    if cfg.deltas:
        width = min(9, m.shape[1] if m.shape[1] % 2 else m.shape[1] - 1)
        if width >= 3:
            m = np.concatenate([m, librosa.feature.delta(m, width=width),
                                librosa.feature.delta(m, order=2, width=width)])
        else:
            m = np.concatenate([m, np.zeros_like(m), np.zeros_like(m)])
    return m.T.astype(np.float32)


def fix_length(y: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop or zero-pad a signal to exactly ``n`` samples."""
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
        out[:, EMOTIONS.index(AUDIO_LABEL_MAP.get(name, name))] += probs[:, j]
    return out


class AudioModel:
    """The speech-emotion classifier behind a verified model card."""

    def __init__(self, model_path: str | Path):
        self.card: ModelCard = read_card(model_path, "audio")
        feat = self.card.data.get("features", {})
        self.features = AudioFeatureConfig(**{k: v for k, v in feat.items() if k in asdict(AudioFeatureConfig())})
        self.model = load_model(self.card)
        # librosa's first call imports and compiles a good deal: pay it at load time, not mid-analysis.
        self.predict_proba([np.zeros(self.sample_rate, np.float32)])

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    def predict_proba(self, clips: list[np.ndarray]) -> np.ndarray:
        """Class probabilities over :data:`EMOTIONS` for each clip.

        Clips are mono float arrays at :attr:`sample_rate`; each is scored on
        its own because the network pools over time and lengths differ.
        Returns an array of shape (len(clips), 7).
        """
        if not clips:
            return np.zeros((0, len(EMOTIONS)))
        feats = [mfcc_features(c, self.features) for c in clips]
        lengths = {f.shape[0] for f in feats}
        if len(lengths) == 1:  # the usual case in analyze: one batch
            raw = self.model.predict_on_batch(np.stack(feats))
        else:
            raw = np.concatenate([self.model.predict_on_batch(f[None]) for f in feats])
        return to_project_labels(np.asarray(raw, dtype=np.float64), self.card.labels)
