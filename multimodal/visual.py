"""The facial-expression model."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from multimodal.config import EMOTIONS
from multimodal.errors import ModelError
from multimodal.models import ModelCard, load_model, read_card


class VisualModel:
    """A facial-expression classifier behind a verified model card.

    The network takes raw grayscale pixels (its card's ``input``); any scaling
    is inside the model.
    """

    def __init__(self, model_path: str | Path, flip: bool = True):
        self.card: ModelCard = read_card(model_path, "visual")
        self.model = load_model(self.card)
        shape = self.model.input_shape  # (None, h, w, 1)
        self.input_size = int(shape[1])
        missing = set(EMOTIONS) - set(self.card.labels)
        if missing:
            raise ModelError(f"{model_path}: card lacks labels {sorted(missing)}")
        self._order = [self.card.labels.index(name) for name in EMOTIONS]
        # Averaging each face with its mirror image costs a second pass and
        # gained 1.7 points on FER2013 PublicTest (validation) for the shipped model.
        self.flip = flip

    def predict_proba(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities over :data:`EMOTIONS` for ``uint8`` crops of shape (n, s, s).

        Returns float64 array of shape (n, 7).
        """
        if len(crops) == 0:
            return np.zeros((0, len(EMOTIONS)))
        if crops.shape[1] != self.input_size:
            crops = np.stack([cv2.resize(c, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
                              for c in crops])
        x = crops[..., None].astype(np.float32)
        out = np.concatenate([np.asarray(self.model.predict_on_batch(x[i:i + batch_size]))
                              for i in range(0, len(x), batch_size)]).astype(np.float64)
        if self.flip:
            mirrored = x[:, :, ::-1]
            out = (out + np.concatenate([np.asarray(self.model.predict_on_batch(mirrored[i:i + batch_size]))
                                         for i in range(0, len(x), batch_size)])) / 2
        return out[:, self._order]
