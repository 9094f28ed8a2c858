"""Can a temperature make the voice honest on a corpus it never heard?

For each leave-one-corpus-out run in ``--runs`` (``loco_<corpus>``, see
``speech_protocols.py``), every recording of the unheard corpus is scored
as ``analyze`` scores a file, without temperature, and the temperature is
then applied to each recording's distribution, as ``training.calibrate``
fits it. Prints, per corpus and temperature (1, the run's own, fitted on
held-out speakers of the corpora it heard, and larger ones), accuracy,
cross-entropy and expected calibration error, beside a uniform guess over
the model's classes: over its eight classes for RAVDESS, over the seven
with calm counted as neutral for the other corpora (as the reports do).

    python benchmarks/unheard_calibration.py --runs runs/masks --data PATH/ravdess_speech PATH/cremad [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from multimodal.audio import AudioModel, apply_temperature
from training.evaluate import recording_probabilities, seven_classes
from training.metrics import cross_entropy, expected_calibration_error
from training.speech_datasets import load_speech_corpus

TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def scored(corpus: str, y: np.ndarray, probs: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and distributions as the reports score ``corpus``: RAVDESS over the model's eight classes,
    the others over seven, calm counted as neutral."""
    return (y, probs) if corpus == "ravdess" else seven_classes(y, probs, names)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="the corpora the runs left out")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    items = load_speech_corpus(*args.data)
    results: dict = {}
    for corpus in sorted({u.corpus for u in items}):
        run = args.runs / f"loco_{corpus}" / "model.keras"
        if not run.exists():
            continue
        model = AudioModel(run)
        own = model.temperature
        model.temperature = 1.0
        labels, dists, _ = recording_probabilities(model, [u for u in items if u.corpus == corpus])[corpus]
        y, p = np.array(labels), np.array(dists)
        names = model.card.labels
        rows = {}
        for t in sorted({own, *TEMPERATURES}):
            yy, q = scored(corpus, y, apply_temperature(p, t), names)
            rows[f"{t:.3g}"] = {"accuracy": float(np.mean(q.argmax(1) == yy)), "cross_entropy": cross_entropy(yy, q),
                                "ece": expected_calibration_error(yy, q), "the run's": t == own}
        results[corpus] = {"n": len(y), "run_temperature": own, "by_temperature": rows}
        print(f"\n{corpus} never heard ({len(y)} recordings; the run's temperature {own:.3g})\n")
        print("| temperature | accuracy | cross-entropy | ECE |\n|---|---|---|---|")
        for name, r in rows.items():
            tag = " (the run's)" if r["the run's"] else ""
            print(f"| {name}{tag} | {r['accuracy']:.3f} | {r['cross_entropy']:.3f} | {r['ece']:.3f} |")
        yy, q = scored(corpus, y, np.full_like(p, 1 / len(names)), names)
        print(f"| uniform guess | {np.mean(q.argmax(1) == yy):.3f} | {cross_entropy(yy, q):.3f} | |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
