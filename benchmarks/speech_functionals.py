"""Utterance statistics of the voice, alone and beside the speech model.

A classic speech-emotion baseline summarises a whole recording by
statistics of its frames (MFCC means and spreads, pitch level and range,
loudness contour, spectral shape) and fits a linear classifier on them.
It cannot learn a corpus's fine detail, which is why it may carry better
to voices and corpora it never heard. This fits one, multinomial logistic
regression on standardised statistics, per protocol split (the same
training, validation and test speakers as the speech model's runs: fold k
or one corpus never heard), chooses its regularisation and fits its
temperature on the validation speakers, and scores the test speakers. With
``--cnn`` it also scores the weighted geometric mean of its distribution
and the given speech model's (the model must not have heard the split's
test speakers), the weight chosen on the validation speakers.

    python benchmarks/speech_functionals.py --data PATH/ravdess_speech PATH/cremad PATH/tess PATH/emodb \\
        --cache runs/functionals [--only fold1 loco_cremad] [--cnn fold1=models/audio_default.keras]

Scores as ``speech_ensemble.py``: accuracy (eight classes for RAVDESS, the
corpus's own classes otherwise, calm counted as neutral), unweighted
average recall and expected calibration error. The statistics are of the
whole recording (level-normalised as the speech model's features are),
not of ``analyze``'s 3 s segments: most recordings here are shorter.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from speech_ensemble import SPLITS, scores  # run as a script: its folder is on the path

from multimodal.audio import AudioModel, apply_temperature, fit_temperature, load_audio, normalize_level
from multimodal.config import AudioFeatureConfig
from training.evaluate import recording_probabilities
from training.speech_datasets import SPEECH_LABELS, load_speech_corpus
from training.train_audio import split_indices

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def voice_statistics(y: np.ndarray, cfg: AudioFeatureConfig = AudioFeatureConfig(), voiced_db: float = 30.0
                     ) -> np.ndarray:
    """Statistics of one recording's loud frames, shape (185,).

    Frames within ``voiced_db`` of the loudest are the voice. Over them:
    mean and standard deviation of 40 MFCCs and of their deltas (160);
    log-pitch (YIN, octaves re 200 Hz) median, spread, 10th and 90th
    percentile, range and mean absolute slope (6); loudness (dB re the
    loudest frame) mean, spread, 10th and 90th percentile and mean absolute
    slope (5); log spectral centroid, bandwidth, flatness and roll-off means
    and spreads (8); zero-crossing rate mean and spread (2); the share of
    loud frames, loud runs per second, their mean length in seconds and the
    log duration (4).
    """
    import librosa
    sr, hop = cfg.sample_rate, cfg.hop_length
    y = normalize_level(y, -20.0)
    if y.size < 4 * cfg.n_fft:
        y = np.pad(y, (0, 4 * cfg.n_fft - y.size))
    log_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=cfg.n_fft, hop_length=hop,
                                                                 n_mels=cfg.n_mels))
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=cfg.n_mfcc)
    delta = librosa.feature.delta(mfcc, width=9)
    rms = librosa.feature.rms(y=y, frame_length=cfg.n_fft, hop_length=hop)[0]
    db = 20 * np.log10(rms + 1e-7)
    db -= db.max()
    n = min(mfcc.shape[1], db.size)
    loud = db[:n] > -voiced_db
    if loud.sum() < 3:
        loud[:] = True
    f0 = librosa.yin(y, fmin=70.0, fmax=500.0, sr=sr, frame_length=int(0.05 * sr), hop_length=hop)
    octaves = np.log2(f0[:n] / 200.0)[loud]
    spectral = [librosa.feature.spectral_centroid(y=y, sr=sr, n_fft=cfg.n_fft, hop_length=hop)[0],
                librosa.feature.spectral_bandwidth(y=y, sr=sr, n_fft=cfg.n_fft, hop_length=hop)[0],
                librosa.feature.spectral_flatness(y=y, n_fft=cfg.n_fft, hop_length=hop)[0],
                librosa.feature.spectral_rolloff(y=y, sr=sr, n_fft=cfg.n_fft, hop_length=hop)[0]]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=cfg.n_fft, hop_length=hop)[0]
    runs = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(int), [0]])) == 1).size
    seconds = n * hop / sr
    p10, p50, p90 = np.percentile(octaves, [10, 50, 90])
    d10, d90 = np.percentile(db[:n][loud], [10, 90])
    parts = [
        mfcc[:, :n][:, loud].mean(axis=1), mfcc[:, :n][:, loud].std(axis=1),
        delta[:, :n][:, loud].mean(axis=1), delta[:, :n][:, loud].std(axis=1),
        [p50, octaves.std(), p10, p90, p90 - p10, np.abs(np.diff(octaves)).mean() if octaves.size > 1 else 0.0],
        [db[:n][loud].mean(), db[:n][loud].std(), d10, d90, np.abs(np.diff(db[:n])).mean()],
        *[[np.log(s[:n][loud] + 1e-6).mean(), np.log(s[:n][loud] + 1e-6).std()] for s in spectral],
        [zcr[:n][loud].mean(), zcr[:n][loud].std()],
        [loud.mean(), runs / seconds, loud.sum() / max(runs, 1) * hop / sr, np.log(seconds)],
    ]
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def _statistics_of_file(path: str) -> np.ndarray:
    return voice_statistics(load_audio(path))


def all_statistics(items: list, cache: Path, workers: int) -> np.ndarray:
    """(len(items), n_statistics), computed once and kept in ``cache/statistics.npz``."""
    store = cache / "statistics.npz"
    paths = [str(u.path) for u in items]
    if store.exists():
        saved = np.load(store)
        if list(saved["paths"]) == paths:
            return saved["x"]
    with ProcessPoolExecutor(workers) as pool:
        x = np.stack(list(pool.map(_statistics_of_file, paths, chunksize=32)))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(store, x=x, paths=np.array(paths))
    return x


class StatisticsClassifier:
    """Standardised statistics -> multinomial logistic regression -> temperature.

    Parameters
    ----------
    c_grid : inverse regularisation strengths tried; the one with the lowest
        validation log-loss is kept.
    """

    def __init__(self, c_grid: tuple[float, ...] = C_GRID):
        self.c_grid = c_grid

    def fit(self, x, y, x_val, y_val) -> StatisticsClassifier:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        best = None
        for c in self.c_grid:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
            model.fit(x, y)
            p = self._full(model, x_val)
            loss = -np.mean(np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-12, 1)))
            if best is None or loss < best[0]:
                best = (loss, c, model)
        _, self.c_, self.model_ = best
        self.temperature_ = fit_temperature(self._full(self.model_, x_val), y_val)
        return self

    @staticmethod
    def _full(model, x) -> np.ndarray:
        """Probabilities over all of SPEECH_LABELS (classes absent from training get 0)."""
        p = np.zeros((len(x), len(SPEECH_LABELS)))
        p[:, model.classes_] = model.predict_proba(x)
        return np.clip(p, 1e-9, 1) / np.clip(p, 1e-9, 1).sum(axis=1, keepdims=True)

    def predict_proba(self, x) -> np.ndarray:
        return apply_temperature(self._full(self.model_, x), self.temperature_)


def geometric(p: np.ndarray, q: np.ndarray, w: float) -> np.ndarray:
    """Weighted geometric mean of two distributions, ``w`` on ``q``, renormalised."""
    g = np.exp((1 - w) * np.log(np.clip(p, 1e-12, 1)) + w * np.log(np.clip(q, 1e-12, 1)))
    return g / g.sum(axis=1, keepdims=True)


def cnn_distributions(model_path: Path, items: list, cache: Path, tag: str) -> np.ndarray:
    """The speech model's calibrated recording distributions (len(items), 8), as analyze scores a file."""
    store = cache / f"cnn-{model_path.stem}-{tag}.npz"  # one file per model and split
    if store.exists():
        return np.load(store)["p"]
    model = AudioModel(model_path)
    by_corpus = recording_probabilities(model, items)
    rows, seen = [], {c: 0 for c in by_corpus}
    for u in items:  # recording_probabilities groups by corpus, keeping each corpus's order
        rows.append(by_corpus[u.corpus][1][seen[u.corpus]])
        seen[u.corpus] += 1
    p = np.array(rows)
    np.savez(store, p=p)
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--only", nargs="+", choices=SPLITS)
    parser.add_argument("--cnn", nargs="+", default=[], metavar="SPLIT=MODEL")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    items = load_speech_corpus(*args.data)
    x = all_statistics(items, args.cache, args.workers)
    y = np.array([SPEECH_LABELS.index(u.label) for u in items])
    corpus = np.array([u.corpus for u in items])
    cnns = dict(s.split("=", 1) for s in args.cnn)
    out = {}
    for split in args.only or SPLITS:
        if split.startswith("fold"):
            k = int(split[4:])
            train, val, test = split_indices(items, k, (k + 1) % 5)
        else:
            train, val, test = split_indices(items, 0, 0, split[5:])
        clf = StatisticsClassifier().fit(x[train], y[train], x[val], y[val])
        p_val, p_test = clf.predict_proba(x[val]), clf.predict_proba(x[test])
        row: dict = {"C": clf.c_, "temperature": round(clf.temperature_, 3), "statistics": {}}
        for c in sorted(set(corpus[test])):
            m = corpus[test] == c
            row["statistics"][c] = scores(c, y[test][m], p_test[m])
        if split in cnns:
            q_val = cnn_distributions(Path(cnns[split]), [items[i] for i in val], args.cache, f"{split}-val")
            q_test = cnn_distributions(Path(cnns[split]), [items[i] for i in test], args.cache, f"{split}-test")
            grid = np.round(np.arange(0, 1.01, 0.1), 2)
            nll = [-np.mean(np.log(geometric(q_val, p_val, w)[np.arange(len(val)), y[val]])) for w in grid]
            w = float(grid[int(np.argmin(nll))])
            mixed = geometric(q_test, p_test, w)
            row["weight_on_statistics"] = w
            row["model"], row["together"] = {}, {}
            for c in sorted(set(corpus[test])):
                m = corpus[test] == c
                row["model"][c] = scores(c, y[test][m], q_test[m])
                row["together"][c] = scores(c, y[test][m], mixed[m])
        out[split] = row
        print(split, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
