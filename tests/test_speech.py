"""Speech presence and level invariance: the voice is heard at any level, and only the voice."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from multimodal.audio import (
    AudioModel,
    audio_evidence,
    mfcc_features,
    normalize_level,
    rms_dbfs,
)
from multimodal.cli import main
from multimodal.config import AudioFeatureConfig
from multimodal.errors import EXIT_INPUT, EXIT_OK
from multimodal.speech import SpeechDetector
from tests.conftest import SHARED_DATA
from tests.media import at_level, demo_speech, non_speech, write_video


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector()


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return demo_speech(6.0)


@pytest.mark.parametrize("dbfs", [-10, -30, -55, -60])
def test_speech_is_heard_at_any_level(detector, voice, dbfs):
    for start in (0, 3):  # both 3 s segments of the clip
        clip = at_level(voice, dbfs)[start * 16000:(start + 3) * 16000]
        assert detector.speech_seconds(clip) >= 1.0


@pytest.mark.parametrize("kind", ["silence", "hum", "white", "fan"])
def test_non_speech_is_not_heard(detector, kind):
    assert detector.speech_seconds(non_speech(kind)) < 0.25


def test_speech_in_noise_is_heard(detector, voice):
    noisy = voice[:48000] + non_speech("white") * 0.3  # white noise about 20 dB under the voice
    assert detector.speech_seconds(noisy) >= 1.0


def test_level_normalisation_removes_gain(voice):
    clips = [at_level(voice, db) for db in (-10, -30, -55)]
    levels = [rms_dbfs(normalize_level(c)) for c in clips]
    assert max(levels) - min(levels) < 0.01
    feats = [mfcc_features(c, AudioFeatureConfig()) for c in clips]
    assert np.abs(feats[0] - feats[2]).max() < 1e-2 * np.abs(feats[0]).max()
    # Without normalisation the first coefficient follows the level.
    raw = [mfcc_features(c, replace(AudioFeatureConfig(), level_dbfs=None)) for c in clips]
    assert raw[0][:, 0].mean() - raw[2][:, 0].mean() > 100


def test_same_utterance_at_three_levels_gets_the_same_answer(tiny_models, detector, voice):
    model = AudioModel(tiny_models["audio"])
    clips = [at_level(voice[:48000], db) for db in (-10, -30, -55)]
    ev = audio_evidence(clips, model, detector, min_speech=0.25)
    assert all(e.probs is not None for e in ev)
    assert len({int(np.argmax(e.probs)) for e in ev}) == 1
    np.testing.assert_allclose(ev[0].probs, ev[2].probs, atol=1e-3)
    assert [round(e.dbfs) for e in ev] == [-10, -30, -55]


def test_digital_silence_reads_the_floor_not_minus_240():
    assert rms_dbfs(np.zeros(16000, np.float32)) == -100.0
    assert np.isnan(rms_dbfs(np.zeros(0, np.float32)))


def test_quiet_audio_file_is_analysed(tiny_models, voice, tmp_path):
    wav = tmp_path / "quiet.wav"
    sf.write(wav, at_level(voice, -55), 16000)
    assert main(["analyze", str(wav), "-o", str(tmp_path / "out"), "-q", "--no-pictures",
                 "--audio-model", str(tiny_models["audio"])]) == EXIT_OK
    seg = pd.read_csv(tmp_path / "out" / "quiet" / "segments.csv")
    assert set(seg["modalities"]) == {"audio"}
    assert (seg["speech"] > 0.3).all() and seg["audio_dbfs"].between(-60, -50).all()


@pytest.mark.parametrize("kind", ["silence", "white", "hum"])
def test_audio_file_without_speech_is_no_usable_evidence(tiny_models, tmp_path, capsys, kind):
    wav = tmp_path / f"{kind}.wav"
    sf.write(wav, non_speech(kind, 4.0), 16000)
    assert main(["analyze", str(wav), "-o", str(tmp_path / "out"), "-q",
                 "--audio-model", str(tiny_models["audio"])]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable evidence" in err and "no speech" in err


def test_video_with_silent_track_says_the_voice_is_missing(tiny_models, tmp_path, capsys):
    video = write_video(tmp_path / "hush.mp4", 4.0, silent_audio=True)
    assert main(["analyze", str(video), "-o", str(tmp_path / "out"), "-q",
                 "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])]) == EXIT_OK
    assert "no speech heard" in capsys.readouterr().err
    out = tmp_path / "out" / "hush"
    seg = pd.read_csv(out / "segments.csv")
    assert set(seg["modalities"]) == {"visual"}
    assert (seg["speech"] == 0).all() and (seg["audio_dbfs"] == -100).all()
    assert any("no speech" in w for w in json.loads((out / "analysis.json").read_text())["warnings"])
    assert "no speech heard" in (out / "report.html").read_text()


def test_evaluate_audio_scores_files_as_analyze_does(tiny_models, voice, tmp_path, capsys):
    # A RAVDESS-shaped folder: actor 2 is in fold 0; one file is quiet, one is noise only.
    actor = tmp_path / "data" / "Actor_02"
    actor.mkdir(parents=True)
    sf.write(actor / "03-01-05-01-01-01-02.wav", at_level(voice, -20), 16000)
    sf.write(actor / "03-01-04-01-01-01-02.wav", at_level(voice, -58), 16000)
    sf.write(actor / "03-01-01-01-01-01-02.wav", non_speech("white", 4.0), 16000)
    assert main(["evaluate", "audio", "--model", str(tiny_models["audio"]), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "report")]) == EXIT_OK
    report = json.loads((tmp_path / "report" / "ravdess" / "report.json").read_text())
    assert "recordings with no audio evidence: 1 of 3 (03-01-01-01-01-01-02.wav)" in report["notes"]
    assert report["sections"]["8-class"]["n"] == 3
    assert "1 of 3 recordings with no audio evidence" in capsys.readouterr().out


def test_added_noise_has_the_asked_snr_and_is_the_same_every_run(voice, tiny_models, tmp_path):
    from training.evaluate import add_noise
    wave = at_level(voice, -30)
    noisy = add_noise(wave, 10.0, "a.wav")
    assert rms_dbfs(noisy - wave) == pytest.approx(-40.0, abs=0.3)
    np.testing.assert_array_equal(noisy, add_noise(wave, 10.0, "a.wav"))
    assert not np.array_equal(noisy, add_noise(wave, 10.0, "b.wav"))
    actor = tmp_path / "data" / "Actor_02"
    actor.mkdir(parents=True)
    sf.write(actor / "03-01-05-01-01-01-02.wav", wave, 16000)
    assert main(["evaluate", "audio", "--model", str(tiny_models["audio"]), "--data", str(tmp_path / "data"),
                 "--snr-db", "10", "--out", str(tmp_path / "report")]) == EXIT_OK
    report = json.loads((tmp_path / "report" / "ravdess" / "report.json").read_text())
    assert "white noise added at 10 dB SNR first" in report["notes"]


# ------------------------------------------------------------- real speech

@pytest.mark.data
def test_real_shouting_and_quiet_speech_are_heard(detector):
    from multimodal.audio import load_audio
    root = SHARED_DATA / "ravdess_speech"
    shout = load_audio(root / "Actor_06" / "03-01-06-02-02-02-06.flac")  # fear, strong: the VAD network misses it
    calm = load_audio(root / "Actor_01" / "03-01-02-01-01-01-01.flac")
    assert detector.speech_seconds(shout[:48000]) >= 0.25
    for db in (-60, -30):
        assert detector.speech_seconds(at_level(calm, db)[:48000]) >= 0.25


@pytest.mark.data
def test_real_quiet_audio_file_analyses(tmp_path):
    src = SHARED_DATA / "ravdess_speech" / "Actor_01" / "03-01-01-01-01-01-01.flac"
    wav = tmp_path / "neutral.wav"
    from multimodal.audio import load_audio
    sf.write(wav, at_level(load_audio(src), -60), 16000)
    assert main(["analyze", str(src), str(wav), "-o", str(tmp_path / "out"), "-q", "--no-pictures"]) == EXIT_OK
    for name in ("03-01-01-01-01-01-01", "neutral"):
        seg = pd.read_csv(tmp_path / "out" / name / "segments.csv")
        assert (seg["modalities"] == "audio").any()
