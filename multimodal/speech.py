"""Speech presence: which parts of a recording hold a voice.

Silero VAD's network (``models/speech_detector.onnx``, MIT licence, the
"sequence" export of silero-vad 6.2.3) scores every 32 ms frame of 16 kHz
audio, run by ONNX Runtime. The silero-vad package itself declares PyTorch as
a hard dependency (gigabytes) for code paths this project does not use, so the
model file ships here with its card and checksum, and the few lines that feed
it follow the package's own torch-free ``sequence_vad`` module.

Each clip is peak-normalised before scoring, so quiet speech (−60 dBFS) is
heard as well as loud speech; the network itself tells speech from noise,
hum, fans and music at any level (``benchmarks/bench_speech.py``).

The network does not count shouting and screaming as speech (it missed 13
of RAVDESS's 1,440 utterances, all strong anger, fear or joy). So a frame
also counts as voice when it stands ``loud_db`` above the clip's own floor
(the level of its quietest tenth) and is tonal (spectral flatness under
``max_flatness``), as a voice is: stationary sounds (room tone, hum, fans,
noise) are never that far above their own floor, bangs, doors and drums are
noise-like, but a loud sung or played note after a pause does count.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from multimodal.config import DEFAULT_SPEECH_DETECTOR
from multimodal.errors import MissingDependencyError, ModelError
from multimodal.models import read_card

FRAME = 512  # samples per scored frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame the network sees before each frame
SAMPLE_RATE = 16000
BLOCK = 512  # frames per network call (16 s)
_STATE = (1, 1, 128)  # the network's LSTM state (hidden and cell alike)


def frame_seconds() -> float:
    """Duration of one scored frame, in seconds."""
    return FRAME / SAMPLE_RATE


class SpeechDetector:
    """Per-frame speech probabilities of 16 kHz mono audio.

    Parameters
    ----------
    model_path : path
        The ONNX model, checked against its card.
    threshold : float
        Frame probability above which a frame counts as speech (silero's default).
    loud_db : float
        A tonal frame this many dB above the clip's floor counts as voice too.
    max_flatness : float
        Spectral flatness (0: a pure tone, 1: white noise) under which a
        frame is tonal; voiced frames of screams measure about 0.01, bangs
        and noise bursts about 0.5.
    """

    def __init__(self, model_path: str | Path = DEFAULT_SPEECH_DETECTOR, threshold: float = 0.5,
                 loud_db: float = 25.0, max_flatness: float = 0.1):
        self.card = read_card(model_path, "speech_detector")
        self.threshold = threshold
        self.loud_db = loud_db
        self.max_flatness = max_flatness
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("the speech detector needs ONNX Runtime: pip install onnxruntime") from None
        options = ort.SessionOptions()
        # One thread: the network is small, and analyze runs it beside the video stage.
        options.inter_op_num_threads = options.intra_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as err:  # ONNX Runtime raises its own types for a damaged file
            raise ModelError(f"{model_path}: cannot load model ({str(err).splitlines()[0][:200]})") from None

    def frame_probabilities(self, y: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame.

        Parameters
        ----------
        y : float array, shape (n_samples,), mono at 16 kHz, any level

        Returns
        -------
        float32 array, shape (ceil(n_samples / 512),); the last frame is zero-padded.
        """
        y = np.asarray(y, dtype=np.float32)
        if y.size == 0:
            return np.zeros(0, np.float32)
        peak = float(np.max(np.abs(y)))
        if peak == 0.0:  # digital silence: nothing to hear, and nothing to scale
            return np.zeros((y.size + FRAME - 1) // FRAME, np.float32)
        y = y * (0.5 / peak)
        n = (y.size + FRAME - 1) // FRAME
        frames = np.zeros((n, FRAME), np.float32)
        frames.reshape(-1)[:y.size] = y
        context = np.zeros((n, CONTEXT), np.float32)
        context[1:] = frames[:-1, -CONTEXT:]
        x = np.concatenate([context, frames], axis=1)
        h = c = np.zeros(_STATE, np.float32)
        out = []
        for i in range(0, n, BLOCK):  # the state carries over, so blocks change nothing but memory
            probs, h, c = self._session.run(["speech_probs", "hn", "cn"], {"input": x[i:i + BLOCK], "h": h, "c": c})
            out.append(probs.reshape(-1))
        return np.concatenate(out)

    def voice_frames(self, y: np.ndarray) -> np.ndarray:
        """Which 32 ms frames of ``y`` (16 kHz mono) hold a voice.

        Returns
        -------
        bool array, shape (ceil(n_samples / 512),): the network hears speech,
        or the frame is tonal and ``loud_db`` above the level of the clip's
        quietest tenth.
        """
        voiced = self.frame_probabilities(y) > self.threshold
        n = y.size // FRAME
        if n:
            frames = np.asarray(y[:n * FRAME], np.float64).reshape(n, FRAME)
            level = np.maximum(10 * np.log10(np.mean(np.square(frames), axis=1) + 1e-20), -100.0)
            loud = level >= np.percentile(level, 10) + self.loud_db
            if loud.any():
                import librosa
                flatness = librosa.feature.spectral_flatness(y=np.asarray(y[:n * FRAME], np.float32), n_fft=FRAME,
                                                             hop_length=FRAME, center=False)[0]
                voiced[:n] |= loud & (flatness[:n] < self.max_flatness)
        return voiced

    def speech_seconds(self, y: np.ndarray) -> float:
        """Seconds of ``y`` (16 kHz mono) that hold a voice (:meth:`voice_frames`)."""
        return float(np.count_nonzero(self.voice_frames(y)) * frame_seconds())
