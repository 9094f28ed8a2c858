"""Calibration of the speech model's confidence on speakers it never heard.

A network trained on a few voices is sure of itself on new ones far beyond
its accuracy, and product fusion then lets a confident wrong voice overrule a
right face. One temperature, fitted on recordings of held-out speakers
scored as ``analyze`` scores a file, brings the confidence back in line;
the card records it (``calibration.temperature``) and
:class:`multimodal.audio.AudioModel` applies it.

    python -m training.calibrate runs/audio/model.keras --data PATH/ravdess PATH/cremad --fold 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from multimodal.audio import AudioModel, apply_temperature, fit_temperature
from multimodal.models import card_path, sha256_of
from training.evaluate import recording_probabilities
from training.metrics import cross_entropy, expected_calibration_error


def calibrate_audio_model(model_path: str | Path, items: list, fitted_on: str) -> dict:
    """Fit the temperature of ``model_path`` on ``items`` (held-out speakers) and write it into its card.

    Returns the card's ``calibration`` entry: the temperature, what it was
    fitted on, and the cross-entropy and expected calibration error of those
    recordings before and after.
    """
    model = AudioModel(model_path)
    model.temperature = 1.0
    by_corpus = recording_probabilities(model, items)
    y = np.concatenate([np.array(v[0]) for v in by_corpus.values()])
    p = np.concatenate([np.array(v[1]) for v in by_corpus.values()])
    t = fit_temperature(p, y)
    after = apply_temperature(p, t)
    entry = {"temperature": round(t, 4), "fitted_on": fitted_on, "recordings": int(len(y)),
             "cross_entropy_before": round(cross_entropy(y, p), 4), "cross_entropy_after": round(cross_entropy(y, after), 4),
             "ece_before": round(expected_calibration_error(y, p), 4), "ece_after": round(expected_calibration_error(y, after), 4)}
    path = card_path(model_path)
    card = json.loads(path.read_text())
    if card.get("sha256") != sha256_of(model_path):
        raise ValueError(f"{path}: the card does not describe {model_path}")
    card["calibration"] = entry
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2))
    tmp.replace(path)
    return entry


def main(argv=None) -> None:
    from training.speech_datasets import load_speech_corpus
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--fold", type=int, required=True, help="the held-out fold to fit on (the run's validation fold)")
    args = parser.parse_args(argv)
    items = [u for u in load_speech_corpus(*args.data) if u.fold == args.fold]
    print(json.dumps(calibrate_audio_model(args.model, items, f"fold {args.fold} speakers of "
                                           + ", ".join(sorted({u.corpus for u in items}))), indent=2))


if __name__ == "__main__":
    main()
