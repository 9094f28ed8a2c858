"""Build the demo clip ``data/demo/demo.mp4`` from redistributable material.

* Picture: the portrait of astronaut Eileen Collins shipped in scikit-image
  (``skimage.data.astronaut``; NASA, public domain), with a slow zoom.
* Voice: sentences spoken by espeak-ng (its output is free of restrictions),
  at varied pitch and speed, with pauses between them.

Needs ``pip install scikit-image`` and the ``espeak-ng`` program. Run from the
project root: ``python data/make_demo.py``.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import soundfile as sf

SENTENCES = [  # (text, words per minute, pitch 0-99)
    ("Hello everyone, and welcome to the demonstration.", 150, 50),
    ("This is wonderful news, I am so happy to be here!", 175, 80),
    ("But I am worried that we are running out of time.", 130, 30),
    ("Stop! That is not what we agreed on at all!", 190, 70),
    ("Well, never mind. Let us carry on.", 140, 45),
]
SECONDS_PER_FRAME = 1 / 15  # 15 fps keeps the file small
SIZE = (640, 360)


def speech(sample_rate: int = 16000) -> np.ndarray:
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (text, wpm, pitch) in enumerate(SENTENCES):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(wpm), "-p", str(pitch), "-w", str(wav), text],
                           check=True)
            y, sr = sf.read(wav, dtype="float32")
            if sr != sample_rate:
                import librosa
                y = librosa.resample(y, orig_sr=sr, target_sr=sample_rate)
            parts += [y, np.zeros(int(0.6 * sample_rate), np.float32)]
    return np.concatenate(parts)


def frames(n: int):
    from skimage import data
    img = data.astronaut()
    w, h = SIZE
    for i in range(n):
        zoom = 1.0 + 0.35 * i / max(1, n - 1)  # slow zoom towards the face
        side = int(512 / zoom)
        cx, cy = 230, 140 + (256 - 140) / zoom
        x0 = int(np.clip(cx - side / 2, 0, 512 - side))
        y0 = int(np.clip(cy - side / 2, 0, 512 - side))
        crop = cv2.resize(img[y0:y0 + side, x0:x0 + side], (h, h), interpolation=cv2.INTER_AREA)
        canvas = np.full((h, w, 3), 24, np.uint8)
        canvas[:, (w - h) // 2:(w - h) // 2 + h] = crop
        yield canvas


def main(out: Path = Path("data/demo/demo.mp4")) -> None:
    voice = speech()
    seconds = len(voice) / 16000
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "voice.wav"
        sf.write(wav, voice, 16000)
        writer = imageio_ffmpeg.write_frames(str(out), SIZE, fps=int(1 / SECONDS_PER_FRAME), codec="libx264", macro_block_size=8,
                                             audio_path=str(wav), audio_codec="aac", ffmpeg_log_level="error",
                                             output_params=["-crf", "30", "-preset", "slow", "-b:a", "48k",
                                                            "-movflags", "+faststart"])
        writer.send(None)
        for frame in frames(int(seconds / SECONDS_PER_FRAME)):
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    print(f"{out}: {seconds:.1f} s, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
