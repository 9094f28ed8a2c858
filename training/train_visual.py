"""Train a facial-expression model on FER2013, optionally with other face sets.

Training uses FER2013's ``Training`` split (and, with ``faces``, the photos
of the face sets not held out, except a fifth of their subjects); model
selection uses ``PublicTest`` and those held-back subjects, so that a model
is chosen for faces beyond FER2013 too. ``PrivateTest`` and the held-out face
sets are touched only by the final evaluation.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from multimodal.config import EMOTIONS
from multimodal.errors import UsageError
from multimodal.models import sha256_of, write_card
from training.augment import FaceBatches, subtle_expressions
from training.config import AUGMENTATIONS, VisualTrainConfig
from training.evaluate import evaluate_face_sets, evaluate_visual_model, load_model_for_evaluation, predict_batches
from training.face_sets import crop_face_set, load_face_sets, subject_fold
from training.fer2013 import load_fer2013
from training.ferplus import load_ferplus, vote_distribution
from training.loop import export_model, fit_resumable, setup_logging
from training.rafdb import load_rafdb, rafdb_validation
from training.visual_models import BACKBONES

SUBTLE = "subtle"  # the key of the blended faces in face_set_data's training sets


def face_set_data(faces: Path, hold_out: tuple[str, ...], cache: Path, log,
                  subtle: bool = False) -> tuple[dict, tuple]:
    """Crops of the face sets that are not held out: ``(train, validation)``.

    Train: ``{set: (crops (n, k, 48, 48), labels)}`` with every crop variant
    (see :func:`training.face_sets.crop_face_set`); validation: ``(x, y)``
    exact crops of a fifth of each set's subjects, never trained on. With
    ``subtle``, ``train[SUBTLE]`` holds weaker versions of the training
    photos' expressions (see :func:`training.augment.subtle_expressions`).
    """
    sets = load_face_sets(faces)
    unknown = set(hold_out) - set(sets)
    if unknown:
        raise UsageError(f"--hold-out {', '.join(sorted(unknown))}: not among the face sets "
                         f"({', '.join(sets)})")
    train, val_x, val_y, blends = {}, [], [], []
    for name, photos in sets.items():
        if name in hold_out:
            continue
        crops, labels, found = crop_face_set(photos, cache_dir=cache)
        is_val = np.array([subject_fold(p.subject or p.path.name) == 0 for p in photos])
        train[name] = crops[~is_val], labels[~is_val]
        if subtle:
            subjects = np.array([p.subject for p in photos])[~is_val]
            blends.append(subtle_expressions(crops[~is_val, 0], labels[~is_val], subjects,
                                             EMOTIONS.index("neutral")))
            log.info("face set %s: %d expressions blended with the same subject's neutral face",
                     name, len(blends[-1][1]))
        val_x.append(crops[is_val, 0])
        val_y.append(labels[is_val])
        log.info("face set %s: %d photos (%d with no face found), %d for training, %d for selection",
                 name, len(photos), int((~found).sum()), int((~is_val).sum()), int(is_val.sum()))
    if blends and sum(len(y) for _, y in blends):
        train[SUBTLE] = np.concatenate([b for b, _ in blends]), np.concatenate([y for _, y in blends])
    if not val_x:
        return train, (np.zeros((0, 48, 48), np.uint8), np.zeros(0, np.int64))
    return train, (np.concatenate(val_x), np.concatenate(val_y))


def fer_training_data(cfg: VisualTrainConfig, cache: Path, log):
    """FER2013's training faces, their labels and optional FER+ targets, and the selection faces.

    With ``cfg.ferplus`` ("soft" or "majority") the labels are FER+'s: faces
    that most of its raters could not read are dropped, PublicTest is scored
    on the majority label, and "soft" also returns the vote distributions.

    Returns ``(x_train, y_train, targets or None, x_public, y_public)``.
    """
    targets = None
    if cfg.ferplus:
        if cfg.ferplus not in ("soft", "majority"):
            raise UsageError(f"--ferplus {cfg.ferplus}: expected soft or majority")
        x_tr, votes, _ = load_ferplus(cfg.data, "Training")
        dist, kept = vote_distribution(votes)
        x_tr, y_tr, targets = x_tr[kept], dist[kept].argmax(1), dist[kept] if cfg.ferplus == "soft" else None
        x_va, votes, _ = load_ferplus(cfg.data, "PublicTest")
        dist, kept = vote_distribution(votes)
        x_va, y_va = x_va[kept], dist[kept].argmax(1)
        log.info("FER+ %s labels: %d training faces kept", cfg.ferplus, len(y_tr))
    else:
        x_tr, y_tr = load_fer2013(cfg.data, "Training", cache)
        x_va, y_va = load_fer2013(cfg.data, "PublicTest", cache)
    if cfg.limit:  # a seeded random subset, so every class is present
        keep = np.random.default_rng(cfg.seed).permutation(len(x_tr))[: cfg.limit]
        x_tr, y_tr = x_tr[keep], y_tr[keep]
        targets = targets[keep] if targets is not None else None
    return x_tr, y_tr, targets, x_va, y_va


def teacher_distributions(teachers: list, faces: np.ndarray) -> np.ndarray:
    """The teachers' mean class distribution for each face, flip-averaged as ``analyze`` predicts.

    Parameters
    ----------
    teachers : visual models over EMOTIONS (:func:`training.evaluate.load_model_for_evaluation`)
    faces : uint8 array, shape (..., 48, 48)

    Returns
    -------
    float32 array, shape faces.shape[:-2] + (7,)
    """
    x = faces.reshape((-1,) + faces.shape[-2:])[..., None].astype(np.float32)
    total = np.zeros((len(x), len(EMOTIONS)))
    for model in teachers:
        total += (predict_batches(model, x) + predict_batches(model, np.ascontiguousarray(x[:, :, ::-1]))) / 2
    return (total / len(teachers)).astype(np.float32).reshape(faces.shape[:-2] + (len(EMOTIONS),))


def fit_visual(cfg: VisualTrainConfig, fer: tuple[np.ndarray, np.ndarray],
               validation: dict[str, tuple[np.ndarray, np.ndarray]],
               faces_train: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, log,
               deadline: float | None = None, taught: dict[str, np.ndarray] | None = None,
               fer_targets: np.ndarray | None = None):
    """Train on in-memory faces with checkpoints and early stopping.

    Parameters
    ----------
    fer : FER2013 training faces, uint8 (n, 48, 48), and their labels
    validation : ``{name: (faces, labels)}``; the best epoch is the one with
        the highest mean accuracy over these sets
    faces_train : ``{set: (crops (n, k, 48, 48), labels)}``: face-set photos,
        each with k crop variants of which every epoch draws one
    deadline : see :func:`training.loop.fit_resumable`
    taught : the teachers' distributions (:func:`teacher_distributions`) of
        the FER2013 faces (key ``"fer"``) and of every crop of ``faces_train``;
        each target becomes ``(1 - cfg.distill) * label + cfg.distill * teachers``
    fer_targets : float array, shape (n, 7), optional: label distributions of
        the FER2013 faces (FER+ votes) used instead of their one-hot labels

    Returns the best model and the run's :class:`training.loop.RunState`.
    """
    import keras

    x_tr, y_tr = fer
    n_fer = min(cfg.fer_per_epoch or len(x_tr), len(x_tr))
    per_epoch = n_fer + cfg.faces_repeat * sum(len(y) for _, y in faces_train.values())
    steps = int(np.ceil(per_epoch / cfg.batch_size))
    soft = taught is not None or fer_targets is not None
    classes = len(EMOTIONS) if cfg.label_smoothing or soft else None
    eye = np.eye(len(EMOTIONS), dtype=np.float32)

    def epoch_data(epoch: int):
        """FER2013 (all, or a fresh random draw) and each face photo ``faces_repeat`` times,
        each time as a randomly chosen crop variant."""
        rng = np.random.default_rng([cfg.seed, epoch])
        pick = rng.permutation(len(x_tr))[:n_fer]
        xs, ys = [x_tr[pick]], [y_tr[pick]]
        labels_soft = [fer_targets[pick] if fer_targets is not None else eye[y_tr[pick]]]
        teachers = [taught["fer"][pick]] if taught else []
        for name, (crops, labels) in faces_train.items():
            for _ in range(cfg.faces_repeat):
                rows, variant = np.arange(len(labels)), rng.integers(0, crops.shape[1], len(labels))
                xs.append(crops[rows, variant])
                ys.append(labels)
                labels_soft.append(eye[labels])
                if taught:
                    teachers.append(taught[name][rows, variant])
        y = np.concatenate(ys)
        targets = np.concatenate(labels_soft) if soft else None
        if taught and targets is not None:
            targets = (1 - cfg.distill) * targets + cfg.distill * np.concatenate(teachers)
        return FaceBatches(np.concatenate(xs), y, cfg.batch_size, cfg.seed, epoch,
                           cfg.augment, classes, workers=cfg.workers, targets=targets)

    def build():
        if cfg.init:
            model = keras.saving.load_model(cfg.init, compile=False, safe_mode=True)
            # Fine-tuning on heavily augmented batches would drag the normalisation
            # statistics away from clean faces: keep the initial model's.
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        else:
            kwargs = {"weights": _resolve_weights(cfg.weights)} if cfg.backbone == "inception_resnet_v2" else {}
            model = BACKBONES[cfg.backbone](**kwargs)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, (cfg.epochs - cfg.warmup_epochs) * steps),
            warmup_target=cfg.learning_rate, warmup_steps=cfg.warmup_epochs * steps)
        loss = (keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing) if classes
                else keras.losses.SparseCategoricalCrossentropy())
        metric = (keras.metrics.CategoricalAccuracy(name="accuracy") if classes
                  else keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
        # XLA compiles slowly and runs slower on TensorFlow's CPU path, while
        # JAX without jit would run op by op.
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
                      loss=loss, metrics=[metric], jit_compile=keras.backend.backend() == "jax")
        return model

    def as_validation(x, y):
        return x[..., None].astype("float32"), (np.eye(classes, dtype="float32")[y] if classes else y)

    return fit_resumable(build, epoch_data, {k: as_validation(*v) for k, v in validation.items()},
                         out, epochs=cfg.epochs, patience=cfg.patience, resume=cfg.resume, log=log,
                         deadline=deadline)


def train_visual(cfg: VisualTrainConfig) -> dict:
    """Run a training job; returns the evaluation summary of the final model.

    The summary has the FER2013 PrivateTest metrics and, when face sets were
    held out, ``held_out``: ``{set: metrics}`` measured as ``evaluate visual``
    measures them.
    """
    import keras

    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; choose from {', '.join(BACKBONES)}")
    if cfg.augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {cfg.augment!r}; choose from {', '.join(AUGMENTATIONS)}")
    if not 0 <= cfg.distill <= 1:
        raise UsageError(f"--distill {cfg.distill}: must be between 0 and 1")
    for teacher in cfg.teachers:
        if not Path(teacher).is_file():
            raise UsageError(f"--teacher {teacher}: no such model file")
    deadline = time.time() + 60 * cfg.time_limit if cfg.time_limit else None
    out = Path(cfg.out)
    log = setup_logging(out, "train_visual")
    keras.utils.set_random_seed(cfg.seed)
    cache = cfg.cache_dir or out / "cache"
    x_tr, y_tr, fer_targets, x_va, y_va = fer_training_data(cfg, cache, log)
    log.info("FER2013 Training %d images, PublicTest %d; backbone %s", len(x_tr), len(x_va), cfg.backbone)
    faces_train: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    validation: dict[str, tuple[np.ndarray, np.ndarray]] = {"fer_publictest": (x_va, y_va)}
    if cfg.faces:
        faces_train, faces_val = face_set_data(cfg.faces, cfg.hold_out, cache, log, cfg.subtle)
        if len(faces_val[1]):
            validation["faces"] = faces_val
    if cfg.rafdb:
        x_raf, y_raf, names = load_rafdb(cfg.rafdb, "train", cache_dir=cache)
        carve = rafdb_validation(names)
        # one crop variant, seen faces_repeat times per epoch like a face set's photos
        faces_train["rafdb"] = x_raf[~carve, None], y_raf[~carve]
        validation["rafdb_val"] = x_raf[carve], y_raf[carve]
        log.info("RAF-DB train: %d faces for training, %d (the fixed carve) for selection",
                 int((~carve).sum()), int(carve.sum()))
    (out / "config.json").write_text(json.dumps(cfg.__dict__, indent=2, default=str))
    taught = None
    if cfg.teachers:
        log.info("distillation: targets %.2f labels + %.2f the mean of %s", 1 - cfg.distill, cfg.distill,
                 ", ".join(str(t) for t in cfg.teachers))
        teachers = [load_model_for_evaluation(t, "visual") for t in cfg.teachers]
        taught = {"fer": teacher_distributions(teachers, x_tr)}
        taught.update({name: teacher_distributions(teachers, crops) for name, (crops, _) in faces_train.items()})
    model, state = fit_visual(cfg, (x_tr, y_tr), validation, faces_train, out, log, deadline, taught,
                              fer_targets)
    if state.epoch < cfg.epochs and state.stale_epochs < cfg.patience:
        log.info("time limit: stopped after epoch %d of %d; the best model so far is evaluated below, "
                 "and --resume goes on", state.epoch, cfg.epochs)
    model_path = out / "model.keras"
    export_model(out / "checkpoints" / "best.keras", model_path)
    log.info("best validation accuracy %.4f at epoch %d; model at %s", state.best_metric, state.best_epoch,
             model_path)

    summary = evaluate_visual_model(model_path, cfg.data, out / "report", split="PrivateTest", flip=True,
                                    cache_dir=cache)
    used = ", ".join(name for name in faces_train if name != SUBTLE and name != "rafdb")
    selection = ("PublicTest" + (" (FER+ majority)" if cfg.ferplus else "")
                 + (", RAF-DB train's fixed 15% carve" if cfg.rafdb else "")
                 + (f" and a fifth of the subjects of {used}" if used else ""))
    training = {"dataset": "FER2013" + (f" (FER+ {cfg.ferplus} labels)" if cfg.ferplus else "")
                + (" + RAF-DB train" if cfg.rafdb else "") + (f" + {used}" if used else ""),
                "train_split": "Training" + (f" (random {cfg.limit})" if cfg.limit else "")
                + (", the other four fifths of the face sets' subjects" if used else ""),
                "selection_split": f"{selection} (early stopping, best epoch by mean accuracy)",
                "test_split": "PrivateTest" + (f"; face sets never trained on: {', '.join(cfg.hold_out)}"
                                               if cfg.hold_out else ""),
                "backbone": cfg.backbone,
                "initialised_from": f"{Path(cfg.init).name} (batch-norm statistics frozen)" if cfg.init else None,
                "epochs_run": state.epoch, "best_epoch": state.best_epoch,
                "best_validation_accuracy": round(state.best_metric, 4), "seed": cfg.seed,
                "augmentation": AUGMENTATIONS[cfg.augment]
                + ("; subtle expressions: posed ones blended with the same subject's neutral face "
                   f"({len(faces_train[SUBTLE][1])} photos, 35-80% expression)" if SUBTLE in faces_train else ""),
                "label_smoothing": cfg.label_smoothing,
                "distilled_from": {"teachers": [{"file": str(t), "sha256": sha256_of(t)} for t in cfg.teachers],
                                   "weight": cfg.distill} if cfg.teachers else None,
                "platform": platform.platform()}
    write_card(model_path, "visual", EMOTIONS,
               input={"shape": [48, 48, 1], "dtype": "float32",
                      "description": "grayscale face crop, pixel values 0-255 (scaling is inside the model)"},
               preprocessing="square face box widened 10% per side, grayscale, resized to 48x48 (INTER_AREA)",
               training=training, metrics=summary)
    log.info("PrivateTest: accuracy %.4f, macro-F1 %.4f (flip averaging: %.4f)", summary["accuracy"],
             summary["macro_f1"], summary["flip_accuracy"])
    if cfg.faces and cfg.hold_out:
        held = evaluate_face_sets(model_path, cfg.faces, out / "report" / "held_out",
                                  only=tuple(cfg.hold_out))
        summary["held_out"] = {name: {k: m[k] for k in ("n", "accuracy", "macro_f1", "called_neutral")}
                               for name, m in held[model_path.name].items() if name != "mean_accuracy"}
        for name, m in summary["held_out"].items():
            log.info("held-out face set %s: accuracy %.4f, macro-F1 %.4f, non-neutral called neutral %.3f",
                     name, m["accuracy"], m["macro_f1"], m["called_neutral"])
        (out / "held_out.json").write_text(json.dumps(summary["held_out"], indent=2))
    return summary


def _resolve_weights(weights: str | None):
    """Keras ImageNet weights only from the local cache or a given path: nothing is downloaded."""
    if weights in (None, "", "none"):
        return None
    if weights == "imagenet":
        cache = Path.home() / ".keras" / "models"
        name = "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
        if not (cache / name).exists():
            raise FileNotFoundError(
                f"ImageNet weights not found at {cache / name}; this tool never downloads. "
                f"Copy the file there or pass --weights PATH")
        return "imagenet"
    if not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: weights file not found")
    return str(weights)
