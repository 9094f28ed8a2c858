"""Export a shipped Keras model to TFLite, the format ``analyze`` runs.

    python -m training.export_tflite models/NAME.keras [--fer DATA] [--ravdess DATA] [--max-diff 1e-4]

Writes ``models/NAME.tflite`` (float32, same weights) and its card, which
carries the Keras card over and records the check: both files are run on
the model's own test data (FER2013 PrivateTest for a visual model, the
RAVDESS test fold of its card for an audio model) or, without data, on
random inputs, and the export is refused if any output differs by more than
``--max-diff`` or any top class changes. The Keras card's metrics then hold
for the export as well.
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


def keras_to_tflite(keras_path: Path, out: Path) -> None:
    """Convert through a SavedModel; dynamic dimensions (batch, audio length) stay dynamic."""
    from multimodal.models import import_keras
    keras = import_keras()
    import tensorflow as tf
    model = keras.saving.load_model(keras_path, compile=False, safe_mode=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(f"{tmp}/saved", format="tf_saved_model", verbose=False)
        data = tf.lite.TFLiteConverter.from_saved_model(f"{tmp}/saved").convert()
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


def export(keras_path: Path, fer: Path | None = None, ravdess: Path | None = None, max_diff: float = 1e-4) -> str:
    """Export ``keras_path`` to TFLite beside it, check it on ``fer``/``ravdess`` data, write its card."""
    card_data = json.loads(card_path(keras_path).read_text())
    card = read_card(keras_path, card_data["kind"])
    out = keras_path.with_suffix(".tflite")
    keras_to_tflite(keras_path, out)
    reference, exported = load_keras_model(card), TFLiteModel(out)
    batches, described = check_inputs(card_data, fer, ravdess)
    diff, same, n = 0.0, 0, 0
    for x in batches:
        a, b = np.asarray(reference.predict_on_batch(x)), exported.predict_on_batch(x)
        diff = max(diff, float(np.abs(a - b).max()))
        same += int(np.sum(a.argmax(1) == b.argmax(1)))
        n += len(x)
    if diff > max_diff or same != n:
        out.unlink()
        raise ModelError(f"{out.name}: export differs from {keras_path.name} (max difference {diff:.2e}, "
                         f"{n - same} of {n} top classes changed); not written")
    fields = {k: v for k, v in card_data.items() if k not in ("kind", "file", "labels", "sha256", "size_bytes")}
    fields["exported_from"] = {"file": keras_path.name, "sha256": card.sha256,
                               "check": {"inputs": described, "max_abs_difference": diff, "same_top_class": f"{same}/{n}"}}
    write_card(out, card_data["kind"], card_data["labels"], **fields)
    return f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); on {described}: max difference {diff:.1e}, same top class {same}/{n}"


def main(argv=None) -> int:
    """Command line of the export; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="a .keras model with its card")
    p.add_argument("--fer", type=Path, help="FER2013, to check a visual model on PrivateTest")
    p.add_argument("--ravdess", type=Path, help="RAVDESS speech, to check an audio model on its test fold")
    p.add_argument("--max-diff", type=float, default=1e-4)
    a = p.parse_args(argv)
    try:
        print(export(a.model, a.fer, a.ravdess, a.max_diff))
    except MultimodalError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
