"""Speech-emotion corpora: RAVDESS, CREMA-D, TESS and EmoDB.

Each loader returns a list of :class:`Utterance` (file, label, speaker); the
audio itself is read later, by the feature cache. Files may be WAV, FLAC or
Ogg (Opus or Vorbis), at any sample rate.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

#: The audio model's classes: RAVDESS's eight emotions, named as in the project.
SPEECH_LABELS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")

_RAVDESS_EMOTION = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fear", "07": "disgust", "08": "surprise"}
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

#: Speaker-independent folds (Luna-Jiménez et al. 2021), by actor number.
RAVDESS_FOLDS: tuple[tuple[int, ...], ...] = (
    (2, 5, 14, 15, 16), (3, 6, 7, 13, 18), (10, 11, 12, 19, 20), (8, 17, 21, 23, 24), (1, 4, 9, 22))

_TESS_EMOTION = {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry", "fear": "fear",
                 "disgust": "disgust", "ps": "surprise", "pleasant_surprise": "surprise",
                 "pleasant_surprised": "surprise", "surprise": "surprise", "surprised": "surprise"}
AUDIO_FILE_SUFFIXES = (".wav", ".flac", ".opus", ".ogg")

#: EmoDB's emotion letters (German initials); boredom (L) has no place among the classes.
_EMODB_EMOTION = {"W": "angry", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"}
_EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])[a-z]$")
#: EmoDB's ten speakers in five folds of two, so that a cross-validation over
#: RAVDESS's actor folds also holds out EmoDB speakers (never trained on what is tested).
EMODB_FOLDS: tuple[tuple[int, ...], ...] = ((3, 8), (9, 10), (11, 12), (13, 14), (15, 16))


#: CREMA-D's emotion codes; it has no calm and no surprise.
_CREMAD_EMOTION = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
#: The crowd's voice-only vote letters in CREMA-D's summaryTable.csv.
_CREMAD_VOTE = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}


@dataclass(frozen=True)
class Utterance:
    """One labelled recording of a speech corpus."""
    path: Path
    label: str  # one of SPEECH_LABELS
    speaker: str  # "ravdess-02", "tess-OAF", "emodb-03", "cremad-1001"
    fold: int | None = None  # cross-validation fold of the speaker; None: training only (TESS)
    # What a corpus says besides the label (CREMA-D: sex, age, race, ethnicity,
    # the emotion raters heard in the voice alone and their agreement in %).
    info: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def corpus(self) -> str:
        """Which corpus the recording belongs to (``ravdess``, ``tess``, ``emodb``)."""
        return self.speaker.split("-", 1)[0]


def parse_ravdess_name(name: str) -> dict | None:
    """Fields of a RAVDESS file name ``MM-VV-EE-II-SS-RR-AA``, or None."""
    m = _RAVDESS_NAME.match(Path(name).stem)
    if not m or m.group(3) not in _RAVDESS_EMOTION:
        return None
    modality, channel, emo, intensity, statement, rep, actor = m.groups()
    return {"modality": modality, "channel": channel, "emotion": _RAVDESS_EMOTION[emo],
            "intensity": intensity, "statement": statement, "repetition": rep, "actor": int(actor)}


def ravdess_fold(actor: int) -> int:
    """The speaker-independent fold (0-4) of a RAVDESS actor."""
    for i, actors in enumerate(RAVDESS_FOLDS):
        if actor in actors:
            return i
    raise ValueError(f"actor {actor} is in no RAVDESS fold")


def load_ravdess(root: str | Path) -> list[Utterance]:
    """All speech files below ``root`` (``Actor_XX/`` folders, ``.wav`` or ``.flac``)."""
    out = []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() not in AUDIO_FILE_SUFFIXES:
            continue
        fields = parse_ravdess_name(path.name)
        if fields is None or fields["channel"] != "01":  # 02 is song
            continue
        actor = fields["actor"]
        out.append(Utterance(path, fields["emotion"], f"ravdess-{actor:02d}", ravdess_fold(actor)))
    return out


def load_tess(root: str | Path) -> list[Utterance]:
    """TESS files (``OAF_back_angry.wav``, ``YAF_…``) below ``root``."""
    out = []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() not in AUDIO_FILE_SUFFIXES:
            continue
        parts = path.stem.split("_")
        if len(parts) < 3 or parts[0].upper() not in ("OAF", "YAF"):
            continue
        emotion = _TESS_EMOTION.get("_".join(parts[2:]).lower())
        if emotion:
            out.append(Utterance(path, emotion, f"tess-{parts[0].upper()}"))
    return out


def load_emodb(root: str | Path) -> list[Utterance]:
    """EmoDB files (``03a01Fa.wav``: speaker, text, emotion letter, version) below ``root``.

    Boredom is left out: it has no counterpart among the classes.
    """
    out = []
    for path in sorted(Path(root).rglob("*")):
        m = _EMODB_NAME.match(path.stem)
        if path.suffix.lower() not in AUDIO_FILE_SUFFIXES or not m or m.group(3) not in _EMODB_EMOTION:
            continue
        speaker = int(m.group(1))
        fold = next((i for i, group in enumerate(EMODB_FOLDS) if speaker in group), None)
        out.append(Utterance(path, _EMODB_EMOTION[m.group(3)], f"emodb-{speaker:02d}", fold))
    return out


def cremad_fold(actor: int) -> int:
    """CREMA-D's speaker-independent fold (0-4) of an actor (1001-1091): the actor number modulo 5.

    Fixed by the number alone, so the folds are the same whoever holds which actors.
    """
    return actor % 5


def _cremad_info(root: Path) -> dict[str, dict]:
    """``{file stem: info}`` from the copy's ``manifest.csv``, else from the release's
    ``VideoDemographics.csv`` and ``summaryTable.csv``; empty when neither is there."""
    info: dict[str, dict] = {}
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            for r in csv.DictReader(fh):
                info[Path(r["file"]).stem] = {
                    "sex": r.get("sex", ""), "age": r.get("age", ""), "race": r.get("race", ""),
                    "ethnicity": r.get("ethnicity", ""), "level": r.get("level", ""),
                    "voice_vote": r.get("voice_vote", ""), "voice_vote_agreement": r.get("voice_vote_agreement", "")}
        return info
    people: dict[str, dict] = {}
    if (root / "VideoDemographics.csv").is_file():
        with open(root / "VideoDemographics.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                people[r["ActorID"]] = {"sex": r["Sex"], "age": r["Age"], "race": r["Race"],
                                        "ethnicity": r["Ethnicity"]}
    if (root / "summaryTable.csv").is_file():
        with open(root / "summaryTable.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                name = r["FileName"]
                info[name] = {**people.get(name.split("_")[0], {}), "voice_vote": r["VoiceVote"],
                              "voice_vote_agreement": r["VoiceLevel"]}
    for name in list(info):
        info[name].setdefault("sex", "")
    return info


def load_cremad(root: str | Path) -> list[Utterance]:
    """CREMA-D files (``1001_DFA_ANG_XX``: actor, sentence, emotion, level) below ``root``.

    Takes the release's ``AudioWAV/*.wav`` as well as other formats (``.opus``).
    Each utterance's ``info`` holds the actor's demographics and the emotion
    crowd raters heard from the voice alone (``voice_vote``, one of the six
    labels or ``""`` when raters split evenly), with its agreement in percent.
    """
    root = Path(root)
    out, info = [], None
    for path in sorted(root.rglob("*")):
        m = _CREMAD_NAME.match(path.stem)
        if path.suffix.lower() not in AUDIO_FILE_SUFFIXES or not m or m.group(3) not in _CREMAD_EMOTION:
            continue
        if info is None:  # the tables sit at the corpus root, above AudioWAV/
            info = _cremad_info(path.parent.parent) or _cremad_info(path.parent)
        actor = int(m.group(1))
        extra = dict(info.get(path.stem, {}))
        if "voice_vote" in extra:
            votes = [_CREMAD_VOTE.get(v) for v in extra["voice_vote"].split(":")]
            extra["voice_vote"] = votes[0] if len(votes) == 1 and votes[0] else ""
        out.append(Utterance(path, _CREMAD_EMOTION[m.group(3)], f"cremad-{actor}", cremad_fold(actor),
                             {"sentence": m.group(2), "level": m.group(4), **extra}))
    return out


def load_speech_corpus(*roots: str | Path) -> list[Utterance]:
    """RAVDESS, CREMA-D, TESS and EmoDB files found below any of ``roots``."""
    items = []
    for root in roots:
        found = load_ravdess(root) + load_cremad(root) + load_tess(root) + load_emodb(root)
        if not found:
            raise FileNotFoundError(f"{root}: no RAVDESS, CREMA-D, TESS or EmoDB speech files found")
        items += found
    return items
