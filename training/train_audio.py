"""Train the speech-emotion model on RAVDESS, with TESS and EmoDB if given.

Speaker independence: RAVDESS actors are split by the published folds (and
EmoDB speakers by :data:`training.speech_datasets.EMODB_FOLDS`); the test
fold is never seen in training or model selection, a second fold is the
validation set for early stopping, and the remaining three folds train.
TESS speakers, if present, only ever train.

The test figures come from :func:`training.evaluate.evaluate_recordings`:
whole recordings scored exactly as ``analyze`` scores a file.
"""
from __future__ import annotations

import hashlib
import json
import platform
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from multimodal.atomic import atomic_path, write_text_atomic
from multimodal.audio import center_crop_or_pad, load_audio, mfcc_features
from multimodal.config import AudioFeatureConfig
from multimodal.models import write_card
from training.audio_models import cnn1d
from training.config import AudioTrainConfig, AugmentConfig
from training.evaluate import evaluate_recordings
from training.loop import export_model, fit_resumable, setup_logging
from training.speech_datasets import (
    EMODB_FOLDS,
    RAVDESS_FOLDS,
    SPEECH_LABELS,
    Utterance,
    load_speech_corpus,
)

CLIP_SECONDS = 4.0  # each utterance is stored centred in a clip this long


def augment_waveform(y: np.ndarray, sr: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Speed change, gain, time shift and additive noise, each drawn from ``rng``."""
    import librosa
    speed = rng.uniform(*cfg.speed)
    y = librosa.resample(y, orig_sr=sr, target_sr=int(round(sr / speed)), res_type="soxr_hq")
    y = y * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    y = np.roll(y, int(rng.uniform(-cfg.shift_seconds, cfg.shift_seconds) * sr))
    power = np.mean(y ** 2) + 1e-12
    noise = rng.standard_normal(y.size) * np.sqrt(power / 10 ** (rng.uniform(*cfg.snr_db) / 10))
    return (y + noise).astype(np.float32)


def compute_features(items: list[Utterance], feat: AudioFeatureConfig, aug: AugmentConfig, seed: int,
                     cache_dir: Path | None) -> np.ndarray:
    """Features of every utterance and its augmented copies, cached on disk.

    Returns float16 array (len(items), 1 + copies, frames, n_features): copy 0
    is the original. The cache key covers the feature and augmentation
    parameters, the seed and the files (path, size, mtime).
    """

    key_src = json.dumps([asdict(feat), asdict(aug), seed, CLIP_SECONDS,
                          [(str(u.path.resolve()), u.path.stat().st_size, u.path.stat().st_mtime_ns) for u in items]])
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"speech-features-{key}.npy" if cache_dir else None
    if cache is not None and cache.exists():
        return np.load(cache)
    n = int(CLIP_SECONDS * feat.sample_rate)
    out = np.zeros(0, np.float16)
    for i, u in enumerate(tqdm(items, desc="features", unit="file", disable=None)):
        rng = np.random.default_rng([seed, i])
        y = load_audio(u.path, feat.sample_rate)
        versions = [center_crop_or_pad(y, n)] + [center_crop_or_pad(augment_waveform(y, feat.sample_rate, rng, aug), n)
                                         for _ in range(aug.copies)]
        f = np.stack([mfcc_features(v, feat) for v in versions]).astype(np.float16)
        if i == 0:
            out = np.zeros((len(items),) + f.shape, np.float16)
        out[i] = f
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            np.save(tmp, out)
    return out


def window_frames(feat: AudioFeatureConfig) -> int:
    """Feature frames in one training window."""
    return int(round(feat.window_seconds * feat.sample_rate / feat.hop_length))


def centre_window(x: np.ndarray, frames: int) -> np.ndarray:
    """Centre crop along the time axis (axis 1) of a (n, time, features) array."""
    start = (x.shape[1] - frames) // 2
    return x[:, start:start + frames]


def random_windows(x: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """One random ``frames``-long crop per item of a (n, time, features) array."""
    starts = rng.integers(0, x.shape[1] - frames + 1, size=len(x))
    return np.stack([x[i, s:s + frames] for i, s in enumerate(starts)])


def split_indices(items: list[Utterance], test_fold: int, val_fold: int):
    """Indices of the training, validation and test utterances of ``cfg``'s folds."""
    test = [i for i, u in enumerate(items) if u.fold == test_fold]
    val = [i for i, u in enumerate(items) if u.fold == val_fold]
    train = [i for i, u in enumerate(items) if u.fold not in (test_fold, val_fold)]
    return np.array(train), np.array(val), np.array(test)


def train_audio(cfg: AudioTrainConfig) -> dict:
    """Train one model holding out ``cfg.test_fold``; returns its test metrics."""
    import keras
    import tensorflow as tf


    out = Path(cfg.out)
    log = setup_logging(out, "train_audio")
    keras.utils.set_random_seed(cfg.seed)
    val_fold = cfg.val_fold if cfg.val_fold is not None else (cfg.test_fold + 1) % len(RAVDESS_FOLDS)
    if val_fold == cfg.test_fold:
        raise ValueError("validation and test folds must differ")
    items = load_speech_corpus(*cfg.data)
    tr, va, te = split_indices(items, cfg.test_fold, val_fold)
    log.info("%d utterances: train %d, validation fold %d: %d, test fold %d (actors %s): %d",
             len(items), len(tr), val_fold, len(va), cfg.test_fold, RAVDESS_FOLDS[cfg.test_fold], len(te))
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"{cfg.data}: too few speakers for the requested folds")
    feats = compute_features(items, cfg.features, cfg.augment, cfg.seed, cfg.cache_dir or out / "cache")
    y = np.array([SPEECH_LABELS.index(u.label) for u in items])
    frames = window_frames(cfg.features)
    x_train_all = feats[tr].reshape(-1, *feats.shape[2:])  # every copy of every training item
    y_train_all = np.repeat(y[tr], feats.shape[1])
    x_val = centre_window(feats[va, 0], frames).astype(np.float32)
    sample = x_train_all[:: max(1, len(x_train_all) // 2000)].astype(np.float32)
    mean, var = sample.mean(axis=(0, 1)), sample.var(axis=(0, 1))

    def build():
        model = cnn1d(feats.shape[-1], len(SPEECH_LABELS), mean, var)
        steps = int(np.ceil(len(x_train_all) / cfg.batch_size))
        schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=cfg.epochs * steps)
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
        return model

    def train_data(epoch: int):
        rng = np.random.default_rng([cfg.seed, epoch])
        x = random_windows(x_train_all, frames, rng).astype(np.float32)
        return (tf.data.Dataset.from_tensor_slices((x, y_train_all))
                .shuffle(len(x), seed=cfg.seed + epoch).batch(cfg.batch_size).prefetch(2))

    model, state = fit_resumable(build, train_data, (x_val, y[va]), out, epochs=cfg.epochs,
                                 patience=cfg.patience, resume=cfg.resume, log=log)
    model_path = out / "model.keras"
    export_model(out / "checkpoints" / "best.keras", model_path)
    corpora = sorted({u.corpus for u in items})
    card = dict(input={"shape": ["time", feats.shape[-1]], "dtype": "float32",
                       "description": "MFCC + deltas + delta-deltas, one row per hop; the network pools over time"},
                preprocessing="mono 16 kHz float waveform -> multimodal.audio.mfcc_features(features) "
                              "(level-normalised first when features.level_dbfs is set)",
                features=asdict(cfg.features),
                label_mapping="calm -> neutral when merged into the 7 project classes",
                training={"datasets": corpora,
                          "training_utterances": dict(Counter(items[i].corpus for i in tr)),
                          "test_fold": cfg.test_fold, "test_actors": list(RAVDESS_FOLDS[cfg.test_fold]),
                          "validation_fold": val_fold, "epochs_run": state.epoch, "best_epoch": state.best_epoch,
                          "augmentation": asdict(cfg.augment), "seed": cfg.seed, "platform": platform.platform()})
    write_card(model_path, "audio", SPEECH_LABELS, **card)  # evaluation loads the model through its card
    results = evaluate_recordings(model_path, [items[i] for i in te], out / "report",
                                  f"Audio model on held-out speakers of fold {cfg.test_fold}")
    summary = results["ravdess"]
    metrics = {"split": split_name("ravdess", cfg.test_fold), "scored_as": "analyze scores a file",
               **_headline(summary)}
    for corpus in sorted(results.keys() - {"ravdess"}):  # other held-out speakers, e.g. EmoDB's of this fold
        metrics[corpus] = {"split": split_name(corpus, cfg.test_fold), **_headline(results[corpus])}
    write_card(model_path, "audio", SPEECH_LABELS, **card, metrics=metrics)
    for corpus, r in results.items():
        log.info("test fold %d, %s: 8-class acc %.4f, 7-class acc %.4f, UAR %.4f, no evidence %d of %d",
                 cfg.test_fold, corpus, r["accuracy_8class"], r["accuracy_7class"], r["uar"], r["no_evidence"], r["n"])
    return {**summary, "by_corpus": results}


def _headline(r: dict) -> dict:
    return {k: r[k] for k in ("n", "no_evidence", "accuracy_8class", "accuracy_7class", "macro_f1", "uar",
                              "cross_entropy", "ece")}


def split_name(corpus: str, fold: int) -> str:
    """How a test split is named in cards and reports."""
    if corpus == "emodb":
        return f"EmoDB speakers {', '.join(f'{s:02d}' for s in EMODB_FOLDS[fold])} (held out)"
    if corpus == "cremad":
        return f"CREMA-D actors whose number is {fold} modulo 5 (held out)"
    return f"RAVDESS fold {fold}, actors {', '.join(map(str, RAVDESS_FOLDS[fold]))} (held out)"


def cross_validate(cfg: AudioTrainConfig) -> dict:
    """Train one model per RAVDESS test fold; mean and standard deviation of the metrics."""
    results = []
    for fold in range(len(RAVDESS_FOLDS)):
        sub = AudioTrainConfig(**{**cfg.__dict__, "test_fold": fold, "val_fold": None,
                                  "out": Path(cfg.out) / f"fold{fold}",
                                  "cache_dir": cfg.cache_dir or Path(cfg.out) / "cache"})
        results.append(train_audio(sub))
    keys = ("accuracy_8class", "accuracy_7class", "macro_f1", "uar")
    summary: dict[str, dict] = {k: {"mean": float(np.mean([r[k] for r in results])), "std": float(np.std([r[k] for r in results])),
                   "per_fold": [r[k] for r in results]} for k in keys}
    summary["no_evidence"] = {"mean": float(np.mean([r["no_evidence"] for r in results])), "std": 0.0,
                              "per_fold": [r["no_evidence"] for r in results]}
    if all("emodb" in r["by_corpus"] for r in results):  # EmoDB speakers held out alongside
        emodb = [r["by_corpus"]["emodb"]["accuracy_8class"] for r in results]
        summary["emodb_accuracy"] = {"mean": float(np.mean(emodb)), "std": float(np.std(emodb)), "per_fold": emodb}
    write_text_atomic(Path(cfg.out) / "cv.json", json.dumps(summary, indent=2))
    lines = ["# RAVDESS 5-fold speaker-independent cross-validation", "", "| metric | mean | std | per fold |",
             "|---|---|---|---|"]
    lines += [f"| {k} | {v['mean']:.4f} | {v['std']:.4f} | {', '.join(f'{x:.3f}' for x in v['per_fold'])} |"
              for k, v in summary.items()]
    write_text_atomic(Path(cfg.out) / "cv.md", "\n".join(lines) + "\n")
    return summary
