"""RAF-DB and FER+ loaders and the GPU-machine training script, on tiny generated data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from multimodal.config import EMOTIONS
from tests.conftest import SHARED_DATA
from training.device_visual import decode_faces, encode_faces, main, read_pack, write_pack
from training.ferplus import VOTE_COLUMNS, load_ferplus, majority_labels, vote_distribution
from training.rafdb import RAFDB_CODES, load_rafdb, rafdb_validation, read_rafdb_labels

ROOT = Path(__file__).resolve().parent.parent


def _faces(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 48, 48)).astype(np.uint8)


def _votes(n: int, seed: int) -> np.ndarray:
    """Ten votes per face; the last face is voted 'not a face'."""
    rng = np.random.default_rng(seed)
    votes = np.zeros((n, len(VOTE_COLUMNS)), int)
    for i in range(n):
        np.add.at(votes[i], rng.integers(0, 7, 10), 1)
    votes[-1] = 0
    votes[-1, VOTE_COLUMNS.index("NF")] = 10
    return votes


@pytest.fixture
def rafdb_dir(tmp_path):
    root = tmp_path / "RAF-DB" / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    lines = []
    for part, n in (("train", 14), ("test", 7)):
        for i in range(1, n + 1):
            name = f"{part}_{i:05d}"
            img = np.full((100, 100, 3), 10 * i, np.uint8)
            cv2.imwrite(str(root / "Image" / "aligned" / f"{name}_aligned.jpg"), img)
            lines.append(f"{name}.jpg {(i - 1) % 7 + 1}")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def test_rafdb_loader_reads_the_original_layout(rafdb_dir, tmp_path):
    x, y, names = load_rafdb(rafdb_dir, "train", size=48)
    assert x.shape == (14, 48, 48) and x.dtype == np.uint8
    assert names[0] == "train_00001.jpg"
    # codes 1..7 are surprise, fear, disgust, happy, sad, angry, neutral
    assert [EMOTIONS[i] for i in y[:7]] == [RAFDB_CODES[c] for c in range(1, 8)]
    assert abs(int(x[2].mean()) - 30) <= 2  # the third image, grey level 30, made grey
    xt, yt, _ = load_rafdb(rafdb_dir, "test", size=64, cache_dir=tmp_path / "cache")
    assert xt.shape == (7, 64, 64)
    again = load_rafdb(rafdb_dir, "test", size=64, cache_dir=tmp_path / "cache")  # from the cache
    assert np.array_equal(again[0], xt) and again[2] == [f"test_{i:05d}.jpg" for i in range(1, 8)]


def test_rafdb_loader_errors(tmp_path, rafdb_dir):
    with pytest.raises(FileNotFoundError, match="list_patition_label"):
        read_rafdb_labels(tmp_path, "train")
    (rafdb_dir / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(ValueError, match=":1: expected"):
        read_rafdb_labels(rafdb_dir, "train")


def test_rafdb_validation_carve_is_fixed_and_order_free():
    names = [f"train_{i:05d}.jpg" for i in range(1, 2001)]
    val = rafdb_validation(names)
    assert 0.12 < val.mean() < 0.18
    shuffled = names[::-1]
    assert np.array_equal(rafdb_validation(shuffled), val[::-1])


def _write_pair(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """fer2013.csv and fer2013new.csv, row-aligned, and ferplus.csv over the folder layout."""
    rows, new_rows, plus_rows, truth = [], [], [], {}
    for usage, n, seed in (("Training", 12, 0), ("PublicTest", 8, 1), ("PrivateTest", 8, 2)):
        x, votes, y = _faces(n, seed), _votes(n, seed), np.arange(n) % 7
        truth[usage] = (x, votes, y)
        for i in range(n):
            rows.append(f"{y[i]},{' '.join(map(str, x[i].ravel()))},{usage}")
            new_rows.append(f"{usage},fer{len(new_rows):07d}.png," + ",".join(map(str, votes[i])))
            sub = "train" if usage == "Training" else "test"
            name = f"{sub}/{EMOTIONS[y[i]]}/{usage}_{i}.png"
            (root / "folders" / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "folders" / name), x[i])
            plus_rows.append(f"{name},{usage},{len(plus_rows)},fer.png," + ",".join(map(str, votes[i])) + ",0")
    (root / "csv").mkdir()
    (root / "csv" / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    (root / "csv" / "fer2013new.csv").write_text("Usage,Image name," + ",".join(VOTE_COLUMNS) + "\n"
                                                 + "\n".join(new_rows) + "\n")
    header = "file,usage,fer2013_row,ferplus_image," + ",".join(VOTE_COLUMNS) + ",rms_pixel_difference\n"
    (root / "folders" / "ferplus.csv").write_text(header + "\n".join(plus_rows) + "\n")
    return truth


def test_ferplus_both_forms_give_the_same_votes(tmp_path):
    truth = _write_pair(tmp_path)
    for split, (x, votes, y) in truth.items():
        for root in (tmp_path / "csv", tmp_path / "csv" / "fer2013.csv", tmp_path / "folders"):
            fx, fv, fy = load_ferplus(root, split)
            assert np.array_equal(fv, votes) and np.array_equal(fy, y)
            assert np.array_equal(fx, x)  # PNG is lossless
    with pytest.raises(FileNotFoundError, match="no FER\\+ votes"):
        load_ferplus(tmp_path, "Training")


def test_vote_distribution_and_majority():
    votes = np.zeros((3, len(VOTE_COLUMNS)))
    votes[0, VOTE_COLUMNS.index("sadness")] = 6
    votes[0, VOTE_COLUMNS.index("neutral")] = 3
    votes[0, VOTE_COLUMNS.index("contempt")] = 1
    votes[1, VOTE_COLUMNS.index("unknown")] = 7  # most raters could not tell: left out
    votes[1, VOTE_COLUMNS.index("happiness")] = 3
    soft, kept = vote_distribution(votes)  # the third has no votes at all
    assert kept.tolist() == [True, False, False]
    assert soft[0, EMOTIONS.index("sad")] == pytest.approx(6 / 9)
    assert soft[0, EMOTIONS.index("neutral")] == pytest.approx(3 / 9)
    assert soft[0].sum() == pytest.approx(1) and soft[2].sum() == 0
    labels, kept2 = majority_labels(votes)
    assert labels[0] == EMOTIONS.index("sad") and np.array_equal(kept, kept2)


def test_pack_round_trip_is_close_and_has_no_pickles(tmp_path):
    faces = _faces(5, 3)
    data, offsets = encode_faces(faces, 92)
    back = decode_faces(data, offsets)
    assert back.shape == faces.shape and np.abs(back.astype(int) - faces).mean() < 30
    write_pack(tmp_path / "p.npz", {"train_x": {"faces": faces, "y": np.arange(5)},
                                    "test_x": {"faces": faces[:2], "y": np.arange(2), "set": np.zeros(2)}})
    sets = read_pack(tmp_path / "p.npz")  # read with allow_pickle=False
    assert set(sets) == {"train_x", "test_x"} and sets["test_x"]["faces"].shape == (2, 48, 48)
    assert list(sets["test_x"]["set"]) == [0, 0]


def test_device_pack_and_train_under_a_deadline(tmp_path, rafdb_dir):
    _write_pair(tmp_path)
    pack = tmp_path / "pack.npz"
    main(["pack", "--fer", str(tmp_path / "folders"), "--rafdb", str(rafdb_dir), "--cache",
          str(tmp_path / "cache"), "--out", str(pack)])
    sets = read_pack(pack)
    assert {"train_fer", "train_rafdb", "select_fer_public", "select_rafdb_val", "test_fer_private"} <= set(sets)
    assert len(sets["train_fer"]["y"]) == 11  # the 'not a face' image is left out
    assert np.allclose(sets["train_fer"]["soft"].astype(float).sum(1), 1, atol=1e-2)
    # a deadline already past: the loop still runs its first two epochs (to time one), then stops
    out = tmp_path / "run"
    main(["train", "--pack", str(pack), "--out", str(out), "--epochs", "4", "--minutes", "0",
          "--batch-size", "8", "--workers", "1", "--keep-model", "--keep-int8"])
    run = json.loads((out / "run.json").read_text())
    assert run["epochs_run"] == 2
    probs = np.load(out / "probabilities.npz")
    assert probs["test_fer_private"].shape == (8, 7)
    assert (out / "model.keras").exists() and not (out / "checkpoints").exists()
    # The int8 weights rebuild the same network: the same answers within the rounding of the weights.
    main(["restore", str(out), "--out", str(tmp_path / "restored.keras")])
    import keras
    faces = sets["test_fer_private"]["faces"][..., None].astype(np.float32)
    kept, restored = (keras.saving.load_model(p, safe_mode=True).predict_on_batch(faces)
                      for p in (out / "model.keras", tmp_path / "restored.keras"))
    assert np.abs(kept - restored).max() < 0.02


def test_device_shell_script_runs_every_run_on_a_cpu(tmp_path):
    """The script the GPU machine runs, with a tiny pack and no time: each run trains two epochs."""
    if sys.platform != "linux":
        pytest.skip("the device script is for Linux")
    _write_pair(tmp_path)
    pack = tmp_path / "pack.npz"
    main(["pack", "--fer", str(tmp_path / "folders"), "--out", str(pack)])
    env = {**os.environ, "PACK": str(pack), "MINUTES": "0", "OUT": str(tmp_path / "out"),
           "WHEELS": str(tmp_path / "none"), "EPOCHS_SCALE": "0.05", "PYTHON": sys.executable,
           "RUNS_ONLY": "compact_soft", "BACKEND": "tensorflow", "WORK": str(tmp_path / "work")}
    done = subprocess.run(["bash", str(ROOT / "training" / "device_visual.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert "compact_soft: exit 0" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "out" / "compact_soft.tgz").exists()


@pytest.mark.data
def test_shared_rafdb_and_ferplus_load():
    names = read_rafdb_labels(SHARED_DATA / "rafdb", "train")
    assert len(names) == 12271
    _, votes, _ = load_ferplus(SHARED_DATA / "fer2013", "PublicTest")
    assert votes.shape == (3589, 10)


def test_evaluate_visual_on_rafdb_and_ferplus_labels(rafdb_dir, tmp_path, tiny_models, capsys):
    from multimodal.cli import main as cli
    assert cli(["evaluate", "visual", "--model", str(tiny_models["visual"]), "--data", str(rafdb_dir),
                "--out", str(tmp_path / "raf")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("RAF-DB test: accuracy") and "called neutral" in out
    report = json.loads((tmp_path / "raf" / "report.json").read_text())
    assert report["sections"]["test"]["n"] == 7
    _write_pair(tmp_path)
    assert cli(["evaluate", "visual", "--model", str(tiny_models["visual"]), "--data", str(tmp_path / "csv"),
                "--labels", "ferplus", "--out", str(tmp_path / "plus")]) == 0
    assert "FER2013 PrivateTest (FER+ majority labels): accuracy" in capsys.readouterr().out
    assert cli(["evaluate", "visual", "--model", str(tiny_models["visual"]), "--data", str(rafdb_dir),
                "--split", "PublicTest", "--out", str(tmp_path / "bad")]) == 3
    assert "expected test or validation" in capsys.readouterr().err


def test_train_visual_on_ferplus_votes_and_rafdb(rafdb_dir, tmp_path, capsys):
    from multimodal.cli import main as cli
    _write_pair(tmp_path)
    out = tmp_path / "run"
    assert cli(["train", "visual", "--data", str(tmp_path / "folders"), "--ferplus", "soft", "--rafdb",
                str(rafdb_dir), "--epochs", "1", "--batch-size", "8", "--out", str(out)]) == 0
    log = (out / "train.log").read_text()
    assert "FER+ soft labels: 11 training faces kept" in log and "RAF-DB train: " in log
    assert "val_rafdb_val_accuracy" in log
    card = json.loads((out / "model.keras.json").read_text())
    assert card["training"]["dataset"] == "FER2013 (FER+ soft labels) + RAF-DB train"
