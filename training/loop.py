"""An epoch loop that survives interruption.

Each epoch ends with the full model (weights and optimizer state) written to
``checkpoints/last.keras`` and the loop's own state to ``checkpoints/state.json``,
both atomically, so a killed run resumes where it stopped with ``resume=True``.
Early stopping watches a validation metric and keeps the best model in
``checkpoints/best.keras``.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from multimodal.atomic import atomic_path, write_json_atomic
from multimodal.models import card_path


@dataclass
class RunState:
    """Where a training run stands; saved after every epoch so the run can resume."""
    epoch: int = 0  # epochs completed
    best_metric: float = -math.inf
    best_epoch: int = -1
    stale_epochs: int = 0
    history: list = field(default_factory=list)


def setup_logging(out_dir: Path, name: str) -> logging.Logger:
    """Log to ``out_dir/train.log`` and to stderr."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(name)
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    for handler in (logging.FileHandler(out_dir / "train.log"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    return log


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """Save ``model`` (with optimizer state) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def export_model(source: Path, target: Path, output: str | None = None) -> None:
    """Write ``source`` to ``target`` without optimizer state: the file that ships.

    With ``output``, the name of a layer, only the part of the network that
    computes that layer's output is kept (a training model's other heads go).
    Any card beside ``target`` described the previous file, so it is removed;
    the caller writes the new one.
    """
    model = keras.saving.load_model(source, compile=False, safe_mode=True)
    if output is not None:
        model = keras.Model(model.inputs, model.get_layer(output).output, name=model.name)
    card_path(target).unlink(missing_ok=True)
    save_model_atomic(model, target)


def fit_resumable(build: Callable[[], keras.Model], train_data: Callable[[int], object],
                  validation: tuple[np.ndarray, np.ndarray] | dict[str, tuple[np.ndarray, np.ndarray]] | None,
                  out_dir: Path, *, epochs: int,
                  patience: int, resume: bool, log: logging.Logger,
                  deadline: float | None = None, select: str = "accuracy") -> tuple[keras.Model, RunState]:
    """Train epoch by epoch with checkpoints and early stopping on validation accuracy.

    Parameters
    ----------
    build : returns a freshly compiled model (used when not resuming)
    train_data : ``epoch -> batches`` that ``model.fit`` takes (such as
        :class:`training.augment.FaceBatches`); seeding them by epoch makes a
        resumed run see the data it would have seen
    validation : ``(x, y)`` arrays for early stopping, or ``{name: (x, y)}``
        for several validation sets; the selection metric ``val_accuracy`` is
        then the mean of their accuracies, so a small set counts as much as a
        large one; or None: nothing to select on, so every epoch runs and the
        last is kept as the best
    deadline : a ``time.time()`` by which to stop: no epoch starts that the
        last one's duration says would end past it (the run can be resumed).
        The first two epochs always run: the first includes compiling the
        model, so only the second times an epoch
    select : the evaluated metric that selects (``"emotion_accuracy"`` for a
        model with several outputs); logged as ``val_accuracy``
    Returns the best model (by validation accuracy) and the final state.
    """
    ckpt = out_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    last, best, state_file = ckpt / "last.keras", ckpt / "best.keras", ckpt / "state.json"
    if resume and last.exists() and state_file.exists():
        model = keras.saving.load_model(last, safe_mode=True)
        state = RunState(**json.loads(state_file.read_text()))
        log.info("resumed from %s after epoch %d (best val_acc %.4f at epoch %d)",
                 last, state.epoch, state.best_metric, state.best_epoch)
    else:
        if resume:
            log.info("nothing to resume in %s; starting afresh", ckpt)
        model, state = build(), RunState()
    verbose = 1 if sys.stderr.isatty() else 2
    sets = {} if validation is None else validation if isinstance(validation, dict) else {"": validation}
    while state.epoch < epochs and state.stale_epochs < patience:
        started = time.time()
        if deadline and len(state.history) > 1 and started + state.history[-1]["seconds"] > deadline:
            log.info("stopping before epoch %d: it would end past the deadline", state.epoch + 1)
            break
        hist = model.fit(train_data(state.epoch), epochs=state.epoch + 1, initial_epoch=state.epoch,
                         verbose=verbose)
        val = {}
        for name, (x_val, y_val) in sets.items():
            scores = model.evaluate(x_val, y_val, batch_size=256, verbose=0, return_dict=True)
            scores["accuracy"] = scores[select]
            val.update({f"val_{name + '_' if name else ''}{k}": float(v) for k, v in scores.items()})
        if sets and "" not in sets:
            val["val_accuracy"] = float(np.mean([val[f"val_{name}_accuracy"] for name in sets]))
        state.epoch += 1
        record = {"epoch": state.epoch, "seconds": round(time.time() - started, 1),
                  **{k: float(v[-1]) for k, v in hist.history.items()}, **val}
        state.history.append(record)
        if not sets or record["val_accuracy"] > state.best_metric:
            state.best_metric = record.get("val_accuracy", state.best_metric)
            state.best_epoch, state.stale_epochs = state.epoch, 0
            save_model_atomic(model, best)
        else:
            state.stale_epochs += 1
        save_model_atomic(model, last)
        write_json_atomic(state_file, asdict(state))
        log.info("epoch %d/%d %s", state.epoch, epochs,
                 " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
    if state.stale_epochs >= patience:
        log.info("early stop: no val_accuracy gain for %d epochs", patience)
    return keras.saving.load_model(best, safe_mode=True), state
