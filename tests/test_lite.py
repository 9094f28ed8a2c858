"""BlazeFace, the TFLite runtime and the exported models."""
from __future__ import annotations

import shutil
from dataclasses import asdict

import cv2
import numpy as np
import pytest

from multimodal.config import DEFAULT_AUDIO_MODEL, DEFAULT_VISUAL_MODEL, EMOTIONS
from multimodal.errors import ModelError
from multimodal.models import card_path, read_card
from tests.media import face_image


def _scene(width: int, height: int, places: list[tuple[int, int, int]]) -> np.ndarray:
    """A textured RGB frame with the fixture portrait pasted at (x, y, side)."""
    rng = np.random.default_rng(0)
    frame = cv2.resize(rng.integers(60, 160, (height // 20, width // 20, 3)).astype(np.uint8), (width, height))
    for x, y, side in places:
        frame[y:y + side, x:x + side] = cv2.resize(face_image(), (side, side))
    return frame


def _contains(face, x, y):
    return face.x <= x <= face.x + face.w and face.y <= y <= face.y + face.h


def test_blazeface_finds_faces_in_a_wide_frame():
    from multimodal.faces import BlazeFaceDetector
    det = BlazeFaceDetector(min_size=16)
    # 640x360 as analyze decodes 720p; the small portrait (a face of about 30 px)
    # is only found through a tile.
    places = [(40, 60, 220), (420, 200, 70)]
    faces = det.detect(_scene(640, 360, places))
    assert len(faces) == 2
    for x, y, side in places:
        face = next(f for f in faces if _contains(f, x + side / 2, y + 0.45 * side))
        assert 0.6 < face.score <= 1
        assert 0.3 * side < face.w < 0.8 * side  # the face, not the whole picture
    # Without the search for small faces only the large one is found, at a third of the cost.
    (large,) = det.detect(_scene(640, 360, places), small=False)
    assert _contains(large, 40 + 110, 60 + 99)
    assert not det.detect(_scene(640, 360, []))
    assert det.detect(np.zeros((10, 10, 3), np.uint8)) == []  # tiny frames are fine


def test_blazeface_framing_is_close_to_the_haar_framing():
    # Both detectors' boxes are corrected to the same (FER2013) framing, so crops agree.
    from multimodal.faces import BlazeFaceDetector, HaarDetector
    frame = _scene(400, 400, [(60, 60, 280)])
    (b,) = BlazeFaceDetector().detect(frame)
    (h,) = HaarDetector().detect(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    assert abs(b.w - h.w) < 0.25 * h.w  # their corrections were fitted on FER2013 crops, not on portraits
    assert abs((b.x + b.w / 2) - (h.x + h.w / 2)) < 0.1 * h.w
    assert abs((b.y + b.h / 2) - (h.y + h.h / 2)) < 0.15 * h.w


def test_weighted_nms_merges_overlapping_boxes():
    from multimodal.faces import _weighted_nms
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    out, scores = _weighted_nms(boxes, np.array([0.9, 0.3, 0.8]), 0.3)
    assert len(out) == 2 and scores.tolist() == [0.9, 0.8]
    assert out[0] == pytest.approx([0.25, 0.25, 10.25, 10.25])  # weighted 3:1
    empty, none = _weighted_nms(np.zeros((0, 4)), np.zeros(0), 0.3)
    assert empty.shape == (0, 4) and none.size == 0


def test_square_tiles_cover_the_frame():
    from multimodal.faces import _square_tiles
    for w, h in [(640, 360), (360, 640), (1000, 200)]:
        tiles = _square_tiles(w, h)
        assert len(tiles) >= 2 and all(tw == th == min(w, h) for _, _, tw, th in tiles)
        assert max(x + tw for x, _, tw, _ in tiles) == w and max(y + th for _, y, _, th in tiles) == h
        assert min(x for x, *_ in tiles) == 0 and min(y for _, y, *_ in tiles) == 0


def test_detector_file_is_checked_against_its_card(tmp_path):
    from multimodal.config import DEFAULT_FACE_DETECTOR
    from multimodal.faces import BlazeFaceDetector
    bad = tmp_path / "face_detector.tflite"
    data = bytearray(DEFAULT_FACE_DETECTOR.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    shutil.copy(card_path(DEFAULT_FACE_DETECTOR), card_path(bad))
    with pytest.raises(ModelError, match="checksum"):
        BlazeFaceDetector(model_path=bad)


def test_shipped_tflite_models_match_their_keras_originals():
    from multimodal.models import TFLiteModel, load_keras_model
    rng = np.random.default_rng(0)
    for path, x in [(DEFAULT_VISUAL_MODEL, rng.uniform(0, 255, (5, 48, 48, 1))),
                    (DEFAULT_AUDIO_MODEL, rng.normal(0, 1, (2, 250, 120)))]:
        card = read_card(path, "visual" if path == DEFAULT_VISUAL_MODEL else "audio")
        original = read_card(path.with_suffix(".keras"), card.kind)
        assert card.data["exported_from"]["sha256"] == original.sha256
        assert card.data["metrics"] == original.data["metrics"]
        lite, reference = TFLiteModel(path), load_keras_model(original)
        assert lite.predict_on_batch(x) == pytest.approx(np.asarray(reference.predict_on_batch(x)), abs=1e-4)
        assert lite.predict_on_batch(x[:1]).shape == (1, reference.output_shape[-1])  # batch size can change


def test_export_tflite_round_trip(tiny_models, tmp_path):
    from multimodal.audio import AudioModel
    from multimodal.visual import VisualModel
    from training.export_tflite import export
    for kind in ("visual", "audio"):
        src = tmp_path / tiny_models[kind].name
        shutil.copy(tiny_models[kind], src)
        shutil.copy(card_path(tiny_models[kind]), card_path(src))
        assert "same top class" in export(src)
        lite = src.with_suffix(".tflite")
        card = read_card(lite, kind)
        assert card.data["exported_from"]["file"] == src.name
    crops = np.random.default_rng(1).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    a = VisualModel(tmp_path / "visual.tflite").predict_proba(crops)
    b = VisualModel(tmp_path / "visual.keras").predict_proba(crops)
    assert a.shape == (3, len(EMOTIONS)) and a == pytest.approx(b, abs=1e-5)
    clips = [np.random.default_rng(2).normal(0, 0.1, 16000 * n).astype(np.float32) for n in (1, 3)]
    assert AudioModel(tmp_path / "audio.tflite").predict_proba(clips) == pytest.approx(
        AudioModel(tmp_path / "audio.keras").predict_proba(clips), abs=1e-5)


@pytest.mark.parametrize("variant", ["attention", "utterance_mean"])
def test_speech_network_variants_load_safely_and_export(tmp_path, variant):
    """Attention pooling, and the utterance means' side path: safe-mode loading, any length, the same
    under TFLite."""
    import keras

    from multimodal.audio import AudioModel
    from multimodal.config import AudioFeatureConfig
    from multimodal.models import write_card
    from training.audio_models import cnn1d
    from training.export_tflite import export
    from training.speech_datasets import SPEECH_LABELS

    feat = AudioFeatureConfig()
    n = feat.n_mfcc * 3
    options = ({"pooling": "attention"} if variant == "attention"
               else {"utterance_norm": True, "utterance_mean": (np.zeros(n), np.ones(n))})
    keras.utils.set_random_seed(3)
    src = tmp_path / "audio.keras"
    cnn1d(n, len(SPEECH_LABELS), np.zeros(n), np.ones(n), widths=(4, 4, 4, 4), **options).save(src)
    write_card(src, "audio", SPEECH_LABELS, features=asdict(feat))
    assert "same top class" in export(src)
    clips = [np.random.default_rng(4).normal(0, 0.1, int(16000 * s)).astype(np.float32) for s in (0.7, 3, 5.5)]
    reference = AudioModel(src).predict_proba(clips)
    assert reference.shape == (3, len(EMOTIONS)) and np.allclose(reference.sum(axis=1), 1, atol=1e-5)
    assert AudioModel(src.with_suffix(".tflite")).predict_proba(clips) == pytest.approx(reference, abs=1e-5)
    if variant == "utterance_mean":
        # Unlike --utterance-norm alone, a constant added to every frame reaches the output, by the side path.
        network = AudioModel(src).model
        x = np.random.default_rng(5).normal(size=(1, 200, n)).astype(np.float32)
        assert not np.allclose(network.predict_on_batch(x), network.predict_on_batch(x + 3.0), atol=1e-4)
        with pytest.raises(ValueError, match="utterance_norm"):
            cnn1d(n, len(SPEECH_LABELS), np.zeros(n), np.ones(n), utterance_mean=(np.zeros(n), np.ones(n)))
    else:
        with pytest.raises(ValueError, match="pooling"):
            cnn1d(n, len(SPEECH_LABELS), np.zeros(n), np.ones(n), pooling="median")


def test_export_with_smaller_weights_records_them_and_keeps_the_limits(tmp_path):
    """int8 weights quarter the file and change outputs a little; the default limits refuse that."""
    import keras

    from multimodal.audio import AudioModel
    from multimodal.config import AudioFeatureConfig
    from multimodal.models import write_card
    from training.audio_models import cnn1d
    from training.export_tflite import export
    from training.speech_datasets import SPEECH_LABELS

    feat = AudioFeatureConfig()
    n = feat.n_mfcc * 3
    keras.utils.set_random_seed(6)
    src = tmp_path / "audio.keras"
    cnn1d(n, len(SPEECH_LABELS), np.zeros(n), np.ones(n), widths=(64, 64, 64, 64)).save(src)
    write_card(src, "audio", SPEECH_LABELS, features=asdict(feat))
    lite = src.with_suffix(".tflite")
    assert "float32 weights" in export(src)
    full = lite.stat().st_size
    with pytest.raises(ModelError, match="differs"):
        export(src, weights="int8")
    assert not lite.exists()  # a refused export leaves nothing behind
    assert "int8 weights" in export(src, weights="int8", max_diff=1.0, max_changed=1.0)
    assert lite.stat().st_size < full / 2.5
    assert read_card(lite, "audio").data["exported_from"]["weights"] == "int8"
    clips = [np.random.default_rng(7).normal(0, 0.1, 16000 * 2).astype(np.float32)]
    small, reference = AudioModel(lite).predict_proba(clips), AudioModel(src).predict_proba(clips)
    assert np.allclose(small.sum(axis=1), 1, atol=1e-5) and small == pytest.approx(reference, abs=0.05)
    with pytest.raises(ValueError, match="weights"):
        export(src, weights="int4")


def test_analyze_needs_no_tensorflow(face_video, tmp_path):
    # With TensorFlow and Keras made unimportable, analyze still runs on the shipped models.
    import subprocess
    import sys
    out = tmp_path / "out"
    code = ("import sys\n"
            "sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
            "from multimodal.cli import main\n"
            f"sys.exit(main(['analyze', {str(face_video)!r}, '-o', {str(out)!r}, '--quiet']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / face_video.stem / "segments.csv").exists()
    # Commands that do need it say how to get it, in one line.
    code = ("import sys\n"
            "sys.modules['tensorflow'] = sys.modules['keras'] = None\n"
            "from multimodal.cli import main\n"
            "sys.exit(main(['evaluate', 'visual', '--model', 'models/visual_default.keras', '--data', '.',"
            " '--out', 'x']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "pip install -e '.[train]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
