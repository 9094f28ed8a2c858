from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"datasets not found at {SHARED_DATA}")
    for item in items:
        if "data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny untrained visual and audio model with valid cards."""
    from dataclasses import asdict

    import keras

    from multimodal.config import EMOTIONS, AudioFeatureConfig
    from multimodal.models import write_card
    from training.audio_models import cnn1d
    from training.speech_datasets import SPEECH_LABELS
    from training.visual_models import compact_cnn

    keras.utils.set_random_seed(0)
    d = tmp_path_factory.mktemp("models")
    visual = d / "visual.keras"
    compact_cnn(widths=(4, 8, 8, 8)).save(visual)
    write_card(visual, "visual", EMOTIONS, input={"shape": [48, 48, 1]})
    feat = AudioFeatureConfig()
    n = feat.n_mfcc * 3
    audio = d / "audio.keras"
    cnn1d(n, len(SPEECH_LABELS), np.zeros(n), np.ones(n), widths=(4, 4, 4, 4)).save(audio)
    write_card(audio, "audio", SPEECH_LABELS, features=asdict(feat))
    return {"visual": visual, "audio": audio}


@pytest.fixture(scope="session")
def face_video(tmp_path_factory) -> Path:
    from tests.media import write_video
    return write_video(tmp_path_factory.mktemp("media") / "face.mp4", seconds=7.0)
