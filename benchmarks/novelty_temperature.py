"""A temperature that grows with a segment's distance from the voices the model trained on.

One temperature fitted on held-out speakers of the corpora a model heard
leaves it far too sure on a corpus it never heard (``unheard_calibration.py``),
and ``unheard_distance.py`` shows that the network's pooled features tell
most unheard corpora from heard voices. This measures the law

    T(segment) = T_run * exp(b * max(0, r)),   r = (d - m) / (p90 - m)

where ``d`` is the Mahalanobis distance of the segment's pooled features
from those of the run's training speakers (a Gaussian with a Ledoit-Wolf
covariance, fitted on the centred clips that training stores), and ``m`` and
``p90`` are the median and 90th percentile of ``d`` over the segments of the
run's validation speakers: a segment as typical as those is tempered as
before, one further out is flattened. Every recording is scored as
``analyze`` scores a file (3 s segments with speech, tempered one by one,
averaged by duration).

For each run in ``--runs`` (``loco_<corpus>`` and ``fold<k>``, see
``speech_protocols.py``) the slope ``b`` is fitted, by cross-entropy, on
the leave-one-corpus-out runs' validation and unheard recordings, leaving
out the run's own unheard corpus (a fold run: fitted on all of them). Prints
accuracy and expected calibration error (eight classes for RAVDESS, the
corpus's own with calm counted as neutral otherwise) with the run's own
temperature and with the law, on the run's validation speakers (who chose
its epoch and temperature, so the "own temperature" figure there is
optimistic) and on its test recordings.

    python benchmarks/novelty_temperature.py --runs runs/wide --data PATH/ravdess_speech PATH/cremad PATH/tess PATH/emodb \\
        [--only loco_cremad fold1] [--form linear] [--cache DIR] [--json FILE]

``--form`` takes gentler laws (linear in r; from r = 1 or 2; capped), scored the same way.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from multimodal.aggregate import segment_bounds
from multimodal.audio import AudioModel, load_audio, mfcc_features
from multimodal.config import AnalyzeConfig
from multimodal.speech import SpeechDetector
from training.audio_models import with_pooled_features
from training.config import AugmentConfig
from training.evaluate import seven_classes
from training.metrics import cross_entropy, distance_from, expected_calibration_error
from training.speech_datasets import SPEECH_LABELS, load_speech_corpus
from training.train_audio import compute_features, split_indices

SPLITS = [f"loco_{c}" for c in ("ravdess", "cremad", "tess", "emodb")] + [f"fold{k}" for k in range(5)]


def split_of(card: dict, items: list) -> tuple[list[int], list[int], list[int]]:
    """Training, validation and test indices of the run whose card's ``training`` is ``card``."""
    held = card.get("held_out_corpus")
    return split_indices(items, 0 if held else card["test_fold"], card["validation_fold"], held)


def score_segments(audio: AudioModel, both, items: list, cfg: AnalyzeConfig) -> dict:
    """Per recording, its scored segments as ``analyze`` cuts them: flat arrays of duration (s),
    pooled features and probabilities at temperature 1, with the recording each belongs to."""
    speech, sr = SpeechDetector(), audio.sample_rate
    rec, dur, emb, prob = [], [], [], []
    for i, u in enumerate(items):
        y = load_audio(u.path, sr)
        for a, b in segment_bounds(y.size / sr, cfg.segment):
            clip = y[int(round(a * sr)):int(round(b * sr))]
            if clip.size and speech.speech_seconds(clip) >= cfg.min_speech:
                e, p = both.predict_on_batch(mfcc_features(clip, audio.features)[None])
                rec.append(i), dur.append(b - a), emb.append(e[0]), prob.append(p[0])
    return {"recording": np.array(rec), "duration": np.array(dur), "pooled": np.array(emb, np.float32),
            "probs": np.array(prob, np.float64), "labels": np.array([SPEECH_LABELS.index(u.label) for u in items]),
            "corpus": np.array([u.corpus for u in items])}


def tempered(probs: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """``softmax(logits / T)`` for each row, with its own temperature (n,)."""
    scaled = np.power(np.clip(probs, 1e-12, 1.0), 1.0 / temperature[:, None])
    return scaled / scaled.sum(axis=1, keepdims=True)


def recording_distributions(s: dict, temperature: np.ndarray) -> np.ndarray:
    """Duration-weighted mean of each recording's tempered segments; uniform where none had speech."""
    n, k = len(s["labels"]), s["probs"].shape[1]
    total = np.zeros((n, k))
    np.add.at(total, s["recording"], tempered(s["probs"], temperature) * s["duration"][:, None])
    weight = np.bincount(s["recording"], weights=s["duration"], minlength=n)
    out = np.full((n, k), 1.0 / k)
    out[weight > 0] = total[weight > 0] / weight[weight > 0, None]
    return out


# How the temperature grows with r: the default, and gentler forms (linear; from the 90th percentile,
# r = 1, rather than the median; capped at 20; from r = 2).
FORMS = {
    "exp": lambda t, b, r: t * np.exp(b * np.maximum(0.0, r)),
    "linear": lambda t, b, r: t * (1 + b * np.maximum(0.0, r)),
    "linear-p90": lambda t, b, r: t * (1 + b * np.maximum(0.0, r - 1)),
    "linear-p90-cap20": lambda t, b, r: np.minimum(20.0, t * (1 + b * np.maximum(0.0, r - 1))),
    "linear-2": lambda t, b, r: t * (1 + b * np.maximum(0.0, r - 2)),
}


def law(run: dict, b: float, part: str, form: str = "exp") -> np.ndarray:
    """Per-segment temperatures of ``run``'s ``part`` (``val`` or ``test``) under slope ``b``."""
    return FORMS[form](run["temperature"], b, run[part]["r"])


def fit_slope(runs: list[dict], form: str = "exp") -> float:
    """The slope that minimises the mean cross-entropy of the runs' validation and test recordings."""
    def loss(b: float) -> float:
        return float(np.mean([cross_entropy(r[part]["labels"], recording_distributions(r[part], law(r, b, part, form)))
                              for r in runs for part in ("val", "test")]))
    return float(minimize_scalar(loss, bounds=(0.0, 4.0), method="bounded").x)


def corpus_rows(s: dict, dist: np.ndarray) -> dict:
    """Accuracy and ECE per corpus, over the classes the reports use."""
    out = {}
    for c in sorted(set(s["corpus"])):
        m = s["corpus"] == c
        y, p = (s["labels"][m], dist[m]) if c == "ravdess" else seven_classes(s["labels"][m], dist[m])
        out[c] = {"n": int(m.sum()), "accuracy": float(np.mean(p.argmax(1) == y)),
                  "ece": expected_calibration_error(y, p)}
    return out


def prepare(run_dir: Path, items: list, feats: dict, cfg: AnalyzeConfig, cache: Path | None) -> dict:
    """Scored segments of one run's validation and test recordings, with their normalised distances."""
    store = cache / f"{run_dir.parent.name}-{run_dir.name}-novelty.npz" if cache else None
    audio = AudioModel(run_dir / "model.keras")
    card = audio.card.data["training"]
    train, val, test = split_of(card, items)
    if store is not None and store.exists():
        saved = np.load(store)
        parts = {p: {k[len(p) + 1:]: saved[k] for k in saved.files if k.startswith(p + "_")} for p in ("val", "test")}
    else:
        both = with_pooled_features(audio.model)
        key = json.dumps(audio.card.data["features"], sort_keys=True)
        if key not in feats:  # runs of one recipe share their features
            feats[key] = compute_features(items, audio.features, AugmentConfig(copies=0), seed=0, cache_dir=None)[:, 0]
        x = feats[key]
        trained = np.concatenate([both.predict_on_batch(np.asarray(x[train[i:i + 64]], np.float32))[0]
                                  for i in range(0, len(train), 64)])
        distance = distance_from(trained)
        parts = {}
        for part, idx in (("val", val), ("test", test)):
            s = score_segments(audio, both, [items[i] for i in idx], cfg)
            s["distance"] = distance(s.pop("pooled"))
            parts[part] = s
        if store is not None:
            store.parent.mkdir(parents=True, exist_ok=True)
            np.savez(store, **{f"{p}_{k}": v for p, s in parts.items() for k, v in s.items()})
    m, p90 = np.median(parts["val"]["distance"]), np.percentile(parts["val"]["distance"], 90)
    for s in parts.values():
        s["r"] = (s["distance"] - m) / (p90 - m)
    return {"name": run_dir.name, "temperature": audio.temperature, **parts}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--only", nargs="+", choices=SPLITS, help="runs to score (default: all present)")
    parser.add_argument("--form", choices=sorted(FORMS), default="exp", help="how T grows with r (default exp)")
    parser.add_argument("--cache", type=Path, help="keep each run's scored segments here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    items = load_speech_corpus(*args.data)
    cfg, feats = AnalyzeConfig(), {}
    present = [s for s in SPLITS if (args.runs / s / "model.keras").exists()]
    # Every slope is fitted on the leave-one-corpus-out runs, so those are prepared even when not shown.
    runs = {s: prepare(args.runs / s, items, feats, cfg, args.cache)
            for s in present if s.startswith("loco_") or not args.only or s in args.only}
    loco = [r for s, r in runs.items() if s.startswith("loco_")]
    results: dict = {}
    print("| run | speakers | corpus | n | slope b | accuracy: own T → law | ECE: own T → law |")
    print("|---|---|---|---|---|---|---|")
    for split, run in runs.items():
        if args.only and split not in args.only:
            continue
        b = fit_slope([r for r in loco if r is not run], args.form)
        results[split] = {"slope": b, "temperature": run["temperature"]}
        for part in ("val", "test"):
            s = run[part]
            before = corpus_rows(s, recording_distributions(s, np.full(len(s["r"]), run["temperature"])))
            after = corpus_rows(s, recording_distributions(s, law(run, b, part, args.form)))
            results[split][part] = {c: {"own": before[c], "law": after[c]} for c in before}
            for c in before:
                x, z = before[c], after[c]
                print(f"| {split} | {part} | {c} | {x['n']} | {b:.2f} | {x['accuracy']:.3f} → {z['accuracy']:.3f} | "
                      f"{x['ece']:.3f} → {z['ece']:.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
