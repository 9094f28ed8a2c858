"""Options of the training commands, one frozen dataclass per command.

Kept apart from the training code (which imports Keras) so that the command
line can read its defaults from here without importing anything heavy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from multimodal.config import AudioFeatureConfig

AUGMENTATIONS = {
    "none": "none",
    "basic": "horizontal flip, rotation +-10 deg, shift +-10%, zoom +-10%",
    "video": "horizontal flip, rotation +-15 deg, shift +-10%, zoom +-15% (box jitter), down- and up-scaling "
             "to 14-40 px, Gaussian noise, JPEG quality 15-60, gamma 0.6-1.6, contrast and brightness, "
             "a random occluding rectangle",
}

# How the speech network pools its frames over time (see training.audio_models.cnn1d).
POOLINGS = ("avgmax", "attention")


@dataclass(frozen=True)
class VisualTrainConfig:
    """Options of ``multimodal train visual`` (see :func:`training.train_visual.train_visual`)."""

    data: Path
    out: Path
    backbone: str = "compact"
    epochs: int = 50  # the shipped compact model: 50 epochs, patience 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    patience: int = 12
    seed: int = 1
    weights: str | None = None  # inception_resnet_v2 only
    resume: bool = False
    limit: int | None = None  # use only the first N training images (smoke tests)
    cache_dir: Path | None = None
    faces: Path | None = None  # a folder of face sets (see training.face_sets) to train on as well
    hold_out: tuple[str, ...] = ()  # face sets never trained on nor selected on: the cross-dataset test
    init: Path | None = None  # start from this model's weights instead of at random
    augment: str = "basic"  # a key of AUGMENTATIONS
    label_smoothing: float = 0.0
    fer_per_epoch: int | None = None  # FER2013 images drawn per epoch (None: all)
    faces_repeat: int = 2  # how often each face-set photo is seen per epoch
    subtle: bool = False  # also train on expressions blended with the same subject's neutral face
    teachers: tuple[Path, ...] = ()  # models whose mean prediction joins the labels (distillation)
    distill: float = 0.5  # weight of the teachers' distribution in each training target
    workers: int = 2  # threads building augmented batches
    time_limit: float | None = None  # minutes: start no epoch that would end later (resume the rest)
    ferplus: str | None = None  # "soft" or "majority": FER+ votes instead of FER2013's labels
    rafdb: Path | None = None  # RAF-DB's folder: its train partition joins training (faces_repeat times)


@dataclass(frozen=True)
class AugmentConfig:
    """Waveform augmentation of the audio training set."""

    copies: int = 3  # augmented copies per training utterance
    speed: tuple[float, float] = (0.9, 1.1)  # resampling factor (tempo and pitch)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    snr_db: tuple[float, float] = (10.0, 35.0)  # additive white noise
    shift_seconds: float = 0.3
    # Other rooms and microphones than the corpora's studios: the chance that a copy is played in a
    # synthetic room (reverberation time 0.2-0.8 s) and that it passes a random band-pass (a phone, a laptop).
    reverb: float = 0.0
    channel: float = 0.0


@dataclass(frozen=True)
class AudioTrainConfig:
    """Options of ``multimodal train audio`` (see :func:`training.train_audio.train_audio`)."""

    data: tuple[Path, ...]  # folders holding RAVDESS, CREMA-D, TESS and/or EmoDB
    out: Path
    test_fold: int = 0
    val_fold: int | None = None  # default: the fold after the test fold
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 12
    seed: int = 1
    resume: bool = False
    cache_dir: Path | None = None
    features: AudioFeatureConfig = AudioFeatureConfig()
    augment: AugmentConfig = AugmentConfig()
    hold_out_corpus: str | None = None  # leave this corpus out entirely: it is the test set
    balance: bool = False  # draw each epoch equally from every corpus and, within one, every class
    # The shipped model's recipe; 0 and 0 train without masks (the recipe before, see cross_corpus.md).
    time_masks: int = 2  # SpecAugment-style: spans of up to 0.3 s per training window set to the mean
    coefficient_masks: int = 1  # ... and bands of up to 8 MFCCs (with their deltas) set to the mean
    utterance_norm: bool = False  # the network subtracts each input's own mean over time first
    utterance_mean: bool = False  # ... and gets those means back by a narrow side path (needs utterance_norm)
    crowd_targets: float = 0.0  # share of a target moved to the emotion CREMA-D's listeners heard, x their agreement
    mixup: float = 0.0  # alpha of the Beta distribution of mixup's weights; 0 = no mixup
    spectral_warp: float = 3.0  # semitones: each window's spectral envelope moved by up to this much; 0 = off
    pooling: str = "avgmax"  # one of POOLINGS
    # Strength of the gradient reversal from a classifier of the training corpora on the pooled features
    # (domain-adversarial training: the network is pushed to forget which corpus a voice came from); 0 = off.
    corpus_adversary: float = 0.0
    widths: tuple[int, ...] = (128, 256, 256, 512)  # filters of the four stages; 64 128 128 256 before
    # Train on the validation fold's speakers too, for exactly `epochs` epochs (nothing is left to select
    # on); the card then records `temperature`, chosen beforehand, e.g. from the recipe's fold runs.
    no_validation: bool = False
    temperature: float | None = None
    schedule_epochs: int | None = None  # the cosine decay's length in epochs (default: epochs)
