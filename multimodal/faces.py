"""Face detection and face crops.

Three offline detectors, none of which downloads anything:

* ``blazeface``: MediaPipe's BlazeFace full-range network (TFLite, 1 MB,
  shipped in ``models/`` with its card); a few milliseconds per frame, the
  default.
* ``haar``: OpenCV's frontal-face Haar cascade (``cv2.data.haarcascades``,
  opencv-python < 5); frontal faces only, 20-90 ms per frame.
* ``mtcnn``: the MTCNN of the ``mtcnn`` package (TensorFlow, weights in the
  wheel); slowest.

Detectors frame faces differently; each corrects its boxes (``box_scale``,
``box_shift``, fitted on FER2013 PublicTest faces pasted into frames by
``benchmarks/bench_detectors.py --fer``) so that ``crop_faces`` cuts a face
the way FER2013 does whichever detector found it: the visual model was
trained on that framing.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from multimodal.config import DEFAULT_FACE_DETECTOR
from multimodal.errors import MissingDependencyError, ModelError
from multimodal.models import read_card, tflite_interpreter


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
        """Box area in square pixels."""
        return self.w * self.h

    def scaled(self, factor: float) -> Face:
        """The box in a frame ``factor`` times larger."""
        return Face(round(self.x * factor), round(self.y * factor),
                    round(self.w * factor), round(self.h * factor), self.score)


class HaarDetector:
    """OpenCV Haar cascade; the score is the cascade's level weight squashed to [0, 1].

    ``min_neighbors`` is stricter than OpenCV's usual 3-5: at a few sampled
    frames per second a missed frame costs little, while a false face would
    become a spurious person in the tracks. ``scale_factor`` 1.2 halves the
    cost of OpenCV's 1.1 (half as many pyramid levels), the largest share of
    analysis time.
    """

    name = "haar"
    box_scale, box_shift = 0.87, 0.0  # see the module's docstring

    def __init__(self, min_size: int = 32, scale_factor: float = 1.2, min_neighbors: int = 8):
        path = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not path or not hasattr(cv2, "CascadeClassifier"):
            raise ModelError("this OpenCV build has no Haar cascades (OpenCV 5 dropped them); "
                             "install opencv-python-headless<5 or use --detector mtcnn")
        self._cascade = cv2.CascadeClassifier(path + "haarcascade_frontalface_default.xml")
        if self._cascade.empty():
            raise ModelError(f"cannot load the Haar cascade from {path}")
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors

    def detect(self, gray: np.ndarray, small: bool = True) -> list[Face]:
        """Faces in a ``uint8`` grayscale frame of shape (h, w).

        Without ``small``, faces under twice ``min_size`` are not looked for
        (the smallest scales are most of the cascade's work).
        """
        side = self.min_size if small else 2 * self.min_size
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(side, side), outputRejectLevels=True)
        # Level weights of true faces sit around 2-8; a logistic around 1
        # maps them to a usable [0, 1] confidence.
        return [_corrected(x, y, x + w, y + h, 1 / (1 + np.exp(-(float(s) - 1.0))), self.box_scale, self.box_shift)
                for (x, y, w, h), s in zip(boxes, np.ravel(weights))]


class MTCNNDetector:
    """The ``mtcnn`` package's detector; needs RGB frames."""

    name = "mtcnn"
    needs_color = True
    box_scale, box_shift = 0.80, 0.0  # see the module's docstring

    def __init__(self, min_size: int = 32, min_score: float = 0.9):
        try:
            from mtcnn import MTCNN
        except ImportError:
            raise MissingDependencyError("the mtcnn detector needs the mtcnn package and TensorFlow: "
                                         "pip install -e '.[mtcnn]'") from None
        self._mtcnn = MTCNN()
        self.min_size, self.min_score = min_size, min_score

    def detect(self, rgb: np.ndarray, small: bool = True) -> list[Face]:
        """Faces in a ``uint8`` RGB frame; ``small`` has no effect (MTCNN's pyramid is fixed)."""
        out = []
        # mtcnn 1.0 fails silently (no faces) for some min_face_size values, so
        # its default pyramid is kept and small faces are dropped here.
        for d in self._mtcnn.detect_faces(rgb):
            x, y, w, h = d["box"]
            if d["confidence"] >= self.min_score and min(w, h) >= self.min_size:
                out.append(_corrected(x, y, x + w, y + h, d["confidence"], self.box_scale, self.box_shift))
        return out


class BlazeFaceDetector:
    """MediaPipe's BlazeFace full-range detector on RGB frames.

    The network sees a 192x192 letterboxed copy of the frame. A frame wider
    than ``tile_aspect`` times its height is also cut into overlapping square
    tiles, each seen at its own 192x192, so that faces in a wide shot keep
    enough pixels; detections from all views are merged by weighted
    non-maximum suppression, as MediaPipe does.

    Parameters
    ----------
    min_size : int
        Smallest face kept, pixels on the frame given to ``detect``.
    min_score : float
        Detection threshold in [0, 1] (MediaPipe uses 0.5-0.6).
    model_path : path
        The ``.tflite`` file; its card (``.tflite.json``) is checked first.
    tile_aspect : float
        Width/height ratio above which tiles are added; ``inf`` disables them.
    threads : int
        Interpreter threads. ``analyze`` runs one detector per detection
        thread, which uses the cores better than threads inside one
        interpreter for a network this small.
    """

    name = "blazeface"
    needs_color = True
    box_scale, box_shift = 0.96, -0.036  # see the module's docstring

    def __init__(self, min_size: int = 32, min_score: float = 0.6, model_path=DEFAULT_FACE_DETECTOR,
                 tile_aspect: float = 1.5, threads: int = 1):
        self.card = read_card(model_path, "face_detector")
        self._net = tflite_interpreter(self.card.path, threads)
        inp = self._net.get_input_details()[0]
        self._input = inp["index"]
        self.size = int(inp["shape"][1])
        outs = self._net.get_output_details()
        self._boxes = next(o["index"] for o in outs if o["shape"][-1] == 16)
        self._scores = next(o["index"] for o in outs if o["shape"][-1] == 1)
        self._anchors = _grid_anchors(self.size, stride=4)
        self.min_size, self.min_score, self.tile_aspect = min_size, min_score, tile_aspect

    def detect(self, rgb: np.ndarray, small: bool = True) -> list[Face]:
        """Faces in a ``uint8`` RGB frame of shape (h, w, 3).

        Without ``small``, the tiles are not searched: faces less than about a
        sixth of the frame's height may be missed, at a third of the cost.
        """
        h, w = rgb.shape[:2]
        views = [(0, 0, w, h)]
        if small and (w > self.tile_aspect * h or h > self.tile_aspect * w):
            views += _square_tiles(w, h)
        boxes, scores = [], []
        for x0, y0, vw, vh in views:
            b, s = self._detect_view(rgb[y0:y0 + vh, x0:x0 + vw])
            boxes.append(b + [x0, y0, x0, y0])
            scores.append(s)
        kept, kept_scores = _weighted_nms(np.concatenate(boxes), np.concatenate(scores), 0.3)
        faces = [_corrected(x1, y1, x2, y2, s, self.box_scale, self.box_shift)
                 for (x1, y1, x2, y2), s in zip(kept, kept_scores)]
        return [f for f in faces if f.w >= self.min_size]

    def _detect_view(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (n, 4) as x1, y1, x2, y2 pixels of ``rgb`` and their scores (n,)."""
        h, w = rgb.shape[:2]
        k = self.size / max(h, w)
        rw, rh = max(1, round(w * k)), max(1, round(h * k))
        ox, oy = (self.size - rw) // 2, (self.size - rh) // 2
        canvas = np.zeros((self.size, self.size, 3), np.float32)
        small = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        canvas[oy:oy + rh, ox:ox + rw] = small.astype(np.float32) / 127.5 - 1.0
        self._net.set_tensor(self._input, canvas[None])
        self._net.invoke()
        raw = self._net.get_tensor(self._boxes)[0]
        logits = np.clip(self._net.get_tensor(self._scores)[0, :, 0], -80, 80)
        scores = 1 / (1 + np.exp(-logits))
        keep = scores >= self.min_score
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        # Regressors are offsets from the anchor centre and sizes, in input pixels.
        cx = raw[:, 0] + anchors[:, 0] * self.size
        cy = raw[:, 1] + anchors[:, 1] * self.size
        half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
        boxes = np.stack([cx - half_w - ox, cy - half_h - oy, cx + half_w - ox, cy + half_h - oy], axis=1) / k
        valid = (half_w > 0) & (half_h > 0)
        return boxes[valid], scores[valid]


def _corrected(x1: float, y1: float, x2: float, y2: float, score: float, scale: float, shift: float) -> Face:
    """A square face box around a detector's box: side ``scale`` times its longer side,
    centre moved down by ``shift`` sides."""
    x1, y1, x2, y2 = map(float, (x1, y1, x2, y2))  # numpy scalars would round to numpy types
    side = max(x2 - x1, y2 - y1) * scale
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + shift * side
    return Face(round(cx - side / 2), round(cy - side / 2), round(side), round(side), float(score))


def _grid_anchors(size: int, stride: int) -> np.ndarray:
    """Anchor centres (n, 2) in [0, 1], one per cell of a ``size / stride`` grid, row-major."""
    n = size // stride
    ys, xs = np.mgrid[0:n, 0:n]
    return np.stack([(xs.ravel() + 0.5) / n, (ys.ravel() + 0.5) / n], axis=1).astype(np.float32)


def _square_tiles(w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Square tiles (x, y, w, h) of side min(w, h), evenly spread along the long side.

    Faces too large for a tile to hold whole are found in the full view.
    """
    side, long = min(w, h), max(w, h)
    n = max(2, int(np.ceil(long / side)))
    starts = np.linspace(0, long - side, n).round().astype(int)
    return [(int(s), 0, side, side) if w >= h else (0, int(s), side, side) for s in starts]


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    Each cluster of boxes overlapping the best remaining one by more than
    ``iou`` is replaced by their score-weighted average, which steadies boxes
    from frame to frame; the cluster keeps its best score.
    """
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    out_boxes, out_scores = [], []
    alive = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        overlap = _iou(boxes[i], boxes) > iou
        members = alive & overlap
        members[i] = True
        weights = scores[members]
        out_boxes.append((boxes[members] * weights[:, None]).sum(0) / weights.sum())
        out_scores.append(scores[i])
        alive &= ~members
    return np.array(out_boxes).reshape(-1, 4), np.array(out_scores)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area - inter, 1e-9)


DETECTORS = {"blazeface": BlazeFaceDetector, "haar": HaarDetector, "mtcnn": MTCNNDetector}


def make_detector(name: str, min_size: int = 32):
    """A face detector of :data:`DETECTORS` by name, finding faces at least ``min_size`` pixels wide."""
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
        side = round(max(f.w, f.h) * (1 + 2 * margin))
        cx, cy = f.x + f.w / 2, f.y + f.h / 2
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
        src = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else gray
        crop = src[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
        out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out


def photo_face_crop(rgb: np.ndarray, detector, size: int) -> tuple[np.ndarray, Face | None]:
    """The largest face of a photo, cropped as ``analyze`` crops faces from a frame.

    Parameters
    ----------
    rgb : uint8 array, shape (h, w, 3)
    detector : a detector of :data:`DETECTORS`
    size : int, side of the crop in pixels

    Returns
    -------
    The ``uint8`` crop, shape (size, size), and the face found; when no face is
    found, the whole photo (squashed to a square) and None.
    """
    gray = to_gray(rgb)
    found = largest(detector.detect(rgb if getattr(detector, "needs_color", False) else gray), 1)
    if found:
        return crop_faces(gray, found, size)[0], found[0]
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA), None


def to_gray(frame: np.ndarray) -> np.ndarray:
    """A grayscale copy of an RGB frame (a gray frame as it is)."""
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
