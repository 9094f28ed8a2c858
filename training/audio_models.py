"""Builder for the speech-emotion network."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers


def cnn1d(n_features: int, num_classes: int, mean: np.ndarray, variance: np.ndarray,
          widths: tuple[int, ...] = (64, 128, 128, 256), dropout: float = 0.4,
          utterance_norm: bool = False) -> keras.Model:
    """A 1D CNN over MFCC frames.

    Input: ``(time, n_features)`` frames of any length; convolutions run along
    time, and global average and max pooling make the output independent of
    the length, so the network scores a 3 s training window and an
    ``analyze`` segment of any size alike. Feature standardisation (``mean``,
    ``variance`` from the training set) is part of the model.

    With ``utterance_norm``, each input first loses its own mean over time
    (cepstral mean normalisation): a fixed microphone or room colours every
    frame alike, which shifts the MFCC means, and a corpus recorded
    elsewhere then looks unlike anything trained on. ``mean`` and
    ``variance`` must then describe features so normalised.
    """
    inputs = keras.Input((None, n_features), name="mfcc")
    x = inputs - keras.ops.mean(inputs, axis=1, keepdims=True) if utterance_norm else inputs
    x = layers.Normalization(axis=-1, mean=mean, variance=variance)(x)
    x = layers.GaussianNoise(0.1)(x)
    for i, w in enumerate(widths):
        x = layers.Conv1D(w, 5 if i < 2 else 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling1D(2, padding="same")(x)
        x = layers.SpatialDropout1D(0.1)(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="cnn1d")
