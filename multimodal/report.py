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
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from multimodal.aggregate import label_runs, valence
from multimodal.config import EMOTIONS, SCHEMA_VERSION, config_dict
from multimodal.errors import OutputError
from multimodal.formatting import mmss, plural
from multimodal.results import Analysis, Segment
from multimodal.version import __version__

SEGMENT_COLUMNS = (["segment", "start", "end", "frames", "faces", "people", "modalities", "label", "confidence",
                    "audio_dbfs", "speech"] + [f"{m}_{e}" for m in ("visual", "audio", "fused") for e in EMOTIONS]
                   + ["valence_positive", "valence_negative", "valence_neutral",
                      "group_valence_positive", "group_valence_negative", "group_valence_neutral"])
FACE_COLUMNS = ["time", "segment", "track_id", "x", "y", "w", "h", "detection_score", "label", "confidence"] + \
               [f"p_{e}" for e in EMOTIONS]


def _r(x, nd=4):
    return None if x is None else round(float(x), nd)


def segment_rows(a: Analysis) -> list[dict]:
    """One row per segment: the rows of ``segments.csv``."""
    return [segment_row(s) for s in a.segments]


def segment_row(s: Segment) -> dict:
    """One segment as a row of ``segments.csv`` (``None`` where a value is absent)."""
    row = {"segment": s.index, "start": _r(s.start, 3), "end": _r(s.end, 3), "frames": s.frames,
           "faces": s.faces, "people": s.tracks, "modalities": s.modalities, "label": s.label,
           "confidence": _r(s.confidence), "audio_dbfs": _r(s.audio_dbfs, 1), "speech": _r(s.speech, 3)}
    for m, p in (("visual", s.visual), ("audio", s.audio), ("fused", s.fused)):
        for j, e in enumerate(EMOTIONS):
            row[f"{m}_{e}"] = None if p is None else _r(p[j])
    for prefix, dist in (("valence", s.fused), ("group_valence", s.visual)):
        v = valence(dist)
        for k in ("positive", "negative", "neutral"):
            row[f"{prefix}_{k}"] = None if v is None else _r(v[k])
    return row


def face_rows(a: Analysis) -> list[dict]:
    """One row per face found in a sampled frame: the rows of ``faces.csv``."""
    rows = []
    for r in a.faces:
        row = {"time": _r(r.time, 3), "segment": a.segment_of(r.time), "track_id": r.track_id,
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
    step = 1.0 / a.config.fps
    out = []
    for tid, recs in sorted(tracks.items()):
        mean = np.mean([r.probs for r in recs], axis=0)
        per_segment: dict[int, list] = {}
        for r in recs:
            per_segment.setdefault(a.segment_of(r.time), []).append(r.probs)
        over_time = [{"segment": i, "label": EMOTIONS[int(np.argmax(np.mean(p, axis=0)))],
                      "confidence": _r(np.max(np.mean(p, axis=0)))} for i, p in sorted(per_segment.items())]
        out.append({"track_id": tid, "first_seen": _r(recs[0].time, 3), "last_seen": _r(recs[-1].time, 3),
                    # Each sampled frame stands for 1/fps s of video, but not past its end.
                    "detections": len(recs), "seconds_on_screen": _r(min(len(recs) * step, a.info.duration), 2),
                    "dominant": EMOTIONS[int(np.argmax(mean))],
                    "mean": {e: _r(mean[j]) for j, e in enumerate(EMOTIONS)}, "over_time": over_time})
    return out


def overall(a: Analysis) -> dict:
    """Dominant emotion over the whole input and how the label moved over time."""
    kept = [s for s in a.segments if s.fused is not None]
    weights = np.array([s.end - s.start for s in kept])
    if weights.sum() <= 0:  # a photo: one segment without duration
        weights = np.ones(len(kept))
    mean = np.sum([s.fused * w for s, w in zip(kept, weights)], axis=0) / weights.sum()
    runs = label_runs([(s.start, s.end) for s in a.segments], [s.label for s in a.segments])
    return {"dominant": EMOTIONS[int(np.argmax(mean))], "mean": {e: _r(mean[j]) for j, e in enumerate(EMOTIONS)},
            "runs": [{"start": _r(s, 3), "end": _r(e, 3), "label": lab} for s, e, lab in runs]}


def analysis_document(a: Analysis) -> dict:
    """Everything about an analysis as one JSON-ready dict: the content of ``analysis.json``."""
    info = a.info
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "multimodal", "version": __version__, "python": platform.python_version(),
                 "libraries": _library_versions()},
        "input": {"path": str(info.path), "duration": _r(info.duration, 3), "has_video": info.has_video,
                  "has_audio": info.has_audio, "width": info.width, "height": info.height, "fps": _r(info.fps, 3),
                  "video_codec": info.video_codec, "audio_codec": info.audio_codec},
        "labels": list(EMOTIONS),
        "options": config_dict(a.config),
        "models": a.models,
        "summary": overall(a),
        "segments": segment_rows(a),
        "faces": face_rows(a),
        "tracks": track_summaries(a),
        "warnings": a.warnings,
        "seconds": _r(a.seconds, 3),
        "stage_seconds": {k: _r(v, 3) for k, v in a.timings.items()},
    }


def _library_versions() -> dict[str, str]:
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
    """``out_root/<file stem>``; when stems repeat in a batch, ``<stem>_2``, ``<stem>_3``
    in input order."""
    name, i = source.stem, 2
    while name in taken:
        name, i = f"{source.stem}_{i}", i + 1
    taken.add(name)
    return out_root / name


def write_stream(a: Analysis, fmt: str, out, header: bool = True) -> None:
    """Write one analysis to a text stream for pipelines.

    ``fmt``: ``"jsonl"`` one JSON object per segment, ``"json"`` the whole
    ``analysis.json`` document on one line, ``"csv"`` the rows of
    ``segments.csv`` (a header first when ``header``). Every record names its
    input in an ``input`` field or column.
    """
    source = str(a.info.path)
    if fmt == "json":
        out.write(json.dumps(analysis_document(a)) + "\n")
    elif fmt == "jsonl":
        for row in segment_rows(a):
            out.write(json.dumps({"input": source, **row}) + "\n")
    elif fmt == "csv":
        w = csv.DictWriter(out, fieldnames=["input", *SEGMENT_COLUMNS], lineterminator="\n")
        if header:
            w.writeheader()
        for row in segment_rows(a):
            w.writerow({"input": source, **{k: "" if v is None else v for k, v in row.items()}})
    else:
        raise ValueError(f"unknown format {fmt!r}")
    out.flush()


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
        if pictures and not a.info.is_image:  # matplotlib loads only when pictures are asked for
            from multimodal.html_report import html_report
            from multimodal.plots import timeline_png
            timeline_png(a, tmp / "timeline.png")
            (tmp / "report.html").write_text(html_report(a, doc, tmp / "timeline.png"))
        if annotate and a.info.is_image and a.info.path.is_file():
            from multimodal.annotate import annotate_image
            annotate_image(a, tmp / "annotated.png")
        elif annotate and a.info.has_video and not a.info.is_image:
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
    people = len({r.track_id for r in a.faces})
    if a.info.is_image:
        lines = [f"{a.info.path.name}: photo, {plural(people, 'face')}"]
        lines += [f"  face {r.track_id}: {EMOTIONS[int(np.argmax(r.probs))]} ({np.max(r.probs):.0%}) at "
                  f"x={r.face.x} y={r.face.y}" for r in a.faces[:10]]
        if target is not None:
            lines.append(f"  results: {target}")
        return "\n".join(lines)
    present = {s.modalities for s in a.segments}
    lines = [f"{a.info.path.name}: {a.info.duration:.1f} s, {plural(len(a.segments), 'segment')}, "
             f"{plural(people, 'person', 'people')} seen, modalities {', '.join(sorted(present))}",
             f"  dominant emotion: {o['dominant']} ({o['mean'][o['dominant']]:.0%} of fused probability)"]
    runs = o["runs"]
    shown = runs if len(runs) <= 8 else runs[:4] + [None] + runs[-3:]
    clock = mmss if a.info.duration >= 120 else (lambda t: f"{t:.0f}")
    lines.append("  over time: " + ", ".join("…" if r is None else f"{clock(r['start'])}–{clock(r['end'])}s {r['label']}"
                                             for r in shown))
    if target is not None:
        lines.append(f"  results: {target}")
    return "\n".join(lines)
