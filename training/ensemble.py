"""Average speech models trained for the same split into one model file.

Models of different recipes made for one split (the same test speakers, the
same validation speakers) make different mistakes; the mean of their
calibrated distributions is usually right more often than any of them. The
ensemble is one Keras model (the members nested in it, each followed by its
own temperature), so ``analyze``, the TFLite export and ``training.ship``
treat it as any other speech model. It gets a temperature of its own,
fitted on the shared validation speakers, and is scored on the shared test
speakers as ``train audio`` scores a run.

    python -m training.ensemble runs/ensemble/fold0 runs/masks/fold0 runs/protocols/fold0 \\
        --data PATH/ravdess_speech PATH/cremad PATH/tess PATH/emodb
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from multimodal.atomic import write_text_atomic
from multimodal.audio import features_from_card
from multimodal.models import card_path, read_card
from training.speech_datasets import SPEECH_LABELS, load_speech_corpus


def average_models(members: list, temperatures: list[float]):
    """One Keras model whose output is the mean of ``members``' distributions, each member's first
    sharpened or flattened by its temperature (as :func:`multimodal.audio.apply_temperature` does).

    The ensemble takes the widest member's input, ``(batch, time, features)``; a narrower member
    reads the first of those features (see :func:`shared_features`). All give distributions over
    the same classes.
    """
    import keras
    width = max(m.input_shape[-1] for m in members)
    inputs = keras.Input((None, width), name="mfcc")
    outputs = []
    for i, (member, t) in enumerate(zip(members, temperatures)):
        member.name = f"member{i}"  # nested models need distinct names
        own = member.input_shape[-1]
        p = member(inputs if own == width else inputs[:, :, :own])
        p = keras.ops.power(keras.ops.clip(p, 1e-12, 1.0), 1.0 / t)
        outputs.append(p / keras.ops.sum(p, axis=-1, keepdims=True))
    return keras.Model(inputs, keras.layers.Average(name="emotion")(outputs), name="ensemble")


def shared_features(features: list, names: list) -> int:
    """Index of the member whose features the ensemble computes, or ValueError.

    Members must compute the same features, except that some may add the
    log-mel channels: those come right after the MFCC blocks, so a member
    without them reads the first channels of the others' input. Pitch
    channels come last, so with them the log-mel channels cannot be mixed.
    """
    full = next((i for i, f in enumerate(features) if f.log_mel), 0)
    for i, f in enumerate(features):
        if f != features[full] and (features[full].pitch or f != dataclasses.replace(features[full], log_mel=False)):
            raise ValueError(f"{names[i]}: other features than {names[full]}")
    return full


def split_of(card: dict) -> tuple:
    """What a run was tested and selected on: (held-out corpus, test fold, validation fold)."""
    t = card["training"]
    return t.get("held_out_corpus"), t.get("test_fold"), t.get("validation_fold")


def ensemble_runs(out: Path, runs: list[Path], data: list[Path]) -> dict:
    """Average the models of ``runs`` into ``out/model.keras``, calibrate it and score it.

    Every run must have been made for the same split with the same labels
    and the same features, log-mel channels apart (checked against their
    cards; see :func:`shared_features`). Returns the summary of
    :func:`training.train_audio.calibrate_and_test`.
    """
    import keras

    from training.loop import save_model_atomic, setup_logging
    from training.train_audio import calibrate_and_test, split_indices

    if len(runs) < 2:
        raise ValueError("an ensemble needs at least two runs")
    read = [read_card(r / "model.keras", "audio") for r in runs]
    cards = [c.data for c in read]
    # Compared as parameters: a card written before an option existed omits it, meaning its default.
    features = [features_from_card(c) for c in read]
    first = cards[0]
    for run, card in zip(runs[1:], cards[1:]):
        if split_of(card) != split_of(first):
            raise ValueError(f"{run}: made for another split than {runs[0]} ({split_of(card)} vs {split_of(first)})")
        if card["labels"] != first["labels"]:
            raise ValueError(f"{run}: other labels than {runs[0]}")
    widest = cards[shared_features(features, runs)]
    if tuple(first["labels"]) != SPEECH_LABELS:
        raise ValueError(f"{runs[0]}: labels {first['labels']} are not {SPEECH_LABELS}")
    hold_out, test_fold, val_fold = split_of(first)
    out.mkdir(parents=True, exist_ok=True)
    log = setup_logging(out, "ensemble")
    members = [keras.saving.load_model(r / "model.keras", compile=False, safe_mode=True) for r in runs]
    temperatures = [c.get("calibration", {}).get("temperature", 1.0) for c in cards]
    model_path = out / "model.keras"
    card_path(model_path).unlink(missing_ok=True)
    save_model_atomic(average_models(members, temperatures), model_path)
    log.info("ensemble of %s (temperatures %s)", ", ".join(map(str, runs)), temperatures)
    items = load_speech_corpus(*data)
    _, va, te = split_indices(items, test_fold, val_fold, hold_out)
    card = {k: widest[k] for k in ("input", "preprocessing", "features", "label_mapping") if k in widest}
    card["training"] = {**{k: first["training"][k] for k in ("datasets", "training_utterances", "test_fold",
                                                            "test_actors", "held_out_corpus", "validation_fold")
                           if k in first["training"]},
                        "ensemble": [{"run": str(r), "sha256": c["sha256"], "temperature": t,
                                      "training": c["training"]} for r, c, t in zip(runs, cards, temperatures)]}
    return calibrate_and_test(model_path, card, [items[i] for i in te], [items[i] for i in va], val_fold, test_fold,
                              hold_out, log)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder for the ensemble's model, card and reports")
    p.add_argument("runs", type=Path, nargs="+", help="training runs (folders with model.keras) of one split")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="the corpora the runs were made from")
    a = p.parse_args(argv)
    summary = ensemble_runs(a.out, a.runs, a.data)
    for corpus, r in summary["by_corpus"].items():
        print(f"{corpus}: 8-class accuracy {r['accuracy_8class']:.4f}, 7-class {r['accuracy_7class']:.4f}, "
              f"UAR {r['uar']:.4f}, ECE {r['ece']:.4f}")
    write_text_atomic(a.out / "summary.json", json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
