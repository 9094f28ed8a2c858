"""Loading model files safely, checked against their cards.

A model ``name.keras`` ships with a card ``name.json``: its labels in order,
input specification, preprocessing, training data and split, metrics and the
file's sha256. Loading refuses a file whose checksum differs from its card and
uses Keras' ``safe_mode`` so no code stored in a model file is executed.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from multimodal.errors import ModelError


@dataclass(frozen=True)
class ModelCard:
    path: Path  # the model file
    kind: str  # "visual" or "audio"
    labels: tuple[str, ...]
    sha256: str
    data: dict  # everything else the card says (input, training, metrics)

    @property
    def name(self) -> str:
        return self.path.name


def card_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def sha256_of(path: str | Path) -> str:
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
    import sys
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401  (initialise the runtime while muted)
            import keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return keras


def load_keras_model(card: ModelCard):
    """Load the Keras model behind a verified card, in safe mode."""
    keras = import_keras()
    try:
        return keras.saving.load_model(card.path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a damaged archive
        raise ModelError(f"{card.path}: cannot load model ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def write_card(model_path: str | Path, kind: str, labels: tuple[str, ...] | list[str], **fields) -> Path:
    """Write ``name.json`` beside ``model_path`` with its checksum and ``fields``."""
    model_path = Path(model_path)
    card = {"kind": kind, "file": model_path.name, "labels": list(labels),
            "sha256": sha256_of(model_path), "size_bytes": model_path.stat().st_size, **fields}
    out = card_path(model_path)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, default=str) + "\n")
    os.replace(tmp, out)
    return out
