"""Train a facial-expression model on FER2013.

Training uses the ``Training`` split, early stopping and model selection use
``PublicTest``; ``PrivateTest`` is touched only by the final evaluation.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VisualTrainConfig:
    data: Path
    out: Path
    backbone: str = "compact"
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    patience: int = 8
    seed: int = 1
    weights: str | None = None  # inception_resnet_v2 only
    resume: bool = False
    limit: int | None = None  # use only the first N training images (smoke tests)
    cache_dir: Path | None = None


def augmenter(seed: int):
    """Random flip, small rotation, shift and zoom, as one Keras pipeline."""
    import keras
    from keras import layers
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(10 / 360, fill_mode="reflect", seed=seed + 1),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 2),
        layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 3),
    ], name="augment")


def make_train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int):
    """A shuffled, augmented ``tf.data`` pipeline over in-memory images."""
    import tensorflow as tf
    aug = augmenter(seed + 1000 * epoch)
    ds = tf.data.Dataset.from_tensor_slices((x[..., None].astype("float32"), y))
    ds = ds.shuffle(len(x), seed=seed + epoch).batch(batch_size)
    ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def train_visual(cfg: VisualTrainConfig) -> dict:
    """Run a training job; returns the evaluation summary of the final model."""
    import keras

    from training.fer2013 import load_fer2013
    from training.loop import export_model, fit_resumable, setup_logging
    from training.visual_models import BACKBONES

    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; choose from {', '.join(BACKBONES)}")
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
    steps = int(np.ceil(len(x_tr) / cfg.batch_size))

    def build():
        kwargs = {"weights": _resolve_weights(cfg.weights)} if cfg.backbone == "inception_resnet_v2" else {}
        model = BACKBONES[cfg.backbone](**kwargs)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, (cfg.epochs - cfg.warmup_epochs) * steps),
            warmup_target=cfg.learning_rate, warmup_steps=cfg.warmup_epochs * steps)
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
        return model

    (out / "config.json").write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                                 for k, v in cfg.__dict__.items()}, indent=2))
    model, state = fit_resumable(
        build, lambda epoch: make_train_dataset(x_tr, y_tr, cfg.batch_size, cfg.seed, epoch),
        (x_va[..., None].astype("float32"), y_va), out, epochs=cfg.epochs, patience=cfg.patience,
        resume=cfg.resume, log=log)
    model_path = out / "model.keras"
    export_model(out / "checkpoints" / "best.keras", model_path)
    log.info("best PublicTest accuracy %.4f at epoch %d; model at %s", state.best_metric, state.best_epoch, model_path)

    from multimodal.config import EMOTIONS
    from multimodal.models import write_card
    from training.evaluate import evaluate_visual_model
    summary = evaluate_visual_model(model_path, cfg.data, out / "report", split="PrivateTest", flip=True,
                                    cache_dir=cache)
    write_card(model_path, "visual", EMOTIONS,
               input={"shape": [48, 48, 1], "dtype": "float32",
                      "description": "grayscale face crop, pixel values 0-255 (scaling is inside the model)"},
               preprocessing="square face box widened 10% per side, grayscale, resized to 48x48 (INTER_AREA)",
               training={"dataset": "FER2013", "train_split": "Training" + (f" (random {cfg.limit})" if cfg.limit else ""),
                         "selection_split": "PublicTest (early stopping, best epoch)", "test_split": "PrivateTest",
                         "backbone": cfg.backbone, "epochs_run": state.epoch, "best_epoch": state.best_epoch,
                         "best_publictest_accuracy": round(state.best_metric, 4), "seed": cfg.seed,
                         "augmentation": "horizontal flip, rotation +-10 deg, shift +-10%, zoom +-10%",
                         "platform": platform.platform()},
               metrics=summary)
    log.info("PrivateTest: accuracy %.4f, macro-F1 %.4f (flip averaging: %.4f)", summary["accuracy"],
             summary["macro_f1"], summary["flip_accuracy"])
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
