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
from training.audio_models import cnn1d, with_corpus_adversary
from training.calibrate import calibrate_audio_model
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


def room_impulse(sr: int, rng: np.random.Generator, rt60: tuple[float, float] = (0.2, 0.8),
                 direct_db: tuple[float, float] = (-3.0, 10.0)) -> np.ndarray:
    """A synthetic room impulse response.

    The direct sound, then a tail of noise that decays by 60 dB over the
    reverberation time (drawn from ``rt60``, seconds); ``direct_db`` is the
    range of the direct sound's energy over the tail's (the direct-to-
    reverberant ratio: about 10 dB close to a microphone, 0 dB across a room).

    Returns
    -------
    float32 array, shape (round(rt60 * sr),), unit energy.
    """
    t60 = rng.uniform(*rt60)
    n = max(2, int(round(t60 * sr)))
    h = rng.standard_normal(n) * np.exp(-np.log(1000.0) * np.arange(n) / n)  # -60 dB at t60
    h[0] = 0.0
    h *= 10 ** (-rng.uniform(*direct_db) / 20) / np.sqrt(np.sum(h ** 2))  # the tail, against a direct sound of 1
    h[0] = 1.0
    return (h / np.sqrt(np.sum(h ** 2))).astype(np.float32)


def band_limit(y: np.ndarray, sr: int, rng: np.random.Generator, low_hz: tuple[float, float] = (60.0, 400.0),
               high_hz: tuple[float, float] = (3400.0, 7000.0)) -> np.ndarray:
    """``y`` through a band-pass with random edges (4th-order Butterworth), as a phone or a small
    microphone hears it."""
    from scipy.signal import butter, sosfilt
    edges = [rng.uniform(*low_hz), min(rng.uniform(*high_hz), 0.45 * sr)]
    return sosfilt(butter(4, edges, btype="bandpass", fs=sr, output="sos"), y).astype(np.float32)


def augment_waveform(y: np.ndarray, sr: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Speed change, room and microphone (when ``cfg`` asks), gain, time shift and additive noise, each drawn
    from ``rng``."""
    import librosa
    speed = rng.uniform(*cfg.speed)
    y = librosa.resample(y, orig_sr=sr, target_sr=int(round(sr / speed)), res_type="soxr_hq")
    # Drawn only when asked, so that the copies without them are the same as before these options existed.
    if cfg.reverb and rng.random() < cfg.reverb:
        from scipy.signal import fftconvolve
        y = fftconvolve(y, room_impulse(sr, rng))[:y.size].astype(np.float32)
    if cfg.channel and rng.random() < cfg.channel:
        y = band_limit(y, sr, rng)
    y = y * 10 ** (rng.uniform(*cfg.gain_db) / 20)
    y = np.roll(y, int(rng.uniform(-cfg.shift_seconds, cfg.shift_seconds) * sr))
    power = np.mean(y ** 2) + 1e-12
    noise = rng.standard_normal(y.size) * np.sqrt(power / 10 ** (rng.uniform(*cfg.snr_db) / 10))
    return (y + noise).astype(np.float32)


def feature_cache_key(items: list[Utterance], feat: AudioFeatureConfig, aug: AugmentConfig, seed: int) -> str:
    """What the cached features depend on: the feature and augmentation
    parameters, the seed, and each file's name and contents (a digest, so a
    copied or re-downloaded corpus finds its cache; the four corpora hash in
    about a second)."""
    def digest(path: Path) -> str:
        return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()

    # Options added later count only when used, so caches written before them stay valid.
    aug_fields = {k: v for k, v in asdict(aug).items() if v or k not in ("reverb", "channel")}
    feat_fields = {k: v for k, v in asdict(feat).items() if v or k not in ("pitch", "log_mel")}
    key_src = json.dumps([feat_fields, aug_fields, seed, CLIP_SECONDS, [(u.path.name, digest(u.path)) for u in items]])
    return hashlib.sha1(key_src.encode()).hexdigest()[:16]


def compute_features(items: list[Utterance], feat: AudioFeatureConfig, aug: AugmentConfig, seed: int,
                     cache_dir: Path | None) -> np.ndarray:
    """Features of every utterance and its augmented copies, cached on disk.

    Returns float16 array (len(items), 1 + copies, frames, n_features): copy 0
    is the original. The cache is ``cache_dir/speech-features-KEY.npy`` with
    the key of :func:`feature_cache_key`.
    """
    key = feature_cache_key(items, feat, aug, seed)
    cache = Path(cache_dir) / f"speech-features-{key}.npy" if cache_dir else None
    if cache is not None and cache.exists():
        return np.load(cache, mmap_mode="r")  # read in place: runs sharing a cache share its pages
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


def random_windows(x: np.ndarray | TrainingRows, frames: int, rng: np.random.Generator,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """One random ``frames``-long crop per item of a (n, time, features) array (of ``rows`` only, if given).

    ``x`` may be any object indexed as ``x[i, start:stop]`` with a ``shape``, such as :class:`TrainingRows`.
    """
    rows = np.arange(len(x)) if rows is None else rows
    starts = rng.integers(0, x.shape[1] - frames + 1, size=len(rows))
    return np.stack([x[i, s:s + frames] for i, s in zip(rows, starts)])


class TrainingRows:
    """Every augmented copy of the training items, as rows of a (n, time, features) array, read when used.

    Indexing the feature array with the training items (``feats[tr]``) would copy them all into memory
    (3 GB for the four corpora); the feature cache is memory-mapped, so this keeps one copy in the page
    cache, shared by runs that share the cache, and only the cut windows in each run's own memory.
    """

    def __init__(self, feats: np.ndarray, items: np.ndarray):
        self.feats, self.items, self.copies = feats, items, feats.shape[1]
        self.shape = (len(items) * self.copies, *feats.shape[2:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: tuple[int, slice]) -> np.ndarray:
        row, time = key
        return self.feats[self.items[row // self.copies], row % self.copies, time]


def mask_windows(x: np.ndarray, fill: np.ndarray, rng: np.random.Generator, time_masks: int,
                 coefficient_masks: int, n_mfcc: int, blocks: int = 3, n_mels: int = 0, max_frames: int = 30,
                 max_coefficients: int = 8) -> np.ndarray:
    """SpecAugment-style masking of training windows, in place.

    ``x`` is (n, frames, features): ``blocks`` blocks of ``n_mfcc`` columns
    (MFCCs, deltas, delta-deltas), then ``n_mels`` log-mel columns, then any
    others (pitch), which are never masked. Each window gets ``time_masks``
    spans of 0 to ``max_frames`` frames and ``coefficient_masks`` bands of 0
    to ``max_coefficients`` coefficients (the same band in every block), each
    with a band of as many log-mel columns (else the network could read the
    masked detail from the spectrum), set to ``fill`` (features,), the
    training mean, which the network's normalisation maps to zero. Returns ``x``.
    """
    frames = x.shape[1]
    mel = blocks * n_mfcc
    for i in range(len(x)):
        for _ in range(time_masks):
            w = rng.integers(0, max_frames + 1)
            s = rng.integers(0, frames - w + 1)
            x[i, s:s + w] = fill
        for _ in range(coefficient_masks):
            w = rng.integers(0, max_coefficients + 1)
            c = rng.integers(0, n_mfcc - w + 1)
            for b in range(blocks):
                cols = slice(b * n_mfcc + c, b * n_mfcc + c + w)
                x[i, :, cols] = fill[cols]
            if n_mels:
                c = rng.integers(0, n_mels - w + 1)
                x[i, :, mel + c:mel + c + w] = fill[mel + c:mel + c + w]
    return x


def warp_matrices(factor: float, n_mfcc: int, n_mels: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear maps that move a frame's spectral envelope up or down in frequency by ``factor``.

    Band ``i`` of the warped log-mel spectrum reads the original at ``f_i / factor`` (``f_i``: the band's
    centre frequency, Hz; linear interpolation between bands; below the first centre or above the last,
    that band), so what was at ``f`` Hz moves to ``factor * f``, as the formants of a shorter
    (``factor > 1``) or longer vocal tract would. The MFCC map goes through the smoothed log-mel
    spectrum the ``n_mfcc`` kept coefficients describe: DCT · warp · inverse DCT, the DCT being
    ``librosa.feature.mfcc``'s (type 2, orthonormal).

    Returns
    -------
    mel_map : (n_mels, n_mels) array, to apply as ``log_mel_frames @ mel_map.T``
    mfcc_map : (n_mfcc, n_mfcc) array, to apply as ``mfcc_frames @ mfcc_map.T``; the same map holds
        for the deltas, which are linear in the MFCCs over time
    """
    import librosa
    import scipy.fft
    centres = librosa.mel_frequencies(n_mels + 2, fmin=0.0, fmax=sample_rate / 2)[1:-1]
    source = np.interp(centres / factor, centres, np.arange(n_mels, dtype=float))
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, n_mels - 1)
    mel_map = np.zeros((n_mels, n_mels))
    np.add.at(mel_map, (np.arange(n_mels), low), 1 - (source - low))
    np.add.at(mel_map, (np.arange(n_mels), high), source - low)
    dct = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]
    return mel_map, dct @ mel_map @ dct.T


def spectral_warp(x: np.ndarray, rng: np.random.Generator, semitones: float, feat: AudioFeatureConfig,
                  steps: int = 13) -> np.ndarray:
    """Vocal tract length perturbation of training windows, in place, in the features' own domain.

    Each window of ``x`` (n, frames, features; the layout of :func:`multimodal.audio.mfcc_features`)
    gets its spectral envelope moved by a factor ``2 ** (s / 12)``, ``s`` drawn from ``steps`` values
    evenly spread over ``[-semitones, semitones]`` (:func:`warp_matrices`): the MFCC blocks and the
    log-mel channels move, the pitch channels do not (the voice's pitch is another lever). The cached
    copies' speed perturbation moves envelope, pitch and tempo together, once per copy; this draws anew
    every epoch. Returns ``x``.
    """
    blocks = 3 if feat.deltas else 1
    shifts = np.linspace(-semitones, semitones, steps)
    drawn = rng.integers(0, steps, size=len(x))
    for k, s in enumerate(shifts):
        rows = np.flatnonzero(drawn == k)
        if s == 0 or rows.size == 0:
            continue
        mel_map, mfcc_map = warp_matrices(2 ** (s / 12), feat.n_mfcc, feat.n_mels, feat.sample_rate)
        for b in range(blocks):
            cols = slice(b * feat.n_mfcc, (b + 1) * feat.n_mfcc)
            x[rows, :, cols] = x[rows, :, cols] @ mfcc_map.T.astype(np.float32)
        if feat.log_mel:
            cols = slice(blocks * feat.n_mfcc, blocks * feat.n_mfcc + feat.n_mels)
            x[rows, :, cols] = x[rows, :, cols] @ mel_map.T.astype(np.float32)
    return x


def mixup(x: np.ndarray, t: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mixup: each window and its target blended with another's.

    ``x`` is (n, frames, features), ``t`` (n, classes). Row i becomes
    ``lam_i * row_i + (1 - lam_i) * row_perm(i)`` with ``lam_i`` drawn from
    Beta(alpha, alpha) and folded above 0.5, so the row's own emotion stays
    the larger part of its target.
    """
    lam = rng.beta(alpha, alpha, size=len(x)).astype(np.float32)
    lam = np.maximum(lam, 1 - lam)
    perm = rng.permutation(len(x))
    x_mixed = np.empty(x.shape, x.dtype)
    for s in range(0, len(x), 1024):  # in chunks: a training set of windows is gigabytes
        part = slice(s, s + 1024)
        x_mixed[part] = lam[part, None, None] * x[part] + (1 - lam[part, None, None]) * x[perm[part]]
    t_mixed = lam[:, None] * t + (1 - lam[:, None]) * t[perm]
    return x_mixed, t_mixed.astype(np.float32)


def split_indices(items: list[Utterance], test_fold: int, val_fold: int, hold_out_corpus: str | None = None):
    """Indices of the training, validation and test utterances.

    By folds: the test fold's speakers of every corpus, the validation fold's,
    and the rest. With ``hold_out_corpus``, leave one corpus out: all of that
    corpus is the test set and none of it trains or selects; the validation
    fold's speakers of the other corpora select, and the rest train.
    """
    if hold_out_corpus is not None:
        test = [i for i, u in enumerate(items) if u.corpus == hold_out_corpus]
        val = [i for i, u in enumerate(items) if u.corpus != hold_out_corpus and u.fold == val_fold]
        train = [i for i, u in enumerate(items) if u.corpus != hold_out_corpus and u.fold != val_fold]
        return np.array(train, int), np.array(val, int), np.array(test, int)
    test = [i for i, u in enumerate(items) if u.fold == test_fold]
    val = [i for i, u in enumerate(items) if u.fold == val_fold]
    train = [i for i, u in enumerate(items) if u.fold not in (test_fold, val_fold)]
    return np.array(train, int), np.array(val, int), np.array(test, int)


def crowd_targets(items: list[Utterance], weight: float) -> np.ndarray:
    """Training targets, (len(items), len(SPEECH_LABELS)) float32 rows summing to 1.

    Each row is the intended emotion, one-hot, except where listeners heard
    another: CREMA-D's crowd voted on what each recording's voice alone
    conveys, and for about half of its recordings the majority heard
    something else (mostly neutral). There a share ``weight`` x (the
    majority's agreement) of the target moves to the emotion heard, so the
    network is not taught certainty about an emotion the voice did not carry.
    Recordings without a vote, or with a split one, keep the intended emotion.
    """
    targets = np.zeros((len(items), len(SPEECH_LABELS)), np.float32)
    for i, u in enumerate(items):
        targets[i, SPEECH_LABELS.index(u.label)] = 1.0
        heard = u.info.get("voice_vote", "")
        if weight and heard and heard != u.label:
            share = weight * float(u.info.get("voice_vote_agreement") or 0) / 100
            targets[i, SPEECH_LABELS.index(u.label)] -= share
            targets[i, SPEECH_LABELS.index(heard)] += share
    return targets


def balanced_draw(corpus: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` row indices drawn with replacement so that each corpus is drawn equally
    often and, within a corpus, each of its classes equally often.

    A corpus lacking a class (calm and surprise exist in some only) simply
    spreads its share over the classes it has.
    """
    groups = {}
    for c in np.unique(corpus):
        in_c = corpus == c
        groups[c] = [np.flatnonzero(in_c & (y == k)) for k in np.unique(y[in_c])]
    weights = np.zeros(len(y))
    for members in groups.values():
        for rows in members:
            weights[rows] = 1.0 / (len(groups) * len(members) * len(rows))
    return rng.choice(len(y), size=n, replace=True, p=weights / weights.sum())


def train_audio(cfg: AudioTrainConfig) -> dict:
    """Train one model holding out ``cfg.test_fold``; returns its test metrics."""
    import keras
    import tensorflow as tf

    out = Path(cfg.out)
    log = setup_logging(out, "train_audio")
    keras.utils.set_random_seed(cfg.seed)
    val_fold = cfg.val_fold if cfg.val_fold is not None else (cfg.test_fold + 1) % len(RAVDESS_FOLDS)
    if val_fold == cfg.test_fold and cfg.hold_out_corpus is None:  # a held-out corpus needs no test fold
        raise ValueError("validation and test folds must differ")
    items = load_speech_corpus(*cfg.data)
    corpora = sorted({u.corpus for u in items})
    if cfg.hold_out_corpus is not None and cfg.hold_out_corpus not in corpora:
        raise ValueError(f"--hold-out-corpus {cfg.hold_out_corpus}: not among the corpora found ({', '.join(corpora)})")
    tr, va, te = split_indices(items, cfg.test_fold, val_fold, cfg.hold_out_corpus)
    if cfg.no_validation:  # the validation fold's speakers train too
        tr, va = np.sort(np.concatenate([tr, va])), va[:0]
    test_name = (f"all of {cfg.hold_out_corpus}" if cfg.hold_out_corpus
                 else f"test fold {cfg.test_fold} (RAVDESS actors {RAVDESS_FOLDS[cfg.test_fold]})")
    log.info("%d utterances: train %d, validation fold %s: %d, %s: %d",
             len(items), len(tr), "none" if cfg.no_validation else val_fold, len(va), test_name, len(te))
    if len(tr) == 0 or (len(va) == 0 and not cfg.no_validation):
        raise ValueError(f"{cfg.data}: too few speakers for the requested folds")
    feats = compute_features(items, cfg.features, cfg.augment, cfg.seed, cfg.cache_dir or out / "cache")
    y = np.array([SPEECH_LABELS.index(u.label) for u in items])
    frames = window_frames(cfg.features)
    x_train_all = TrainingRows(feats, tr)  # every copy of every training item
    y_train_all = np.repeat(y[tr], feats.shape[1])
    t_train_all = np.repeat(crowd_targets([items[i] for i in tr], cfg.crowd_targets), feats.shape[1], axis=0)
    x_val = centre_window(feats[va, 0], frames).astype(np.float32)
    sample = np.stack([x_train_all[i, :] for i in range(0, len(x_train_all), max(1, len(x_train_all) // 2000))]
                      ).astype(np.float32)
    fill = sample.mean(axis=(0, 1))  # what a masked frame becomes: the mean frame
    utterance_means = sample.mean(axis=1)
    if cfg.utterance_norm:
        sample -= utterance_means[:, None, :]
    mean, var = sample.mean(axis=(0, 1)), sample.var(axis=(0, 1))
    side = (utterance_means.mean(axis=0), utterance_means.var(axis=0)) if cfg.utterance_mean else None

    adversary = cfg.corpus_adversary > 0
    train_corpora = sorted({items[i].corpus for i in tr})
    if adversary and len(train_corpora) < 2:
        raise ValueError("--corpus-adversary needs at least two training corpora")

    def corpus_targets(rows: np.ndarray) -> np.ndarray:
        """One-hot rows over the training corpora, of the utterances ``rows``."""
        names = [items[i].corpus for i in rows]
        if not set(names) <= set(train_corpora):
            raise ValueError(f"--corpus-adversary: validation corpora {sorted(set(names) - set(train_corpora))} "
                             "have no training speakers")
        return np.eye(len(train_corpora), dtype=np.float32)[[train_corpora.index(c) for c in names]]

    def build():
        model = cnn1d(feats.shape[-1], len(SPEECH_LABELS), mean, var, widths=cfg.widths,
                      utterance_norm=cfg.utterance_norm, pooling=cfg.pooling, utterance_mean=side)
        steps = int(np.ceil(len(x_train_all) / cfg.batch_size))
        schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate,
                                                          decay_steps=(cfg.schedule_epochs or cfg.epochs) * steps)
        loss, metrics = "categorical_crossentropy", ["accuracy"]
        if adversary:
            model = with_corpus_adversary(model, len(train_corpora), cfg.corpus_adversary)
            loss, metrics = {"emotion": loss, "corpus": loss}, {"emotion": metrics}
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-3), loss=loss, metrics=metrics,
                      jit_compile=False)
        return model

    corpus_all = np.repeat(np.array([items[i].corpus for i in tr]), feats.shape[1])
    if adversary:  # the corpus targets ride beside the emotion's, so that sampling and mixup treat both alike
        t_train_all = np.concatenate([t_train_all, np.repeat(corpus_targets(tr), feats.shape[1], axis=0)], axis=1)

    def train_data(epoch: int):
        rng = np.random.default_rng([cfg.seed, epoch])
        if cfg.balance:
            rows = balanced_draw(corpus_all, y_train_all, len(y_train_all), rng)
            x, t = random_windows(x_train_all, frames, rng, rows), t_train_all[rows]
        else:
            x, t = random_windows(x_train_all, frames, rng), t_train_all
        if cfg.spectral_warp:
            spectral_warp(x, rng, cfg.spectral_warp, cfg.features)
        if cfg.time_masks or cfg.coefficient_masks:
            mask_windows(x, fill, rng, cfg.time_masks, cfg.coefficient_masks, cfg.features.n_mfcc,
                         blocks=3 if cfg.features.deltas else 1, n_mels=cfg.features.n_mels * cfg.features.log_mel)
        if cfg.mixup:
            x, t = mixup(x, t, cfg.mixup, rng)
        # The order a full tf.data shuffle of the windows would give (it depends on the seeds and the
        # count only), applied here: a shuffle buffer would hold another copy of the windows.
        order = next(iter(tf.data.Dataset.range(len(x)).shuffle(len(x), seed=cfg.seed + epoch).batch(len(x)))).numpy()
        x, t = x[order], t[order]
        if adversary:
            t = {"emotion": t[:, :len(SPEECH_LABELS)], "corpus": t[:, len(SPEECH_LABELS):]}
        return (tf.data.Dataset.from_tensor_slices((x, t)).batch(cfg.batch_size)
                .map(lambda xb, tb: (tf.cast(xb, tf.float32), tb)).prefetch(2))

    y_val = np.eye(len(SPEECH_LABELS), dtype=np.float32)[y[va]]  # the intended emotions select
    validation = None if cfg.no_validation else (x_val, y_val)
    if adversary and validation is not None:  # validation corpora are training corpora (other speakers)
        validation = (x_val, {"emotion": y_val, "corpus": corpus_targets(va)})
    model, state = fit_resumable(build, train_data, validation, out, epochs=cfg.epochs, patience=cfg.patience,
                                 resume=cfg.resume, log=log, select="emotion_accuracy" if adversary else "accuracy")
    model_path = out / "model.keras"
    export_model(out / "checkpoints" / "best.keras", model_path, output="emotion" if adversary else None)
    card = dict(input={"shape": ["time", feats.shape[-1]], "dtype": "float32",
                       "description": "MFCC + deltas + delta-deltas, one row per hop; the network pools over time"},
                preprocessing="mono 16 kHz float waveform -> multimodal.audio.mfcc_features(features) "
                              "(level-normalised first when features.level_dbfs is set; log-mel channels "
                              "after the MFCC blocks when features.log_mel is set, pitch channels last when "
                              "features.pitch is set)",
                features=asdict(cfg.features),
                label_mapping="calm -> neutral when merged into the 7 project classes",
                training={"datasets": corpora,
                          "training_utterances": dict(Counter(items[i].corpus for i in tr)),
                          "test_fold": None if cfg.hold_out_corpus else cfg.test_fold,
                          "test_actors": None if cfg.hold_out_corpus else list(RAVDESS_FOLDS[cfg.test_fold]),
                          "held_out_corpus": cfg.hold_out_corpus, "balanced_sampling": cfg.balance,
                          "masks": {"time": cfg.time_masks, "coefficients": cfg.coefficient_masks},
                          "utterance_norm": cfg.utterance_norm, "utterance_mean": cfg.utterance_mean,
                          "crowd_targets": cfg.crowd_targets,
                          "mixup": cfg.mixup, "spectral_warp_semitones": cfg.spectral_warp,
                          "pooling": cfg.pooling, "widths": list(cfg.widths),
                          "corpus_adversary": cfg.corpus_adversary,
                          "validation_fold": None if cfg.no_validation else val_fold,
                          "no_validation": cfg.no_validation, "schedule_epochs": cfg.schedule_epochs or cfg.epochs,
                          "epochs_run": state.epoch, "best_epoch": state.best_epoch,
                          "augmentation": asdict(cfg.augment), "seed": cfg.seed, "platform": platform.platform()})
    return calibrate_and_test(model_path, card, [items[i] for i in te], [items[i] for i in va], val_fold,
                              cfg.test_fold, cfg.hold_out_corpus, log, temperature=cfg.temperature)


def calibrate_and_test(model_path: Path, card: dict, test_items: list, val_items: list, val_fold: int,
                       test_fold: int, hold_out_corpus: str | None, log, temperature: float | None = None) -> dict:
    """Write the card of a trained speech model, fit its temperature on the validation speakers and score
    the test speakers before and after it, as ``analyze`` scores files.

    With no ``val_items`` (a run without validation speakers) the card records ``temperature`` instead.

    ``card`` holds the card's fields except calibration and metrics, which this adds; reports go to
    ``report_uncalibrated/`` and ``report/`` beside the model. Returns the first held-out corpus's
    summary (RAVDESS's, or the held-out corpus's) with ``by_corpus``, every corpus's.
    """
    out = model_path.parent
    test_name = (f"all of {hold_out_corpus}" if hold_out_corpus
                 else f"test fold {test_fold} (RAVDESS actors {RAVDESS_FOLDS[test_fold]})")
    write_card(model_path, "audio", SPEECH_LABELS, **card)  # evaluation loads the model through its card
    uncalibrated = evaluate_recordings(model_path, test_items, out / "report_uncalibrated",
                                       "Audio model (uncalibrated) on held-out speakers", temperature=1.0)
    if val_items:
        calibration = calibrate_audio_model(model_path, val_items,
                                            f"validation fold {val_fold}: held-out speakers of "
                                            + ", ".join(sorted({u.corpus for u in val_items})))
        log.info("calibration: temperature %.3f fitted on the validation speakers (ECE there %.3f -> %.3f)",
                 calibration["temperature"], calibration["ece_before"], calibration["ece_after"])
    else:
        if temperature is None:
            raise ValueError("a run without validation speakers needs its temperature given")
        calibration = {"temperature": float(temperature),
                       "fitted_on": "given when training (--temperature): no held-out speakers were left to fit it on"}
        write_card(model_path, "audio", SPEECH_LABELS, **card, calibration=calibration)
        log.info("calibration: temperature %.3f, as given", temperature)
    card = {**card, "calibration": calibration}
    results = evaluate_recordings(model_path, test_items, out / "report", f"Audio model on {test_name}")
    first = hold_out_corpus or ("ravdess" if "ravdess" in results else sorted(results)[0])
    summary = results[first]
    metrics = {"split": split_name(first, test_fold, hold_out_corpus), "scored_as": "analyze scores a file",
               **_headline(summary), "ece_uncalibrated": uncalibrated[first]["ece"]}
    for corpus in sorted(results.keys() - {first}):  # other held-out speakers, e.g. EmoDB's of this fold
        metrics[corpus] = {"split": split_name(corpus, test_fold), **_headline(results[corpus]),
                           "ece_uncalibrated": uncalibrated[corpus]["ece"]}
    write_card(model_path, "audio", SPEECH_LABELS, **card, metrics=metrics)
    for corpus, r in results.items():
        log.info("%s, %s: 8-class acc %.4f, 7-class acc %.4f, UAR %.4f, no evidence %d of %d",
                 test_name, corpus, r["accuracy_8class"], r["accuracy_7class"], r["uar"], r["no_evidence"], r["n"])
    return {**summary, "by_corpus": results}


def _headline(r: dict) -> dict:
    return {k: r[k] for k in ("n", "no_evidence", "accuracy_8class", "accuracy_7class", "macro_f1", "uar",
                              "cross_entropy", "ece")}


def split_name(corpus: str, fold: int, hold_out_corpus: str | None = None) -> str:
    """How a test split is named in cards and reports."""
    if hold_out_corpus is not None:
        return f"all of {hold_out_corpus} (a corpus never trained or selected on)"
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
