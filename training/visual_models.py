"""Builders for the facial-expression networks, one function per architecture.

Every model takes raw grayscale pixels in ``[0, 255]`` of shape
``(size, size, 1)`` and outputs probabilities over
:data:`multimodal.config.EMOTIONS`; the scaling is part of the model, so
inference code needs no knowledge of how a model was trained. Only built-in
Keras layers are used, which lets the files be loaded with ``safe_mode=True``.
"""
from __future__ import annotations

import keras
from keras import layers

from multimodal.config import EMOTIONS


def _conv_bn(x, filters: int, kernel: int = 3, strides: int = 1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def compact_cnn(input_size: int = 48, widths: tuple[int, ...] = (32, 64, 128, 256),
                dropout: float = 0.4, num_classes: int = len(EMOTIONS)) -> keras.Model:
    """A small VGG-style network that trains on a CPU.

    Four stages of two 3x3 convolutions with batch normalisation, the first
    stage at half resolution (a strided stem) because full-resolution early
    layers dominate the CPU cost while adding little on 48x48 faces; global
    average pooling keeps the classifier head small.
    """
    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = _conv_bn(x, widths[0], strides=1)
    for i, w in enumerate(widths):
        if i > 0:
            x = _conv_bn(x, w)
        x = _conv_bn(x, w)
        x = layers.MaxPooling2D(2)(x) if i < len(widths) - 1 else x
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(dropout / 2)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="compact_cnn")


def inception_resnet_v2(input_size: int = 75, weights: str | None = None,
                        num_classes: int = len(EMOTIONS)) -> keras.Model:
    """Keras Applications InceptionResNetV2 on upscaled grayscale faces.

    The 48x48 gray face is resized to ``input_size`` (at least 75, the
    smallest the architecture accepts) and repeated to three channels.

    Parameters
    ----------
    weights : None for random initialisation, ``"imagenet"`` for the Keras
        ImageNet weights (they must already be in the Keras cache, since
        they cannot be downloaded offline), or a path to a weights file.
    """
    if input_size < 75:
        raise ValueError("InceptionResNetV2 needs an input of at least 75x75")
    inputs = keras.Input((48, 48, 1), name="face")
    x = layers.Resizing(input_size, input_size)(inputs)
    x = layers.Concatenate()([x, x, x])
    # InceptionResNetV2's own preprocessing: scale to [-1, 1].
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    base = keras.applications.InceptionResNetV2(
        include_top=False, weights=weights, input_shape=(input_size, input_size, 3), pooling="avg")
    x = base(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="inception_resnet_v2")


BACKBONES = {"compact": compact_cnn, "inception_resnet_v2": inception_resnet_v2}
