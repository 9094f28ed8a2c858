"""Evaluation of trained models on their held-out splits, with reports."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from multimodal.config import EMOTIONS
from training.metrics import classification_metrics, write_report
from training.speech_datasets import SPEECH_LABELS


def load_model_for_evaluation(path: str | Path, kind: str):
    """A model checked against its card when it has one (a run's fresh model may not yet)."""
    import keras

    from multimodal.models import card_path, load_keras_model, read_card
    if card_path(path).exists():
        return load_keras_model(read_card(path, kind))
    return keras.saving.load_model(path, compile=False, safe_mode=True)


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


def evaluate_visual_model(model_path: str | Path, data: str | Path, out_dir: str | Path,
                          split: str = "PrivateTest", flip: bool = False, cache_dir=None) -> dict:
    """Score a facial-expression model on a FER2013 split and write its report.

    With ``flip``, also scores test-time flip averaging (mean of the image and
    its mirror), reported as a separate section.
    """
    from training.fer2013 import load_fer2013
    model = load_model_for_evaluation(model_path, "visual")
    x, y = load_fer2013(data, split, cache_dir)
    x = x[..., None].astype("float32")
    probs = model.predict(x, batch_size=256, verbose=0)
    sections = {split: classification_metrics(y, probs, EMOTIONS)}
    if flip:
        flipped = model.predict(x[:, :, ::-1], batch_size=256, verbose=0)
        sections[f"{split} + flip averaging"] = classification_metrics(y, (probs + flipped) / 2, EMOTIONS)
    speed = ms_per_item(model, x, 256)
    size = Path(model_path).stat().st_size
    notes = [f"model: {Path(model_path).name} ({size / 1e6:.2f} MB, {model.count_params():,} parameters)",
             f"data: FER2013 {split}, {len(y)} images", f"batched inference: {speed:.2f} ms per face (batch 256, this machine)"]
    write_report(out_dir, f"Visual model on FER2013 {split}", sections, notes,
                 {"ms_per_face": speed, "size_bytes": size, "parameters": model.count_params()})
    main = sections[split]
    summary = {"split": f"FER2013 {split}", **{k: main[k] for k in ("accuracy", "macro_f1", "uar", "cross_entropy", "ece")},
               "ms_per_face": round(speed, 3), "parameters": int(model.count_params())}
    if flip:
        summary["flip_accuracy"] = sections[f"{split} + flip averaging"]["accuracy"]
        summary["flip_macro_f1"] = sections[f"{split} + flip averaging"]["macro_f1"]
    return summary


def evaluate_audio_arrays(y: np.ndarray, probs: np.ndarray, out_dir: str | Path, title: str,
                          extra_notes: list[str] | None = None) -> dict:
    """8-class and 7-class (calm merged into neutral) metrics of audio predictions."""
    from multimodal.audio import to_project_labels
    eight = classification_metrics(y, probs, SPEECH_LABELS)
    y7 = np.array([EMOTIONS.index("neutral" if SPEECH_LABELS[i] == "calm" else SPEECH_LABELS[i]) for i in y])
    p7 = to_project_labels(np.asarray(probs, dtype=np.float64), SPEECH_LABELS)
    seven = classification_metrics(y7, p7, EMOTIONS)
    notes = [f"{len(y)} utterances, speaker-independent (no test actor seen in training or selection)",
             "7-class: RAVDESS calm merged into neutral"] + (extra_notes or [])
    write_report(out_dir, title, {"8-class": eight, "7-class (calm = neutral)": seven}, notes)
    return {"accuracy_8class": eight["accuracy"], "accuracy_7class": seven["accuracy"], "macro_f1": eight["macro_f1"],
            "uar": eight["uar"], "cross_entropy": eight["cross_entropy"], "ece": eight["ece"]}


def evaluate_audio_model(model_path: str | Path, data: str | Path, out_dir: str | Path, test_fold: int = 0) -> dict:
    """Score an audio model on the utterances of one RAVDESS fold.

    Each utterance is scored on the centre window the model was trained on
    (``features.window_seconds`` of the card), as in training's own test.
    """
    from multimodal.audio import fix_length, load_audio, mfcc_features
    from multimodal.config import AudioFeatureConfig
    from multimodal.models import card_path, read_card
    from training.speech_datasets import RAVDESS_FOLDS, load_ravdess
    from training.train_audio import CLIP_SECONDS
    feat = AudioFeatureConfig()
    if card_path(model_path).exists():
        feat = AudioFeatureConfig(**read_card(model_path, "audio").data["features"])
    model = load_model_for_evaluation(model_path, "audio")
    items = [u for u in load_ravdess(data) if u.fold == test_fold]
    if not items:
        raise FileNotFoundError(f"{data}: no RAVDESS files of fold {test_fold}")
    window = int(feat.window_seconds * feat.sample_rate)
    x = np.stack([mfcc_features(fix_length(fix_length(load_audio(u.path, feat.sample_rate),
                                                      int(CLIP_SECONDS * feat.sample_rate)), window), feat)
                  for u in items])
    y = np.array([SPEECH_LABELS.index(u.label) for u in items])
    probs = model.predict(x, batch_size=128, verbose=0)
    speed = ms_per_item(model, x, 64)
    clip = fix_length(load_audio(items[0].path, feat.sample_rate), window)
    started = time.perf_counter()
    for _ in range(20):
        mfcc_features(clip, feat)
    feature_ms = (time.perf_counter() - started) / 20 * 1000
    summary = evaluate_audio_arrays(y, probs, out_dir,
                                    f"Audio model on RAVDESS fold {test_fold} (actors {RAVDESS_FOLDS[test_fold]})",
                                    [f"model: {Path(model_path).name}",
                                     f"batched inference: {speed:.2f} ms per 3 s segment, plus "
                                     f"{feature_ms:.2f} ms for its MFCC features"])
    return {**summary, "ms_per_segment": round(speed + feature_ms, 3)}
