"""Ensembles of speech models that never heard the same held-out speakers.

Runs of different recipes made for the same protocol split (``fold k``:
tested on fold k's speakers, selected and calibrated on fold k+1's;
``loco_NAME``: never heard that corpus) are all free of that split's test
speakers, so the mean of their calibrated distributions is scored as
honestly as each of them. For every split present in every ``--runs``
folder, this prints each member's and the ensemble's accuracy (eight
classes for RAVDESS, the corpus's own classes otherwise, calm counted as
neutral), unweighted average recall and expected calibration error, every
recording scored as ``analyze`` scores a file.

    python benchmarks/speech_ensemble.py --data PATH/ravdess_speech PATH/cremad PATH/tess PATH/emodb \\
        --runs runs/protocols runs/masks [--only fold0 loco_cremad] [--cache DIR] [--json FILE]

``--cache`` keeps each member's distributions (``DIR/RECIPE-SPLIT.npz``) so
that adding a member later scores only the new one.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from multimodal.audio import AudioModel
from multimodal.config import EMOTIONS
from training.evaluate import recording_probabilities, seven_classes
from training.metrics import classification_metrics
from training.speech_datasets import SPEECH_LABELS, load_speech_corpus
from training.train_audio import split_indices

SPLITS = [f"fold{k}" for k in range(5)] + [f"loco_{c}" for c in ("ravdess", "cremad", "tess", "emodb")]


def held_out_items(items: list, split: str) -> list:
    """The recordings a split tests on: fold k of every corpus with folds, or all of one corpus."""
    if split.startswith("fold"):
        k = int(split[4:])
        _, _, test = split_indices(items, k, (k + 1) % 5)
    else:
        _, _, test = split_indices(items, 0, 0, split[5:])
    return [items[i] for i in test]


def member_distributions(run: Path, items: list, cache: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{corpus: (labels (n,), calibrated distributions (n, 8))}`` of one run's model on ``items``."""
    store = cache / f"{run.parent.name}-{run.name}.npz" if cache else None
    if store is not None and store.exists():
        saved = np.load(store)
        return {k[2:]: (saved[k], saved["p_" + k[2:]]) for k in saved.files if k.startswith("y_")}
    model = AudioModel(run / "model.keras")
    if tuple(model.card.labels) != SPEECH_LABELS:
        raise ValueError(f"{run}: labels {model.card.labels} differ from {SPEECH_LABELS}")
    out = {c: (np.array(y), np.array(p)) for c, (y, p, _) in recording_probabilities(model, items).items()}
    if store is not None:
        store.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"y_{c}": y for c, (y, _) in out.items()} | {f"p_{c}": p for c, (_, p) in out.items()}
        np.savez(store, **arrays)
    return out


def scores(corpus: str, y: np.ndarray, p: np.ndarray) -> dict:
    if corpus == "ravdess":
        m = classification_metrics(y, p, SPEECH_LABELS)
    else:
        m = classification_metrics(*seven_classes(y, p), EMOTIONS)
    return {"n": m["n"], "accuracy": m["accuracy"], "uar": m["uar"], "ece": m["ece"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="one folder of runs per recipe")
    parser.add_argument("--only", nargs="+", choices=SPLITS)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    items = load_speech_corpus(*args.data)
    results: dict[str, dict] = {}
    print("| split | set | " + " | ".join(r.name for r in args.runs) + " | ensemble |")
    print("|---|---|" + "---|" * (len(args.runs) + 1))
    for split in args.only or SPLITS:
        runs = [r / split for r in args.runs]
        if not all((r / "model.keras.json").exists() for r in runs):
            continue
        test = held_out_items(items, split)
        members = [member_distributions(r, test, args.cache) for r in runs]
        for corpus in sorted(members[0]):
            y = members[0][corpus][0]
            if any(not np.array_equal(m[corpus][0], y) for m in members):
                raise ValueError(f"{split}, {corpus}: the members scored different recordings")
            row = [scores(corpus, y, m[corpus][1]) for m in members]
            row.append(scores(corpus, y, np.mean([m[corpus][1] for m in members], axis=0)))
            results.setdefault(split, {})[corpus] = dict(zip([r.name for r in args.runs] + ["ensemble"], row))
            cells = " | ".join(f"{s['accuracy']:.3f} (UAR {s['uar']:.3f}, ECE {s['ece']:.3f})" for s in row)
            print(f"| {split} | {corpus} ({row[0]['n']}) | {cells} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
