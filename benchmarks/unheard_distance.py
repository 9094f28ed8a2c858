"""Does the voice model know when a recording is unlike all it heard?

A temperature that grows with a recording's distance from the training
voices could keep the voice honest on corpora it never heard without
silencing it on the others (``unheard_calibration.py`` shows that no single
temperature does both). That works only if the distance tells the two apart.
For each leave-one-corpus-out run in ``--runs`` (``loco_<corpus>``, see
``speech_protocols.py``), every recording (as training stores it: the
centred 4 s clip, no augmentation) is embedded by the network's pooled
features (the layer before the classifier); a Gaussian with a Ledoit-Wolf
covariance is fitted on the embeddings of the run's training speakers, and
the Mahalanobis distance of each recording is computed. Prints, per run,
how well that distance, and the network's top probability, tell the unheard
corpus from the heard corpora's validation speakers (fold 0; AUROC, 0.5:
no better than chance) and the median distances.

    python benchmarks/unheard_distance.py --runs runs/wide --data PATH/ravdess_speech PATH/cremad PATH/tess PATH/emodb
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from multimodal.audio import AudioModel
from training.audio_models import with_pooled_features
from training.config import AugmentConfig
from training.metrics import distance_from
from training.speech_datasets import load_speech_corpus
from training.train_audio import compute_features


def pooled_and_probabilities(model, feats: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The pooled features the classifier reads and the softmax, for ``feats`` (n, frames, features)."""
    both = with_pooled_features(model)
    parts = [both.predict_on_batch(np.asarray(feats[i:i + batch], np.float32)) for i in range(0, len(feats), batch)]
    return np.concatenate([e for e, _ in parts]), np.concatenate([p for _, p in parts])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    items = load_speech_corpus(*args.data)
    corpus = np.array([u.corpus for u in items])
    fold = np.array([-1 if u.fold is None else u.fold for u in items])
    results: dict = {}
    feats = None
    print("| corpus never heard | n | AUROC, distance | AUROC, 1 − top probability | median distance: training | validation | unheard |")
    print("|---|---|---|---|---|---|---|")
    for held in sorted(set(corpus)):
        run = args.runs / f"loco_{held}" / "model.keras"
        if not run.exists():
            continue
        audio = AudioModel(run)
        if feats is None:  # every run of one --runs folder shares its features
            feats = compute_features(items, audio.features, AugmentConfig(copies=0), seed=0, cache_dir=None)[:, 0]
        emb, probs = pooled_and_probabilities(audio.model, feats)
        # The runs train on folds 1-4 of the other corpora (and all of TESS) and choose their epoch on fold 0.
        train, val, unheard = (corpus != held) & (fold != 0), (corpus != held) & (fold == 0), corpus == held
        dist = distance_from(emb[train])(emb)
        is_unheard = np.r_[np.zeros(val.sum()), np.ones(unheard.sum())]
        row = {"n": int(unheard.sum()),
               "auroc_distance": float(roc_auc_score(is_unheard, np.r_[dist[val], dist[unheard]])),
               "auroc_top_probability": float(roc_auc_score(is_unheard, -np.r_[probs[val].max(1), probs[unheard].max(1)])),
               "median_distance": {k: float(np.median(dist[m])) for k, m in
                                   (("training", train), ("validation", val), ("unheard", unheard))}}
        results[held] = row
        med = row["median_distance"]
        print(f"| {held} | {row['n']} | {row['auroc_distance']:.3f} | {row['auroc_top_probability']:.3f} | "
              f"{med['training']:.1f} | {med['validation']:.1f} | {med['unheard']:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
