"""FER+ votes: FER2013's images labelled again by ten people each.

Two forms are read:

* the original pair: FER2013's ``fer2013.csv`` and FER+'s ``fer2013new.csv``,
  row-aligned (row *i* of one is row *i* of the other);
* ``ferplus.csv`` beside FER2013's folder layout: a ``file`` column (path
  under the FER2013 folder), ``usage`` and the vote columns.

Either way the result is the split's faces with their votes, of which
:func:`vote_distribution` makes soft targets over the project's seven
emotions and :func:`majority_labels` FER+'s usual majority labels.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from multimodal.config import EMOTIONS
from training.fer2013 import SPLITS, load_fer2013_csv, read_face

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                "unknown", "NF")
# FER+'s name for each of the project's emotions, and where its votes sit among VOTE_COLUMNS.
FERPLUS_NAMES = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
                 "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}
_EMOTION_COLUMN = [VOTE_COLUMNS.index(FERPLUS_NAMES[e]) for e in EMOTIONS]


def _votes(row: dict, where: str) -> np.ndarray:
    try:
        return np.array([float(row[c] or 0) for c in VOTE_COLUMNS], np.float32)
    except KeyError as e:
        raise ValueError(f"{where}: no vote column {e.args[0]!r} (expected {', '.join(VOTE_COLUMNS)})") from None


def load_ferplus_pair(fer2013_csv: str | Path, fer2013new_csv: str | Path, split: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces and votes of one split from the original, row-aligned pair of CSV files.

    Returns
    -------
    faces : uint8 array, shape (n, 48, 48)
    votes : float32 array, shape (n, 10), columns as VOTE_COLUMNS (all zero
        where FER+ left an image out)
    fer2013_labels : int array, shape (n,): FER2013's own labels, indices into EMOTIONS
    """
    faces, labels = load_fer2013_csv(fer2013_csv, split)
    votes = []
    with open(fer2013new_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["Usage"].strip() == split:
                votes.append(_votes(row, str(fer2013new_csv)))
    if len(votes) != len(faces):
        raise ValueError(f"{fer2013new_csv}: {len(votes)} {split} rows against {len(faces)} in "
                         f"{fer2013_csv}; the two files must be row-aligned")
    return faces, np.array(votes, np.float32).reshape(-1, len(VOTE_COLUMNS)), labels


def load_ferplus_manifest(manifest: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces, votes and FER2013 labels of one split from ``ferplus.csv`` beside the FER2013
    folder layout (the FER2013 label is the name of the folder a face is in)."""
    if split not in SPLITS:
        raise ValueError(f"unknown FER2013 split {split!r}; expected one of {', '.join(SPLITS)}")
    manifest = Path(manifest)
    faces, votes, labels = [], [], []
    with open(manifest, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["usage"].strip() != split:
                continue
            faces.append(read_face(manifest.parent / row["file"]))
            votes.append(_votes(row, str(manifest)))
            folder = Path(row["file"]).parent.name
            if folder not in EMOTIONS:
                raise ValueError(f"{manifest}: {row['file']} is not in an emotion folder")
            labels.append(EMOTIONS.index(folder))
    if not faces:
        return (np.zeros((0, 48, 48), np.uint8), np.zeros((0, len(VOTE_COLUMNS)), np.float32),
                np.zeros(0, np.int64))
    return np.stack(faces), np.array(votes, np.float32), np.array(labels, np.int64)


def find_ferplus(root: str | Path) -> tuple[Path, ...] | None:
    """The FER+ files for a FER2013 location: ``(ferplus.csv,)``, ``(fer2013.csv, fer2013new.csv)`` or None."""
    root = Path(root)
    folder = root.parent if root.is_file() else root
    if (folder / "ferplus.csv").is_file():
        return (folder / "ferplus.csv",)
    if (folder / "fer2013.csv").is_file() and (folder / "fer2013new.csv").is_file():
        return folder / "fer2013.csv", folder / "fer2013new.csv"
    return None


def load_ferplus(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces, FER+ votes and FER2013 labels of one split, from whichever form ``root`` holds.

    ``root`` is the FER2013 folder (or ``fer2013.csv``) with FER+'s file beside it.
    """
    files = find_ferplus(root)
    if files is None:
        raise FileNotFoundError(f"{root}: no FER+ votes beside FER2013 (ferplus.csv, or fer2013.csv "
                                "with fer2013new.csv)")
    if len(files) == 1:
        return load_ferplus_manifest(files[0], split)
    return load_ferplus_pair(files[0], files[1], split)


def vote_distribution(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft targets over EMOTIONS from FER+ votes.

    Contempt, "unknown" and "not a face" votes are dropped and the rest
    renormalised. An image is kept when its most-voted column is one of the
    seven emotions (FER+'s own majority rule), so faces most raters could not
    read, or that are not faces, are left out.

    Parameters
    ----------
    votes : array, shape (n, 10), columns as VOTE_COLUMNS

    Returns
    -------
    targets : float32 array, shape (n, 7), rows summing to 1 where kept
    kept : bool array, shape (n,)
    """
    seven = votes[:, _EMOTION_COLUMN].astype(np.float32)
    total = seven.sum(axis=1)
    kept = (total > 0) & np.isin(votes.argmax(axis=1), _EMOTION_COLUMN)
    targets = np.divide(seven, total[:, None], out=np.zeros_like(seven), where=total[:, None] > 0)
    return targets, kept


def majority_labels(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FER+ majority labels (indices into EMOTIONS) and which images have one (see :func:`vote_distribution`)."""
    targets, kept = vote_distribution(votes)
    return targets.argmax(axis=1), kept
