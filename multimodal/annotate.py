"""An annotated copy of the video: face boxes, track ids and labels, the fused segment label."""
from __future__ import annotations

from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from multimodal.atomic import atomic_path
from multimodal.config import EMOTION_COLORS, EMOTIONS, rgb
from multimodal.decode import iter_frames, read_image

# Frames are RGB here (not OpenCV's BGR), so colours are RGB too.
_RGB = {e: rgb(c) for e, c in EMOTION_COLORS.items()}


def annotate_video(a, out_path: Path, max_width: int = 1280, max_fps: float = 30.0) -> Path:
    """Re-decode ``a.info.path`` and write ``out_path`` (H.264 mp4) with the results drawn on it.

    Each frame shows the faces of the nearest sampled frame (within half a
    sampling interval), so boxes hold still between samples. The original
    audio track is copied in.
    """
    info = a.info
    fps = min(info.fps or 25.0, max_fps)
    half = 0.5 / a.config.fps
    times = np.array(sorted({r.time for r in a.faces}))
    by_time: dict[float, list] = {}
    for r in a.faces:
        by_time.setdefault(r.time, []).append(r)
    writer = None
    try:
        for t, frame in iter_frames(info, fps, max_width, color=True):
            if writer is None:
                h, w = frame.shape[:2]
                scale = w / info.width if info.width else 1.0
                writer = imageio_ffmpeg.write_frames(
                    str(out_path), (w, h), fps=fps, codec="libx264", macro_block_size=1,
                    audio_path=str(info.path) if info.has_audio else None,
                    audio_codec="aac" if info.has_audio else None, ffmpeg_log_level="error",
                    output_params=["-preset", "veryfast", "-crf", "23", "-shortest"])
                writer.send(None)
            img = frame.copy()  # the decoded buffer is read-only
            if len(times):
                nearest = times[np.argmin(np.abs(times - t))]
                if abs(nearest - t) <= half:
                    for r in by_time[nearest]:
                        _draw_face(img, r, scale)
            seg = a.segments[a.segment_of(t)]
            _draw_banner(img, t, seg)
            writer.send(img)
    finally:
        if writer is not None:
            writer.close()
    return out_path


def annotate_image(a, out_path: Path) -> Path:
    """Write a copy of the photo ``a.info.path`` with each face's box, number and label drawn on it."""
    rgb, _ = read_image(a.info.path)
    img = rgb.copy()
    for r in a.faces:
        _draw_face(img, r, 1.0)
    with atomic_path(out_path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {out_path.name}")
    return out_path


def _draw_face(img: np.ndarray, r, scale: float) -> None:
    label = EMOTIONS[int(np.argmax(r.probs))]
    color = _RGB[label]
    x, y, w, h = (int(round(v * scale)) for v in (r.face.x, r.face.y, r.face.w, r.face.h))
    thick = max(1, img.shape[1] // 400)
    cv2.rectangle(img, (x, y), (x + w, y + h), color, thick)
    text = f"#{r.track_id} {label} {np.max(r.probs):.0%}"
    size = max(0.4, img.shape[1] / 1600)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)
    top = max(0, y - th - 6)
    cv2.rectangle(img, (x, top), (x + tw + 6, top + th + 6), color, -1)
    cv2.putText(img, text, (x + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 1, cv2.LINE_AA)


def _draw_banner(img: np.ndarray, t: float, seg) -> None:
    size = max(0.45, img.shape[1] / 1400)
    if seg.fused is None:
        text = f"{t:5.1f}s  no evidence"
    else:
        text = f"{t:5.1f}s  {seg.label} {seg.confidence:.0%}  ({seg.modalities})"
        if seg.audio is not None:
            text += f"  voice: {EMOTIONS[int(np.argmax(seg.audio))]} {np.max(seg.audio):.0%}"
        elif seg.speech is not None:
            text += "  voice: no speech"
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)
    cv2.rectangle(img, (0, 0), (tw + 12, th + 12), (0, 0, 0), -1)
    color = _RGB.get(seg.label, (255, 255, 255)) if seg.fused is not None else (255, 255, 255)
    cv2.putText(img, text, (6, th + 6), cv2.FONT_HERSHEY_SIMPLEX, size, color, 1, cv2.LINE_AA)
