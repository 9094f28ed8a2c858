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
from pathlib import Path

import numpy as np

from multimodal.config import EMOTIONS
from multimodal.errors import UsageError
from multimodal.models import write_card
from training.config import AUGMENTATIONS, VisualTrainConfig
from training.evaluate import evaluate_face_sets, evaluate_visual_model
from training.face_sets import crop_face_set, load_face_sets, subject_fold
from training.fer2013 import load_fer2013
from training.loop import export_model, fit_resumable, setup_logging
from training.visual_models import BACKBONES


def augmenter(seed: int, strong: bool = False):
    """Random flip, small rotation, shift and zoom, as one Keras pipeline."""
    import keras
    from keras import layers
    rotate, zoom = (15, 0.15) if strong else (10, 0.1)
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(rotate / 360, fill_mode="reflect", seed=seed + 1),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 2),
        layers.RandomZoom(zoom, fill_mode="reflect", seed=seed + 3),
    ], name="augment")


def video_degradations(x, seed):
    """Degrade a batch of faces as video degrades them.

    Parameters
    ----------
    x : float32 tensor, shape (n, s, s, 1), pixel values 0-255
    seed : int32 tensor, shape (2,), for TensorFlow's stateless random ops

    Faces cut from video are small (down- then up-scaled), noisy, compressed,
    badly lit and sometimes partly hidden; FER2013's web photos rarely are.
    Each degradation hits a random subset of the batch.
    """
    import tensorflow as tf
    n, size = tf.shape(x)[0], x.shape[1]
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, 16)))

    def uniform(lo, hi, shape=None, dtype=tf.float32):
        return tf.random.stateless_uniform([n, 1, 1, 1] if shape is None else shape, next(seeds), lo, hi, dtype)

    def pick(p):
        return tf.cast(uniform(0.0, 1.0) < p, x.dtype)

    small = uniform(14, 41, [], tf.int32)
    rescaled = tf.image.resize(tf.image.resize(x, [small, small], antialias=True), [size, size])
    x = x + pick(0.4) * (rescaled - x)
    x = x + pick(0.3) * tf.random.stateless_normal(tf.shape(x), next(seeds)) * uniform(2.0, 10.0)
    x = tf.clip_by_value(x, 0, 255) / 255
    quality = uniform(15, 61, [], tf.int32)
    jpeg = tf.map_fn(lambda im: tf.image.adjust_jpeg_quality(im, quality), x)
    x = x + pick(0.3) * (jpeg - x)
    x = tf.clip_by_value(x, 1e-3, 1) ** uniform(0.6, 1.6)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * uniform(0.6, 1.4) + mean + uniform(-0.12, 0.12)
    # One occluding rectangle (a hand, a microphone, a shadow) on a quarter of the faces.
    yy, xx = tf.meshgrid(tf.range(size, dtype=tf.float32), tf.range(size, dtype=tf.float32), indexing="ij")
    cy, cx, half = uniform(0.0, float(size)), uniform(0.0, float(size)), uniform(4.0, size / 4)
    box = tf.cast((tf.abs(yy[None, :, :, None] - cy) < half) & (tf.abs(xx[None, :, :, None] - cx) < half), x.dtype)
    x = x + pick(0.25) * box * (uniform(0.0, 1.0) - x)
    return tf.clip_by_value(x, 0, 1) * 255


def make_train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int,
                       augment: str = "basic", num_classes: int | None = None):
    """A shuffled, augmented ``tf.data`` pipeline over in-memory images.

    ``augment`` is a key of :data:`AUGMENTATIONS`; ``num_classes`` turns the
    labels into one-hot vectors (for label smoothing).
    """
    import tensorflow as tf
    aug = augmenter(seed + 1000 * epoch, strong=augment == "video")
    ds = tf.data.Dataset.from_tensor_slices((x[..., None].astype("float32"), y))
    ds = ds.shuffle(len(x), seed=seed + epoch).batch(batch_size)
    if augment == "video":
        ds = ds.enumerate().map(
            lambda i, ab: (video_degradations(aug(ab[0], training=True),
                                              tf.stack([seed + 1000 * epoch, tf.cast(i, tf.int32)])), ab[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    if num_classes:
        ds = ds.map(lambda a, b: (a, tf.one_hot(b, num_classes)))
    return ds.prefetch(tf.data.AUTOTUNE)


def face_set_data(faces: Path, hold_out: tuple[str, ...], cache: Path, log) -> tuple[dict, tuple]:
    """Crops of the face sets that are not held out: ``(train, validation)``.

    Train: ``{set: (crops (n, k, 48, 48), labels)}`` with every crop variant
    (see :func:`training.face_sets.crop_face_set`); validation: ``(x, y)``
    exact crops of a fifth of each set's subjects, never trained on.
    """
    sets = load_face_sets(faces)
    unknown = set(hold_out) - set(sets)
    if unknown:
        raise UsageError(f"--hold-out {', '.join(sorted(unknown))}: not among the face sets "
                         f"({', '.join(sets)})")
    train, val_x, val_y = {}, [], []
    for name, photos in sets.items():
        if name in hold_out:
            continue
        crops, labels, found = crop_face_set(photos, cache_dir=cache)
        is_val = np.array([subject_fold(p.subject or p.path.name) == 0 for p in photos])
        train[name] = crops[~is_val], labels[~is_val]
        val_x.append(crops[is_val, 0])
        val_y.append(labels[is_val])
        log.info("face set %s: %d photos (%d with no face found), %d for training, %d for selection",
                 name, len(photos), int((~found).sum()), int((~is_val).sum()), int(is_val.sum()))
    if not val_x:
        return train, (np.zeros((0, 48, 48), np.uint8), np.zeros(0, np.int64))
    return train, (np.concatenate(val_x), np.concatenate(val_y))


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
    out = Path(cfg.out)
    log = setup_logging(out, "train_visual")
    keras.utils.set_random_seed(cfg.seed)
    cache = cfg.cache_dir or out / "cache"
    x_tr, y_tr = load_fer2013(cfg.data, "Training", cache)
    x_va, y_va = load_fer2013(cfg.data, "PublicTest", cache)
    if cfg.limit:  # a seeded random subset, so every class is present
        keep = np.random.default_rng(cfg.seed).permutation(len(x_tr))[: cfg.limit]
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    log.info("FER2013 Training %d images, PublicTest %d; backbone %s", len(x_tr), len(x_va), cfg.backbone)
    faces_train: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    validation: dict[str, tuple[np.ndarray, np.ndarray]] = {"fer_publictest": (x_va, y_va)}
    if cfg.faces:
        faces_train, faces_val = face_set_data(cfg.faces, cfg.hold_out, cache, log)
        if len(faces_val[1]):
            validation["faces"] = faces_val
    n_fer = min(cfg.fer_per_epoch or len(x_tr), len(x_tr))
    per_epoch = n_fer + cfg.faces_repeat * sum(len(y) for _, y in faces_train.values())
    steps = int(np.ceil(per_epoch / cfg.batch_size))
    classes = len(EMOTIONS) if cfg.label_smoothing else None

    def epoch_data(epoch: int):
        """FER2013 (all, or a fresh random draw) and each face photo ``faces_repeat`` times,
        each time as a randomly chosen crop variant."""
        rng = np.random.default_rng([cfg.seed, epoch])
        pick = rng.permutation(len(x_tr))[:n_fer]
        xs, ys = [x_tr[pick]], [y_tr[pick]]
        for crops, labels in faces_train.values():
            for _ in range(cfg.faces_repeat):
                xs.append(crops[np.arange(len(labels)), rng.integers(0, crops.shape[1], len(labels))])
                ys.append(labels)
        return make_train_dataset(np.concatenate(xs), np.concatenate(ys), cfg.batch_size, cfg.seed, epoch,
                                  cfg.augment, classes)

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
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
                      loss=loss, metrics=[metric], jit_compile=False)
        return model

    def as_validation(x, y):
        return x[..., None].astype("float32"), (np.eye(classes, dtype="float32")[y] if classes else y)

    (out / "config.json").write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                                 for k, v in cfg.__dict__.items()}, indent=2))
    model, state = fit_resumable(build, epoch_data, {k: as_validation(*v) for k, v in validation.items()},
                                 out, epochs=cfg.epochs, patience=cfg.patience, resume=cfg.resume, log=log)
    model_path = out / "model.keras"
    export_model(out / "checkpoints" / "best.keras", model_path)
    log.info("best validation accuracy %.4f at epoch %d; model at %s", state.best_metric, state.best_epoch,
             model_path)

    summary = evaluate_visual_model(model_path, cfg.data, out / "report", split="PrivateTest", flip=True,
                                    cache_dir=cache)
    selection = "PublicTest" + (f" and a fifth of the subjects of {', '.join(faces_train)}" if faces_train else "")
    training = {"dataset": "FER2013" + (f" + {', '.join(faces_train)}" if faces_train else ""),
                "train_split": "Training" + (f" (random {cfg.limit})" if cfg.limit else "")
                + (", the other four fifths of the face sets' subjects" if faces_train else ""),
                "selection_split": f"{selection} (early stopping, best epoch by mean accuracy)",
                "test_split": "PrivateTest" + (f"; face sets never trained on: {', '.join(cfg.hold_out)}"
                                               if cfg.hold_out else ""),
                "backbone": cfg.backbone,
                "initialised_from": f"{Path(cfg.init).name} (batch-norm statistics frozen)" if cfg.init else None,
                "epochs_run": state.epoch, "best_epoch": state.best_epoch,
                "best_validation_accuracy": round(state.best_metric, 4), "seed": cfg.seed,
                "augmentation": AUGMENTATIONS[cfg.augment], "label_smoothing": cfg.label_smoothing,
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
