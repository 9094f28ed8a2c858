"""RAF-DB (Real-world Affective Faces, basic emotions) in its original layout.

The release holds ``EmoLabel/list_patition_label.txt`` (lines such as
``train_00001.jpg 5``; the prefix names the partition, ``train`` or ``test``)
and the faces in ``Image/aligned/<name>_aligned.jpg`` (100x100 RGB) and/or
``Image/original/<name>.jpg``. Labels are coded 1 surprise, 2 fear,
3 disgust, 4 happy, 5 sad, 6 angry, 7 neutral.

Faces are returned as the project's models take them: grayscale, square,
``size`` pixels, ``uint8``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from multimodal.atomic import atomic_path
from multimodal.config import EMOTIONS

RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
PARTITIONS = ("train", "test")


def is_rafdb(root: str | Path) -> bool:
    """Whether ``root`` holds RAF-DB's label list."""
    return (Path(root) / "EmoLabel" / "list_patition_label.txt").is_file()


def read_rafdb_labels(root: str | Path, partition: str) -> list[tuple[str, int]]:
    """``[(image name, label index into EMOTIONS)]`` of one partition, in the list's order."""
    if partition not in PARTITIONS:
        raise ValueError(f"unknown RAF-DB partition {partition!r}; expected train or test")
    listing = Path(root) / "EmoLabel" / "list_patition_label.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing}: no such file (expected RAF-DB's EmoLabel/list_patition_label.txt)")
    items = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            name, code = line.split()
            label = EMOTIONS.index(RAFDB_CODES[int(code)])
        except (ValueError, KeyError):
            raise ValueError(f"{listing}:{number}: expected '<name>.jpg <1-7>', got {line.strip()!r}") from None
        if name.startswith(partition + "_"):
            items.append((name, label))
    return items


def rafdb_image_path(root: str | Path, name: str) -> Path:
    """The aligned face of ``name`` where present, else the original photo."""
    root = Path(root)
    aligned = root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
    return aligned if aligned.is_file() else root / "Image" / "original" / name


def load_rafdb(root: str | Path, partition: str = "train", size: int = 48,
               cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One partition of RAF-DB as grayscale faces.

    Parameters
    ----------
    root : the folder holding ``EmoLabel/`` and ``Image/``
    partition : ``"train"`` or ``"test"``
    size : side of the returned faces, pixels (the aligned faces are 100x100)
    cache_dir : where decoded arrays are kept

    Returns
    -------
    faces : uint8 array, shape (n, size, size)
    labels : int array, shape (n,), indices into EMOTIONS
    names : the image names, as in the label list
    """
    items = read_rafdb_labels(root, partition)
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(f"{Path(root).resolve()}|{partition}|{size}|{len(items)}".encode()).hexdigest()[:12]
        cache = Path(cache_dir) / f"rafdb-{partition}-{key}.npz"
        if cache.exists():
            with np.load(cache) as z:
                return z["x"], z["y"], [str(n) for n in z["names"]]
    faces = np.zeros((len(items), size, size), np.uint8)
    for i, (name, _) in enumerate(items):
        path = rafdb_image_path(root, name)
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise ValueError(f"{path}: missing or unreadable image")
        faces[i] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    labels = np.array([label for _, label in items], np.int64)
    names = [name for name, _ in items]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            np.savez(tmp, x=faces, y=labels, names=np.array(names))
    return faces, labels, names


def rafdb_validation(names: list[str], fraction: float = 0.15, seed: int = 2026) -> np.ndarray:
    """A fixed validation carve of RAF-DB train: ``True`` for the images held back.

    RAF-DB names no subjects, so the carve is a seeded draw by image name,
    the same on every machine whatever order the files are read in.
    """
    draws = np.array([int(hashlib.sha1(f"{seed}|{n}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
                      for n in names])
    return draws < fraction
