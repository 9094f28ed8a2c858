"""Training, evaluation and fusion comparison at tiny scale on generated data."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import soundfile as sf

from multimodal.cli import main
from multimodal.config import EMOTIONS, MODELS_DIR
from multimodal.models import sha256_of
from tests.conftest import SHARED_DATA
from tests.media import speech_like

FOLDER_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _fake_faces(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose brightness pattern depends on the label, so a model can learn something."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 7
    x = rng.integers(0, 60, (n, 48, 48)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, :, c * 6:(c + 1) * 6] += 150
    return x, y


@pytest.fixture(scope="module")
def fer_dirs(tmp_path_factory):
    """The same fake FER2013 as the original CSV and as the folder layout."""
    root = tmp_path_factory.mktemp("fer")
    rows = []
    for usage, n, seed in (("Training", 140, 0), ("PublicTest", 35, 1), ("PrivateTest", 35, 2)):
        x, y = _fake_faces(n, seed)
        sub = root / "folders" / ("train" if usage == "Training" else "test")
        for i, (img, label) in enumerate(zip(x, y)):
            d = sub / FOLDER_NAMES[label]
            d.mkdir(parents=True, exist_ok=True)
            name = f"{usage}_{i:05d}.png" if usage != "Training" else f"{i:05d}.png"
            cv2.imwrite(str(d / name), img)
            rows.append(f"{label},{' '.join(map(str, img.ravel()))},{usage}")
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def ravdess_dir(tmp_path_factory):
    """RAVDESS-named speech for actors of folds 0 (2), 1 (3) and 2 (10, 11): WAV at 48 kHz stereo and FLAC."""
    root = tmp_path_factory.mktemp("ravdess")
    for actor in (2, 3, 10, 11):
        d = root / f"Actor_{actor:02d}"
        d.mkdir()
        for emo in range(1, 9):
            for rep in (1, 2):
                y = speech_like(1.2, 48000, seed=actor * 100 + emo * 10 + rep) * (0.3 + 0.08 * emo)
                name = f"03-01-{emo:02d}-01-01-{rep:02d}-{actor:02d}"
                if rep == 1:
                    sf.write(d / f"{name}.wav", np.stack([y, y], axis=1), 48000)
                else:
                    sf.write(d / f"{name}.flac", y, 48000)
    return root


def test_fer_loaders_agree_on_both_layouts(fer_dirs):
    from training.fer2013 import load_fer2013
    for split in ("Training", "PublicTest", "PrivateTest"):
        xc, yc = load_fer2013(fer_dirs / "fer2013.csv", split)
        xf, yf = load_fer2013(fer_dirs / "folders", split)
        order_c, order_f = np.lexsort((xc.reshape(len(xc), -1).sum(1), yc)), np.lexsort((xf.reshape(len(xf), -1).sum(1), yf))
        assert xc.shape == xf.shape and xc.dtype == np.uint8
        np.testing.assert_array_equal(np.sort(yc), np.sort(yf))
        np.testing.assert_array_equal(xc[order_c], xf[order_f])
    with pytest.raises(ValueError, match="unknown FER2013 split"):
        load_fer2013(fer_dirs / "fer2013.csv", "Validation")


def test_train_resume_and_evaluate_visual(fer_dirs, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "visual", "--data", str(fer_dirs / "folders"), "--out", str(run), "--batch-size", "32"]
    # A run out of time stops after the two epochs that compile and time it, and keeps its model.
    assert main(args + ["--epochs", "3", "--time-limit", "0.000001"]) == 0
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert "time limit" in (run / "train.log").read_text() and (run / "model.keras").exists()
    # An interrupted run resumes from its checkpoint instead of starting again.
    assert main(args + ["--epochs", "3", "--resume"]) == 0
    assert "resumed from" in (run / "train.log").read_text()
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epoch"] == 3
    card = json.loads((run / "model.keras.json").read_text())
    assert card["labels"] == list(EMOTIONS) and card["training"]["test_split"] == "PrivateTest"
    assert "flip_accuracy" in card["metrics"]
    # The card holds what the run's report measured.
    assert card["metrics"]["accuracy"] == pytest.approx(
        json.loads((run / "report" / "report.json").read_text())["sections"]["PrivateTest"]["accuracy"])
    for f in ("report.md", "report.json", "confusion_privatetest.png"):
        assert (run / "report" / f).exists(), f
    out = tmp_path / "eval"
    assert main(["evaluate", "visual", "--model", str(run / "model.keras"), "--data", str(fer_dirs / "fer2013.csv"),
                 "--out", str(out), "--flip"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["sections"]["PrivateTest"]["n"] == 35 and "PrivateTest + flip averaging" in rep["sections"]
    assert rep["sections"]["PrivateTest"]["accuracy"] == pytest.approx(card["metrics"]["accuracy"])
    assert "accuracy" in capsys.readouterr().out
    # A finished run is not overwritten unasked, and --force replaces only a run folder.
    assert main(args + ["--epochs", "1"]) == 5
    assert "already there" in capsys.readouterr().err
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    assert main(["train", "visual", "--data", str(fer_dirs / "folders"), "--out", str(keep), "--force"]) == 5
    assert "not a training run folder" in capsys.readouterr().err and (keep / "notes.txt").exists()
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epoch"] == 3


def test_fine_tune_with_face_sets_holding_one_out(fer_dirs, tmp_path, capsys):
    """Fine-tuning from a model on FER2013 plus face sets, with video-like augmentation,
    reports its accuracy on the set it never saw."""
    import shutil

    import cv2

    from tests.media import FIXTURES
    faces = tmp_path / "faces"
    face = cv2.imread(str(FIXTURES / "face.png"))
    for set_name in ("alpha", "beta"):
        rows = ["file,label,subject"]
        for label in ("happy", "sad", "neutral"):
            (faces / set_name / label).mkdir(parents=True)
            for subject in range(6, 10):  # alpha8 and alpha9 fall in the selection fifth
                img = cv2.convertScaleAbs(face, alpha=0.5 + 0.1 * subject)
                cv2.imwrite(str(faces / set_name / label / f"s{subject}.jpg"), img)
                rows.append(f"{label}/s{subject}.jpg,{label},{set_name}{subject}")
        (faces / set_name / "manifest.csv").write_text("\n".join(rows) + "\n")
    base = tmp_path / "base"
    assert main(["train", "visual", "--data", str(fer_dirs / "folders"), "--out", str(base), "--epochs", "1",
                 "--batch-size", "16"]) == 0
    run = tmp_path / "ft"
    assert main(["train", "visual", "--data", str(fer_dirs / "folders"), "--out", str(run), "--epochs", "1",
                 "--batch-size", "16", "--init", str(base / "model.keras"), "--faces", str(faces),
                 "--hold-out", "beta", "--augment", "video", "--label-smoothing", "0.1", "--subtle",
                 "--teacher", str(base / "model.keras"), "--distill", "0.3"]) == 0
    assert "held-out beta: accuracy" in capsys.readouterr().out
    held = json.loads((run / "held_out.json").read_text())
    assert set(held) == {"beta"} and held["beta"]["n"] == 12
    card = json.loads((run / "model.keras.json").read_text())
    assert "alpha" in card["training"]["dataset"] and "beta" not in card["training"]["dataset"]
    assert "beta" in card["training"]["test_split"]
    log = (run / "train.log").read_text()
    assert "face set alpha: 12 photos" in log and "6 for training, 6 for selection" in log
    assert "val_faces_accuracy" in log
    # Training subjects alpha6 and alpha7 each have a happy and a sad photo to blend with their neutral one.
    assert "face set alpha: 4 expressions blended" in log and "subtle expressions" in card["training"]["augmentation"]
    # Distilled from the base model: its checksum is on the card.
    assert card["training"]["distilled_from"] == {
        "teachers": [{"file": str(base / "model.keras"), "sha256": sha256_of(base / "model.keras")}], "weight": 0.3}
    assert "distillation: targets 0.70 labels + 0.30" in log
    # A held-out set that is not there is a usage error.
    shutil.rmtree(run)
    assert main(["train", "visual", "--data", str(fer_dirs / "folders"), "--out", str(run), "--epochs", "1",
                 "--faces", str(faces), "--hold-out", "gamma"]) == 2
    assert "gamma" in capsys.readouterr().err
    # So is a teacher that is not there, or a weight outside [0, 1].
    for i, bad in enumerate((["--teacher", str(tmp_path / "none.keras")],
                             ["--teacher", str(base / "model.keras"), "--distill", "2"])):
        assert main(["train", "visual", "--data", str(fer_dirs / "folders"), "--out", str(tmp_path / f"bad{i}"),
                     "--epochs", "1"] + bad) == 2
    err = capsys.readouterr().err
    assert "none.keras: no such model file" in err and "--distill 2.0: must be between 0 and 1" in err


def test_video_augmentation_keeps_shape_range_and_varies():
    from training.augment import augment_batch
    x = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    y = augment_batch(x, np.random.default_rng(1), "video")
    assert y.shape == (64, 48, 48, 1) and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 255
    changed = np.abs(y[..., 0] - x).mean(axis=(1, 2))
    assert (changed > 1).mean() > 0.9  # nearly every face is moved or degraded somehow
    np.testing.assert_array_equal(y, augment_batch(x, np.random.default_rng(1), "video"))  # seeded
    np.testing.assert_array_equal(augment_batch(x, np.random.default_rng(1), "none")[..., 0], x)


def test_subtle_expressions_blend_each_face_with_its_own_neutral_face():
    from training.augment import subtle_expressions
    rng = np.random.default_rng(0)
    calm = rng.integers(0, 200, (2, 48, 48)).astype(np.uint8)  # the neutral faces of subjects a and b
    faces = np.stack([calm[0], calm[0] + 40, calm[1], calm[1] + 50, rng.integers(0, 255, (48, 48))]).astype(np.uint8)
    faces[1, 30:33] = 230  # a's smile, b's frown: the expressions differ from the neutral faces locally
    faces[3, 10:13] = 30
    labels = np.array([6, 3, 6, 4, 0])
    subjects = np.array(["a", "a", "b", "b", ""])  # the last has nobody to be paired with
    blends, kept = subtle_expressions(faces, labels, subjects, neutral=6, weights=(0.25, 0.75))
    assert blends.shape == (2, 2, 48, 48) and blends.dtype == np.uint8
    np.testing.assert_array_equal(kept, [3, 4])  # expressions keep their labels; neutral faces are not blended
    expected = 0.25 * faces[1].astype(float) + 0.75 * calm[0]
    assert np.abs(blends[0, 0] - expected).max() <= 0.5 + 1e-9  # paired with a's own neutral face
    # A subject whose neutral photo shows another pose or framing is not blended.
    other = faces.copy()
    other[2] = rng.integers(0, 255, (48, 48))
    np.testing.assert_array_equal(subtle_expressions(other, labels, subjects, neutral=6)[1], [3])


def test_basic_augmentation_only_moves_the_face():
    from training.augment import geometric
    # A symmetric blob stays a blob of the same brightness: no degradation is applied.
    yy, xx = np.mgrid[:48, :48]
    face = (255 * np.exp(-((yy - 23.5) ** 2 + (xx - 23.5) ** 2) / 200)).astype(np.uint8)
    moved = geometric(face, np.random.default_rng(3), rotate=10, shift=0.1, zoom=0.1)
    assert moved.shape == face.shape and moved.dtype == np.uint8
    assert abs(int(moved.max()) - int(face.max())) <= 3 and not np.array_equal(moved, face)


def test_face_batches_are_seeded_per_batch_and_cover_the_data():
    from training.augment import FaceBatches
    x = np.random.default_rng(0).integers(0, 256, (50, 48, 48), dtype=np.uint8)
    y = np.arange(50) % 7
    batches = FaceBatches(x, y, batch_size=16, seed=1, epoch=0, augment="basic", num_classes=7, workers=1)
    assert len(batches) == 4
    labels = np.concatenate([batches[i][1].argmax(1) for i in range(len(batches))])
    assert sorted(labels) == sorted(y)  # every face once per epoch, one-hot labels
    again = FaceBatches(x, y, batch_size=16, seed=1, epoch=0, augment="basic", workers=1)
    np.testing.assert_array_equal(batches[2][0], again[2][0])  # the same batch, whoever builds it
    assert not np.array_equal(batches[2][0], FaceBatches(x, y, 16, 1, epoch=1, workers=1)[2][0])


def test_face_batches_give_target_distributions_when_asked():
    from training.augment import FaceBatches
    x = np.zeros((10, 48, 48), np.uint8)
    targets = np.random.default_rng(0).dirichlet(np.ones(7), 10).astype(np.float32)
    batches = FaceBatches(x, np.arange(10) % 7, batch_size=4, seed=1, epoch=0, num_classes=7, workers=1,
                          targets=targets)
    got = np.concatenate([batches[i][1] for i in range(len(batches))])
    order = np.concatenate([batches.order[i * 4:(i + 1) * 4] for i in range(len(batches))])
    np.testing.assert_allclose(got, targets[order])


def test_fit_stops_at_the_deadline_and_resumes(tmp_path):
    import logging
    import time

    import keras

    from training.augment import FaceBatches
    from training.loop import fit_resumable

    def build():
        model = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(7, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    x, y = _fake_faces(32, 0)
    batches = lambda epoch: FaceBatches(x, y, batch_size=16, seed=0, epoch=epoch, workers=1)  # noqa: E731
    log = logging.getLogger("test_deadline")
    # Past the deadline from the start: the first epoch (which compiles) and a second one
    # (which times an epoch) run, then the run stops early rather than overrunning.
    val = x[..., None].astype("float32"), y
    _, state = fit_resumable(build, batches, val, tmp_path, epochs=5, patience=5, resume=False, log=log,
                             deadline=time.time())
    assert state.epoch == 2
    _, state = fit_resumable(build, batches, val, tmp_path, epochs=5, patience=5, resume=True, log=log)
    assert state.epoch == 5


def test_inception_resnet_v2_builds_trains_saves_loads(tmp_path):
    import keras

    from training.visual_models import inception_resnet_v2
    model = inception_resnet_v2(75)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=False)
    x, y = _fake_faces(4, 0)
    model.train_on_batch(x[..., None].astype("float32"), y)
    path = tmp_path / "irv2.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    p = loaded.predict(x[..., None].astype("float32"), verbose=0)
    assert p.shape == (4, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="at least 75"):
        inception_resnet_v2(48)


def test_imagenet_weights_are_never_downloaded(fer_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main(["train", "visual", "--data", str(fer_dirs / "folders"), "--out", str(tmp_path / "r"),
                 "--backbone", "inception_resnet_v2", "--weights", "imagenet", "--epochs", "1"])
    assert code != 0 and "never downloads" in capsys.readouterr().err


def test_speech_corpus_names():
    from training.speech_datasets import parse_ravdess_name, ravdess_fold
    f = parse_ravdess_name("03-01-05-02-01-02-16.wav")
    assert f["emotion"] == "angry" and f["actor"] == 16 and ravdess_fold(16) == 0
    assert parse_ravdess_name("notes.wav") is None and parse_ravdess_name("03-01-09-01-01-01-01.wav") is None


def test_tess_loader(tmp_path):
    from training.speech_datasets import load_tess
    for name in ("OAF_back_angry.wav", "YAF_dog_ps.wav", "YAF_dog_neutral.flac", "README.wav"):
        sf.write(tmp_path / name, speech_like(0.3), 16000)
    items = sorted((u.path.name, u.label, u.speaker) for u in load_tess(tmp_path))
    assert items == [("OAF_back_angry.wav", "angry", "tess-OAF"), ("YAF_dog_neutral.flac", "neutral", "tess-YAF"),
                     ("YAF_dog_ps.wav", "surprise", "tess-YAF")]


def test_train_and_evaluate_audio(ravdess_dir, tmp_path, capsys):
    run = tmp_path / "audio"
    args = ["train", "audio", "--data", str(ravdess_dir), "--out", str(run), "--epochs", "2"]
    assert main(args) == 0
    cache = list((run / "cache").glob("speech-features-*.npy"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    card = json.loads((run / "model.keras.json").read_text())
    assert card["training"]["test_actors"] == [2, 5, 14, 15, 16] and card["features"]["n_mfcc"] == 40
    assert {"accuracy_8class", "accuracy_7class", "uar", "macro_f1", "no_evidence"} <= set(card["metrics"])
    assert card["features"]["level_dbfs"] == -20.0 and card["metrics"]["scored_as"] == "analyze scores a file"
    out = tmp_path / "eval"
    assert main(["evaluate", "audio", "--model", str(run / "model.keras"), "--data", str(ravdess_dir),
                 "--out", str(out)]) == 0
    rep = json.loads((out / "ravdess" / "report.json").read_text())
    assert rep["sections"]["8-class"]["n"] == 16 and "7-class (calm = neutral)" in rep["sections"]
    assert (out / "ravdess" / "confusion_8_class.png").exists()
    # evaluate and training's own test take the same path, so they agree
    assert rep["sections"]["8-class"]["accuracy"] == pytest.approx(card["metrics"]["accuracy_8class"])
    # the model plugs into analyze
    from multimodal.audio import AudioModel
    p = AudioModel(run / "model.keras").predict_proba([speech_like(3.0), speech_like(2.0)])
    assert p.shape == (2, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert cache[0].stat().st_mtime_ns == stamp  # evaluation did not touch the training cache


def test_training_rows_cut_the_windows_a_copy_would(tmp_path):
    """Reading the training rows from the memory-mapped cache gives the windows copying them did."""
    from training.train_audio import TrainingRows, random_windows
    feats = np.random.default_rng(0).standard_normal((9, 3, 40, 5)).astype(np.float16)
    np.save(tmp_path / "cache.npy", feats)
    mapped = np.load(tmp_path / "cache.npy", mmap_mode="r")
    tr = np.array([0, 2, 3, 7])
    rows, copied = TrainingRows(mapped, tr), feats[tr].reshape(-1, 40, 5)
    assert len(rows) == len(copied) == 12 and rows.shape == copied.shape
    for i in range(len(copied)):
        np.testing.assert_array_equal(rows[i, :], copied[i])
    np.testing.assert_array_equal(random_windows(rows, 10, np.random.default_rng(1)),
                                  random_windows(copied, 10, np.random.default_rng(1)))
    drawn = np.array([5, 5, 0, 11, 3])
    np.testing.assert_array_equal(random_windows(rows, 10, np.random.default_rng(2), drawn),
                                  random_windows(copied[drawn], 10, np.random.default_rng(2)))


def test_feature_cache_is_reused(ravdess_dir, tmp_path, monkeypatch):
    from multimodal.config import AudioFeatureConfig
    from training import train_audio as ta
    from training.speech_datasets import load_speech_corpus
    items = load_speech_corpus(ravdess_dir)[:4]
    aug = ta.AugmentConfig(copies=1)
    first = ta.compute_features(items, AudioFeatureConfig(), aug, 0, tmp_path)
    # the same recordings copied elsewhere (new paths and times) find the cache
    copy = tmp_path / "copy" / "Actor_01"
    copy.mkdir(parents=True)
    for u in items:
        (copy / u.path.name).write_bytes(u.path.read_bytes())
    copied = [dataclasses.replace(u, path=copy / u.path.name) for u in items]
    with monkeypatch.context() as m:
        m.setattr("multimodal.audio.load_audio", lambda *a, **k: pytest.fail("recomputed"))
        np.testing.assert_array_equal(first, ta.compute_features(items, AudioFeatureConfig(), aug, 0, tmp_path))
        np.testing.assert_array_equal(first, ta.compute_features(copied, AudioFeatureConfig(), aug, 0, tmp_path))
    assert first.shape[:2] == (4, 2)
    # a recording whose contents change does not
    sf.write(copy / items[0].path.name, np.zeros(16000, np.float32), 16000)
    ta.compute_features(copied, AudioFeatureConfig(), aug, 0, tmp_path)
    assert len(list(tmp_path.glob("speech-features-*.npy"))) == 2


def test_compare_fusion_on_pseudo_pairs(fer_dirs, ravdess_dir, tiny_models, tmp_path, capsys):
    out = tmp_path / "cf"
    code = main(["compare-fusion", "--fer", str(fer_dirs / "folders"), "--ravdess", str(ravdess_dir),
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"]),
                 "--out", str(out), "--bootstrap", "50"])
    assert code == 0
    printed = capsys.readouterr().out
    from multimodal.fusion import STRATEGIES
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["results"]) == {"visual only", "audio only", *STRATEGIES, "product as shipped"}
    assert rep["results"]["product as shipped"]["parameters"] == json.loads(
        (MODELS_DIR / "fusion.json").read_text())["strategies"]["product"]
    assert rep["n_test"] == 16 and rep["n_validation"] == 16
    for name, m in rep["results"].items():
        assert name in printed
        cm = np.array(m["confusion_matrix"])
        assert cm.sum() == 16 and np.trace(cm) / cm.sum() == pytest.approx(m["accuracy"])
    # 16 items resampled 50 times: some interval must have width.
    assert any(m["ci95"]["accuracy"][1] > m["ci95"]["accuracy"][0] for m in rep["results"].values())
    assert "independent given the label" in (out / "report.md").read_text()
    assert (out / "accuracy.png").exists() and (out / "confusion_stacking.png").exists()
    # Same seed, same numbers.
    main(["compare-fusion", "--fer", str(fer_dirs / "folders"), "--ravdess", str(ravdess_dir),
          "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"]),
          "--out", str(tmp_path / "cf2"), "--bootstrap", "50"])
    again = json.loads((tmp_path / "cf2" / "report.json").read_text())
    assert again["results"]["stacking"]["ci95"] == rep["results"]["stacking"]["ci95"]


def test_compare_fusion_pairs_voices_of_several_corpora(fer_dirs, ravdess_dir, tiny_models, tmp_path):
    """CREMA-D actors 1005 (fold 0) and 1001 (fold 1) join RAVDESS's; TESS, without folds, never pairs."""
    cremad = tmp_path / "cremad" / "AudioWAV"
    cremad.mkdir(parents=True)
    for actor in (1001, 1005):
        for i, emo in enumerate(("ANG", "SAD", "NEU")):
            sf.write(cremad / f"{actor}_IEO_{emo}_HI.wav", speech_like(1.0, seed=actor + i), 16000)
    (tmp_path / "tess" / "OAF_angry").mkdir(parents=True)
    sf.write(tmp_path / "tess" / "OAF_angry" / "OAF_back_angry.wav", speech_like(1.0), 16000)
    out = tmp_path / "cf"
    assert main(["compare-fusion", "--fer", str(fer_dirs / "folders"), "--speech", str(ravdess_dir),
                 str(tmp_path / "cremad"), str(tmp_path / "tess"), "--visual-model", str(tiny_models["visual"]),
                 "--audio-model", str(tiny_models["audio"]), "--out", str(out), "--bootstrap", "20"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_test"] == 16 + 3 and rep["n_validation"] == 16 + 3
    assert "CREMA-D 3" in rep["test"] and "RAVDESS 16" in rep["test"] and "TESS" not in rep["test"]


def test_compare_fusion_pairs_the_voices_the_audio_model_never_heard(fer_dirs, ravdess_dir, tiny_models, tmp_path,
                                                                    capsys):
    """A run that tested on fold 1 and stopped on fold 2 is paired (and evaluated) with those speakers."""
    import shutil

    from multimodal.models import read_card, write_card
    card = read_card(tiny_models["audio"], "audio").data
    fields = {k: v for k, v in card.items() if k not in ("kind", "labels", "sha256", "file", "size_bytes")}
    for name, training in (("fold1", {"test_fold": 1, "validation_fold": 2}),
                           ("loco", {"held_out_corpus": "cremad", "validation_fold": 0}),
                           ("noval", {"test_fold": 2, "validation_fold": None, "no_validation": True})):
        model = tmp_path / f"{name}.keras"
        shutil.copy(tiny_models["audio"], model)
        write_card(model, "audio", card["labels"], **{**fields, "training": training})
    out = tmp_path / "cf"
    assert main(["compare-fusion", "--fer", str(fer_dirs / "folders"), "--speech", str(ravdess_dir),
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tmp_path / "fold1.keras"),
                 "--out", str(out), "--bootstrap", "20"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_test"] == 16 and rep["n_validation"] == 32  # actor 3; actors 10 and 11
    assert rep["test"].startswith("fold 1 voices") and rep["validation"].startswith("fold 2 voices")
    assert any("fold 2 speakers for early stopping" in n for n in rep["notes"])
    # evaluate audio, unasked, also scores the model on its own test fold
    capsys.readouterr()
    assert main(["evaluate", "audio", "--model", str(tmp_path / "fold1.keras"), "--data", str(ravdess_dir),
                 "--out", str(tmp_path / "eval")]) == 0
    assert capsys.readouterr().out.startswith("fold 1, ravdess")
    assert json.loads((tmp_path / "eval" / "ravdess" / "report.json").read_text())["sections"]["8-class"]["n"] == 16
    # a run that held out a whole corpus heard every fold's speakers of the others: refused, in one line
    assert main(["compare-fusion", "--fer", str(fer_dirs / "folders"), "--speech", str(ravdess_dir),
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tmp_path / "loco.keras"),
                 "--out", str(tmp_path / "cf2"), "--bootstrap", "20"]) == 3
    err = capsys.readouterr().err.strip()
    assert "held out folds of speakers" in err and len(err.splitlines()) == 1
    # real clips split by the same folds; clips listed in a manifest are other people, fine for any model
    from training.compare_fusion import clip_labels
    clips = tmp_path / "clips"
    clips.mkdir()
    for actor in (2, 3, 10):
        (clips / f"01-01-03-01-01-01-{actor:02d}.mp4").touch()
    split = {p.name[-6:-4]: s for p, _, s in clip_labels(clips, 0, tmp_path / "fold1.keras")}
    assert split == {"03": "test", "10": "validation"}
    # a model that heard every fold but its test fold: that fold's speakers, alternately, fit and test
    for actor in (11, 12):
        (clips / f"01-01-03-01-01-01-{actor:02d}.mp4").touch()
    split = {p.name[-6:-4]: s for p, _, s in clip_labels(clips, 0, tmp_path / "noval.keras")}
    assert split == {"10": "validation", "11": "test", "12": "validation"}
    capsys.readouterr()
    assert main(["compare-fusion", "--fer", str(fer_dirs / "folders"), "--speech", str(ravdess_dir),
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tmp_path / "noval.keras"),
                 "--out", str(tmp_path / "cf3"), "--bootstrap", "20"]) == 0
    rep = json.loads((tmp_path / "cf3" / "report.json").read_text())
    assert rep["n_test"] == 16 and rep["n_validation"] == 16  # actor 11; actor 10
    assert rep["test"].startswith("fold 2 voices, the other half")
    assert rep["validation"].startswith("fold 2 voices, the fitting half")
    assert any("every other one fits" in n for n in rep["notes"])
    (tmp_path / "manifest.csv").write_text("path,label\nclips/01-01-03-01-01-01-02.mp4,happy\n")
    assert len(clip_labels(tmp_path / "manifest.csv", 0, tmp_path / "loco.keras")) == 1


def test_compare_fusion_on_never_heard_pairs(ravdess_dir, tiny_models, tmp_path, capsys):
    """Voices scored by the leave-one-corpus-out run that never heard them, faces from RAF-DB, cross-fitted."""
    import shutil

    from multimodal.models import read_card, write_card
    rafdb = tmp_path / "rafdb"
    (rafdb / "EmoLabel").mkdir(parents=True)
    (rafdb / "Image" / "aligned").mkdir(parents=True)
    lines = []
    for i in range(1, 141):  # 20 faces of each class
        cv2.imwrite(str(rafdb / "Image" / "aligned" / f"train_{i:05d}_aligned.jpg"),
                    np.random.default_rng(i).integers(0, 255, (100, 100, 3), dtype=np.uint8))
        lines.append(f"train_{i:05d}.jpg {(i - 1) % 7 + 1}")
    (rafdb / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    cremad = tmp_path / "cremad" / "AudioWAV"
    cremad.mkdir(parents=True)
    for actor in (1001, 1005):
        for i, emo in enumerate(("ANG", "SAD", "NEU")):
            sf.write(cremad / f"{actor}_IEO_{emo}_HI.wav", speech_like(1.0, seed=actor + i), 16000)
    card = read_card(tiny_models["audio"], "audio").data
    fields = {k: v for k, v in card.items() if k not in ("kind", "labels", "sha256", "file", "size_bytes")}
    for corpus in ("ravdess", "cremad"):
        model = tmp_path / "runs" / f"loco_{corpus}" / "model.keras"
        model.parent.mkdir(parents=True)
        shutil.copy(tiny_models["audio"], model)
        write_card(model, "audio", card["labels"], **{**fields, "training": {"held_out_corpus": corpus}})
    args = ["compare-fusion", "--loco-runs", str(tmp_path / "runs"), "--rafdb", str(rafdb), "--speech",
            str(ravdess_dir), str(tmp_path / "cremad"), "--visual-model", str(tiny_models["visual"]),
            "--out", str(tmp_path / "cf"), "--bootstrap", "20"]
    assert main(args) == 0
    rep = json.loads((tmp_path / "cf" / "report.json").read_text())
    assert rep["n_test"] == 64 + 6  # every pair is scored once, by strategies fitted on the other corpus
    assert "CREMA-D 6" in rep["test"] and "RAVDESS 64" in rep["test"]
    assert any("Cross-fitted by corpus" in n for n in rep["notes"])

    # a visual model that trained on RAF-DB knows those faces: refused in one line
    visual = tmp_path / "visual_rafdb.keras"
    shutil.copy(tiny_models["visual"], visual)
    vcard = read_card(tiny_models["visual"], "visual").data
    write_card(visual, "visual", vcard["labels"],
               **{**{k: v for k, v in vcard.items() if k not in ("kind", "labels", "sha256", "file", "size_bytes")},
                  "training": {"dataset": "FER2013 + RAF-DB train"}})
    capsys.readouterr()
    assert main(args[:-6] + ["--visual-model", str(visual), "--out", str(tmp_path / "cf2"), "--bootstrap", "20"]) == 3
    err = capsys.readouterr().err.strip()
    assert "trained on RAF-DB" in err and len(err.splitlines()) == 1


def test_cross_fitting_scores_each_group_with_strategies_fitted_on_the_others():
    from multimodal.fusion import make_strategy
    from training.compare_fusion import PairedPredictions, score_cross_fitted
    rng = np.random.default_rng(0)

    def group(n, audio_right):
        y = rng.integers(0, 7, n)
        visual = np.full((n, 7), 0.1)
        visual[np.arange(n), y] = 0.4
        audio = np.full((n, 7), 0.02)
        audio[np.arange(n), y if audio_right else (y + 1) % 7] = 0.88
        return PairedPredictions(visual / visual.sum(1, keepdims=True), audio, y, "")

    a, b = group(60, audio_right=True), group(40, audio_right=False)
    scored = score_cross_fitted([a, b], n_boot=10, seed=0)
    fitted_on_a = make_strategy("product").fit(a.visual, a.audio, a.y)
    np.testing.assert_allclose(scored["probs"]["product"][60:], fitted_on_a.predict_proba(b.visual, b.audio))
    # a voice right in one corpus and wrong in the other misleads every fit that saw only the first
    assert scored["results"]["product"]["accuracy"] < 0.7
    assert scored["n_test"] == 100 and scored["fitted"]["product"] == make_strategy("product").fit(
        np.concatenate([a.visual, b.visual]), np.concatenate([a.audio, b.audio]), np.concatenate([a.y, b.y])
    ).get_state()


def test_compare_fusion_on_real_clips(tiny_models, tmp_path):
    from tests.media import write_video
    clips = tmp_path / "clips"
    clips.mkdir()
    for actor in (2, 3):
        for emo in (3, 4):
            write_video(clips / f"01-01-{emo:02d}-01-01-01-{actor:02d}.mp4", 2.0)
    out = tmp_path / "cf"
    assert main(["compare-fusion", "--clips", str(clips), "--visual-model", str(tiny_models["visual"]),
                 "--audio-model", str(tiny_models["audio"]), "--out", str(out), "--bootstrap", "20"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_test"] == 2 and rep["n_validation"] == 2


def test_compare_fusion_needs_data(tmp_path, capsys):
    assert main(["compare-fusion", "--out", str(tmp_path)]) == 3
    assert "needs --clips" in capsys.readouterr().err


@pytest.mark.data
def test_shared_datasets_load_as_documented():
    from training.fer2013 import load_fer2013
    from training.speech_datasets import load_ravdess
    x, y = load_fer2013(SHARED_DATA / "fer2013", "PrivateTest")
    assert x.shape == (3589, 48, 48) and np.bincount(y, minlength=7)[EMOTIONS.index("disgust")] == 55
    items = load_ravdess(SHARED_DATA / "ravdess_speech")
    assert len(items) == 1440
    assert sorted({int(u.speaker[-2:]) for u in items if u.fold == 0}) == [2, 5, 14, 15, 16]


def test_ship_writes_the_model_and_its_checked_tflite_export(tiny_models, tmp_path):
    import shutil

    from multimodal.models import card_path, read_card, write_card
    from training.ship import ship
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_models["visual"], run / "model.keras")
    write_card(run / "model.keras", "visual", EMOTIONS, input={"shape": [48, 48, 1]}, metrics={"accuracy": 0.5})
    (run / "report" / "fer2013").mkdir(parents=True)
    (run / "report" / "fer2013" / "report.md").write_text("# new\n")
    target = tmp_path / "models" / "visual_default.keras"
    kept = tmp_path / "models" / "reports" / "visual_default" / "cross_dataset.md"
    kept.parent.mkdir(parents=True)
    kept.write_text("# written by hand\n")
    message = ship(run, target, "accuracy")
    assert message.startswith("shipped visual_default.keras") and "same top class" in message
    assert kept.read_text() == "# written by hand\n"  # the run's report joins, nothing else is removed
    assert (kept.parent / "fer2013" / "report.md").read_text() == "# new\n"
    assert read_card(target, "visual").data["report"] == "reports/visual_default/fer2013/report.md"
    lite = read_card(target.with_suffix(".tflite"), "visual")
    assert lite.data["exported_from"]["sha256"] == read_card(target, "visual").sha256
    assert lite.data["metrics"] == {"accuracy": 0.5}
    # A run that scores no better is not shipped, and neither file changes.
    before = target.with_suffix(".tflite").read_bytes()
    assert ship(run, target, "accuracy").startswith("kept")
    assert target.with_suffix(".tflite").read_bytes() == before and card_path(target).exists()
