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
from dataclasses import dataclass
from pathlib import Path

from multimodal.config import EMOTIONS

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


@dataclass(frozen=True)
class FacePhoto:
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
