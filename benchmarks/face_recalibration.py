"""Does a correction of the face model's outputs, learnt on RAF-DB, carry over to other faces?

Scores a visual model once on RAF-DB train, FER2013's test splits (original
labels and FER+ majority), the five ``faces/`` sets and the labelled
talking-face clips, then fits three corrections of its log-probabilities on
RAF-DB train outside the validation carve (``training.rafdb.rafdb_validation``):

- ``bias``: one offset per class (a change of class priors);
- ``temperature+bias``: the same with a temperature;
- ``affine``: a multinomial logistic regression over the seven
  log-probabilities (a 7x7 matrix and offsets).

Each is reported beside the model alone on every set: accuracy, UAR, the share
of non-neutral faces called neutral, sad and fear recall; the face sets on
the fifth of subjects the shipped model did not train on; the clips as
``analyze`` labels them (the mean of their segments' mean face distribution).

    python benchmarks/face_recalibration.py --data ../shared/data --cache runs/recal
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from multimodal.api import analyze
from multimodal.config import EMOTIONS
from multimodal.visual import VisualModel
from training.face_sets import crop_face_set, load_face_sets, subject_fold
from training.ferplus import load_ferplus, majority_labels
from training.rafdb import load_rafdb, rafdb_validation

NEUTRAL = EMOTIONS.index("neutral")
CLIP_FOLDERS = ("video/mead", "video/styletalk")


def model_outputs(model_path: Path, data: Path, cache: Path) -> tuple[dict, list]:
    """Probabilities (n, 7) and labels of every set, and per-clip face distributions; kept in ``cache``."""
    arrays, clips_file = cache / "probs.npz", cache / "clips.json"
    if arrays.exists() and clips_file.exists():
        with np.load(arrays) as z:
            return dict(z), json.loads(clips_file.read_text())
    model = VisualModel(model_path)
    out: dict = {}
    x, y, names = load_rafdb(data / "rafdb", "train", cache_dir=cache)
    out["rafdb_p"], out["rafdb_y"], out["rafdb_val"] = model.predict_proba(x), y, rafdb_validation(names)
    for split in ("PublicTest", "PrivateTest"):
        faces, votes, labels = load_ferplus(data / "fer2013", split)
        out[f"fer_{split}_p"], out[f"fer_{split}_y"] = model.predict_proba(faces), labels
        out[f"ferplus_{split}_y"], out[f"ferplus_{split}_kept"] = majority_labels(votes)
    for name, photos in load_face_sets(data / "faces").items():
        crops, labels, _ = crop_face_set(photos, jittered=0, cache_dir=cache)
        out[f"set_{name}_p"], out[f"set_{name}_y"] = model.predict_proba(crops[:, 0]), labels
        out[f"set_{name}_heldout"] = np.array([subject_fold(p.subject or p.path.name) == 0 for p in photos])
    clips = []
    for folder in CLIP_FOLDERS:
        with open(data / folder / "manifest.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["label"] in EMOTIONS]
        for r in rows:
            faces_table = analyze(data / folder / r["file"], visual_model=model_path, quiet=True, force=True).faces
            clips.append({"folder": Path(folder).name, "label": r["label"], "segment": faces_table["segment"].tolist(),
                          "faces": faces_table[[f"p_{e}" for e in EMOTIONS]].to_numpy(float).tolist()})
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(arrays, **out)
    clips_file.write_text(json.dumps(clips))
    return out, clips


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-6, 1.0))


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fit_corrections(p: np.ndarray, y: np.ndarray) -> dict:
    """``{name: function (n, 7) -> (n, 7)}`` fitted by log-loss on probabilities ``p`` with labels ``y``."""
    def nll(v: np.ndarray) -> float:
        q = _softmax(_log(p) / v[0] + v[1:])
        return float(-np.mean(np.log(q[np.arange(len(y)), y] + 1e-12)))

    bias = minimize(lambda b: nll(np.r_[1.0, b]), np.zeros(7), method="L-BFGS-B").x
    tb = minimize(nll, np.r_[1.0, np.zeros(7)], method="L-BFGS-B", bounds=[(0.2, 5.0)] + [(None, None)] * 7).x
    affine = LogisticRegression(C=1.0, max_iter=2000).fit(_log(p), y)
    return {"model alone": lambda q: q,
            "bias": lambda q: _softmax(_log(q) + bias),
            "temperature+bias": lambda q: _softmax(_log(q) / tb[0] + tb[1:]),
            "affine": lambda q: affine.predict_proba(_log(q))}


def figures(p: np.ndarray, y: np.ndarray) -> str:
    pred = p.argmax(axis=1)
    recall = [np.mean(pred[y == k] == k) if (y == k).any() else np.nan for k in range(7)]
    sad, fear = (recall[EMOTIONS.index(e)] for e in ("sad", "fear"))
    return (f"{np.mean(pred == y):.3f} | {np.nanmean(recall):.3f} | {np.mean(pred[y != NEUTRAL] == NEUTRAL):.3f} | "
            f"{sad:.2f} | {fear:.2f}")


def clip_figures(clips: list, correct) -> str:
    right: dict = {}
    called_neutral = 0
    for c in clips:
        faces, segment = np.array(c["faces"]), np.array(c["segment"])
        if not len(faces):
            continue
        q = correct(faces)
        label = EMOTIONS[int(np.mean([q[segment == s].mean(axis=0) for s in np.unique(segment)], axis=0).argmax())]
        got = right.setdefault(c["folder"], [0, 0])
        got[0] += label == c["label"]
        got[1] += 1
        called_neutral += c["label"] != "neutral" and label == "neutral"
    return ", ".join(f"{k} {a} of {n}" for k, (a, n) in right.items()) + f"; non-neutral called neutral {called_neutral}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--model", type=Path, default=Path("models/visual_default.tflite"))
    parser.add_argument("--cache", type=Path, required=True, help="where the model's outputs are kept")
    args = parser.parse_args(argv)
    z, clips = model_outputs(args.model, args.data, args.cache)
    fit = ~z["rafdb_val"]
    corrections = fit_corrections(z["rafdb_p"][fit], z["rafdb_y"][fit])
    print(f"fitted on {fit.sum()} RAF-DB train faces outside the validation carve")
    print("| correction | set | accuracy | UAR | non-neutral called neutral | sad recall | fear recall |")
    print("|---|---|---|---|---|---|---|")
    for name, correct in corrections.items():
        v, k = z["rafdb_val"], z["ferplus_PrivateTest_kept"]
        rows = {"RAF-DB validation": (z["rafdb_p"][v], z["rafdb_y"][v]),
                "FER2013 PrivateTest": (z["fer_PrivateTest_p"], z["fer_PrivateTest_y"]),
                "FER+ PrivateTest (majority)": (z["fer_PrivateTest_p"][k], z["ferplus_PrivateTest_y"][k])}
        accuracies = []
        for s in ("ckplus48", "jaffe", "kdef", "sfew_train", "yale"):
            h = z[f"set_{s}_heldout"]
            rows[f"{s}, held-out fifth ({h.sum()})"] = (z[f"set_{s}_p"][h], z[f"set_{s}_y"][h])
            accuracies.append(np.mean(correct(z[f"set_{s}_p"][h]).argmax(axis=1) == z[f"set_{s}_y"][h]))
        for label, (p, y) in rows.items():
            print(f"| {name} | {label} | {figures(correct(p), y)} |")
        print(f"| {name} | face sets, mean | {np.mean(accuracies):.3f} | | | | |")
        print(f"| {name} | talking faces | {clip_figures(clips, correct)} | | | | |", flush=True)


if __name__ == "__main__":
    main()
