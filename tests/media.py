"""Media the tests generate: videos with a moving face and a speech-like sound."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"


def face_image() -> np.ndarray:
    """The public-domain astronaut face (RGB, 160x167)."""
    return cv2.cvtColor(cv2.imread(str(FIXTURES / "face.png")), cv2.COLOR_BGR2RGB)


def speech_like(seconds: float, sr: int = 16000, seed: int = 0, level: float = 0.2) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal: loud enough to count as speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    y = y * envelope + 0.02 * rng.standard_normal(t.size)
    return (level * y / np.max(np.abs(y))).astype(np.float32)


def write_video(path: Path, seconds: float = 4.0, fps: int = 10, size: tuple[int, int] = (480, 320),
                faces: int = 1, audio: bool = True, silent_audio: bool = False) -> Path:
    """An H.264 mp4 with ``faces`` copies of the fixture face drifting slowly, and AAC audio."""
    import imageio_ffmpeg
    w, h = size
    face = cv2.resize(face_image(), (144, 150))
    rng = np.random.default_rng(1)
    background = (rng.integers(90, 110, (h, w, 3))).astype(np.uint8)
    wav = None
    if audio:
        wav = path.with_suffix(".wav")
        y = np.zeros(int(seconds * 16000), np.float32) if silent_audio else speech_like(seconds)
        sf.write(wav, y, 16000)
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", macro_block_size=1,
                                         audio_path=str(wav) if wav else None, audio_codec="aac" if wav else None,
                                         ffmpeg_log_level="error", output_params=["-pix_fmt", "yuv420p"])
    writer.send(None)
    for i in range(int(seconds * fps)):
        frame = background.copy()
        for k in range(faces):
            x = int(10 + k * (w // max(1, faces)) + 12 * np.sin(i / fps))
            y0 = int((h - 150) / 2)
            x = min(max(0, x), w - 144)
            frame[y0:y0 + 150, x:x + 144] = face
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    if wav:
        wav.unlink()
    return path


def write_wav(path: Path, seconds: float = 4.0, sr: int = 16000, stereo: bool = False) -> Path:
    y = speech_like(seconds, sr)
    sf.write(path, np.stack([y, y], axis=1) if stereo else y, sr)
    return path


DEMO = FIXTURES.parent / "demo" / "demo.mp4"


def demo_speech(seconds: float = 6.0, sr: int = 16000) -> np.ndarray:
    """The first ``seconds`` of the demo clip's voice (synthetic English speech), mono float32."""
    import subprocess

    import imageio_ffmpeg
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(DEMO),
                          "-t", str(seconds), "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "pipe:1"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32).copy()


def at_level(y: np.ndarray, dbfs: float) -> np.ndarray:
    """``y`` scaled to an RMS level of ``dbfs``."""
    rms = np.sqrt(np.mean(np.square(y, dtype=np.float64)))
    return (y * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def non_speech(kind: str, seconds: float = 3.0, sr: int = 16000) -> np.ndarray:
    """Sounds that are not speech: ``silence``, ``hum`` (50 Hz mains with harmonics, -30 dBFS),
    ``white`` (white noise at 0.03 amplitude, about -30 dBFS) and ``fan`` (low rumble, -25 dBFS)."""
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * sr)) / sr
    if kind == "silence":
        return np.zeros(t.size, np.float32)
    if kind == "hum":
        return at_level(sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 8)), -30)
    if kind == "white":
        return (0.03 * rng.standard_normal(t.size)).astype(np.float32)
    if kind == "fan":
        rumble = np.convolve(rng.standard_normal(t.size), np.ones(40) / 40, mode="same")
        return at_level(rumble + 0.3 * np.sin(2 * np.pi * 120 * t), -25)
    raise ValueError(kind)
