"""Export a shipped Keras model to TFLite, the format ``analyze`` runs.

    python -m training.export_tflite models/NAME.keras [--fer DATA] [--ravdess DATA] [--max-diff 1e-4]
                                     [--weights float32|float16|int8] [--max-changed 0]

Writes ``models/NAME.tflite`` and its card, which carries the Keras card over
and records the check: both files are run on the model's own test data
(FER2013 PrivateTest for a visual model, the RAVDESS test fold of its card for
an audio model) or, without data, on random inputs, and the export is refused
if any output differs by more than ``--max-diff`` or more than
``--max-changed`` (a fraction) of the top classes change. With the defaults
(float32 weights, nothing may change) the Keras card's metrics hold for the
export as well. ``--weights float16`` halves the file and ``int8`` (dynamic
range: weights stored as 8-bit integers, computation in float) quarters it;
both need looser limits, and the card records the weights and what changed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from multimodal.audio import features_from_card, load_audio, mfcc_features
from multimodal.errors import ModelError, MultimodalError
from multimodal.models import ModelCard, TFLiteModel, card_path, load_keras_model, read_card, write_card
from training.fer2013 import load_fer2013
from training.speech_datasets import load_ravdess

WEIGHTS = ("float32", "float16", "int8")


def keras_to_tflite(keras_path: Path, out: Path, weights: str = "float32") -> None:
    """Convert through a SavedModel; dynamic dimensions (batch, audio length) stay dynamic.

    ``weights`` is how the weights are stored: ``float32`` as trained,
    ``float16``, or ``int8`` (dynamic-range quantisation).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, not {weights!r}")
    from multimodal.models import import_keras
    keras = import_keras()
    import tensorflow as tf
    model = keras.saving.load_model(keras_path, compile=False, safe_mode=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(f"{tmp}/saved", format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(f"{tmp}/saved")
        if weights != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if weights == "float16":
            converter.target_spec.supported_types = [tf.float16]
        data = converter.convert()
    tmp_out = out.with_suffix(".tflite.tmp")
    tmp_out.write_bytes(data)
    tmp_out.replace(out)


def check_inputs(card: dict, fer: Path | None, ravdess: Path | None, seed: int = 0) -> tuple[list, str]:
    """Batches to compare the two files on, and what they are."""
    rng = np.random.default_rng(seed)
    if card["kind"] == "visual":
        size = int(card["input"]["shape"][0])
        if fer:
            x, _ = load_fer2013(fer, "PrivateTest")
            x = x[..., None].astype(np.float32)
            return [x[i:i + 256] for i in range(0, len(x), 256)], f"FER2013 PrivateTest ({len(x)} faces)"
        return [rng.uniform(0, 255, (64, size, size, 1)).astype(np.float32)], "64 random images"
    feat = features_from_card(ModelCard(Path(card["file"]), "audio", tuple(card["labels"]), card["sha256"], card))
    if ravdess:
        fold = int(card.get("training", {}).get("test_fold", 0))
        items = [u for u in load_ravdess(ravdess) if u.fold == fold]
        # Each utterance whole, as analyze scores segments of any length.
        batches = [mfcc_features(load_audio(u.path, feat.sample_rate), feat)[None] for u in items]
        return batches, f"RAVDESS fold {fold} ({len(items)} utterances, whole length)"
    width = mfcc_features(np.zeros(feat.sample_rate, np.float32), feat).shape[1]
    return [rng.normal(0, 1, (4, n, width)).astype(np.float32) for n in (101, 301, 517)], "random features"


def export(keras_path: Path, fer: Path | None = None, ravdess: Path | None = None, max_diff: float = 1e-4,
           weights: str = "float32", max_changed: float = 0.0) -> str:
    """Export ``keras_path`` to TFLite beside it, check it on ``fer``/``ravdess`` data, write its card."""
    card_data = json.loads(card_path(keras_path).read_text())
    card = read_card(keras_path, card_data["kind"])
    out = keras_path.with_suffix(".tflite")
    keras_to_tflite(keras_path, out, weights)
    reference, exported = load_keras_model(card), TFLiteModel(out)
    batches, described = check_inputs(card_data, fer, ravdess)
    diff, same, n = 0.0, 0, 0
    for x in batches:
        a, b = np.asarray(reference.predict_on_batch(x)), exported.predict_on_batch(x)
        diff = max(diff, float(np.abs(a - b).max()))
        same += int(np.sum(a.argmax(1) == b.argmax(1)))
        n += len(x)
    if diff > max_diff or n - same > max_changed * n:
        out.unlink()
        raise ModelError(f"{out.name}: export differs from {keras_path.name} (max difference {diff:.2e}, "
                         f"{n - same} of {n} top classes changed); not written")
    fields = {k: v for k, v in card_data.items() if k not in ("kind", "file", "labels", "sha256", "size_bytes")}
    fields["exported_from"] = {"file": keras_path.name, "sha256": card.sha256, "weights": weights,
                               "check": {"inputs": described, "max_abs_difference": diff, "same_top_class": f"{same}/{n}"}}
    write_card(out, card_data["kind"], card_data["labels"], **fields)
    return f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {weights} weights); on {described}: max difference {diff:.1e}, same top class {same}/{n}"


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--max-diff`` and ``--max-changed``, for every command that exports."""
    parser.add_argument("--weights", choices=WEIGHTS, default="float32", help="how the export stores the weights")
    parser.add_argument("--max-diff", type=float, default=1e-4, help="largest difference allowed in any output")
    parser.add_argument("--max-changed", type=float, default=0.0, metavar="FRACTION",
                        help="fraction of the check inputs whose top class may change")


def main(argv=None) -> int:
    """Command line of the export; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a .keras model with its card")
    p.add_argument("--fer", type=Path, help="FER2013, to check a visual model on PrivateTest")
    p.add_argument("--ravdess", type=Path, help="RAVDESS speech, to check an audio model on its test fold")
    add_export_arguments(p)
    a = p.parse_args(argv)
    try:
        print(export(a.model, a.fer, a.ravdess, a.max_diff, a.weights, a.max_changed))
    except MultimodalError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
