"""Train face models on a borrowed GPU machine from one packed file, within a time limit.

A GPU machine that is lent for a few minutes has neither the datasets nor
TensorFlow, and what travels to it is limited in size. So the work is split:

``pack`` (here, on the CPU machine) writes every face the runs need into one
``.npz`` file: each face WebP-encoded (quality 85 for training, 92 for
selection and test faces), no pickled objects, with its label and soft target.

``train`` (there, on any Keras 3 backend: JAX or PyTorch) decodes the pack,
trains one network with the project's augmentation and epoch loop under a
deadline, and writes the best model, its training log and the flip-averaged
probabilities it gives every packed face: selection and test sets, to score
it back here with the project's own metrics, and training faces, so that a
network too large to bring back still serves as a teacher (``--teacher``).

A large network's ``.keras`` file (InceptionResNetV2: 54 M parameters) is
larger than what a call brings back; ``train --keep-int8`` writes its weights
as int8 with a float scale per output channel (about a quarter of the float32
size), and ``restore`` (here) rebuilds the network and loads them into a
``.keras`` file that ``train visual --teacher`` or ``evaluate visual`` takes.

Run ``python -m training.device_visual pack --help``, ``train --help`` and ``restore --help``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from multimodal.config import EMOTIONS

TRAIN_QUALITY, EVAL_QUALITY = 85, 92


def encode_faces(faces: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """WebP-encode uint8 faces (n, s, s) into one byte array and its offsets (n + 1,)."""
    blobs = [cv2.imencode(".webp", f, [cv2.IMWRITE_WEBP_QUALITY, quality])[1].ravel() for f in faces]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    data = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)
    return data.astype(np.uint8), offsets


def decode_faces(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode_faces`: uint8 faces (n, s, s)."""
    faces = [np.asarray(cv2.imdecode(data[a:b], cv2.IMREAD_GRAYSCALE)) for a, b in zip(offsets[:-1], offsets[1:])]
    return np.stack(faces) if faces else np.zeros((0, 48, 48), np.uint8)


def write_pack(path: Path, sets: dict[str, dict[str, np.ndarray]]) -> None:
    """Save ``{set: {"faces": uint8 (n, s, s), "y": labels, optional "soft", ...}}`` as one npz.

    Sets whose name starts with ``train`` are encoded at TRAIN_QUALITY, the
    others at EVAL_QUALITY. Every other array is stored as given.
    """
    arrays = {}
    for name, fields in sets.items():
        quality = TRAIN_QUALITY if name.startswith("train") else EVAL_QUALITY
        arrays[f"{name}.data"], arrays[f"{name}.offsets"] = encode_faces(fields["faces"], quality)
        arrays.update({f"{name}.{k}": v for k, v in fields.items() if k != "faces"})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def read_pack(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The sets of a pack (see :func:`write_pack`), faces decoded."""
    sets: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            name, field = key.split(".", 1)
            sets.setdefault(name, {})[field] = z[key]
    for fields in sets.values():
        fields["faces"] = decode_faces(fields.pop("data"), fields.pop("offsets"))
    return sets


def pack(args) -> None:
    """Build the pack from the datasets' original layouts."""
    from training.face_sets import crop_face_set, load_face_sets
    from training.ferplus import load_ferplus, vote_distribution
    from training.rafdb import load_rafdb, rafdb_validation

    eye = np.eye(len(EMOTIONS), dtype=np.float32)
    sets = {}
    x, votes, _ = load_ferplus(args.fer, "Training")
    soft, kept = vote_distribution(votes)
    sets["train_fer"] = {"faces": x[kept], "y": soft[kept].argmax(1), "soft": soft[kept].astype(np.float16)}
    x, votes, _ = load_ferplus(args.fer, "PublicTest")
    soft, kept = vote_distribution(votes)
    sets["select_fer_public"] = {"faces": x[kept], "y": soft[kept].argmax(1)}
    x, votes, y_fer2013 = load_ferplus(args.fer, "PrivateTest")
    soft, kept = vote_distribution(votes)
    sets["test_fer_private"] = {"faces": x, "y": y_fer2013, "y_ferplus": np.where(kept, soft.argmax(1), -1)}
    if args.rafdb:
        x, y, names = load_rafdb(args.rafdb, "train", cache_dir=args.cache)
        val = rafdb_validation(names)
        sets["train_rafdb"] = {"faces": x[~val], "y": y[~val], "soft": eye[y[~val]].astype(np.float16)}
        sets["select_rafdb_val"] = {"faces": x[val], "y": y[val]}
    if args.faces:
        crops, labels, which = [], [], []
        for i, (name, photos) in enumerate(load_face_sets(args.faces).items()):
            c, y, _ = crop_face_set(photos, cache_dir=args.cache)
            crops.append(c[:, 0])
            labels.append(y)
            which.append(np.full(len(y), i))
            print(f"face set {i} = {name}: {len(y)} photos")
        sets["test_faces"] = {"faces": np.concatenate(crops), "y": np.concatenate(labels),
                              "set": np.concatenate(which)}
    if args.limit:  # a tiny pack, for testing the device script on a CPU
        rng = np.random.default_rng(0)
        for fields in sets.values():
            keep = rng.permutation(len(fields["y"]))[: args.limit]
            fields.update({k: v[keep] for k, v in fields.items()})
    write_pack(Path(args.out), sets)
    print(f"{args.out}: {Path(args.out).stat().st_size / 2**20:.1f} MiB; "
          + ", ".join(f"{k} {len(v['y'])}" for k, v in sets.items()))


def flip_averaged(model, faces: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Mean of the model's probabilities for each face and its mirror image, float32 (n, 7)."""
    out = []
    for i in range(0, len(faces), batch_size):
        x = faces[i:i + batch_size, :, :, None].astype(np.float32)
        out.append((np.asarray(model.predict_on_batch(x)) + np.asarray(model.predict_on_batch(x[:, :, ::-1]))) / 2)
    return np.concatenate(out).astype(np.float32)


def quantize_weights(weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """int8 copies of a model's weights, for ``np.savez``: each tensor of two or more dimensions
    as ``q{i}`` (int8) and ``s{i}``, a float32 scale per entry of its last axis (the output channel),
    with ``w ~= q * s``; smaller tensors (biases, normalisation statistics) as ``w{i}``, float32."""
    out: dict[str, np.ndarray] = {}
    for i, w in enumerate(weights):
        if w.ndim >= 2:
            scale = np.abs(w).reshape(-1, w.shape[-1]).max(axis=0) / 127.0
            scale[scale == 0] = 1.0
            out[f"q{i}"] = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            out[f"s{i}"] = scale.astype(np.float32)
        else:
            out[f"w{i}"] = w.astype(np.float32)
    return out


def dequantize_weights(arrays, count: int) -> list[np.ndarray]:
    """The float32 weights that :func:`quantize_weights` stored (``count`` tensors, in order)."""
    return [arrays[f"q{i}"].astype(np.float32) * arrays[f"s{i}"] if f"q{i}" in arrays else arrays[f"w{i}"]
            for i in range(count)]


def restore(args) -> None:
    """Rebuild a run's network from its ``run.json`` and load its int8 weights into a ``.keras`` file."""
    from training.loop import save_model_atomic
    from training.visual_models import compact_cnn, inception_resnet_v2

    run = json.loads((args.run / "run.json").read_text())
    model = (inception_resnet_v2(input_size=int(run["input_size"])) if run["backbone"] == "inception_resnet_v2"
             else compact_cnn())
    with np.load(args.run / "weights_int8.npz", allow_pickle=False) as z:
        model.set_weights(dequantize_weights(z, len(model.get_weights())))
    save_model_atomic(model, args.out)
    print(f"{args.out}: {run['backbone']} from {args.run / 'weights_int8.npz'}")


def train(args) -> None:
    """Train one network on the pack under a deadline; write its model, log and probabilities."""
    import keras

    from training.augment import FaceBatches
    from training.loop import export_model, fit_resumable, setup_logging
    from training.visual_models import BACKBONES

    started = time.time()
    out = Path(args.out)
    log = setup_logging(out, f"device_{out.name}")
    keras.utils.set_random_seed(args.seed)
    sets = read_pack(Path(args.pack))
    train_sets = [k for k in sets if k.startswith("train")]
    log.info("backend %s; pack %s decoded in %.0f s: %s", keras.backend.backend(), args.pack,
             time.time() - started, ", ".join(f"{k} {len(v['y'])}" for k, v in sets.items()))
    eye = np.eye(len(EMOTIONS), dtype=np.float32)

    def targets(name: str) -> np.ndarray:
        fields = sets[name]
        if args.targets == "soft":
            return fields["soft"].astype(np.float32)
        return eye[fields["y"]]  # majority labels

    def epoch_data(epoch: int):
        repeats = {k: args.rafdb_repeat if k == "train_rafdb" else 1 for k in train_sets}
        x = np.concatenate([sets[k]["faces"] for k in train_sets for _ in range(repeats[k])])
        t = np.concatenate([targets(k) for k in train_sets for _ in range(repeats[k])])
        return FaceBatches(x, t.argmax(1), args.batch_size, args.seed, epoch, args.augment,
                           workers=args.workers, targets=t)

    steps = sum(int(np.ceil(len(sets[k]["y"]) * (args.rafdb_repeat if k == "train_rafdb" else 1)))
                for k in train_sets) // args.batch_size + 1

    def build():
        if args.init:
            model = keras.saving.load_model(args.init, compile=False, safe_mode=True)
            for layer in model.layers:  # keep the initial model's normalisation statistics
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        elif args.backbone == "inception_resnet_v2":
            model = BACKBONES[args.backbone](input_size=args.input_size)
        else:
            model = BACKBONES[args.backbone]()
        warmup = 0 if args.init else steps
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, args.epochs * steps - warmup), warmup_target=args.learning_rate,
            warmup_steps=warmup)
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                      jit_compile=keras.backend.backend() == "jax")
        return model

    validation = {k.removeprefix("select_"): (sets[k]["faces"][..., None].astype(np.float32), eye[sets[k]["y"]])
                  for k in sets if k.startswith("select")}
    deadline = started + 60 * args.minutes
    model, state = fit_resumable(build, epoch_data, validation, out, epochs=args.epochs, patience=args.epochs,
                                 resume=False, log=log, deadline=deadline)
    log.info("best selection accuracy %.4f at epoch %d of %d run", state.best_metric, state.best_epoch,
             state.epoch)
    probs = {k: flip_averaged(model, v["faces"]).astype(np.float16) for k, v in sets.items()}
    np.savez(out / "probabilities.npz", **probs)  # type: ignore[arg-type]
    (out / "run.json").write_text(json.dumps({**{k: str(v) for k, v in vars(args).items() if k != "func"},
                                              "backend": keras.backend.backend(), "epochs_run": state.epoch,
                                              "best_epoch": state.best_epoch, "history": state.history},
                                             indent=1))
    if args.keep_model:  # without the optimizer's state: the file that could ship
        export_model(out / "checkpoints" / "best.keras", out / "model.keras")
    if args.keep_int8:
        np.savez(out / "weights_int8.npz", **quantize_weights(model.get_weights()))  # type: ignore[arg-type]
    # Checkpoints are for resuming on this machine; a large network's are too big to
    # bring back, and its probabilities stand for it.
    shutil.rmtree(out / "checkpoints")
    log.info("done in %.0f s", time.time() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.device_visual", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("pack", help="write the faces of every set into one npz file (CPU machine)")
    p.add_argument("--fer", type=Path, required=True, help="FER2013 (folder or fer2013.csv) with FER+ votes beside")
    p.add_argument("--rafdb", type=Path, help="RAF-DB's folder (EmoLabel/, Image/)")
    p.add_argument("--faces", type=Path, help="folder of face sets, packed as test faces only")
    p.add_argument("--cache", type=Path, default=Path("cache"))
    p.add_argument("--limit", type=int, help="keep N random faces per set (tests)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=pack)
    t = sub.add_parser("train", help="train one network from a pack under a deadline (GPU machine)")
    t.add_argument("--pack", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--backbone", default="compact", choices=["compact", "inception_resnet_v2"])
    t.add_argument("--input-size", type=int, default=96, help="InceptionResNetV2's input side, pixels")
    t.add_argument("--init", type=Path, help="fine-tune this .keras model instead of starting at random")
    t.add_argument("--targets", choices=["soft", "majority"], default="soft",
                   help="FER+ vote distributions or majority labels")
    t.add_argument("--rafdb-repeat", type=int, default=2, help="times each RAF-DB face is seen per epoch")
    t.add_argument("--augment", default="video", choices=["none", "basic", "video"])
    t.add_argument("--epochs", type=int, default=25)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--minutes", type=float, default=6.0, help="start no epoch that would end later")
    t.add_argument("--workers", type=int, default=3)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--keep-model", action="store_true", help="leave checkpoints/best.keras in --out")
    t.add_argument("--keep-int8", action="store_true",
                   help="also write the best model's weights as int8 (weights_int8.npz; see restore)")
    t.set_defaults(func=train)
    r = sub.add_parser("restore", help="a .keras model from a run's weights_int8.npz and run.json (CPU machine)")
    r.add_argument("run", type=Path, help="the run's folder, as it came back")
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(func=restore)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
