"""The writers, on an analysis built by hand: no media, no models."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from multimodal.aggregate import build_segments, segment_bounds
from multimodal.config import EMOTIONS, SCHEMA_FILE, SCHEMA_VERSION, AnalyzeConfig
from multimodal.decode import MediaInfo
from multimodal.errors import OutputError
from multimodal.faces import Face
from multimodal.fusion import make_strategy
from multimodal.pipeline import fuse
from multimodal.results import Analysis, AudioSegment, FaceRecord, segment_index


def validate(doc: dict) -> None:
    """Fail unless ``doc`` follows the shipped JSON Schema of analysis.json."""
    import jsonschema
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))


def test_the_schema_knows_every_column_and_rejects_a_wrong_document():
    import jsonschema

    from multimodal.report import FACE_COLUMNS, SEGMENT_COLUMNS
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert list(schema["properties"]["segments"]["items"]["properties"]) == SEGMENT_COLUMNS
    assert list(schema["properties"]["faces"]["items"]["properties"]) == FACE_COLUMNS
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    from multimodal.report import analysis_document
    doc = analysis_document(hand_made())
    validate(doc)
    doc["segments"][0]["label"] = "bored"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def one_hot(label: str, p: float = 0.9) -> np.ndarray:
    out = np.full(len(EMOTIONS), (1 - p) / (len(EMOTIONS) - 1))
    out[EMOTIONS.index(label)] = p
    return out


def hand_made(duration: float = 7.0, cfg: AnalyzeConfig = AnalyzeConfig()) -> Analysis:
    """Two people: person 1 happy through the clip, person 2 sad from 3 s on;
    the voice says angry in segment 1 and nothing in segment 2."""
    bounds = segment_bounds(duration, cfg.segment)
    times = [i / cfg.fps for i in range(int(duration * cfg.fps) + 1)]
    faces = [FaceRecord(t, 1, Face(10, 10, 40, 40, 0.9), one_hot("happy")) for t in times]
    faces += [FaceRecord(t, 2, Face(100, 10, 20, 20, 0.8), one_hot("sad")) for t in times if t >= 3]
    audio = [AudioSegment(-30.0, 0.5, None), AudioSegment(-25.0, 0.9, one_hot("angry", 0.99)),
             AudioSegment(-80.0, 0.0, None)]
    segments = build_segments(bounds, cfg.segment, times, faces, audio if len(bounds) == 3 else None)
    segments = fuse(segments, make_strategy("mean"))
    info = MediaInfo(Path("clip.mp4"), duration, True, True, 160, 90, 25.0, "h264", "aac")
    return Analysis(info, cfg, segments, faces, {"fusion": {"strategy": "mean", "parameters": {}}}, ["a warning"], 1.5,
                    {"video": 1.0})


def test_segment_index_and_bounds():
    assert segment_bounds(7.0, 3.0) == [(0.0, 3.0), (3.0, 6.0), (6.0, 7.0)]
    assert [segment_index(t, 3.0, 3) for t in (0.0, 2.99, 3.0, 6.5, 7.0, 9.0)] == [0, 0, 1, 2, 2, 2]


def test_build_segments_assigns_frames_faces_and_audio():
    a = hand_made()
    s0, s1, s2 = a.segments
    assert (s0.frames, s1.frames, s2.frames) == (6, 6, 3)  # 15 frames sampled at 2 fps over 7 s
    assert (s0.faces, s0.tracks, s1.faces, s1.tracks) == (6, 1, 12, 2)
    # The larger, surer face counts more in the group distribution.
    assert s1.visual[EMOTIONS.index("happy")] > s1.visual[EMOTIONS.index("sad")] > 0.1
    assert s0.audio is None and s0.speech == 0.5 and s0.modalities == "visual"
    assert s1.modalities == "visual+audio" and s1.audio_dbfs == -25.0
    assert s0.label == "happy" and s0.confidence == pytest.approx(0.9)
    assert s1.fused == pytest.approx((s1.visual + s1.audio) / 2)


def test_rows_tracks_and_summary():
    from multimodal.report import face_rows, overall, segment_rows, summary_text, track_summaries
    a = hand_made()
    rows = segment_rows(a)
    assert [r["segment"] for r in rows] == [0, 1, 2] and rows[2]["end"] == 7.0
    assert rows[0]["audio_happy"] is None and rows[1]["audio_angry"] == pytest.approx(0.99)
    assert rows[0]["valence_positive"] == pytest.approx(0.9 + 0.1 / 6, abs=1e-4)  # rounded to 4 places
    faces = face_rows(a)
    assert len(faces) == len(a.faces) and {f["segment"] for f in faces} == {0, 1, 2}
    assert faces[-1]["label"] == "sad" and faces[-1]["segment"] == 2
    tracks = track_summaries(a)
    assert [t["dominant"] for t in tracks] == ["happy", "sad"]
    assert tracks[1]["first_seen"] == 3.0 and tracks[1]["seconds_on_screen"] == pytest.approx(9 * 0.5)
    o = overall(a)
    assert o["dominant"] == "happy" and o["runs"][0]["label"] == "happy"
    text = summary_text(a)
    assert "clip.mp4: 7.0 s" in text and "dominant emotion: happy" in text


def test_write_analysis_outputs_pandas_reads(tmp_path):
    import pandas as pd

    from multimodal.report import FACE_COLUMNS, SEGMENT_COLUMNS, write_analysis
    a = hand_made()
    target = write_analysis(a, tmp_path / "clip", pictures=False)
    seg = pd.read_csv(target / "segments.csv")
    assert list(seg.columns) == SEGMENT_COLUMNS and len(seg) == 3
    assert seg["audio_angry"].isna().tolist() == [True, False, True]
    faces = pd.read_csv(target / "faces.csv")
    assert list(faces.columns) == FACE_COLUMNS and len(faces) == len(a.faces)
    doc = json.loads((target / "analysis.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["labels"] == list(EMOTIONS)
    # Every option of the analysis is recorded, as given.
    assert doc["options"]["segment"] == 3.0 and doc["options"]["visual_model"].endswith("visual_default.tflite")
    assert set(doc["options"]) >= {"fps", "fusion", "detector", "min_speech", "max_faces", "small_face_fps"}
    assert doc["files"] == ["analysis.json", "faces.csv", "segments.csv"] and doc["warnings"] == ["a warning"]
    validate(doc)
    with open(target / "segments.csv", newline="") as fh:
        assert next(csv.reader(fh))[0] == "segment"


def test_write_analysis_never_replaces_unasked_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    from multimodal import report
    a = hand_made()
    target = report.write_analysis(a, tmp_path / "clip", pictures=False)
    before = (target / "segments.csv").read_text()
    with pytest.raises(OutputError, match="already exists"):
        report.write_analysis(a, target, pictures=False)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "_write_csv", broken)
    with pytest.raises(OutputError, match="No space left"):
        report.write_analysis(a, target, force=True, pictures=False)
    assert (target / "segments.csv").read_text() == before  # the old results are intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no temporary folder left behind


def test_pictures_are_written(tmp_path):
    import cv2

    from multimodal.report import write_analysis
    target = write_analysis(hand_made(), tmp_path / "clip")
    image = cv2.imread(str(target / "timeline.png"))
    assert image is not None and image.shape[1] > 800
    html = (target / "report.html").read_text()
    assert "clip.mp4" in html and "data:image/png;base64," in html


def test_long_clip_segment_count_and_last_segment():
    a = hand_made(duration=61.0, cfg=AnalyzeConfig(segment=10.0, fps=1.0))
    assert len(a.segments) == 7 and a.segments[-1].end == 61.0
    assert a.segment_of(60.5) == 6 and a.segment_of(1e6) == 6
