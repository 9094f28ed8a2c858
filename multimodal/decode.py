"""Reading media as streams with bounded memory.

Everything goes through the ffmpeg binary that ships in the
``imageio-ffmpeg`` wheel, so no system ffmpeg is needed:

* :func:`probe` reads duration, streams and frame size;
* :func:`iter_frames` yields sampled grayscale or RGB frames one at a time
  (ffmpeg's ``fps`` filter does the sampling, so unsampled frames are never
  converted or copied);
* :func:`extract_audio` writes the audio track as 16 kHz mono WAV to a
  temporary file that :class:`AudioReader` then reads segment by segment.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import soundfile as sf

from multimodal.errors import InputError


def read_image(image: str | Path | np.ndarray) -> tuple[np.ndarray, MediaInfo]:
    """A photo as an RGB ``uint8`` array (h, w, 3), and its description.

    ``image`` is a file OpenCV reads (jpg, png, webp, bmp, tiff) or an array,
    RGB (h, w, 3), RGBA (h, w, 4) or gray (h, w).
    """
    if isinstance(image, np.ndarray):
        rgb, path = image, Path("<array>")
    else:
        path = Path(image)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{path}: not an image OpenCV can read")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] not in (3, 4)):
        raise InputError(f"{path}: expected a uint8 image of shape (h, w), (h, w, 3) or (h, w, 4), "
                         f"got {rgb.dtype} {rgb.shape}")
    if rgb.ndim == 2:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
    elif rgb.shape[2] == 4:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGBA2RGB)
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb), MediaInfo(path, 0.0, True, False, w, h, 0.0, "image", "")


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with the imageio-ffmpeg wheel."""
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a media file."""
    path: Path
    duration: float  # seconds
    has_video: bool
    has_audio: bool
    width: int = 0  # display size, after any rotation
    height: int = 0
    fps: float = 0.0
    video_codec: str = ""  # "image" for a photo
    audio_codec: str = ""

    @property
    def is_image(self) -> bool:
        """A photo rather than a video: no duration, one frame."""
        return self.video_codec == "image"


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: (\w+)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees|rotate\s*:\s*(-?\d+)")


_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}


def _looks_like_mp4(path: Path) -> bool:
    """Whether the file starts like an ISO-BMFF/QuickTime file (a box header)."""
    with open(path, "rb") as fh:
        return fh.read(8)[4:8] in _MP4_BOXES


def probe(path: str | Path) -> MediaInfo:
    """Describe a media file, or raise :class:`InputError` naming the cause."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                              capture_output=True, text=True, errors="replace", timeout=60)
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffmpeg timed out reading the header") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    text = proc.stderr
    if "Permission denied" in text:
        raise InputError(f"{path}: permission denied")
    if "moov atom not found" in text:
        if not _looks_like_mp4(path):
            raise InputError(f"{path}: not a media file ffmpeg can decode")
        raise InputError(f"{path}: truncated or incomplete video (no index: 'moov atom not found')")
    if "Invalid data found" in text or "Stream #" not in text:
        raise InputError(f"{path}: not a media file ffmpeg can decode")
    video, audio = _VIDEO.search(text), _AUDIO.search(text)
    if not video and not audio:
        raise InputError(f"{path}: no video or audio stream")
    dur = _DURATION.search(text)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else 0.0
    if duration <= 0:  # "Duration: N/A", common in streamed WebM: read it off a stream copy
        duration = _duration_by_copy(path)
    width = height = 0
    fps = 0.0
    if video:
        width, height = int(video.group(2)), int(video.group(3))
        line = text[video.start():].split("\n", 1)[0]
        m = _FPS.search(line)
        fps = float(m.group(1)) if m else 0.0
        rot = _ROTATION.search(text)
        if rot and abs(round(float(rot.group(1) or rot.group(2)))) % 180 == 90:
            width, height = height, width  # ffmpeg auto-rotates on decode
    return MediaInfo(path, duration, bool(video), bool(audio), width, height, fps,
                     video.group(1) if video else "", audio.group(1) if audio else "")


_TIME = re.compile(r"time=(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _duration_by_copy(path: Path) -> float:
    """Duration found by copying the streams to nowhere: reads packets, decodes nothing."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-c", "copy", "-f", "null", "-"],
                          capture_output=True, text=True, errors="replace")
    times = _TIME.findall(proc.stderr)
    if not times:
        return 0.0
    h, m, sec = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(sec)


#: Codecs whose decoders honour ``-skip_frame noref`` by skipping only frames
#: that nothing refers to; for intra-only codecs it could drop every frame.
SKIPPABLE_CODECS = frozenset({"h264", "hevc"})


def decode_size(info: MediaInfo, max_width: int) -> tuple[int, int]:
    """Frame size after downscaling to at most ``max_width`` (both even)."""
    scale = min(1.0, max_width / info.width) if info.width else 1.0
    w = max(2, int(round(info.width * scale / 2)) * 2)
    h = max(2, int(round(info.height * scale / 2)) * 2)
    return w, h


def sampling_command(info: MediaInfo, fps: float, max_width: int = 640, color: bool = False) -> list[str]:
    """The ffmpeg command writing frames sampled at ``fps``, scaled, as raw gray or RGB to stdout."""
    w, h = decode_size(info, max_width)
    # One core is left to detection and classification, which run meanwhile;
    # on two cores a single decoding thread was also cheaper in all (less
    # waiting between frame threads): 5.7 s instead of 6.8 s for 10 min of 720p.
    threads = max(1, (os.cpu_count() or 2) - 1)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(threads)]
    if info.video_codec in SKIPPABLE_CODECS and info.fps >= 4 * fps:
        # Frames no other frame refers to (most B-frames) need not be decoded
        # when only one in four or fewer is kept: decoding costs about 40% less
        # and the frame taken for each sample moves by at most a frame or two.
        cmd += ["-skip_frame", "noref"]
    # round=up: sample k is the last frame shown at or before k / fps (the
    # default rounding would take one a quarter of a sampling period late).
    return cmd + ["-i", str(info.path), "-an", "-sn", "-vf", f"fps={fps}:round=up,scale={w}:{h}",
                  "-f", "rawvideo", "-pix_fmt", "rgb24" if color else "gray", "pipe:1"]


def iter_frames(info: MediaInfo, fps: float, max_width: int = 640, color: bool = False
                ) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_seconds, frame)`` for frames sampled at ``fps`` per second.

    Frames are ``uint8`` of shape (h, w) in grayscale, or (h, w, 3) RGB with
    ``color``, at most ``max_width`` wide. One frame is in memory at a time.
    Raises :class:`InputError` if ffmpeg fails before the end of the stream.
    """
    w, h = decode_size(info, max_width)
    channels = 3 if color else 1
    cmd = sampling_command(info, fps, max_width, color)
    frame_bytes = w * h * channels
    index = 0
    # ffmpeg's messages go to a file: a damaged stream can print more than a
    # pipe holds, and a full pipe would stall ffmpeg while frames are read.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, bufsize=frame_bytes * 4)
        assert proc.stdout is not None  # stdout=PIPE
        try:
            while True:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                frame = np.frombuffer(buf, np.uint8).reshape((h, w, 3) if color else (h, w))
                yield index / fps, frame
                index += 1
        finally:
            proc.stdout.close()
            code = proc.wait()
            log.seek(0)
            err = log.read().decode(errors="replace")
    if code != 0 or ("Invalid data" in err or "corrupt" in err.lower()) and index == 0:
        first = next((ln for ln in err.splitlines() if ln.strip()), f"ffmpeg exit code {code}")
        raise InputError(f"{info.path}: video decoding failed after {index / fps:.1f} s ({first.strip()[:160]})")


def extract_audio(info: MediaInfo, wav_path: Path, sample_rate: int = 16000) -> Path:
    """Write the audio track as mono 16-bit WAV at ``sample_rate`` Hz."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(info.path),
           "-vn", "-sn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", str(wav_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0 or not wav_path.exists() or wav_path.stat().st_size <= 44:
        first = next((ln for ln in proc.stderr.splitlines() if ln.strip()), "no audio decoded")
        raise InputError(f"{info.path}: audio decoding failed ({first.strip()[:160]})")
    return wav_path


class AudioReader:
    """Random access to a WAV file by time, without loading it whole."""

    def __init__(self, wav_path: Path):
        self._file = sf.SoundFile(str(wav_path))
        self.sample_rate = self._file.samplerate
        self.duration = self._file.frames / self.sample_rate

    def read(self, start: float, end: float) -> np.ndarray:
        """Mono float32 samples between ``start`` and ``end`` seconds."""
        a = max(0, int(round(start * self.sample_rate)))
        b = min(self._file.frames, int(round(end * self.sample_rate)))
        if b <= a:
            return np.zeros(0, np.float32)
        self._file.seek(a)
        return self._file.read(b - a, dtype="float32", always_2d=True).mean(axis=1)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
