"""Augmentation of face crops for training, in NumPy and OpenCV.

Plain array code rather than TensorFlow ops, so that training runs on any
Keras backend (TensorFlow on a laptop, JAX or PyTorch on a GPU) and the
batches come out the same on each.
"""
from __future__ import annotations

import cv2
import keras
import numpy as np


def geometric(face: np.ndarray, rng: np.random.Generator, rotate: float, shift: float,
              zoom: float) -> np.ndarray:
    """Random mirror, rotation, shift and zoom of one face, edges reflected.

    Parameters
    ----------
    face : uint8 array, shape (s, s)
    rotate : largest rotation, degrees
    shift : largest shift, as a fraction of the side
    zoom : largest change of scale, as a fraction (0.1: 90% to 110%)
    """
    size = face.shape[0]
    if rng.random() < 0.5:
        face = face[:, ::-1]
    centre = (size / 2 - 0.5, size / 2 - 0.5)
    m = cv2.getRotationMatrix2D(centre, rng.uniform(-rotate, rotate), 1 + rng.uniform(-zoom, zoom))
    m[:, 2] += rng.uniform(-shift, shift, 2) * size
    return cv2.warpAffine(np.ascontiguousarray(face), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def video_degradations(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Degrade one face as video degrades faces.

    Faces cut from video are small (down- then up-scaled), noisy, compressed,
    badly lit and sometimes partly hidden; FER2013's web photos rarely are.
    Each degradation hits a random share of the faces.

    Parameters
    ----------
    face : uint8 array, shape (s, s)

    Returns
    -------
    float32 array, shape (s, s), pixel values 0-255
    """
    size = face.shape[0]
    if rng.random() < 0.4:
        small = int(rng.integers(14, 41))
        face = cv2.resize(cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                          interpolation=cv2.INTER_LINEAR)
    x = face.astype(np.float32)
    if rng.random() < 0.3:
        x += rng.normal(0, rng.uniform(2, 10), x.shape).astype(np.float32)
    x = np.clip(x, 0, 255)
    if rng.random() < 0.3:
        _, data = cv2.imencode(".jpg", x.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 61))])
        x = np.asarray(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE), np.float32)
    x = (np.clip(x / 255, 1e-3, 1) ** rng.uniform(0.6, 1.6)).astype(np.float32)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.6, 1.4) + mean + rng.uniform(-0.12, 0.12)
    if rng.random() < 0.25:  # one occluding rectangle: a hand, a microphone, a shadow
        cy, cx = rng.uniform(0, size, 2)
        half = rng.uniform(4, size / 4)
        rows = slice(max(0, int(cy - half)), int(cy + half))
        cols = slice(max(0, int(cx - half)), int(cx + half))
        x[rows, cols] = rng.uniform()
    return np.clip(x, 0, 1) * 255


def augment_batch(faces: np.ndarray, rng: np.random.Generator, augment: str = "basic") -> np.ndarray:
    """Augment a batch of faces.

    Parameters
    ----------
    faces : uint8 array, shape (n, s, s)
    augment : ``"none"``, ``"basic"`` (mirror, rotation up to 10 deg, shift
        and zoom up to 10%) or ``"video"`` (mirror, rotation up to 15 deg,
        shift 10%, zoom 15%, then :func:`video_degradations`)

    Returns
    -------
    float32 array, shape (n, s, s, 1), pixel values 0-255
    """
    if augment == "none":
        return faces[..., None].astype(np.float32)
    strong = augment == "video"
    rotate, zoom = (15.0, 0.15) if strong else (10.0, 0.1)
    out = np.empty(faces.shape + (1,), np.float32)
    for i, face in enumerate(faces):
        face = geometric(face, rng, rotate, 0.1, zoom)
        out[i, ..., 0] = video_degradations(face, rng) if strong else face
    return out


def subtle_expressions(faces: np.ndarray, labels: np.ndarray, subjects: np.ndarray, neutral: int,
                       weights: tuple[float, ...] = (0.35, 0.5, 0.65, 0.8),
                       min_corr: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Weaker versions of posed expressions: each blended with the same person's neutral face.

    Posed sets show expressions at full strength, while people in video
    mostly show them faintly; a model that has seen only the former calls
    the latter neutral. Each expressive face is mixed pixel by pixel with
    the neutral face of the same subject that matches it best (the highest
    correlation, so the same head pose and framing), and keeps its label.
    Pairs that correlate less than ``min_corr`` are not aligned well enough
    to blend and are left out.

    Parameters
    ----------
    faces : uint8 array, shape (n, s, s), one crop per photo
    labels : int array, shape (n,)
    subjects : str array, shape (n,), who is in each photo ("" when unknown)
    neutral : the label index of neutral
    weights : the expressive face's share in each blend

    Returns
    -------
    blends : uint8 array, shape (m, len(weights), s, s)
    labels : int array, shape (m,), the expressive faces' labels
    """
    flat = faces.reshape(len(faces), -1).astype(np.float32)
    flat = (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-6)
    w = np.asarray(weights, np.float32)[:, None, None]
    blends, kept = [], []
    for i in np.flatnonzero((labels != neutral) & (subjects != "")):
        partners = np.flatnonzero((labels == neutral) & (subjects == subjects[i]))
        if not len(partners):
            continue
        corr = flat[partners] @ flat[i] / flat.shape[1]
        if corr.max() < min_corr:
            continue
        calm = faces[partners[corr.argmax()]].astype(np.float32)
        blends.append(np.rint(w * faces[i] + (1 - w) * calm).astype(np.uint8))
        kept.append(labels[i])
    size = faces.shape[1:]
    if not blends:
        return np.zeros((0, len(weights)) + size, np.uint8), np.zeros(0, labels.dtype)
    return np.stack(blends), np.array(kept, labels.dtype)


class FaceBatches(keras.utils.PyDataset):
    """Shuffled, augmented batches of in-memory faces for ``model.fit``.

    Every batch is seeded by ``(seed, epoch, index)``, so a resumed run sees
    the batches it would have seen, whichever worker builds them.

    Parameters
    ----------
    x : uint8 array, shape (n, s, s)
    y : int array, shape (n,), class indices
    num_classes : one-hot labels of this many classes (for label smoothing);
        None keeps the indices
    targets : float array, shape (n, num_classes), optional: label
        distributions given instead of one-hot labels (distillation)
    workers : threads building batches (OpenCV releases the GIL)
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int,
                 augment: str = "basic", num_classes: int | None = None, workers: int = 2,
                 targets: np.ndarray | None = None):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=16)
        self.x, self.y, self.targets = x, y, targets
        self.batch_size, self.seed, self.epoch = batch_size, seed, epoch
        self.augment, self.num_classes = augment, num_classes
        self.order = np.random.default_rng([seed, epoch]).permutation(len(x))

    def __len__(self) -> int:
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        faces = augment_batch(self.x[rows], rng, self.augment)
        if self.targets is not None:
            return faces, self.targets[rows].astype(np.float32)
        labels = self.y[rows]
        if self.num_classes:
            labels = np.eye(self.num_classes, dtype=np.float32)[labels]
        return faces, labels
