"""Score every fusion strategy on the same paired audio-visual data.

Three kinds of pairs:

* **Real clips** (``--clips``): labelled audio-visual videos run through the
  ``analyze`` pipeline, one prediction per clip (segment distributions
  averaged, weighted by duration). Labels come from RAVDESS video names
  (``01-01-EE-…`` / ``02-01-EE-…``; the actor's fold decides test or
  validation, as for pseudo-pairs) or from ``manifest.csv`` (``path,label[,split]``; without a
  split column a seeded half of the clips is validation).
* **Pseudo-pairs** (``--fer`` and ``--speech``): each utterance of held-out
  speakers (RAVDESS, CREMA-D and EmoDB; TESS has no folds) is paired with a
  FER2013 face of the same emotion (calm counts as neutral), drawn with a
  seeded generator. Test pairs: the speakers of the audio model's test
  fold (its card's ``training.test_fold``; fold 0 where the card does not
  say) with FER2013 PrivateTest. Validation pairs, from which strategies
  learn: the speakers of its validation fold (fold 1 where the card does
  not say) with PublicTest. The voices are thus never ones the audio model
  trained on, whichever fold's run is shipped. Pseudo-pairs make the two
  modalities independent given the label, which real clips are not: they
  show what fusion can gain at best.
* **Never-heard pairs** (``--loco-runs``, ``--rafdb`` and ``--speech``):
  as pseudo-pairs, but each voice is scored by a leave-one-corpus-out run
  that never heard its corpus, and each face is a RAF-DB photograph, which
  the visual model never saw: neither model knows the person or the
  recording conditions, as with a user's own video. Strategies are fitted on
  some corpora and scored on another (cross-fitted by corpus).
"""
from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from multimodal.atomic import atomic_path, write_text_atomic
from multimodal.audio import AudioModel, load_audio, project_label, recording_distribution, to_project_labels
from multimodal.config import DEFAULT_AUDIO_MODEL, DEFAULT_VISUAL_MODEL, EMOTIONS, MODELS_DIR, AnalyzeConfig
from multimodal.errors import InputError, MultimodalError, OutputError
from multimodal.fusion import STRATEGIES, make_strategy
from multimodal.models import read_card, sha256_of
from multimodal.pipeline import Analyzer, load_fusion_state
from multimodal.speech import SpeechDetector
from multimodal.visual import VisualModel
from training.fer2013 import load_fer2013
from training.metrics import (
    bootstrap_ci,
    classification_metrics,
    cross_entropy,
    expected_calibration_error,
    plot_confusion,
)
from training.rafdb import load_rafdb
from training.speech_datasets import RAVDESS_FOLDS, load_speech_corpus, parse_ravdess_name, ravdess_fold

SHIPPED = f"{AnalyzeConfig.fusion} as shipped"  # the default strategy with models/fusion.json's parameters
NAMES = {"ravdess": "RAVDESS", "cremad": "CREMA-D", "emodb": "EmoDB", "tess": "TESS"}
PSEUDO_NOTE = ("Pseudo-pairs join a face and a voice that share only the label, so the modalities are "
               "independent given the label; in real clips they are correlated (same person, same moment), "
               "and fusion gains are smaller.")


@dataclass
class PairedPredictions:
    """Both modalities' 7-class probabilities for the same items; NaN rows = absent."""

    visual: np.ndarray  # (n, 7)
    audio: np.ndarray  # (n, 7)
    y: np.ndarray  # (n,)
    description: str


# ---------------------------------------------------------------- pseudo-pairs

def _seven_class(label: str) -> int:
    return EMOTIONS.index(project_label(label))


def pair_indices(face_labels: np.ndarray, voice_labels: np.ndarray, seed: int) -> np.ndarray:
    """For each voice, the index of a random face with the same label (seeded)."""
    rng = np.random.default_rng(seed)
    by_label = {c: np.flatnonzero(face_labels == c) for c in np.unique(face_labels)}
    out = np.empty(len(voice_labels), dtype=int)
    for i, c in enumerate(voice_labels):
        if c not in by_label:
            raise ValueError(f"no face with label {EMOTIONS[c]} to pair with")
        out[i] = rng.choice(by_label[c])
    return out


def _cached(cache: Path, key: str, compute, *args):
    """``compute(*args)``, kept on disk under ``key``."""
    path = cache / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    value = compute(*args)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.save(tmp, value)
    return value


def voice_folds(audio_model: Path) -> tuple[int, int | None]:
    """``(test, validation)``: the folds of speakers ``audio_model`` never trained on, from its card.

    A card without them (a model trained elsewhere) is taken to follow the shipped model's split: test
    fold 0, validation fold 1. A model trained without validation speakers (``train audio
    --no-validation``) heard every fold but its test fold: validation is None, and the test fold's
    speakers are shared between fitting and testing (:func:`fitting_speakers`).
    """
    training = read_card(audio_model, "audio").data.get("training", {})
    if training.get("held_out_corpus"):
        raise InputError(f"{audio_model}: trained with all of {training['held_out_corpus']} held out, so it "
                         "heard every fold's speakers of the other corpora; pairs need a model that held out "
                         "folds of speakers")
    test = training.get("test_fold")
    validation = training.get("validation_fold")
    if training.get("no_validation"):
        return int(test), None
    return (0 if test is None else int(test)), (1 if validation is None else int(validation))


def validation_note(audio_model: Path) -> str:
    """What the fitting pairs' voices were to the audio model, for the report."""
    test, validation = voice_folds(audio_model)
    if validation is None:
        return (f"The audio model trained on every fold but {test} (no validation speakers), so fold {test}'s "
                "speakers are shared: of each corpus, sorted, every other one fits and the rest test.")
    return (f"The audio model used the fold {validation} speakers for early stopping (and its temperature), so "
            "its validation predictions are slightly optimistic; weights fitted there may lean towards audio.")


def fitting_speakers(speakers) -> set[str]:
    """The half of ``speakers`` ("ravdess-03", "cremad-1006", …) that fits fusion when the audio model left
    only one fold of speakers unheard: of each corpus, sorted, the first, third, fifth… The others test."""
    by_corpus: dict[str, list[str]] = {}
    for speaker in sorted(set(speakers)):
        by_corpus.setdefault(speaker.split("-", 1)[0], []).append(speaker)
    return {s for group in by_corpus.values() for s in group[::2]}


def speaker_half(items: list, fitting: bool) -> list:
    """The utterances of ``items`` whose speakers are in the fitting half (:func:`fitting_speakers`), or
    those in the other half."""
    chosen = fitting_speakers(u.speaker for u in items)
    return [u for u in items if (u.speaker in chosen) == fitting]


def pseudo_pairs(fer: Path, speech: Path | tuple[Path, ...], visual_model: Path, audio_model: Path, cache: Path,
                 seed: int) -> tuple[PairedPredictions, PairedPredictions]:
    """Validation and test pseudo-pairs with both models' predictions (cached by model checksum).

    ``speech`` is one folder or several (any corpora ``load_speech_corpus`` reads); the voices are those of
    the speakers of the audio model's validation and test folds (``voice_folds``) of every corpus with folds.
    """
    vsum, asum = sha256_of(visual_model), sha256_of(audio_model)
    test_fold, val_fold = voice_folds(audio_model)
    vm = am = None
    utterances = load_speech_corpus(*([speech] if isinstance(speech, (str, Path)) else speech))
    out = []
    for split, fold in (("PublicTest", test_fold if val_fold is None else val_fold), ("PrivateTest", test_fold)):
        x, yf = load_fer2013(fer, split, cache)

        def faces(x):
            nonlocal vm
            vm = vm or VisualModel(visual_model)
            return vm.predict_proba(x, batch_size=256)

        pv_all = _cached(cache, f"visual|{vsum}|{Path(fer).resolve()}|{split}", faces, x)
        items = [u for u in utterances if u.fold == fold]
        half = ""
        if val_fold is None:  # one unheard fold: half of its speakers fit, the other half test
            items = speaker_half(items, fitting=split == "PublicTest")
            half = ", the fitting half of its speakers" if split == "PublicTest" else ", the other half"
        if not items:
            raise FileNotFoundError(f"{speech}: no utterances of speakers of fold {fold}{half}")

        def voices(items):
            # Each utterance scored as analyze scores a file; no speech heard: no audio evidence (NaN).
            nonlocal am
            am = am or AudioModel(audio_model)
            speech, cfg = SpeechDetector(), AnalyzeConfig()
            rows = []
            for u in items:
                d = recording_distribution(load_audio(u.path, am.sample_rate), am, speech, cfg.segment,
                                           cfg.min_speech)
                rows.append(np.full(len(EMOTIONS), np.nan) if d is None
                            else to_project_labels(d[None], am.card.labels)[0])
            return np.array(rows)

        pa = _cached(cache, f"audio-analyze-path|{asum}|{[str(u.path) for u in items]}", voices, items)
        y = np.array([_seven_class(u.label) for u in items])
        idx = pair_indices(yf, y, seed + fold)
        corpora = ", ".join(f"{NAMES.get(c, c)} {n}" for c, n in sorted(Counter(u.corpus for u in items).items()))
        out.append(PairedPredictions(pv_all[idx], pa, y,
                                     f"fold {fold} voices{half} ({corpora}) x FER2013 {split} faces"))
    return out[0], out[1]


# ---------------------------------------------------------------- never-heard pairs

def loco_models(runs: Path) -> dict[str, Path]:
    """``{corpus: model}`` of the leave-one-corpus-out runs in ``runs`` (``loco_<corpus>/model.keras``),
    each corpus read from its card's ``training.held_out_corpus``."""
    found = {}
    for model in sorted(Path(runs).glob("loco_*/model.keras")):
        corpus = read_card(model, "audio").data.get("training", {}).get("held_out_corpus")
        if corpus:
            found[corpus] = model
    if not found:
        raise FileNotFoundError(f"{runs}: no leave-one-corpus-out runs (loco_<corpus>/model.keras with its card)")
    return found


def unheard_pairs(rafdb: Path, speech: tuple[Path, ...], loco_runs: Path, visual_model: Path, cache: Path,
                  seed: int) -> list[PairedPredictions]:
    """Pairs in which neither model knows the person nor the recording conditions, one set per corpus.

    Voices: each corpus scored, as ``analyze`` scores a file, by the run of ``loco_runs`` that never heard
    that corpus (:func:`loco_models`), calibrated as that run's card says, as the shipped model is. Faces:
    RAF-DB train, which the visual model must not have trained on, dealt to the corpora by a seeded draw on
    the image names, so that no face serves two corpora. This is what a user's own video is to the shipped
    models; :func:`score_cross_fitted` fits on some corpora and tests on another, as a user's is new.
    """
    if "RAF-DB" in read_card(visual_model, "visual").data.get("training", {}).get("dataset", ""):
        raise InputError(f"{visual_model}: trained on RAF-DB, so its faces are not new to it")
    models = loco_models(loco_runs)
    utterances = [u for u in load_speech_corpus(*speech) if u.corpus in models]
    corpora = sorted({u.corpus for u in utterances})
    if len(corpora) < 2:
        raise FileNotFoundError(f"{', '.join(map(str, speech))}: recordings of at least two of "
                                f"{', '.join(sorted(models))} are needed, to fit on one and test on another")
    x, yf, names = load_rafdb(rafdb, "train", cache_dir=cache)
    pv_all = _cached(cache, f"visual|{sha256_of(visual_model)}|{Path(rafdb).resolve()}|train",
                     lambda x: VisualModel(visual_model).predict_proba(x, batch_size=256), x)
    face_group = np.array([int(hashlib.sha1(f"{seed}|{n}".encode()).hexdigest()[:8], 16) % len(corpora)
                           for n in names])

    def voices(model, items):
        am, detector, cfg = AudioModel(model), SpeechDetector(), AnalyzeConfig()
        rows = []
        for u in items:
            d = recording_distribution(load_audio(u.path, am.sample_rate), am, detector, cfg.segment, cfg.min_speech)
            rows.append(np.full(len(EMOTIONS), np.nan) if d is None else to_project_labels(d[None], am.card.labels)[0])
        return np.array(rows)

    out = []
    for k, corpus in enumerate(corpora):
        items = [u for u in utterances if u.corpus == corpus]
        pa = _cached(cache, f"unheard|{sha256_of(models[corpus])}|{[str(u.path) for u in items]}",
                     voices, models[corpus], items)
        y = np.array([_seven_class(u.label) for u in items])
        faces = np.flatnonzero(face_group == k)
        idx = faces[pair_indices(yf[faces], y, seed + k)]
        out.append(PairedPredictions(pv_all[idx], pa, y, f"{NAMES.get(corpus, corpus)} {len(items)}"))
    return out


# ---------------------------------------------------------------- real clips

def clip_labels(root: Path, seed: int, audio_model: Path | None = None) -> list[tuple[Path, int, str]]:
    """``(path, label, "test"|"validation")`` for RAVDESS-named videos or a manifest.

    A RAVDESS video is a test clip if its actor is in the audio model's test fold, a validation clip if in
    its validation fold (:func:`voice_folds`; folds 0 and 1 without a model).
    """
    manifest = root / "manifest.csv" if root.is_dir() else root
    rows = []
    if manifest.is_file() and manifest.suffix == ".csv":
        rng = np.random.default_rng(seed)
        with open(manifest, newline="") as fh:
            for r in csv.DictReader(fh):
                path = (manifest.parent / r["path"]).resolve()
                split = r.get("split") or ("validation" if rng.random() < 0.5 else "test")
                rows.append((path, _seven_class(r["label"].strip().lower()), split))
        return rows
    test, validation = voice_folds(audio_model) if audio_model else (0, 1)
    fitting = fitting_speakers(f"ravdess-{a:02d}" for a in RAVDESS_FOLDS[test]) if validation is None else set()
    for path in sorted(root.rglob("*")):
        fields = parse_ravdess_name(path.name)
        if fields and fields["modality"] in ("01", "02") and path.suffix.lower() in (".mp4", ".mov", ".avi", ".mkv"):
            fold = ravdess_fold(fields["actor"])
            if validation is None and fold == test:
                split = "validation" if f"ravdess-{fields['actor']:02d}" in fitting else "test"
                rows.append((path, _seven_class(fields["emotion"]), split))
            elif fold in (test, validation):
                rows.append((path, _seven_class(fields["emotion"]), "test" if fold == test else "validation"))
    if not rows:
        raise FileNotFoundError(f"{root}: no labelled clips (RAVDESS video names of folds {test} and "
                                f"{test if validation is None else validation}, or manifest.csv)")
    return rows


def real_clip_pairs(root: Path, visual_model: Path, audio_model: Path, cache: Path, seed: int
                    ) -> tuple[PairedPredictions, PairedPredictions]:

    """Validation and test pairs from labelled audio-visual clips, each analysed as ``analyze`` would."""
    analyzer = Analyzer(replace(AnalyzeConfig(), visual_model=visual_model, audio_model=audio_model, quiet=True))
    key = f"{sha256_of(visual_model)}|{sha256_of(audio_model)}"
    parts: dict[str, list] = {"validation": [], "test": []}
    for path, label, split in clip_labels(root, seed, audio_model):
        def run(path):
            try:
                a = analyzer.analyze(path)
            except MultimodalError as err:
                print(f"warning: skipped {err}", file=sys.stderr)
                return np.full((2, len(EMOTIONS)), np.nan)
            return np.stack([_duration_mean(a.segments, "visual"), _duration_mean(a.segments, "audio")])
        pv_pa = _cached(cache, f"clip|{key}|{path.resolve()}|{path.stat().st_mtime_ns}", run, path)
        if not np.isnan(pv_pa).all():
            parts[split].append((pv_pa[0], pv_pa[1], label))
    out = []
    for split in ("validation", "test"):
        rows = parts[split]
        if not rows:
            raise FileNotFoundError(f"{root}: no usable {split} clips")
        out.append(PairedPredictions(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                                     np.array([r[2] for r in rows]), f"real clips ({split}) from {root}"))
    return out[0], out[1]


def _duration_mean(segments, attr: str) -> np.ndarray:
    rows = [(getattr(s, attr), s.end - s.start) for s in segments if getattr(s, attr) is not None]
    if not rows:
        return np.full(len(EMOTIONS), np.nan)
    return np.sum([p * w for p, w in rows], axis=0) / sum(w for _, w in rows)


# ---------------------------------------------------------------- scoring

def _accuracy(y, p):
    return float(np.mean(p.argmax(axis=1) == y))


def _macro_f1(y, p):
    return float(f1_score(y, p.argmax(axis=1), labels=list(range(len(EMOTIONS))), average="macro", zero_division=0))


def fit_and_predict(val: PairedPredictions, test: PairedPredictions) -> tuple[dict, dict]:
    """``({method: test probabilities}, {strategy: fitted state})``, each strategy fitted on ``val``."""
    probs = {"visual only": test.visual, "audio only": test.audio}
    fitted = {}
    for name in STRATEGIES:
        s = make_strategy(name).fit(val.visual, val.audio, val.y)
        fitted[name] = s.get_state()
        probs[name] = s.predict_proba(test.visual, test.audio)
    shipped = load_fusion_state(AnalyzeConfig.fusion)
    if shipped is not None:  # what analyze does by default, fitted on other pairs: the reference to beat
        probs[SHIPPED] = make_strategy(AnalyzeConfig.fusion, shipped).predict_proba(test.visual, test.audio)
    return probs, fitted


def _joined(parts: list[PairedPredictions], description: str) -> PairedPredictions:
    return PairedPredictions(np.concatenate([p.visual for p in parts]), np.concatenate([p.audio for p in parts]),
                             np.concatenate([p.y for p in parts]), description)


def score_methods(val: PairedPredictions, test: PairedPredictions, n_boot: int, seed: int) -> dict:
    """Fit each strategy on validation pairs, score all methods on test pairs."""
    probs, fitted = fit_and_predict(val, test)
    return _scores(probs, fitted, test.y, len(val.y), n_boot, seed)


def score_cross_fitted(groups: list[PairedPredictions], n_boot: int, seed: int) -> dict:
    """Each group's pairs scored by strategies fitted on the other groups' pairs, all groups pooled.

    The parameters returned (``fitted``) are fitted on every group, for use on data none of them is.
    """
    probs: dict[str, list] = {}
    for k, test in enumerate(groups):
        part, _ = fit_and_predict(_joined(groups[:k] + groups[k + 1:], ""), test)
        for name, p in part.items():
            probs.setdefault(name, []).append(p)
    everything = _joined(groups, "")
    _, fitted = fit_and_predict(everything, everything)
    return _scores({n: np.concatenate(p) for n, p in probs.items()}, fitted, everything.y, len(everything.y),
                   n_boot, seed)


def _scores(probs: dict, fitted: dict, y_all: np.ndarray, n_validation: int, n_boot: int, seed: int) -> dict:
    keep = ~np.isnan(probs["visual only"]).any(1) | ~np.isnan(probs["audio only"]).any(1)
    y = y_all[keep]
    results = {}
    for name, p in probs.items():
        p = p[keep]
        ok = ~np.isnan(p).any(axis=1)
        # An absent modality predicts nothing: score it as a uniform guess, not by dropping items.
        p = np.where(ok[:, None], p, 1 / 7)
        m = classification_metrics(y, p, EMOTIONS)
        m["ci95"] = {k: bootstrap_ci(y, p, f, n_boot, seed) for k, f in
                     (("accuracy", _accuracy), ("macro_f1", _macro_f1), ("cross_entropy", cross_entropy),
                      ("ece", expected_calibration_error))}
        m["parameters"] = fitted.get(name) or (load_fusion_state(AnalyzeConfig.fusion) if name == SHIPPED else {})
        results[name] = m
    return {"results": results, "fitted": fitted, "n_test": int(keep.sum()), "n_validation": int(n_validation),
            "probs": {name: p[keep] for name, p in probs.items()}, "y": y}


def paired_difference_ci(y, p_a, p_b, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus ``b`` on the same items, with a paired bootstrap 95% interval."""
    ca, cb = (p_a.argmax(1) == y).astype(float), (p_b.argmax(1) == y).astype(float)
    rng = np.random.default_rng(seed)
    diffs = [np.mean(ca[i] - cb[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(n_boot))]
    return float(np.mean(ca - cb)), float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def _table(results: dict) -> list[str]:
    lines = ["| method | accuracy (95% CI) | macro-F1 (95% CI) | cross-entropy | ECE | " +
             " | ".join(f"F1 {e}" for e in EMOTIONS) + " |", "|---" * (5 + len(EMOTIONS)) + "|"]
    for name, m in results.items():
        ci = m["ci95"]
        lines.append(f"| {name} | {m['accuracy']:.3f} ({ci['accuracy'][0]:.3f}–{ci['accuracy'][1]:.3f}) | "
                     f"{m['macro_f1']:.3f} ({ci['macro_f1'][0]:.3f}–{ci['macro_f1'][1]:.3f}) | "
                     f"{m['cross_entropy']:.3f} | {m['ece']:.3f} | " +
                     " | ".join(f"{m['per_class'][e]['f1']:.2f}" for e in EMOTIONS) + " |")
    return lines


def _bar_chart(results: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(results)
    acc = [results[n]["accuracy"] for n in names]
    lo = [results[n]["accuracy"] - results[n]["ci95"]["accuracy"][0] for n in names]
    hi = [results[n]["ci95"]["accuracy"][1] - results[n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    colors = ["#888888" if n.endswith("only") else "#1f77b4" for n in names]
    ax.bar(names, acc, yerr=[lo, hi], color=colors, capsize=4)
    ax.set_ylabel("accuracy (95% bootstrap CI)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class CompareFusionConfig:
    """Options of ``multimodal compare-fusion``."""

    out: Path  # report directory
    clips: Path | None = None  # labelled audio-visual clips
    fer: Path | None = None  # FER2013, for pseudo-pairs with ...
    speech: tuple[Path, ...] | None = None  # ... speech corpora with folds (RAVDESS, CREMA-D, EmoDB)
    loco_runs: Path | None = None  # leave-one-corpus-out runs, for never-heard pairs with ...
    rafdb: Path | None = None  # ... RAF-DB faces and the corpora of --speech
    visual_model: Path = DEFAULT_VISUAL_MODEL
    audio_model: Path = DEFAULT_AUDIO_MODEL
    seed: int = 0
    bootstrap: int = 1000  # resamples for the confidence intervals
    save: bool = False  # store the fitted strategies as models/fusion.json
    force: bool = False  # replace an existing models/fusion.json


def run_compare_fusion(args: CompareFusionConfig) -> dict:
    """Score every fusion strategy on the same paired data, write the report; returns it."""
    out = Path(args.out)
    cache = out / "cache"
    groups = None
    if args.clips:
        val, test = real_clip_pairs(args.clips, args.visual_model, args.audio_model, cache, args.seed)
        notes = [f"Test: {test.description}; validation: {val.description}.",
                 "Real clips: faces and voice come from the same person and moment."]
    elif args.loco_runs and args.rafdb and args.speech:
        groups = unheard_pairs(args.rafdb, tuple(args.speech), args.loco_runs, args.visual_model, cache,
                               args.seed)
        val = test = _joined(groups, f"never-heard voices ({', '.join(g.description for g in groups)}) x RAF-DB "
                                     "train faces")
        notes = [f"Pairs: {test.description}. Each voice is scored by the run of {args.loco_runs} that never "
                 "heard its corpus, each face by a visual model that never saw RAF-DB.",
                 "Cross-fitted by corpus: each corpus's pairs are scored by strategies fitted on the other "
                 "corpora's pairs; the parameters saved are fitted on all of them, for "
                 f"{args.audio_model.name}, trained the same way on every corpus.", PSEUDO_NOTE]
    elif args.fer and args.speech:
        val, test = pseudo_pairs(args.fer, tuple(args.speech), args.visual_model, args.audio_model, cache, args.seed)
        notes = [f"Test pairs: {test.description}; validation pairs (all fitting): {val.description}.",
                 PSEUDO_NOTE,
                 validation_note(args.audio_model)]
    else:
        raise InputError("compare-fusion needs --clips DIR, or --fer and --speech for pseudo-pairs, or "
                         "--loco-runs, --rafdb and --speech for never-heard pairs")
    scored = (score_cross_fitted(groups, args.bootstrap, args.seed) if groups
              else score_methods(val, test, args.bootstrap, args.seed))
    results = scored["results"]
    if SHIPPED in results:
        fitted_on = json.loads((MODELS_DIR / "fusion.json").read_text()).get("fitted_on", "other pairs")
        notes.append(f"{SHIPPED}: the parameters models/fusion.json held when this ran "
                     f"({results[SHIPPED]['parameters']}), fitted on {fitted_on}; not refitted here.")
    singles = ("visual only", "audio only")
    better_single = max(singles, key=lambda n: results[n]["accuracy"])
    best = max((n for n in results if n not in singles), key=lambda n: results[n]["accuracy"])
    diff = paired_difference_ci(scored["y"], scored["probs"][best], scored["probs"][better_single],
                                args.bootstrap, args.seed)
    verdict = (f"Best strategy: {best}, accuracy {results[best]['accuracy']:.3f} against {better_single} "
               f"{results[better_single]['accuracy']:.3f}: difference {diff[0]:+.3f}, paired bootstrap 95% CI "
               f"{diff[1]:+.3f} to {diff[2]:+.3f} ({'outside' if diff[1] > 0 else 'not outside'} the interval of no gain).")
    lines = ["# Fusion strategies compared", ""] + [f"- {n}" for n in notes] + [
        (f"- {scored['n_test']} test items (every pair, cross-fitted)" if groups else
         f"- {scored['n_test']} test items, {scored['n_validation']} validation items")
        + f"; bootstrap {args.bootstrap} resamples, seed {args.seed}.", f"- {verdict}", ""] + _table(results) + [
        "", "![accuracy](accuracy.png)", ""]
    out.mkdir(parents=True, exist_ok=True)
    _bar_chart(results, out / "accuracy.png", f"Fusion on {test.description}")
    for name, m in results.items():
        slug = name.replace(" ", "_")
        plot_confusion(m["confusion_matrix"], EMOTIONS, out / f"confusion_{slug}.png", f"{name}\n{test.description}")
        lines.append(f"![{name}](confusion_{slug}.png)")
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    report = {"notes": notes, "test": test.description, "validation": val.description, "verdict": verdict,
              "best": best, "better_single": better_single, "difference": diff, "results": results,
              "n_test": scored["n_test"], "n_validation": scored["n_validation"], "seed": args.seed}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    print("\n".join(_table(results)))
    print(verdict)
    print(f"report: {out / 'report.md'}")
    if args.save:
        target = MODELS_DIR / "fusion.json"
        if target.exists() and not args.force:
            raise OutputError(f"{target}: already exists (use --force to replace it)")
        write_text_atomic(target, json.dumps({
            "fitted_on": val.description, "seed": args.seed,
            "visual_model_sha256": sha256_of(args.visual_model), "audio_model_sha256": sha256_of(args.audio_model),
            "strategies": scored["fitted"],
            # what these parameters scored, so the file says how far to trust them
            "metrics": {"pairs": test.description, "scored_as": notes[1] if groups else notes[0],
                        "accuracy": {n: round(m["accuracy"], 4) for n, m in results.items() if n != SHIPPED},
                        "ece": {n: round(m["ece"], 4) for n, m in results.items() if n != SHIPPED}}},
                       indent=2) + "\n")
        print(f"fitted strategies saved to {target}")
    return report

