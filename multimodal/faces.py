"""Face detection and face crops.

Two offline detectors, both with weights inside PyPI wheels:

* ``haar``: OpenCV's frontal-face Haar cascade (``cv2.data.haarcascades``,
  opencv-python < 5); fast, the default.
* ``mtcnn``: the MTCNN of the ``mtcnn`` package (TensorFlow, weights in the
  wheel); finds more faces at angles, several times slower.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from multimodal.errors import ModelError


@dataclass(frozen=True)
class Face:
    """A detected face, in the pixel coordinates of the frame it came from."""

    x: int
    y: int
    w: int
    h: int
    score: float  # detection confidence in [0, 1]

    @property
    def area(self) -> int:
        return self.w * self.h

    def scaled(self, factor: float) -> "Face":
        return Face(int(round(self.x * factor)), int(round(self.y * factor)),
                    int(round(self.w * factor)), int(round(self.h * factor)), self.score)


class HaarDetector:
    """OpenCV Haar cascade; the score is the cascade's level weight squashed to [0, 1].

    ``min_neighbors`` is stricter than OpenCV's usual 3-5: at a few sampled
    frames per second a missed frame costs little, while a false face would
    become a spurious person in the tracks. ``scale_factor`` 1.2 halves the
    cost of OpenCV's 1.1 (half as many pyramid levels), the largest share of
    analysis time.
    """

    name = "haar"

    def __init__(self, min_size: int = 32, scale_factor: float = 1.2, min_neighbors: int = 8):
        path = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not path or not hasattr(cv2, "CascadeClassifier"):
            raise ModelError("this OpenCV build has no Haar cascades (OpenCV 5 dropped them); "
                             "install opencv-python-headless<5 or use --detector mtcnn")
        self._cascade = cv2.CascadeClassifier(path + "haarcascade_frontalface_default.xml")
        if self._cascade.empty():
            raise ModelError(f"cannot load the Haar cascade from {path}")
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors

    def detect(self, gray: np.ndarray) -> list[Face]:
        """Faces in a ``uint8`` grayscale frame of shape (h, w)."""
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        # Level weights of true faces sit around 2-8; a logistic around 1
        # maps them to a usable [0, 1] confidence.
        return [Face(int(x), int(y), int(w), int(h), float(1 / (1 + np.exp(-(float(s) - 1.0)))))
                for (x, y, w, h), s in zip(boxes, np.ravel(weights))]


class MTCNNDetector:
    """The ``mtcnn`` package's detector; needs RGB frames."""

    name = "mtcnn"
    needs_color = True

    def __init__(self, min_size: int = 32, min_score: float = 0.9):
        try:
            from mtcnn import MTCNN
        except ImportError:
            raise ModelError("the mtcnn detector needs the 'mtcnn' package (pip install mtcnn)") from None
        self._mtcnn = MTCNN()
        self.min_size, self.min_score = min_size, min_score

    def detect(self, rgb: np.ndarray) -> list[Face]:
        out = []
        # mtcnn 1.0 fails silently (no faces) for some min_face_size values, so
        # its default pyramid is kept and small faces are dropped here.
        for d in self._mtcnn.detect_faces(rgb):
            x, y, w, h = d["box"]
            if d["confidence"] >= self.min_score and min(w, h) >= self.min_size:
                out.append(Face(max(0, int(x)), max(0, int(y)), int(w), int(h), float(d["confidence"])))
        return out


DETECTORS = {"haar": HaarDetector, "mtcnn": MTCNNDetector}


def make_detector(name: str, min_size: int = 32):
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose from {', '.join(DETECTORS)}")
    return DETECTORS[name](min_size=min_size)


def largest(faces: list[Face], n: int) -> list[Face]:
    """The ``n`` largest faces, largest first."""
    return sorted(faces, key=lambda f: f.area, reverse=True)[:n]


def crop_faces(gray: np.ndarray, faces: list[Face], size: int = 48, margin: float = 0.1) -> np.ndarray:
    """Square grayscale crops around ``faces``, resized to ``size``.

    The box is widened by ``margin`` on each side to match the framing of
    FER2013's faces; pixels beyond the frame are replicated from its edge.
    Returns ``uint8`` array of shape (len(faces), size, size).
    """
    out = np.zeros((len(faces), size, size), np.uint8)
    h, w = gray.shape[:2]
    for i, f in enumerate(faces):
        side = int(round(max(f.w, f.h) * (1 + 2 * margin)))
        cx, cy = f.x + f.w / 2, f.y + f.h / 2
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
        src = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else gray
        crop = src[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
        out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out


def to_gray(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
