"""Writing an analysis: CSV tables, the JSON document and the printed summary.

Each input gets its own folder in the output directory, built in a hidden
temporary folder beside it and renamed into place only when complete, so a
reader never sees half-written results. An existing folder is replaced only
with ``force``.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from multimodal.aggregate import label_runs, valence
from multimodal.config import EMOTIONS, SCHEMA_VERSION
from multimodal.errors import OutputError
from multimodal.pipeline import Analysis, tool_version

SEGMENT_COLUMNS = (["segment", "start", "end", "frames", "faces", "people", "modalities", "label", "confidence",
                    "audio_dbfs", "speech"] + [f"{m}_{e}" for m in ("visual", "audio", "fused") for e in EMOTIONS]
                   + ["valence_positive", "valence_negative", "valence_neutral",
                      "group_valence_positive", "group_valence_negative", "group_valence_neutral"])
FACE_COLUMNS = ["time", "segment", "track_id", "x", "y", "w", "h", "detection_score", "label", "confidence"] + \
               [f"p_{e}" for e in EMOTIONS]


def _r(x, nd=4):
    return None if x is None else round(float(x), nd)


def segment_rows(a: Analysis) -> list[dict]:
    rows = []
    for s in a.segments:
        row = {"segment": s.index, "start": _r(s.start, 3), "end": _r(s.end, 3), "frames": s.frames,
               "faces": s.faces, "people": s.tracks, "modalities": s.modalities, "label": s.label,
               "confidence": _r(s.confidence), "audio_dbfs": _r(s.audio_dbfs, 1),
               "speech": _r(s.speech, 3)}
        for m, p in (("visual", s.visual), ("audio", s.audio), ("fused", s.fused)):
            for j, e in enumerate(EMOTIONS):
                row[f"{m}_{e}"] = None if p is None else _r(p[j])
        for prefix, dist in (("valence", s.fused), ("group_valence", s.visual)):
            v = valence(dist)
            for k in ("positive", "negative", "neutral"):
                row[f"{prefix}_{k}"] = None if v is None else _r(v[k])
        rows.append(row)
    return rows


def face_rows(a: Analysis, segment: float) -> list[dict]:
    rows = []
    n = len(a.segments)
    for r in a.faces:
        row = {"time": _r(r.time, 3), "segment": min(n - 1, int(r.time / segment)), "track_id": r.track_id,
               "x": r.face.x, "y": r.face.y, "w": r.face.w, "h": r.face.h, "detection_score": _r(r.face.score),
               "label": EMOTIONS[int(np.argmax(r.probs))], "confidence": _r(np.max(r.probs))}
        row.update({f"p_{e}": _r(r.probs[j]) for j, e in enumerate(EMOTIONS)})
        rows.append(row)
    return rows


def track_summaries(a: Analysis) -> list[dict]:
    """Per person: time on screen, dominant emotion, and mean distribution."""
    tracks: dict[int, list] = {}
    for r in a.faces:
        tracks.setdefault(r.track_id, []).append(r)
    step = 1.0 / a.options["fps"]
    seg_len, n = a.options["segment"], len(a.segments)
    out = []
    for tid, recs in sorted(tracks.items()):
        mean = np.mean([r.probs for r in recs], axis=0)
        per_segment: dict[int, list] = {}
        for r in recs:
            per_segment.setdefault(min(n - 1, int(r.time / seg_len)), []).append(r.probs)
        over_time = [{"segment": i, "label": EMOTIONS[int(np.argmax(np.mean(p, axis=0)))],
                      "confidence": _r(np.max(np.mean(p, axis=0)))} for i, p in sorted(per_segment.items())]
        out.append({"track_id": tid, "first_seen": _r(recs[0].time, 3), "last_seen": _r(recs[-1].time, 3),
                    "detections": len(recs), "seconds_on_screen": _r(len(recs) * step, 2),
                    "dominant": EMOTIONS[int(np.argmax(mean))],
                    "mean": {e: _r(mean[j]) for j, e in enumerate(EMOTIONS)}, "over_time": over_time})
    return out


def overall(a: Analysis) -> dict:
    """Dominant emotion over the whole input and how the label moved over time."""
    fused = [s.fused * (s.end - s.start) for s in a.segments if s.fused is not None]
    mean = np.sum(fused, axis=0) / sum(s.end - s.start for s in a.segments if s.fused is not None)
    runs = label_runs([(s.start, s.end) for s in a.segments], [s.label for s in a.segments])
    return {"dominant": EMOTIONS[int(np.argmax(mean))], "mean": {e: _r(mean[j]) for j, e in enumerate(EMOTIONS)},
            "runs": [{"start": _r(s, 3), "end": _r(e, 3), "label": lab} for s, e, lab in runs]}


def analysis_document(a: Analysis) -> dict:
    info = a.info
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "multimodal", "version": tool_version(), "python": platform.python_version(),
                 "libraries": _library_versions()},
        "input": {"path": str(info.path), "duration": _r(info.duration, 3), "has_video": info.has_video,
                  "has_audio": info.has_audio, "width": info.width, "height": info.height, "fps": _r(info.fps, 3),
                  "video_codec": info.video_codec, "audio_codec": info.audio_codec},
        "labels": list(EMOTIONS),
        "options": a.options,
        "models": a.models,
        "summary": overall(a),
        "segments": segment_rows(a),
        "faces": face_rows(a, a.options["segment"]),
        "tracks": track_summaries(a),
        "warnings": a.warnings,
        "seconds": _r(a.seconds, 3),
        "stage_seconds": {k: _r(v, 3) for k, v in a.timings.items()},
    }


def _library_versions() -> dict[str, str]:
    import sys
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("keras", "tensorflow", "tensorflow-cpu", "opencv-python-headless", "librosa", "numpy", "imageio-ffmpeg"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    if "cv2" in sys.modules:
        out["opencv"] = sys.modules["cv2"].__version__
    return out


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if v is None else v for k, v in row.items()})


def output_dir_for(out_root: Path, source: Path, taken: set[str]) -> Path:
    """``out_root/<file stem>``, with the extension added when stems collide in a batch."""
    name = source.stem
    if name in taken:
        name = source.name.replace(".", "_")
    i = 2
    base = name
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return out_root / name


def ensure_output_dir(path: Path) -> None:
    """Create ``path`` if needed; :class:`OutputError` if it is not a writable directory."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot create output directory ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output directory is not writable")


def check_writable(target: Path, force: bool) -> None:
    """Fail before any work if ``target`` exists (without ``force``) or cannot be created."""
    if target.exists() and not force:
        raise OutputError(f"{target}: already exists (use --force to replace it)")
    ensure_output_dir(target.parent)


def write_analysis(a: Analysis, target: Path, force: bool = False, pictures: bool = True,
                   annotate: bool = False) -> Path:
    """Write ``segments.csv``, ``faces.csv``, ``analysis.json``, and with ``pictures``
    ``timeline.png`` and ``report.html``, with ``annotate`` ``annotated.mp4``, into ``target``."""
    check_writable(target, force)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as err:
        raise OutputError(f"{target.parent}: cannot write ({err.strerror})") from None
    try:
        doc = analysis_document(a)
        _write_csv(tmp / "segments.csv", SEGMENT_COLUMNS, doc["segments"])
        _write_csv(tmp / "faces.csv", FACE_COLUMNS, doc["faces"])
        if pictures:
            from multimodal.html_report import html_report
            from multimodal.plots import timeline_png
            timeline_png(a, tmp / "timeline.png")
            (tmp / "report.html").write_text(html_report(a, doc, tmp / "timeline.png"))
        if annotate and a.info.has_video:
            from multimodal.annotate import annotate_video
            annotate_video(a, tmp / "annotated.mp4")
        doc["files"] = sorted([p.name for p in tmp.iterdir()] + ["analysis.json"])
        (tmp / "analysis.json").write_text(json.dumps(doc, indent=2))
        os.chmod(tmp, 0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{target}: cannot write results ({err.strerror or err})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def summary_text(a: Analysis, target: Path | None = None) -> str:
    """A few human lines: the dominant emotion and how it moved over time."""
    o = overall(a)
    present = {s.modalities for s in a.segments}
    lines = [f"{a.info.path.name}: {a.info.duration:.1f} s, {len(a.segments)} segments, "
             f"{len({r.track_id for r in a.faces})} people seen, modalities {', '.join(sorted(present))}",
             f"  dominant emotion: {o['dominant']} ({o['mean'][o['dominant']]:.0%} of fused probability)"]
    runs = o["runs"]
    shown = runs if len(runs) <= 8 else runs[:4] + [None] + runs[-3:]
    lines.append("  over time: " + ", ".join("…" if r is None else f"{r['start']:.0f}–{r['end']:.0f}s {r['label']}"
                                             for r in shown))
    if target is not None:
        lines.append(f"  results: {target}")
    return "\n".join(lines)
