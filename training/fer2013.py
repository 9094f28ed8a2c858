"""FER2013 loaders for both distributions of the dataset.

* the original ``fer2013.csv`` (columns ``emotion,pixels,Usage``), and
* the folder layout ``train|test/<emotion>/*.jpg`` in which the test file
  names start with ``PublicTest_`` or ``PrivateTest_``.

Both return images as ``uint8`` arrays of shape ``(n, 48, 48)`` and labels as
indices into :data:`multimodal.config.EMOTIONS`.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np

from multimodal.atomic import atomic_path
from multimodal.config import EMOTIONS

SPLITS = ("Training", "PublicTest", "PrivateTest")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown FER2013 split {split!r}; expected one of {', '.join(SPLITS)}")


def load_fer2013_csv(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of the original ``fer2013.csv``.

    The CSV's label order (0=angry … 6=neutral) is the project's order.
    """
    _check_split(split)
    images, labels = [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["Usage"].strip() != split:
                continue
            pixels = np.asarray(row["pixels"].split(), dtype=np.uint8)
            if pixels.size != 48 * 48:
                raise ValueError(f"{path}: a row has {pixels.size} pixels, expected 2304")
            images.append(pixels.reshape(48, 48))
            labels.append(int(row["emotion"]))
    return _stack(images, labels)


def read_face(path: Path) -> np.ndarray:
    """One FER2013 image file as a uint8 (48, 48) grey face (resized if it is another size)."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path}: missing or unreadable image")
    if img.shape != (48, 48):
        img = cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA)
    return img


def load_fer2013_folders(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of the folder layout (``train/`` and ``test/``)."""
    _check_split(split)
    root = Path(root)
    sub = root / ("train" if split == "Training" else "test")
    if not sub.is_dir():
        raise FileNotFoundError(f"{sub}: no such folder (expected FER2013 train/ and test/)")
    images, labels = [], []
    for label, name in enumerate(EMOTIONS):
        folder = sub / name  # the folders are named as EMOTIONS
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: missing emotion folder")
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            if split != "Training" and not file.name.startswith(split + "_"):
                continue
            images.append(read_face(file))
            labels.append(label)
    return _stack(images, labels)


def load_fer2013(path: str | Path, split: str, cache_dir: str | Path | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Load a split from either distribution, optionally through an ``.npz`` cache.

    Parameters
    ----------
    path : path to ``fer2013.csv`` or to the folder holding ``train/`` and ``test/``
    split : ``"Training"``, ``"PublicTest"`` or ``"PrivateTest"``
    cache_dir : where decoded arrays are kept; decoding 36k JPEGs takes a while
    """
    path = Path(path)
    csv_file = path if path.is_file() else path / "fer2013.csv"
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(f"{path.resolve()}|{split}".encode()).hexdigest()[:12]
        cache = Path(cache_dir) / f"fer2013-{split}-{key}.npz"
        if cache.exists():
            with np.load(cache) as z:
                return z["x"], z["y"]
    if csv_file.is_file():
        x, y = load_fer2013_csv(csv_file, split)
    else:
        x, y = load_fer2013_folders(path, split)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            np.savez(tmp, x=x, y=y)
    return x, y


def _stack(images: list, labels: list) -> tuple[np.ndarray, np.ndarray]:
    if not images:
        return np.zeros((0, 48, 48), np.uint8), np.zeros((0,), np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
