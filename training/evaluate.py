"""Evaluation of trained models on their held-out splits, with reports."""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from multimodal.audio import AudioModel, load_audio, project_label, recording_distribution, rms_dbfs, to_project_labels
from multimodal.config import EMOTIONS, AnalyzeConfig
from multimodal.faces import BlazeFaceDetector, photo_face_crop
from multimodal.models import card_path, load_model, read_card
from multimodal.speech import SpeechDetector
from multimodal.visual import VisualModel
from training.face_sets import load_face_sets
from training.fer2013 import load_fer2013
from training.ferplus import load_ferplus, majority_labels
from training.metrics import classification_metrics, write_report
from training.rafdb import is_rafdb, load_rafdb, rafdb_validation
from training.speech_datasets import RAVDESS_FOLDS, SPEECH_LABELS, load_speech_corpus


def load_model_for_evaluation(path: str | Path, kind: str):
    """A model checked against its card when it has one (a run's fresh model may not
    yet): Keras, or a :class:`multimodal.models.TFLiteModel` for ``.tflite``."""
    import keras  # only for .keras files: .tflite ones are scored without TensorFlow
    if card_path(path).exists():
        return load_model(read_card(path, kind))
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def predict_batches(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """A model's outputs for ``x``, ``batch_size`` items at a time (Keras or TFLite model)."""
    return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


def ms_per_item(model, x: np.ndarray, batch_size: int, repeats: int = 3) -> float:
    """Median wall time per item of batched inference, in milliseconds."""
    batch = x[:batch_size]
    model.predict_on_batch(batch)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict_on_batch(batch)
        times.append((time.perf_counter() - t) / len(batch))
    return float(np.median(times) * 1000)


def load_visual_test(data: str | Path, split: str = "PrivateTest", labels: str = "fer2013",
                     cache_dir=None) -> tuple[np.ndarray, np.ndarray, str]:
    """Faces and labels to score a visual model on, and their name for reports.

    ``data`` is FER2013 (``split`` one of its three; ``labels`` "fer2013" or
    "ferplus" for FER+'s majority labels, faces without one left out) or
    RAF-DB's folder (``split`` "test", the official test partition, or
    "validation", the fixed carve of train that training selects on).
    """
    if is_rafdb(data):
        if split not in ("test", "validation"):
            raise ValueError(f"RAF-DB: split {split!r}; expected test or validation")
        x, y, names = load_rafdb(data, "test" if split == "test" else "train", cache_dir=cache_dir)
        if split == "validation":
            keep = rafdb_validation(names)
            x, y = x[keep], y[keep]
        if not len(y):
            raise ValueError(f"{data}: RAF-DB's {split} partition has no images here")
        return x, y, f"RAF-DB {split}"
    if labels == "ferplus":
        x, votes, _ = load_ferplus(data, split)
        y, kept = majority_labels(votes)
        return x[kept], y[kept], f"FER2013 {split} (FER+ majority labels)"
    x, y = load_fer2013(data, split, cache_dir)
    return x, y, f"FER2013 {split}"


def evaluate_visual_model(model_path: str | Path, data: str | Path, out_dir: str | Path,
                          split: str = "PrivateTest", flip: bool = False, cache_dir=None,
                          labels: str = "fer2013") -> dict:
    """Score a facial-expression model on FER2013 or RAF-DB (see :func:`load_visual_test`)
    and write its report, with per-class recall and the share of non-neutral
    faces called neutral.

    With ``flip``, also scores test-time flip averaging (mean of the image and
    its mirror), reported as a separate section.
    """
    model = load_model_for_evaluation(model_path, "visual")
    x, y, title = load_visual_test(data, split, labels, cache_dir)
    x = x[..., None].astype("float32")
    probs = predict_batches(model, x)
    sections = {split: face_set_metrics(y, probs)}
    if flip:
        flipped = predict_batches(model, np.ascontiguousarray(x[:, :, ::-1]))
        sections[f"{split} + flip averaging"] = face_set_metrics(y, (probs + flipped) / 2)
    speed = ms_per_item(model, x, 256)
    size = Path(model_path).stat().st_size
    params = int(model.count_params()) if hasattr(model, "count_params") else None  # TFLite does not say
    notes = [f"model: {Path(model_path).name} ({size / 1e6:.2f} MB"
             + (f", {params:,} parameters)" if params else ")"),
             f"data: {title}, {len(y)} images", f"batched inference: {speed:.2f} ms per face (batch 256, this machine)"]
    write_report(out_dir, f"Visual model on {title}", sections, notes,
                 {"ms_per_face": speed, "size_bytes": size, "parameters": params})
    main = sections[split]
    summary = {"split": title, **{k: main[k] for k in ("accuracy", "macro_f1", "uar", "cross_entropy", "ece",
                                                        "called_neutral")},
               "ms_per_face": round(speed, 3), "parameters": params}
    if flip:
        summary["flip_accuracy"] = sections[f"{split} + flip averaging"]["accuracy"]
        summary["flip_macro_f1"] = sections[f"{split} + flip averaging"]["macro_f1"]
    return summary


def face_set_metrics(y: np.ndarray, probs: np.ndarray) -> dict:
    """:func:`classification_metrics` plus the figures that show a neutral bias.

    ``macro_f1`` here averages the classes the set has (Yale has four), and
    ``called_neutral`` is the share of faces that are not neutral but are
    predicted neutral.
    """
    m = classification_metrics(y, probs, EMOTIONS)
    pred = np.asarray(probs).argmax(axis=1)
    neutral = EMOTIONS.index("neutral")
    present = [c for c in m["per_class"].values() if c["support"] > 0]
    m["macro_f1"] = float(np.mean([c["f1"] for c in present]))
    m["predicted_neutral"] = float(np.mean(pred == neutral))
    m["called_neutral"] = float(np.mean(pred[y != neutral] == neutral)) if (y != neutral).any() else 0.0
    return m


def trained_face_sets(model_path: str | Path) -> set[str]:
    """The face sets a model's card says it was trained on (``training.dataset``, "FER2013 + a, b")."""
    path = card_path(model_path)
    if not path.exists():
        return set()
    dataset = json.loads(path.read_text()).get("training", {}).get("dataset", "")
    return {name.strip() for name in dataset.partition("+")[2].split(",") if name.strip()}


def evaluate_face_sets(model_path: str | Path, data: str | Path, out_dir: str | Path | None,
                       predictors: dict | None = None, crop_size: int | None = None,
                       only: tuple[str, ...] = ()) -> dict:
    """Score facial-expression models on labelled photos outside FER2013.

    Each photo's largest face is found by the shipped BlazeFace detector and
    cropped exactly as ``analyze`` crops faces; a photo where no face is found
    is scored whole, and counted. Results per set (see
    :func:`training.face_sets.load_face_sets`) and the mean of the per-set
    accuracies.

    Parameters
    ----------
    model_path : the model to score (``.tflite`` or ``.keras`` with its card),
        run as ``analyze`` runs it (with flip averaging)
    data : one face set, or a folder of them
    out_dir : where the report goes (None: no report)
    predictors : more ``{name: crops (n, s, s) uint8 -> probs (n, 7)}`` to
        score on the same crops, such as a reference model
    crop_size : side of the crops in pixels (default the model's input);
        each model resizes them to its own input
    only : score only these sets (default all)

    Returns
    -------
    ``{model name: {set: metrics, "mean_accuracy": float}, "no_face": {set: count},
    "trained_on": [sets scored here that the model's card says it was trained on]}``
    """
    model = VisualModel(model_path)
    detector = BlazeFaceDetector()
    models = {Path(model_path).name: lambda crops: model.predict_proba(crops), **(predictors or {})}
    results: dict = {name: {} for name in models}
    no_face: dict[str, int] = {}
    sizes: dict[str, int] = {}
    sections = {}
    for set_name, photos in load_face_sets(data).items():
        if only and set_name not in only:
            continue
        crops, missing = [], 0
        for photo in photos:
            image = cv2.imread(str(photo.path), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{photo.path}: not an image OpenCV can read")
            crop, face = photo_face_crop(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), detector,
                                         crop_size or model.input_size)
            crops.append(crop)
            missing += face is None
        x = np.stack(crops)
        y = np.array([EMOTIONS.index(p.label) for p in photos])
        no_face[set_name], sizes[set_name] = missing, len(photos)
        for name, predict in models.items():
            m = face_set_metrics(y, predict(x))
            results[name][set_name] = m
            sections[f"{set_name}: {name}"] = m
    trained_on = sorted(trained_face_sets(model_path) & set(no_face))
    for name in models:
        results[name]["mean_accuracy"] = float(np.mean([m["accuracy"] for m in results[name].values()]))
    if out_dir is not None:
        sets = list(no_face)
        lines = ["| model | " + " | ".join(sets) + " | mean |", "|---|" + "---|" * (len(sets) + 1)]
        for name in models:
            lines.append(f"| {name} | " + " | ".join(f"{results[name][s]['accuracy']:.3f}" for s in sets)
                         + f" | {results[name]['mean_accuracy']:.3f} |")
        notes = ["faces found by BlazeFace and cropped as analyze crops them; no face found (scored whole): "
                 + ", ".join(f"{s} {no_face[s]} of {sizes[s]}" for s in sets),
                 "macro_f1 averages the classes each set has; called_neutral: share of non-neutral faces "
                 "predicted neutral", *([f"{Path(model_path).name} was trained on {', '.join(trained_on)} "
                                        "(four fifths of their subjects): its figures there are not held out"]
                                       if trained_on else []), "", "Accuracy per set:", "", *lines]
        write_report(out_dir, "Visual model on face sets outside FER2013", sections, notes,
                     {"summary": {name: {s: {k: results[name][s][k] for k in
                                             ("n", "accuracy", "macro_f1", "predicted_neutral", "called_neutral")}
                                         for s in sets} for name in models}, "no_face": no_face,
                      "trained_on": trained_on})
    return {**results, "no_face": no_face, "trained_on": trained_on}


def seven_classes(y: np.ndarray, probs: np.ndarray, labels: tuple[str, ...] = SPEECH_LABELS
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``y`` (n,, indices into ``labels``) and distributions ``probs`` (n, len(labels)) over the
    project's seven classes, calm counted as neutral."""
    y7 = np.array([EMOTIONS.index(project_label(labels[i])) for i in y])
    return y7, to_project_labels(np.asarray(probs, dtype=np.float64), labels)


def evaluate_audio_arrays(y: np.ndarray, probs: np.ndarray, out_dir: str | Path, title: str,
                          extra_notes: list[str] | None = None) -> dict:
    """8-class and 7-class (calm merged into neutral) metrics of audio predictions."""
    eight = classification_metrics(y, probs, SPEECH_LABELS)
    y7, p7 = seven_classes(y, probs)
    seven = classification_metrics(y7, p7, EMOTIONS)
    notes = [f"{len(y)} utterances, speaker-independent (no test actor seen in training or selection)",
             "7-class: RAVDESS calm merged into neutral"] + (extra_notes or [])
    write_report(out_dir, title, {"8-class": eight, "7-class (calm = neutral)": seven}, notes)
    return {"accuracy_8class": eight["accuracy"], "accuracy_7class": seven["accuracy"], "macro_f1": eight["macro_f1"],
            "uar": eight["uar"], "cross_entropy": eight["cross_entropy"], "ece": eight["ece"]}


def add_noise(wave: np.ndarray, snr_db: float, seed: str) -> np.ndarray:
    """``wave`` plus white noise ``snr_db`` dB below the recording's RMS (pauses included).

    The noise is drawn from a generator seeded by ``seed`` (a file name), so a
    recording gets the same noise in every run.
    """
    rng = np.random.default_rng(list(seed.encode()))
    rms = 10 ** (rms_dbfs(wave) / 20)
    noise = rng.standard_normal(len(wave)) * rms * 10 ** (-snr_db / 20)
    return (wave + noise).astype(np.float32)


def recording_probabilities(model: AudioModel, items: list, cfg: AnalyzeConfig = AnalyzeConfig(),
                            level_dbfs: float | None = None, snr_db: float | None = None
                            ) -> dict[str, tuple[list, list, list]]:
    """``{corpus: (labels, distributions, names with no evidence)}`` of whole recordings scored as
    ``analyze`` scores a file (see :func:`evaluate_recordings`); labels index ``model.card.labels``."""
    speech = SpeechDetector()
    labels = model.card.labels
    by_corpus: dict[str, tuple[list, list, list]] = {}
    for u in items:
        wave = load_audio(u.path, model.sample_rate)
        if snr_db is not None:
            wave = add_noise(wave, snr_db, u.path.name)
        if level_dbfs is not None:
            wave = wave * np.float32(10 ** ((level_dbfs - rms_dbfs(wave)) / 20))
        dist = recording_distribution(wave, model, speech, cfg.segment, cfg.min_speech)
        y, p, missing = by_corpus.setdefault(u.corpus, ([], [], []))
        y.append(labels.index(u.label))
        p.append(np.full(len(labels), 1 / len(labels)) if dist is None else dist)
        if dist is None:
            missing.append(u.path.name)
    return by_corpus


def evaluate_recordings(model_path: str | Path, items: list, out_dir: str | Path, title: str,
                        cfg: AnalyzeConfig = AnalyzeConfig(), level_dbfs: float | None = None,
                        temperature: float | None = None, snr_db: float | None = None) -> dict:
    """Score whole recordings exactly as ``analyze`` would, one report per corpus.

    Each file is cut into ``cfg.segment``-second segments, segments with less
    than ``cfg.min_speech`` s of speech are no evidence, and the others are
    scored and averaged by duration (:func:`multimodal.audio.recording_distribution`).
    A recording with no evidence at all counts as an error, predicted as a
    uniform distribution, and is counted in ``no_evidence``. With
    ``level_dbfs``, every recording is first scaled to that RMS level, to
    measure what the recording level does; with ``snr_db``, white noise that
    many dB below the recording's RMS is added first (:func:`add_noise`).

    ``temperature`` replaces the card's calibration (1: the network's own
    probabilities). Returns ``{corpus: summary}`` with the metrics of
    :func:`evaluate_audio_arrays` plus ``n`` and ``no_evidence``.
    """
    model = AudioModel(model_path)
    if temperature is not None:
        model.temperature = temperature
    by_corpus = recording_probabilities(model, items, cfg, level_dbfs, snr_db)
    out = {}
    for corpus, (y, p, missing) in sorted(by_corpus.items()):
        speakers = sorted({u.speaker for u in items if u.corpus == corpus})
        notes = [f"model: {Path(model_path).name}",
                 f"speakers: {', '.join(speakers)}",
                 f"scored as analyze scores a file: {cfg.segment:g} s segments, a segment counts when the "
                 f"speech detector hears at least {cfg.min_speech:g} s of speech, segments averaged by duration",
                 *([f"white noise added at {snr_db:g} dB SNR first"] if snr_db is not None else []),
                 *([f"every recording scaled to {level_dbfs:g} dBFS RMS first"] if level_dbfs is not None else []),
                 f"calibration temperature {model.temperature:g}",
                 f"recordings with no audio evidence: {len(missing)} of {len(y)}"
                 + (f" ({', '.join(missing[:10])}{', …' if len(missing) > 10 else ''})" if missing else "")]
        summary = evaluate_audio_arrays(np.array(y), np.array(p), Path(out_dir) / corpus, f"{title}: {corpus}", notes)
        out[corpus] = {**summary, "n": len(y), "no_evidence": len(missing)}
    return out


def evaluate_audio_model(model_path: str | Path, data: list[Path], out_dir: str | Path, test_fold: int = 0,
                         snr_db: float | None = None) -> dict:
    """Score an audio model on the held-out speakers of one fold, as ``analyze`` would.

    The speakers are RAVDESS's actors of ``test_fold`` and, when EmoDB is
    among ``data``, EmoDB's speakers of the same fold
    (:data:`training.speech_datasets.EMODB_FOLDS`), and CREMA-D's actors of that
    fold. ``snr_db`` adds white noise first (:func:`add_noise`). Returns
    ``{corpus: summary}``; each summary also has ``ms_per_segment``.
    """
    items = [u for u in load_speech_corpus(*data) if u.fold == test_fold]
    if not items:
        raise FileNotFoundError(f"{', '.join(map(str, data))}: no RAVDESS, CREMA-D or EmoDB files of fold {test_fold}")
    results = evaluate_recordings(model_path, items, out_dir,
                                  f"Audio model on held-out speakers of fold {test_fold} "
                                  f"(RAVDESS actors {RAVDESS_FOLDS[test_fold]})"
                                  + (f", white noise at {snr_db:g} dB SNR" if snr_db is not None else ""),
                                  snr_db=snr_db)
    model = AudioModel(model_path)
    clip = load_audio(items[0].path, model.sample_rate)[:int(3 * model.sample_rate)]
    started = time.perf_counter()
    for _ in range(20):
        model.predict_model_proba([clip])
    per_segment = (time.perf_counter() - started) / 20 * 1000
    for summary in results.values():
        summary["ms_per_segment"] = round(per_segment, 3)
    return results
