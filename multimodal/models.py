"""Loading model files safely, checked against their cards.

A model file ships with a card named after it plus ``.json``
(``visual_default.keras.json``, ``visual_default.tflite.json``): its labels in
order, input specification, preprocessing, training data and split, metrics
and the file's sha256. Loading refuses a file whose checksum differs from its
card. Keras files load in ``safe_mode`` so no code stored in them is
executed; TFLite files are flat buffers of operators and weights, run by the
LiteRT interpreter, and hold no code.

``analyze`` runs the TFLite exports of the shipped models: they give the same
outputs as the Keras files (checked when exported, see
``training/export_tflite.py``) and need no TensorFlow, which takes seconds to
import.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multimodal.atomic import write_json_atomic
from multimodal.errors import MissingDependencyError, ModelError


@dataclass(frozen=True)
class ModelCard:
    """A model file's card: its labels, checksum and everything measured about it."""
    path: Path  # the model file
    kind: str  # "visual" or "audio"
    labels: tuple[str, ...]
    sha256: str
    data: dict  # everything else the card says (input, training, metrics)

    @property
    def name(self) -> str:
        """The model's file name."""
        return self.path.name


def card_path(model_path: str | Path) -> Path:
    """Where the card of ``model_path`` lives (``<model file>.json``)."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(model_path: str | Path, kind: str) -> ModelCard:
    """Read and check the card of ``model_path`` (without loading the model)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    cpath = card_path(model_path)
    if not cpath.is_file():
        raise ModelError(f"{model_path}: model card {cpath.name} not found")
    try:
        data = json.loads(cpath.read_text())
        labels, expected = tuple(data["labels"]), data["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{cpath}: unreadable model card ({err})") from None
    if data.get("kind") != kind:
        raise ModelError(f"{model_path}: card says kind {data.get('kind')!r}, expected {kind!r}")
    actual = sha256_of(model_path)
    if actual != expected:
        raise ModelError(f"{model_path}: checksum mismatch (card {expected[:12]}…, file {actual[:12]}…); "
                         "the file is corrupt or was replaced")
    return ModelCard(model_path, kind, labels, expected, data)


def import_keras():
    """Import Keras with TensorFlow's start-up chatter kept off the user's terminal.

    TensorFlow's C++ runtime writes log lines to file descriptor 2 while it
    initialises, ignoring ``TF_CPP_MIN_LOG_LEVEL`` for some of them; the
    descriptor is muted for the import alone.
    """
    if sys.modules.get("keras") is not None:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _fd2_muted():
            import keras
            import tensorflow  # noqa: F401  (initialise the runtime while muted)
    except ImportError:
        raise MissingDependencyError("TensorFlow is not installed; training, evaluation and .keras models need it: "
                                     "pip install -e '.[train]'") from None
    return keras


@contextlib.contextmanager
def _fd2_muted():
    """Send file descriptor 2 to /dev/null: native runtimes write there directly, past Python."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_keras_model(card: ModelCard):
    """Load the Keras model behind a verified card, in safe mode."""
    keras = import_keras()
    try:
        return keras.saving.load_model(card.path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a damaged archive
        raise ModelError(f"{card.path}: cannot load model ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def load_model(card: ModelCard, threads: int | None = None):
    """The model behind a verified card: a :class:`TFLiteModel` for ``.tflite``, else Keras."""
    if card.path.suffix == ".tflite":
        return TFLiteModel(card.path, threads)
    return load_keras_model(card)


class TFLiteModel:
    """A single-input, single-output TFLite model with the part of Keras' interface used here.

    Parameters
    ----------
    path : path
        The ``.tflite`` file (checked against its card by the caller).
    threads : int, optional
        Interpreter threads; default all CPU cores, at most 4.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        self._net = tflite_interpreter(path, threads or min(4, os.cpu_count() or 1))
        inp = self._net.get_input_details()[0]
        self._input = inp["index"]
        self._output = self._net.get_output_details()[0]["index"]
        #: like Keras: None where the model takes any size
        self.input_shape = tuple(None if d < 0 else int(d) for d in inp["shape_signature"])
        self._shape: tuple | None = None

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        """Outputs for one batch, as Keras's ``predict_on_batch`` gives them."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != self._shape:  # batch size or length changed: re-plan the buffers
            self._net.resize_tensor_input(self._input, list(x.shape))
            self._net.allocate_tensors()
            self._shape = x.shape
        self._net.set_tensor(self._input, x)
        self._net.invoke()
        return self._net.get_tensor(self._output).copy()


def tflite_interpreter(path: str | Path, threads: int = 1):
    """A TFLite interpreter from LiteRT, or from TensorFlow where LiteRT is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            import_keras()  # TensorFlow, imported quietly
            import tensorflow as tf
            Interpreter = tf.lite.Interpreter
        except (MissingDependencyError, AttributeError):
            raise ModelError(f"{path}: running a .tflite model needs LiteRT (pip install ai-edge-litert)") from None
    try:
        # The runtime announces its CPU delegate on file descriptor 2.
        with _fd2_muted(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = Interpreter(model_path=str(path), num_threads=threads)
            net.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelError(f"{path}: cannot load model ({str(err).splitlines()[0][:200]})") from None
    return net


def write_card(model_path: str | Path, kind: str, labels: tuple[str, ...] | list[str], **fields) -> Path:
    """Write the card of ``model_path`` (see :func:`card_path`) with its checksum and ``fields``."""
    model_path = Path(model_path)
    card = {"kind": kind, "file": model_path.name, "labels": list(labels),
            "sha256": sha256_of(model_path), "size_bytes": model_path.stat().st_size, **fields}
    out = card_path(model_path)
    write_json_atomic(out, card, default=str)
    return out
