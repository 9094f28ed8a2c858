"""Cross-dataset evaluation of the visual model on folders of labelled face photos."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from multimodal.cli import main
from multimodal.config import EMOTIONS
from multimodal.errors import EXIT_OK
from tests.media import face_image
from training.face_sets import is_fer2013, load_face_set, load_face_sets


def _photo_sets(root):
    """Two sets: 'folders' (<label>/<image>) and 'listed' (manifest.csv); one photo has no face."""
    portrait = cv2.cvtColor(face_image(), cv2.COLOR_RGB2BGR)
    blank = np.full((120, 120, 3), 128, np.uint8)
    for label in ("happy", "sad"):
        (root / "folders" / label).mkdir(parents=True)
        cv2.imwrite(str(root / "folders" / label / "a.png"), portrait)
    (root / "folders" / "contempt").mkdir()  # outside the seven: skipped
    cv2.imwrite(str(root / "folders" / "contempt" / "c.png"), portrait)
    (root / "listed" / "imgs").mkdir(parents=True)
    cv2.imwrite(str(root / "listed" / "imgs" / "p1.jpg"), portrait)
    cv2.imwrite(str(root / "listed" / "imgs" / "blank.jpg"), blank)
    (root / "listed" / "manifest.csv").write_text(
        "file,label,subject\nimgs/p1.jpg,neutral,S1\nimgs/blank.jpg,angry,S2\nimgs/p1.jpg,contempt,S1\n")
    return root


def test_loaders_read_both_layouts_and_skip_other_labels(tmp_path):
    root = _photo_sets(tmp_path)
    sets = load_face_sets(root)
    assert sorted(sets) == ["folders", "listed"]
    assert sorted(p.label for p in sets["folders"]) == ["happy", "sad"]
    listed = load_face_set(root / "listed")
    assert [(p.label, p.subject) for p in listed] == [("neutral", "S1"), ("angry", "S2")]
    assert list(load_face_sets(root / "listed")) == ["listed"]  # one set given directly
    assert not is_fer2013(root) and is_fer2013(tmp_path / "fer2013.csv")
    with pytest.raises(FileNotFoundError):
        load_face_sets(root / "folders" / "contempt")


def test_evaluation_counts_photos_without_a_face(tiny_models, tmp_path):
    from training.evaluate import evaluate_face_sets
    root = _photo_sets(tmp_path / "photos")
    out = tmp_path / "report"
    r = evaluate_face_sets(tiny_models["visual"], root, out)
    name = tiny_models["visual"].name
    assert r["no_face"] == {"folders": 0, "listed": 1}
    assert r[name]["listed"]["n"] == 2 and r[name]["folders"]["n"] == 2
    m = r[name]["folders"]
    assert m["accuracy"] <= 0.5  # the same photo under two labels: one answer, right at most once
    assert r[name]["mean_accuracy"] == pytest.approx((r[name]["folders"]["accuracy"]
                                                       + r[name]["listed"]["accuracy"]) / 2)
    rep = json.loads((out / "report.json").read_text())
    assert rep["no_face"] == {"folders": 0, "listed": 1}
    assert any("no face found" in n for n in rep["notes"])


def test_evaluate_visual_defaults_to_the_shipped_tflite_model(tmp_path, capsys):
    root = _photo_sets(tmp_path / "photos")
    assert main(["evaluate", "visual", "--data", str(root), "--out", str(tmp_path / "rep")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "folders: accuracy" in out and "1 of 2 photos with no face found" in out
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "visual_default.tflite" in rep["summary"]


def test_evaluation_says_which_sets_the_model_was_trained_on(tiny_models, tmp_path, capsys):
    import shutil

    from multimodal.models import write_card
    root = _photo_sets(tmp_path / "photos")
    model = tmp_path / "trained.keras"
    shutil.copy(tiny_models["visual"], model)
    write_card(model, "visual", EMOTIONS, input={"shape": [48, 48, 1]},
               training={"dataset": "FER2013 + listed, kdef"})
    assert main(["evaluate", "visual", "--model", str(model), "--data", str(root),
                 "--out", str(tmp_path / "rep")]) == EXIT_OK
    err = capsys.readouterr().err
    assert "trained.keras was trained on listed: its figures there are not held out" in err
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["trained_on"] == ["listed"] and any("not held out" in n for n in rep["notes"])
    # The tiny model's own card names no face set: nothing to warn about.
    main(["evaluate", "visual", "--model", str(tiny_models["visual"]), "--data", str(root),
          "--out", str(tmp_path / "rep2")])
    assert "not held out" not in capsys.readouterr().err
