"""Does weighting each modality by its evidence beat plain product fusion?

    python benchmarks/bench_evidence_fusion.py --fer PATH/fer2013 --ravdess PATH/ravdess_speech
                                               [--cache DIR] [--bootstrap 2000]

On the pseudo-pairs of ``multimodal compare-fusion`` (RAVDESS voices of the
audio model's validation fold x FER2013 PublicTest faces to fit, of its test
fold x PrivateTest to test), the visual
weight of log-linear pooling becomes a per-pair value,
``w = sigmoid(theta . evidence)``, instead of the one number the shipped
``product`` strategy uses. Evidence per pair:

* ``face``: BlazeFace's score for the face (the FER2013 photo enlarged to
  128 px with a 32 px border), 0 when it finds none: how face-like the crop
  looks to the detector, as a segment's face score does in ``analyze``;
* ``speech``: the fraction of the utterance the speech detector hears;
* ``level``: the utterance's RMS level, (dBFS + 40) / 20;
* ``Hv``, ``Ha``: the entropy of each modality's distribution (nats).

``theta`` is fitted by minimising log-loss on the fitting pairs; each set of
evidence is printed beside ``product`` on the test pairs, with the paired
bootstrap 95% interval of the accuracy difference. Predictions come from the
shipped models and are cached under ``--cache`` (the same cache as
``compare-fusion --out DIR`` uses in ``DIR/cache``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from multimodal.audio import load_audio, rms_dbfs  # noqa: E402
from multimodal.config import DEFAULT_AUDIO_MODEL, DEFAULT_VISUAL_MODEL  # noqa: E402
from multimodal.faces import BlazeFaceDetector  # noqa: E402
from multimodal.fusion import ProductFusion, _entropy, _log_loss, make_strategy  # noqa: E402
from multimodal.speech import SpeechDetector  # noqa: E402
from training.compare_fusion import (  # noqa: E402
    _seven_class,
    pair_indices,
    paired_difference_ci,
    pseudo_pairs,
    speaker_half,
    voice_folds,
)
from training.fer2013 import load_fer2013  # noqa: E402
from training.speech_datasets import load_ravdess  # noqa: E402

EVIDENCE_SETS = ([], ["face"], ["speech"], ["level"], ["face", "speech"], ["face", "speech", "level"],
                 ["Hv", "Ha"], ["face", "speech", "Hv", "Ha"])


def face_scores(faces: np.ndarray, detector: BlazeFaceDetector) -> np.ndarray:
    """BlazeFace's best score on each 48x48 face, shape (n,); 0 where none is found."""
    out = np.zeros(len(faces))
    for i, face in enumerate(faces):
        big = cv2.copyMakeBorder(cv2.resize(face, (128, 128), interpolation=cv2.INTER_LINEAR),
                                 32, 32, 32, 32, cv2.BORDER_REPLICATE)
        found = detector.detect(np.repeat(big[..., None], 3, axis=2), small=False)
        out[i] = max((f.score for f in found), default=0.0)
    return out


def pair_evidence(pairs, fer: Path, ravdess: Path, split: str, fold: int, seed: int, cache: Path,
                  halved: bool = False) -> dict:
    """Evidence columns (n,) of the pairs ``pseudo_pairs`` built for ``split`` and ``fold`` (``halved``:
    of the fold's speakers, the fitting half for PublicTest and the other for PrivateTest)."""
    x, yf = load_fer2013(fer, split, cache)
    items = [u for u in load_ravdess(ravdess) if u.fold == fold]
    if halved:
        items = speaker_half(items, fitting=split == "PublicTest")
    y = np.array([_seven_class(u.label) for u in items])
    if not np.array_equal(y, pairs.y):
        raise RuntimeError("the pairs do not match the RAVDESS fold; clear the cache")
    faces = x[pair_indices(yf, y, seed + fold)]
    detector = BlazeFaceDetector(min_size=8, min_score=0.05, tile_aspect=np.inf)
    speech = SpeechDetector()
    voices = [load_audio(u.path, 16000) for u in items]
    return {"face": face_scores(faces, detector),
            "speech": np.array([speech.speech_seconds(v) / max(v.size / 16000, 1e-3) for v in voices]),
            "level": (np.array([rms_dbfs(v) for v in voices]) + 40) / 20,
            "Hv": _entropy(pairs.visual), "Ha": _entropy(np.nan_to_num(pairs.audio, nan=1 / 7))}


def pooled(pv: np.ndarray, pa: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Log-linear pooling (``product``) with a visual weight per row: pv, pa (n, 7), w (n,)."""
    return ProductFusion._combine(pv, pa, w[:, None])


def fit_gate(x: np.ndarray, pv: np.ndarray, pa: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``theta`` (k,) of the visual weight ``sigmoid(x @ theta)`` minimising log-loss; x (n, k)."""
    def loss(theta):
        # A light ridge keeps the evidence terms from fitting noise in 300 pairs.
        return _log_loss(y, pooled(pv, pa, 1 / (1 + np.exp(-x @ theta)))) + 1e-3 * np.sum(theta[1:] ** 2)
    return minimize(loss, np.zeros(x.shape[1]), method="Nelder-Mead",
                    options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-6}).x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fer", type=Path, required=True)
    ap.add_argument("--ravdess", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("out/evidence_fusion_cache"))
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    val, test = pseudo_pairs(args.fer, args.ravdess, DEFAULT_VISUAL_MODEL, DEFAULT_AUDIO_MODEL, args.cache, args.seed)
    test_fold, val_fold = voice_folds(DEFAULT_AUDIO_MODEL)
    halved = val_fold is None  # an audio model trained on every fold but its test fold
    ev_val = pair_evidence(val, args.fer, args.ravdess, "PublicTest", test_fold if halved else val_fold,
                           args.seed, args.cache, halved)
    ev_test = pair_evidence(test, args.fer, args.ravdess, "PrivateTest", test_fold, args.seed, args.cache, halved)
    both_v = ~np.isnan(val.audio).any(1)
    both_t = ~np.isnan(test.audio).any(1)
    yt = test.y[both_t]
    product = make_strategy("product").fit(val.visual, val.audio, val.y)
    base = product.predict_proba(test.visual[both_t], test.audio[both_t])
    print(f"{both_v.sum()} fitting pairs, {both_t.sum()} test pairs with both modalities; "
          f"product (visual weight {product.get_state()['visual_weight']:.3f}): "
          f"accuracy {np.mean(base.argmax(1) == yt):.3f}, cross-entropy {_log_loss(yt, base):.3f}")
    print("| evidence | accuracy | minus product (95% CI) | cross-entropy | theta |")
    print("|---|---|---|---|---|")
    for names in EVIDENCE_SETS:
        xv = np.stack([np.ones(both_v.sum())] + [ev_val[n][both_v] for n in names], axis=1)
        xt = np.stack([np.ones(both_t.sum())] + [ev_test[n][both_t] for n in names], axis=1)
        theta = fit_gate(xv, val.visual[both_v], val.audio[both_v], val.y[both_v])
        p = pooled(test.visual[both_t], test.audio[both_t], 1 / (1 + np.exp(-xt @ theta)))
        d, lo, hi = paired_difference_ci(yt, p, base, args.bootstrap, args.seed)
        print(f"| {' + '.join(names) or 'none (constant weight)'} | {np.mean(p.argmax(1) == yt):.3f} | "
              f"{d:+.3f} ({lo:+.3f} to {hi:+.3f}) | {_log_loss(yt, p):.3f} | {np.round(theta, 2).tolist()} |")


if __name__ == "__main__":
    main()
