"""Labelled face photos other than FER2013, for cross-dataset evaluation.

A *face set* is a folder of photos in one of two layouts:

* ``<set>/<label>/<name>.jpg`` (any image format OpenCV reads), labels named
  as the project's seven emotions; other folders (CK+'s ``contempt``) are
  skipped;
* the same with a ``manifest.csv`` beside the label folders, whose columns
  ``file`` and ``label`` name each photo, and ``subject`` (or ``movie``) who
  is in it.

:func:`load_face_sets` takes either one set or a folder of sets (such as the
``faces/`` folder holding KDEF, CK+48, JAFFE, Yale and SFEW).
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from multimodal.atomic import atomic_path
from multimodal.config import EMOTIONS
from multimodal.faces import BlazeFaceDetector, Face, crop_faces, largest, to_gray

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


@dataclass(frozen=True)
class FacePhoto:
    """One labelled photo of a face set."""
    path: Path
    label: str  # one of EMOTIONS
    subject: str  # who is in it ("" when unknown)


def _is_set(folder: Path) -> bool:
    return (folder / "manifest.csv").is_file() or any((folder / e).is_dir() for e in EMOTIONS)


def load_face_set(root: str | Path) -> list[FacePhoto]:
    """The labelled photos of one face set (see the module docstring)."""
    root = Path(root)
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"file", "label"} <= set(rows[0]):
            raise ValueError(f"{manifest}: needs the columns file and label")
        return [FacePhoto(root / r["file"], r["label"], r.get("subject") or r.get("movie") or "")
                for r in rows if r["label"] in EMOTIONS]
    return [FacePhoto(p, label, "") for label in EMOTIONS if (root / label).is_dir()
            for p in sorted((root / label).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


def load_face_sets(root: str | Path) -> dict[str, list[FacePhoto]]:
    """``{set name: photos}`` for one set at ``root`` or every set in its subfolders."""
    root = Path(root)
    if _is_set(root):
        sets = {root.name: load_face_set(root)}
    else:
        sets = {d.name: load_face_set(d) for d in sorted(root.iterdir()) if d.is_dir() and _is_set(d)}
    sets = {name: photos for name, photos in sets.items() if photos}
    if not sets:
        raise FileNotFoundError(f"{root}: no labelled face photos (<label>/<image> folders or manifest.csv)")
    return sets


def is_fer2013(root: str | Path) -> bool:
    """Whether ``root`` is FER2013: ``fer2013.csv`` itself, or a folder with ``train/`` and ``test/``."""
    root = Path(root)
    return root.suffix == ".csv" or (root / "fer2013.csv").is_file() or (
        (root / "train").is_dir() and (root / "test").is_dir())


def subject_fold(subject: str, folds: int = 5) -> int:
    """A stable fold number for a subject (or movie), for subject-independent splits."""
    return int(hashlib.sha1(subject.encode()).hexdigest(), 16) % folds


def crop_face_set(photos: list[FacePhoto], size: int = 48, jittered: int = 3, jitter: float = 0.12,
                  seed: int = 0, cache_dir: str | Path | None = None):
    """Face crops of labelled photos for training, as ``analyze`` crops them plus jittered boxes.

    Each photo's largest face is found by the shipped BlazeFace detector and
    cropped as :func:`multimodal.faces.photo_face_crop` crops it; ``jittered``
    more crops per photo move and rescale the box by up to ``jitter`` of its
    side, the size of a detector's errors on video frames, so a model learns
    to expect imperfect framing.

    Returns
    -------
    crops : uint8 array, shape (n, 1 + jittered, size, size); ``[:, 0]`` is the exact crop
    labels : int array, shape (n,), indices into EMOTIONS
    found : bool array, shape (n,), whether a face was found (else the whole photo)
    """


    cache = None
    if cache_dir is not None:
        key = hashlib.sha1("|".join([str(size), str(jittered), str(jitter), str(seed)]
                                    + [str(p.path.resolve()) for p in photos]).encode()).hexdigest()[:12]
        cache = Path(cache_dir) / f"faces-{key}.npz"
        if cache.exists():
            with np.load(cache) as z:
                return z["crops"], z["labels"], z["found"]
    detector, rng = BlazeFaceDetector(), np.random.default_rng(seed)
    crops = np.zeros((len(photos), 1 + jittered, size, size), np.uint8)
    found = np.zeros(len(photos), bool)
    for i, photo in enumerate(photos):
        bgr = cv2.imread(str(photo.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{photo.path}: not an image OpenCV can read")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        gray = to_gray(rgb)
        faces = largest(detector.detect(rgb), 1)
        if not faces:  # the whole photo, as analyze's photo crop does
            crops[i] = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
            continue
        found[i] = True
        f = faces[0]
        boxes = [f]
        for _ in range(jittered):
            scale = 1 + rng.uniform(-jitter, jitter)
            dx, dy = rng.uniform(-jitter, jitter, 2) * max(f.w, f.h)
            w, h = f.w * scale, f.h * scale
            boxes.append(Face(round(f.x + f.w / 2 - w / 2 + dx), round(f.y + f.h / 2 - h / 2 + dy),
                              round(w), round(h), f.score))
        crops[i] = crop_faces(gray, boxes, size)
    labels = np.array([EMOTIONS.index(p.label) for p in photos], dtype=np.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            np.savez(tmp, crops=crops, labels=labels, found=found)
    return crops, labels, found
