"""Score visual models on the faces of a device pack, from their flip-averaged probabilities.

Each model is given as ``NAME=FILE.npz``: the ``probabilities.npz`` that
``python -m training.device_visual train`` writes, or one made here for a
model of this machine (``--keras NAME=MODEL.keras`` computes it). Prints
markdown tables: accuracy and the share of non-neutral faces called neutral
on RAF-DB's validation carve, FER+ PublicTest and PrivateTest (majority
labels), FER2013 PrivateTest (its own labels) and each face set; then
per-class recall on RAF-DB validation and on the five face sets together.

    python benchmarks/score_packed.py --pack .device/pack/faces.npz \\
        shipped=runs/shipped.npz candidate=runs/gpu/device_runs/compact_soft/probabilities.npz
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from multimodal.config import EMOTIONS  # noqa: E402
from training.device_visual import flip_averaged, read_pack  # noqa: E402

FACE_SETS = ("ckplus48", "jaffe", "kdef", "sfew_train", "yale")  # the pack's set order (sorted folder names)
NEUTRAL = EMOTIONS.index("neutral")


def accuracy_and_called_neutral(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    pred = probs.argmax(1)
    return float(np.mean(pred == y)), float(np.mean(pred[y != NEUTRAL] == NEUTRAL))


def recall(probs: np.ndarray, y: np.ndarray) -> list[str]:
    pred = probs.argmax(1)
    return [f"{np.mean(pred[y == c] == c):.2f}" if (y == c).any() else "–" for c in range(len(EMOTIONS))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--keras", action="append", default=[], metavar="NAME=MODEL",
                        help="a .keras model of this machine, scored on the pack's faces")
    parser.add_argument("models", nargs="*", metavar="NAME=PROBABILITIES")
    args = parser.parse_args()
    sets = read_pack(args.pack)
    probs: dict[str, dict[str, np.ndarray]] = {}
    for item in args.keras:
        import keras
        name, path = item.split("=", 1)
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        probs[name] = {k: flip_averaged(model, v["faces"]) for k, v in sets.items() if not k.startswith("train")}
    for item in args.models:
        name, path = item.split("=", 1)
        with np.load(path) as z:
            probs[name] = {k: z[k].astype(np.float64) for k in z.files}
    faces = sets["test_faces"]
    private = sets["test_fer_private"]
    plus = private["y_ferplus"] >= 0
    columns = ["RAF-DB val", "FER+ Public", "FER+ Private", "FER2013 Private"] + list(FACE_SETS) + ["sets mean"]
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    neutral_rows = []
    for name, p in probs.items():
        cells = [accuracy_and_called_neutral(p["select_rafdb_val"], sets["select_rafdb_val"]["y"]),
                 accuracy_and_called_neutral(p["select_fer_public"], sets["select_fer_public"]["y"]),
                 accuracy_and_called_neutral(p["test_fer_private"][plus], private["y_ferplus"][plus]),
                 accuracy_and_called_neutral(p["test_fer_private"], private["y"])]
        cells += [accuracy_and_called_neutral(p["test_faces"][faces["set"] == i], faces["y"][faces["set"] == i])
                  for i in range(len(FACE_SETS))]
        mean = float(np.mean([c[0] for c in cells[4:]]))
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a, _ in cells) + f" | {mean:.3f} |")
        neutral_rows.append(f"| {name} | " + " | ".join(f"{n:.3f}" for _, n in cells) + " | |")
    print("\nNon-neutral faces called neutral (same columns):\n")
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    print("\n".join(neutral_rows))
    print("\nPer-class recall, RAF-DB validation / the five face sets together:\n")
    print("| model | " + " | ".join(EMOTIONS) + " |")
    print("|---|" + "---|" * len(EMOTIONS))
    for name, p in probs.items():
        a = recall(p["select_rafdb_val"], sets["select_rafdb_val"]["y"])
        b = recall(p["test_faces"], faces["y"])
        print(f"| {name} | " + " | ".join(f"{x} / {y}" for x, y in zip(a, b)) + " |")


if __name__ == "__main__":
    main()
