"""The Python interface, photos as input, and output for pipelines."""
from __future__ import annotations

import csv
import io
import json

import cv2
import numpy as np
import pandas as pd
import pytest

import multimodal
from multimodal.cli import main
from multimodal.config import EMOTIONS
from multimodal.errors import EXIT_INPUT, EXIT_OK, EXIT_USAGE, InputError
from tests.media import face_image
from tests.test_report import validate


def models(tiny_models) -> dict:
    return {"visual_model": tiny_models["visual"], "audio_model": tiny_models["audio"]}


def two_faces(tmp_path):
    """A photo with the fixture face twice, side by side."""
    face = face_image()
    photo = np.concatenate([face, np.full_like(face, 90), face], axis=1)
    path = tmp_path / "pair.png"
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return path, photo


def test_analyze_a_video_from_python(tiny_models, face_video, tmp_path):
    result = multimodal.analyze(face_video, fps=2.0, **models(tiny_models))
    assert isinstance(result.segments, pd.DataFrame) and len(result.segments) == 3
    assert list(result.segments["start"]) == [0.0, 3.0, 6.0]
    assert isinstance(result.faces, pd.DataFrame) and len(result.faces) > 0
    assert set(result.faces["segment"]) == {0, 1, 2}
    assert result.summary["dominant"] in EMOTIONS and result.tracks[0]["track_id"] == 1
    assert "face.mp4" in repr(result)
    # save() writes what the command line writes, and the tables match.
    out = result.save(tmp_path / "face")
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "faces.csv", "report.html",
                                                    "segments.csv", "timeline.png"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "segments.csv"), result.segments, check_dtype=False)
    assert json.loads((out / "analysis.json").read_text())["summary"] == result.to_dict()["summary"]
    validate(json.loads((out / "analysis.json").read_text()))


def test_analyze_a_list_loads_models_once_and_keeps_order(tiny_models, face_video, tmp_path):
    from tests.media import write_wav
    wav = write_wav(tmp_path / "voice.wav", 4.0)
    results = multimodal.analyze([wav, face_video], **models(tiny_models))
    assert [r.analysis.info.path.name for r in results] == ["voice.wav", "face.mp4"]
    validate(results[0].to_dict())
    assert results[0].faces.empty and list(results[0].faces.columns)[:3] == ["time", "segment", "track_id"]


def test_unknown_option_and_bad_input(tiny_models, tmp_path):
    with pytest.raises(TypeError, match="unknown option fsp"):
        multimodal.analyze("x.mp4", fsp=3)
    with pytest.raises(InputError, match="no such file"):
        multimodal.analyze(tmp_path / "missing.jpg", **models(tiny_models))


def test_a_photo_gives_every_face(tiny_models, tmp_path):
    path, photo = two_faces(tmp_path)
    result = multimodal.analyze(path, **models(tiny_models))
    assert len(result.faces) == 2 and sorted(result.faces["track_id"]) == [1, 2]
    assert result.faces["x"].iloc[0] != result.faces["x"].iloc[1]
    assert len(result.segments) == 1 and result.segments["modalities"][0] == "visual"
    assert result.summary["dominant"] in EMOTIONS
    # An array works the same (RGB, as returned by most image libraries).
    from_array = multimodal.analyze(photo, **models(tiny_models))
    np.testing.assert_allclose(from_array.faces[[f"p_{e}" for e in EMOTIONS]].to_numpy(),
                               result.faces[[f"p_{e}" for e in EMOTIONS]].to_numpy(), atol=1e-4)
    with pytest.raises(InputError, match="no faces found in the image"):
        multimodal.analyze(np.full((200, 200, 3), 128, np.uint8), **models(tiny_models))


def test_photos_on_the_command_line(tiny_models, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    path, _ = two_faces(tmp_path / "in")
    cv2.imwrite(str(tmp_path / "in" / "blank.jpg"), np.full((120, 160, 3), 200, np.uint8))
    code = main(["analyze", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--annotate",
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])])
    assert code == 1  # the blank photo failed, the batch went on
    captured = capsys.readouterr()
    assert "blank.jpg: no faces found in the image" in captured.err
    assert "pair.png: photo, 2 faces" in captured.out
    out = tmp_path / "out" / "pair"
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "annotated.png", "faces.csv", "segments.csv"]
    annotated = cv2.imread(str(out / "annotated.png"))
    assert annotated.shape[:2] == cv2.imread(str(path)).shape[:2]
    assert len(pd.read_csv(out / "faces.csv")) == 2
    validate(json.loads((out / "analysis.json").read_text()))


def test_stdout_formats(tiny_models, face_video, tmp_path, capsys):
    from tests.media import write_wav
    wav = write_wav(tmp_path / "voice.wav", 4.0)
    common = ["--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])]
    assert main(["analyze", str(face_video), str(wav), "-o", "-", *common]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 3 + 2 and {r["input"] for r in rows} == {str(face_video), str(wav)}
    assert main(["analyze", str(face_video), str(wav), "-o", "-", "--format", "csv", *common]) == EXIT_OK
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 5 and table[0]["input"] == str(face_video) and table[0]["segment"] == "0"
    assert main(["analyze", str(face_video), "-o", "-", "--format", "json", *common]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["segments"]) == 3 and not (tmp_path / "-").exists()


def test_text_fixes(tiny_models, face_video, tmp_path, capsys):
    from multimodal.formatting import mmss, plural
    assert (plural(1, "segment"), plural(3, "segment"), plural(1, "person", "people")) == (
        "1 segment", "3 segments", "1 person")
    assert (mmss(75), mmss(600), mmss(3725)) == ("1:15", "10:00", "1:02:05")
    assert main(["analyze", "x.mp4", "-o", str(tmp_path), "--fps", "abc"]) == EXIT_USAGE
    assert "invalid float value: 'abc'" in capsys.readouterr().err
    assert main(["analyze", "--help"]) == EXIT_OK
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "exit codes:" in help_text and "130" in help_text
    # Inputs with the same name get numbered folders.
    other = tmp_path / "other"
    other.mkdir()
    (other / "face.mp4").write_bytes(face_video.read_bytes())
    assert main(["analyze", str(face_video), str(other / "face.mp4"), "-o", str(tmp_path / "out"), "--no-pictures",
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])]) == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["batch.csv", "face", "face_2"]
    printed = capsys.readouterr().out
    assert "3 segments" in printed and "1 person seen" in printed
    tracks = json.loads((tmp_path / "out" / "face" / "analysis.json").read_text())["tracks"]
    assert tracks[0]["seconds_on_screen"] <= 7.0  # never more than the clip lasts


def test_annotate_on_audio_says_so(tiny_models, tmp_path, capsys):
    from tests.media import write_wav
    wav = write_wav(tmp_path / "voice.wav", 4.0)
    assert main(["analyze", str(wav), "-o", str(tmp_path / "out"), "--annotate", "--quiet",
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])]) == EXIT_OK
    assert "--annotate needs video or a photo" in capsys.readouterr().err


def test_missing_photo_is_an_input_error(tiny_models, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    assert main(["analyze", str(bad), "-o", str(tmp_path / "out"), "--quiet",
                 "--visual-model", str(tiny_models["visual"])]) == EXIT_INPUT
    assert "broken.png: not an image OpenCV can read" in capsys.readouterr().err


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    code = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "data").symlink_to(root / "data")
    monkeypatch.chdir(tmp_path)  # the example writes results/ where it runs
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "results" / "demo-api" / "segments.csv").exists()
    assert "Result('demo.mp4'" in capsys.readouterr().out
