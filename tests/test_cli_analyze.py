"""End to end: ``multimodal analyze`` on generated media, good and bad."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multimodal.cli import main
from multimodal.config import EMOTIONS
from multimodal.errors import (
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_USAGE,
)
from multimodal.models import card_path
from tests.media import write_video, write_wav


def run(tiny_models, *args) -> int:
    return main(["analyze", *map(str, args), "--visual-model", str(tiny_models["visual"]),
                 "--audio-model", str(tiny_models["audio"]), "--quiet"])


def test_video_with_face_and_voice(tiny_models, face_video, tmp_path, capsys):
    assert run(tiny_models, face_video, "-o", tmp_path) == EXIT_OK
    out = tmp_path / "face"
    seg = pd.read_csv(out / "segments.csv")
    faces = pd.read_csv(out / "faces.csv")
    doc = json.loads((out / "analysis.json").read_text())
    assert len(seg) == 3  # 7 s in 3 s segments
    assert list(seg["start"]) == [0.0, 3.0, 6.0] and seg["end"].iloc[-1] == pytest.approx(7.0)
    assert set(seg["modalities"]) == {"visual+audio"}
    for prefix in ("visual", "audio", "fused"):
        cols = [f"{prefix}_{e}" for e in EMOTIONS]
        assert seg[cols].sum(axis=1).round(3).eq(1.0).all()
    assert seg["label"].isin(EMOTIONS).all()
    assert (seg["faces"] > 0).all()
    # one face in every sampled frame (2 fps over 7 s), all in one track
    assert len(faces) == 14 and faces["track_id"].nunique() == 1
    assert faces[["x", "y", "w", "h"]].min().min() >= 0
    assert doc["schema_version"] and doc["labels"] == list(EMOTIONS)
    assert doc["models"]["visual"]["sha256"] and doc["models"]["audio"]["sha256"]
    assert doc["options"]["fps"] == 2.0 and doc["options"]["fusion"] == "product"
    assert len(doc["segments"]) == 3 and len(doc["faces"]) == 14 and doc["tracks"][0]["detections"] == 14
    assert (out / "timeline.png").stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_options_change_sampling_and_segments(tiny_models, face_video, tmp_path):
    assert main(["analyze", str(face_video), "-o", str(tmp_path), "--fps", "1", "--segment", "2",
                 "--fusion", "product", "--max-faces", "1", "--small-face-fps", "0.5", "--no-pictures", "-q",
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])]) == 0
    seg = pd.read_csv(tmp_path / "face" / "segments.csv")
    assert len(seg) == 4 and seg["frames"].sum() == 7
    assert not (tmp_path / "face" / "timeline.png").exists()
    options = json.loads((tmp_path / "face" / "analysis.json").read_text())["options"]
    assert options["small_face_fps"] == 0.5 and options["max_faces"] == 1


def test_summary_is_printed(tiny_models, face_video, tmp_path, capsys):
    main(["analyze", str(face_video), "-o", str(tmp_path), "--visual-model", str(tiny_models["visual"]),
          "--audio-model", str(tiny_models["audio"])])
    out = capsys.readouterr().out
    assert "dominant emotion:" in out and "over time:" in out


def test_existing_results_are_kept_without_force(tiny_models, face_video, tmp_path, capsys):
    assert run(tiny_models, face_video, "-o", tmp_path) == EXIT_OK
    marker = tmp_path / "face" / "segments.csv"
    before = marker.read_bytes()
    assert run(tiny_models, face_video, "-o", tmp_path) == EXIT_OUTPUT
    assert "already exists" in capsys.readouterr().err
    assert marker.read_bytes() == before
    assert run(tiny_models, face_video, "-o", tmp_path, "--force") == EXIT_OK


def test_audio_only_file(tiny_models, tmp_path):
    wav = write_wav(tmp_path / "voice.wav", 5.0, sr=44100, stereo=True)
    assert run(tiny_models, wav, "-o", tmp_path / "out") == EXIT_OK
    seg = pd.read_csv(tmp_path / "out" / "voice" / "segments.csv")
    assert set(seg["modalities"]) == {"audio"} and seg["visual_happy"].isna().all()


def test_video_without_audio_track(tiny_models, tmp_path):
    video = write_video(tmp_path / "mute.mp4", 4.0, audio=False)
    assert run(tiny_models, video, "-o", tmp_path / "out") == EXIT_OK
    seg = pd.read_csv(tmp_path / "out" / "mute" / "segments.csv")
    assert set(seg["modalities"]) == {"visual"} and seg["audio_happy"].isna().all()


def test_silent_audio_is_no_evidence_not_neutral(tiny_models, tmp_path):
    video = write_video(tmp_path / "quiet.mp4", 4.0, silent_audio=True)
    assert run(tiny_models, video, "-o", tmp_path / "out") == EXIT_OK
    seg = pd.read_csv(tmp_path / "out" / "quiet" / "segments.csv")
    assert set(seg["modalities"]) == {"visual"}


def test_video_with_no_faces_uses_audio(tiny_models, tmp_path, capsys):
    video = write_video(tmp_path / "empty.mp4", 4.0, faces=0)
    assert run(tiny_models, video, "-o", tmp_path / "out") == EXIT_OK
    assert "no faces found" in capsys.readouterr().err
    seg = pd.read_csv(tmp_path / "out" / "empty" / "segments.csv")
    assert set(seg["modalities"]) == {"audio"}


def test_no_faces_and_no_audio_is_an_error(tiny_models, tmp_path, capsys):
    video = write_video(tmp_path / "blank.mp4", 3.0, faces=0, audio=False)
    assert run(tiny_models, video, "-o", tmp_path / "out") == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "blank.mp4" in err and "no usable evidence" in err


def test_clip_shorter_than_one_segment(tiny_models, tmp_path, capsys):
    video = write_video(tmp_path / "short.mp4", 1.5)
    assert run(tiny_models, video, "-o", tmp_path / "out") == EXIT_OK
    assert "shorter than one segment" in capsys.readouterr().err
    seg = pd.read_csv(tmp_path / "out" / "short" / "segments.csv")
    assert len(seg) == 1 and seg["end"][0] == pytest.approx(1.5, abs=0.05)


@pytest.mark.parametrize("name, content, cause", [
    ("missing.mp4", None, "no such file"),
    ("zero.mp4", b"", "empty file"),
    ("text.mp4", b"not a video\n" * 50, "not a media file"),
])
def test_bad_single_inputs(tiny_models, tmp_path, capsys, name, content, cause):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert run(tiny_models, path, "-o", tmp_path / "out") == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and cause in err and path.name in err
    assert "Traceback" not in err


def test_truncated_video(tiny_models, face_video, tmp_path, capsys):
    data = face_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert run(tiny_models, cut, "-o", tmp_path / "out") == EXIT_INPUT
    err = capsys.readouterr().err
    assert "cut.mp4" in err and "truncated" in err and err.count("\n") == 1


def test_directory_without_media(tiny_models, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert run(tiny_models, tmp_path, "-o", tmp_path / "out") == EXIT_INPUT
    assert "no media files" in capsys.readouterr().err


def test_batch_goes_on_past_bad_files(tiny_models, face_video, tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(face_video, folder / "a.mp4")
    (folder / "b.mp4").write_bytes(b"")
    (folder / "c.mp4").write_text("text")
    assert run(tiny_models, folder, "-o", tmp_path / "out") == EXIT_FAILED
    err = capsys.readouterr().err
    assert "b.mp4" in err and "c.mp4" in err
    assert (tmp_path / "out" / "a" / "segments.csv").exists()
    assert not (tmp_path / "out" / "b").exists()


def test_unwritable_output(tiny_models, face_video, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run(tiny_models, face_video, "-o", blocker) == EXIT_OUTPUT
    assert run(tiny_models, face_video, "-o", blocker / "sub") == EXIT_OUTPUT
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "Traceback" not in err


def test_missing_and_corrupt_models(tiny_models, face_video, tmp_path, capsys):
    assert main(["analyze", str(face_video), "-o", str(tmp_path / "o1"), "-q",
                 "--visual-model", str(tmp_path / "nope.keras"), "--audio-model", str(tiny_models["audio"])]) == EXIT_MODEL
    bad = tmp_path / "bad.keras"
    shutil.copy(tiny_models["visual"], bad)
    shutil.copy(card_path(tiny_models["visual"]), card_path(bad))
    with open(bad, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 16)
    assert main(["analyze", str(face_video), "-o", str(tmp_path / "o2"), "-q",
                 "--visual-model", str(bad), "--audio-model", str(tiny_models["audio"])]) == EXIT_MODEL
    err = capsys.readouterr().err
    assert "model file not found" in err and "checksum mismatch" in err


def test_usage_errors():
    assert main(["analyze"]) == EXIT_USAGE
    assert main(["analyze", "x.mp4", "-o", "out", "--fps", "0"]) == EXIT_USAGE
    assert main(["analyze", "x.mp4", "-o", "out", "--fusion", "nonsense"]) == EXIT_USAGE


def test_module_entry_point(tiny_models, face_video, tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "multimodal", "analyze", str(face_video), "-o", str(tmp_path),
                           "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "dominant emotion" in proc.stdout
    assert "Traceback" not in proc.stderr and "oneDNN" not in proc.stderr


def test_people_tracks_report_and_annotated_video(tiny_models, tmp_path):
    import cv2

    from multimodal.decode import iter_frames, probe
    video = write_video(tmp_path / "two.mp4", 4.0, faces=2, size=(640, 360))
    assert run(tiny_models, video, "-o", tmp_path / "out", "--annotate") == EXIT_OK
    out = tmp_path / "out" / "two"
    faces = pd.read_csv(out / "faces.csv")
    # two people in every sampled frame, each keeping one id throughout
    assert sorted(faces["track_id"].unique()) == [1, 2]
    assert all(sorted(ids) == [1, 2] for _, ids in faces.groupby("time")["track_id"])
    spread = faces.groupby("track_id")["x"].agg(["min", "max"])
    assert (spread["max"] - spread["min"] < 40).all()  # each id stays with one drifting face
    assert abs(spread["min"].iloc[0] - spread["min"].iloc[1]) > 100
    doc = json.loads((out / "analysis.json").read_text())
    assert [t["detections"] for t in doc["tracks"]] == [8, 8]
    assert all(len(t["over_time"]) == 2 for t in doc["tracks"])
    seg = pd.read_csv(out / "segments.csv")
    assert (seg["people"] == 2).all()
    assert seg[["group_valence_positive", "group_valence_negative", "group_valence_neutral"]].sum(1).round(3).eq(1).all()
    info = probe(out / "annotated.mp4")
    assert info.has_video and info.has_audio and info.duration == pytest.approx(4.0, abs=0.3)
    _, frame = next(iter_frames(info, 1.0, color=True))
    original = next(iter_frames(probe(video), 1.0, color=True))[1]
    assert np.abs(frame.astype(int) - original.astype(int)).mean() > 1  # something was drawn
    timeline = cv2.imread(str(out / "timeline.png"))
    assert timeline is not None and timeline.shape[1] > 800
    html = (out / "report.html").read_text()
    assert "Person 1" in html and "Person 2" in html and html.count("data:image/png;base64,") >= 3
    assert "http://" not in html and "https://" not in html  # self-contained


def test_an_unexpected_failure_on_one_file_does_not_stop_the_batch(tiny_models, face_video, tmp_path, monkeypatch,
                                                                   capsys):
    from multimodal import pipeline
    real = pipeline.Analyzer.analyze

    def flaky(self, path, progress=None):
        if Path(path).name == "bad.mp4":
            raise RuntimeError("boom\nsecond line")
        return real(self, path, progress)

    monkeypatch.setattr(pipeline.Analyzer, "analyze", flaky)
    shutil.copy(face_video, tmp_path / "bad.mp4")
    shutil.copy(face_video, tmp_path / "good.mp4")
    assert run(tiny_models, tmp_path / "bad.mp4", tmp_path / "good.mp4", "-o", tmp_path / "out") == EXIT_FAILED
    err = capsys.readouterr().err
    assert "bad.mp4: unexpected RuntimeError: boom" in err and "second line" not in err
    assert (tmp_path / "out" / "good" / "segments.csv").exists()


def test_a_failing_video_stage_stops_the_audio_stage(tiny_models, face_video, tmp_path, monkeypatch, capsys):
    # The audio stage runs in a thread beside the video stage; when the video
    # stage fails, the audio stage stops at its next segment and the error is reported.
    from multimodal import stages
    scored = []
    real_audio_run = stages.AudioStage.run

    def slow_audio_run(self, info, bounds, stop=None, progress=None):
        stop.wait(10)  # the failure below happens while the audio is still being scored
        result = real_audio_run(self, info, bounds, stop, progress)
        scored.extend(a for a in result if a.probs is not None)
        return result

    def failing_video_run(self, info, progress=None):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(stages.AudioStage, "run", slow_audio_run)
    monkeypatch.setattr(stages.VideoStage, "run", failing_video_run)
    assert run(tiny_models, face_video, "-o", tmp_path / "out") == EXIT_FAILED
    assert "decoder exploded" in capsys.readouterr().err
    assert scored == []
    assert not (tmp_path / "out" / face_video.stem).exists()
