"""Builder for the speech-emotion network."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from training.config import POOLINGS


def cnn1d(n_features: int, num_classes: int, mean: np.ndarray, variance: np.ndarray,
          widths: tuple[int, ...] = (128, 256, 256, 512), dropout: float = 0.4,
          utterance_norm: bool = False, pooling: str = "avgmax",
          utterance_mean: tuple[np.ndarray, np.ndarray] | None = None,
          mean_dropout: float = 0.5) -> keras.Model:
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

    ``utterance_mean``, the mean and variance over training inputs of their
    means over time, gives those subtracted means back to the classifier
    through a narrow side path (16 units), because they carry emotion too (a
    raised voice tilts the spectrum of a whole utterance). The path is
    dropped whole for a share ``mean_dropout`` of training windows, so that
    the convolutions alone must recognise the emotion and the means can
    only refine it. Needs ``utterance_norm``.

    ``pooling`` turns the last convolution's frames into one vector:
    ``"avgmax"`` concatenates their mean and maximum; ``"attention"`` is
    attentive statistics pooling, a weighted mean and standard deviation
    whose weights a small layer learns per frame, so that the frames that
    carry the emotion (a stressed syllable) count for more than pauses.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r}: not one of {', '.join(POOLINGS)}")
    if utterance_mean is not None and not utterance_norm:
        raise ValueError("utterance_mean needs utterance_norm")
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
    if pooling == "attention":
        x = attentive_statistics(x)
    else:
        x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    if utterance_mean is not None:
        side = layers.Normalization(axis=-1, mean=utterance_mean[0], variance=utterance_mean[1])(
            keras.ops.mean(inputs, axis=1))
        # noise_shape (None, 1): one draw per window drops all of its means at once.
        side = layers.Dropout(mean_dropout, noise_shape=(None, 1), name="utterance_mean_dropout")(side)
        side = layers.Dense(16, activation="relu", name="utterance_mean")(side)
        x = layers.Concatenate()([x, side])
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="cnn1d")


def attentive_statistics(x, hidden: int = 64):
    """Attentive statistics pooling of ``(batch, time, channels)`` frames.

    Returns ``(batch, 2 * channels)``: the mean and standard deviation over
    time, each frame weighted by a softmax over time of a learnt score.
    Built from plain layers and ``keras.ops`` so that the saved model loads
    in safe mode and converts to TFLite.
    """
    score = layers.Conv1D(hidden, 1, activation="tanh", name="attention_hidden")(x)
    score = layers.Conv1D(1, 1, name="attention_score")(score)
    weights = layers.Softmax(axis=1, name="attention_weights")(score)
    mean = keras.ops.sum(weights * x, axis=1)
    second = keras.ops.sum(weights * keras.ops.square(x), axis=1)
    std = keras.ops.sqrt(keras.ops.maximum(second - keras.ops.square(mean), 1e-6))
    return layers.Concatenate()([mean, std])


def with_corpus_adversary(model: keras.Model, n_corpora: int, strength: float, hidden: int = 64) -> keras.Model:
    """``model`` with a second output, ``"corpus"``: which of ``n_corpora`` training corpora the input came from,
    read from the features the emotion classifier reads through a gradient reversal.

    Domain-adversarial training: the corpus classifier learns to tell the corpora apart, while the gradient
    it sends back into the network is multiplied by ``-strength``, so the convolutions learn features by
    which the corpora look alike and only the emotion stays. The reversal is
    ``stop_gradient((1 + s) z) - s z``: ``z`` forward, ``-s`` backward, from plain ``keras.ops`` so that the
    saved model loads in safe mode. Returns a model with outputs ``{"emotion", "corpus"}`` sharing every layer
    of ``model``; the emotion output alone is what ships.
    """
    pooled = model.get_layer("emotion").input
    reversed_ = keras.ops.stop_gradient((1.0 + strength) * pooled) - strength * pooled
    h = layers.Dense(hidden, activation="relu", name="corpus_hidden")(reversed_)
    corpus = layers.Dense(n_corpora, activation="softmax", name="corpus")(h)
    return keras.Model(model.inputs, {"emotion": model.outputs[0], "corpus": corpus}, name=f"{model.name}_adversarial")


def with_pooled_features(model: keras.Model) -> keras.Model:
    """``model`` with two outputs: the pooled features its classifier reads, shape (batch, channels),
    and its softmax. For measuring how far a recording lies from those the model trained on."""
    return keras.Model(model.inputs, [model.get_layer("emotion").input, model.outputs[0]])
