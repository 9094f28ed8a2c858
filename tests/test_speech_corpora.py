"""CREMA-D and Opus loaders, the leave-one-corpus-out split, balanced sampling and calibration."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import multimodal
from multimodal.audio import AudioModel, apply_temperature, fit_temperature
from multimodal.config import AudioFeatureConfig
from multimodal.models import write_card
from tests.conftest import SHARED_DATA
from tests.media import speech_like, write_wav
from training.config import AugmentConfig
from training.speech_datasets import (
    SPEECH_LABELS,
    Utterance,
    cremad_fold,
    load_cremad,
    load_speech_corpus,
    load_tess,
)
from training.train_audio import balanced_draw, mixup, split_indices


def _opus(path, seconds=0.5):
    sf.write(path, speech_like(seconds), 16000, format="OGG", subtype="OPUS")


def test_cremad_release_layout_with_its_tables(tmp_path):
    root = tmp_path / "CREMA-D"
    (root / "AudioWAV").mkdir(parents=True)
    for name in ("1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1005_TIE_NEU_XX", "1005_TIE_XYZ_XX"):
        sf.write(root / "AudioWAV" / f"{name}.wav", speech_like(0.4), 16000)
    (root / "VideoDemographics.csv").write_text('"ActorID","Age","Sex","Race","Ethnicity"\n'
                                                '1001,51,"Male","Caucasian","Not Hispanic"\n'
                                                '1005,22,"Female","Asian","Not Hispanic"\n')
    (root / "summaryTable.csv").write_text(
        '"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote","MultiModalLevel"\n'
        '"1","1001_DFA_ANG_XX","A","80","A","90","A","95"\n'
        '"2","1001_IEO_HAP_HI","H:N","50","H","60","H","70"\n'
        '"3","1005_TIE_NEU_XX","N","62.5","N","70","N","80"\n')
    items = load_cremad(root)
    assert [(u.path.name, u.label, u.speaker, u.fold) for u in items] == [
        ("1001_DFA_ANG_XX.wav", "angry", "cremad-1001", 1), ("1001_IEO_HAP_HI.wav", "happy", "cremad-1001", 1),
        ("1005_TIE_NEU_XX.wav", "neutral", "cremad-1005", 0)]
    assert items[0].info["sex"] == "Male" and items[0].info["voice_vote"] == "angry"
    assert items[0].info["voice_vote_agreement"] == "80" and items[1].info["level"] == "HI"
    assert items[1].info["voice_vote"] == ""  # raters split between happy and neutral
    assert items[2].info["race"] == "Asian" and items[0].corpus == "cremad"
    assert [cremad_fold(a) for a in (1001, 1005, 1091)] == [1, 0, 1]


def test_cremad_opus_copy_with_manifest_and_tess_opus(tmp_path):
    (tmp_path / "cremad" / "AudioOpus").mkdir(parents=True)
    _opus(tmp_path / "cremad" / "AudioOpus" / "1002_DFA_SAD_LO.opus")
    (tmp_path / "cremad" / "manifest.csv").write_text(
        "file,actor,sentence,emotion,level,label,sex,age,race,ethnicity,voice_vote,voice_vote_agreement\n"
        "AudioOpus/1002_DFA_SAD_LO.opus,1002,DFA,SAD,LO,sad,Female,21,Caucasian,Not Hispanic,S,60\n")
    (tmp_path / "tess" / "YAF_sad").mkdir(parents=True)
    _opus(tmp_path / "tess" / "YAF_sad" / "YAF_back_sad.opus")
    [c] = load_cremad(tmp_path / "cremad")
    assert (c.label, c.fold, c.info["voice_vote"], c.info["age"]) == ("sad", 2, "sad", "21")
    [t] = load_tess(tmp_path / "tess")
    assert (t.label, t.speaker, t.fold) == ("sad", "tess-YAF", None)
    both = load_speech_corpus(tmp_path / "cremad", tmp_path / "tess")
    assert sorted(u.corpus for u in both) == ["cremad", "tess"]
    from multimodal.audio import load_audio
    assert load_audio(t.path, 16000).size == pytest.approx(8000, abs=400)


def _items():
    out = []
    for corpus, n, folds in (("ravdess", 40, True), ("cremad", 60, True), ("tess", 20, False), ("emodb", 10, True)):
        for i in range(n):
            out.append(Utterance(__file__, ("angry", "sad", "happy")[i % 3], f"{corpus}-{i % 10}",
                                 i % 5 if folds else None))
    return out


@pytest.mark.parametrize("corpus", ["ravdess", "cremad", "tess", "emodb"])
def test_leave_one_corpus_out_never_puts_a_corpus_on_both_sides(corpus):
    items = _items()
    tr, va, te = split_indices(items, 0, 1, hold_out_corpus=corpus)
    assert {items[i].corpus for i in te} == {corpus}
    assert corpus not in {items[i].corpus for i in np.concatenate([tr, va])}
    assert len(tr) + len(va) + len(te) == len(items) and not set(tr) & set(va)
    assert {items[i].fold for i in va} == {1}


def test_balanced_draw_evens_out_corpora_and_classes():
    corpus = np.array(["big"] * 900 + ["small"] * 100)
    y = np.array([0] * 800 + [1] * 100 + [0] * 50 + [2] * 50)
    rows = balanced_draw(corpus, y, 20000, np.random.default_rng(0))
    by_corpus = Counter(corpus[rows])
    assert abs(by_corpus["big"] - by_corpus["small"]) < 600
    big = rows[corpus[rows] == "big"]
    assert abs(np.mean(y[big] == 0) - 0.5) < 0.03  # 800 against 100, drawn evenly


def test_masks_cover_spans_and_the_same_band_in_every_block():
    from training.train_audio import mask_windows
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 300, 120)).astype(np.float32) + 5
    fill = np.zeros(120, np.float32)
    mask_windows(x, fill, rng, time_masks=2, coefficient_masks=1, n_mfcc=40)
    masked = x == 0
    assert masked.any()
    for w in masked:
        rows = w.all(axis=1)  # frames masked across every feature: the time masks
        assert rows.sum() <= 2 * 30
        cols = w[~rows].all(axis=0) if (~rows).any() else np.zeros(120, bool)
        assert cols.sum() <= 3 * 8
        np.testing.assert_array_equal(cols[:40], cols[40:80])  # a band takes its deltas with it
        np.testing.assert_array_equal(cols[:40], cols[80:])
        assert not (w & ~rows[:, None] & ~cols[None, :]).any()  # nothing else touched


def _vowel(formants, f0=140.0, seconds=1.0, sr=16000):
    """A steady voiced sound: harmonics of ``f0`` (Hz) shaped by resonances at ``formants`` (Hz)."""
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for h in range(1, int(7600 / f0)):
        amp = sum(np.exp(-0.5 * ((h * f0 - f) / 90) ** 2) for f in formants) + 0.01
        y += amp * np.sin(2 * np.pi * h * f0 * t + h)
    return 0.1 * y / np.abs(y).max()


def test_spectral_warp_moves_the_formants_as_a_shorter_vocal_tract_would():
    from multimodal.audio import mfcc_features
    from training.train_audio import warp_matrices
    feat = AudioFeatureConfig(deltas=False)
    formants = np.array([700.0, 1220.0, 2600.0])

    def distance(a, b):  # mean over frames of the Euclidean distance, level (c0) aside
        return np.sqrt(((a[:, 1:] - b[:, 1:]) ** 2).sum(axis=1)).mean()

    for semitones in (3.0, -2.0):
        factor = 2 ** (semitones / 12)
        before = mfcc_features(_vowel(formants), feat)
        target = mfcc_features(_vowel(formants * factor), feat)  # the same pitch, the formants moved
        _, towards = warp_matrices(factor, feat.n_mfcc, feat.n_mels, feat.sample_rate)
        _, away = warp_matrices(1 / factor, feat.n_mfcc, feat.n_mels, feat.sample_rate)
        assert distance(before @ towards.T, target) < 0.4 * distance(before, target)
        assert distance(before @ away.T, target) > distance(before, target)


def test_spectral_warp_moves_mfccs_deltas_and_log_mel_alike_and_leaves_pitch_alone():
    from training.train_audio import spectral_warp, warp_matrices
    feat = AudioFeatureConfig(log_mel=True, pitch=True)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 50, 187)).astype(np.float32)
    warped = spectral_warp(x.copy(), np.random.default_rng(3), 2.0, feat, steps=5)
    np.testing.assert_array_equal(warped[:, :, 184:], x[:, :, 184:])
    maps = [warp_matrices(2 ** (s / 12), 40, 64, 16000) for s in (-2.0, -1.0, 1.0, 2.0)]
    unchanged = 0
    for before, after in zip(x, warped):
        if np.array_equal(before, after):  # drew the middle step: no shift
            unchanged += 1
            continue
        # Which of the four shifts was drawn: the one whose map gives this window's MFCCs.
        errors = [np.abs(before[:, :40] @ m.T - after[:, :40]).max() for _, m in maps]
        mel_map, mfcc_map = maps[int(np.argmin(errors))]
        for block in (slice(0, 40), slice(40, 80), slice(80, 120)):
            np.testing.assert_allclose(after[:, block], before[:, block] @ mfcc_map.T, atol=1e-4)
        np.testing.assert_allclose(after[:, 120:184], before[:, 120:184] @ mel_map.T, atol=1e-4)
    assert 0 < unchanged < len(x)


def test_masks_take_a_band_of_log_mel_with_each_band_of_mfccs_and_leave_pitch_alone():
    from training.train_audio import mask_windows
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 300, 187)).astype(np.float32) + 5
    mask_windows(x, np.zeros(187, np.float32), rng, time_masks=0, coefficient_masks=1, n_mfcc=40, n_mels=64)
    cols = (x == 0).all(axis=1)  # (windows, features): columns masked over the whole window
    assert cols.any()
    for c in cols:
        assert c[:40].sum() == c[120:184].sum() <= 8  # as wide a band of the spectrum as of the MFCCs
        assert not c[184:].any()


def test_room_impulse_decays_and_band_limit_removes_rumble():
    from training.train_audio import band_limit, room_impulse
    rng = np.random.default_rng(0)
    h = room_impulse(16000, rng, rt60=(0.5, 0.5), direct_db=(0.0, 0.0))
    assert h.shape == (8000,) and abs(np.sum(h ** 2) - 1) < 1e-4
    assert abs(h[0] ** 2 - 0.5) < 1e-3  # direct and reverberant energy equal at 0 dB
    first, last = np.sum(h[1:800] ** 2), np.sum(h[-800:] ** 2)
    assert last < first * 1e-3  # the tail has died away by the reverberation time
    t = np.arange(16000) / 16000
    rumble, voice = np.sin(2 * np.pi * 30 * t), np.sin(2 * np.pi * 1000 * t)
    for seed in range(5):  # the same random edges for both tones
        kept = band_limit(rumble, 16000, np.random.default_rng(seed))[4000:]
        assert np.sqrt(np.mean(kept ** 2)) < 0.05 * np.sqrt(np.mean(rumble ** 2))
        passed = band_limit(voice, 16000, np.random.default_rng(seed))[4000:]
        assert np.sqrt(np.mean(passed ** 2)) > 0.8 * np.sqrt(np.mean(voice[4000:] ** 2))


def test_room_and_microphone_copies_differ_and_have_their_own_cache(tmp_path):
    from training.config import AugmentConfig
    from training.speech_datasets import Utterance
    from training.train_audio import augment_waveform, feature_cache_key
    y = np.random.default_rng(1).normal(size=16000).astype(np.float32) * 0.1
    plain = augment_waveform(y, 16000, np.random.default_rng(2), AugmentConfig())
    roomy = augment_waveform(y, 16000, np.random.default_rng(2), AugmentConfig(reverb=1.0, channel=1.0))
    assert plain.shape == roomy.shape and not np.allclose(plain, roomy)
    wav = tmp_path / "03-01-05-01-01-01-01.wav"
    sf.write(wav, y, 16000)
    items = [Utterance(wav, "angry", "ravdess-01", 0)]
    feat = AudioFeatureConfig()
    assert feature_cache_key(items, feat, AugmentConfig(), 1) != feature_cache_key(items, feat, AugmentConfig(reverb=0.5), 1)


def test_temperature_fit_and_application():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    right = rng.random(2000) < 0.5  # right half the time, always 97% sure: overconfident
    pred = np.where(right, y, (y + 1) % 4)
    probs = np.full((2000, 4), 0.01)
    probs[np.arange(2000), pred] = 0.97
    t = fit_temperature(probs, y)
    assert t > 1.5
    calibrated = apply_temperature(probs, t)
    assert np.allclose(calibrated.sum(1), 1) and abs(calibrated.max(1).mean() - 0.5) < 0.05
    assert np.array_equal(apply_temperature(probs, 1.0), probs)


def test_analyze_applies_the_cards_temperature(tiny_models, tmp_path):
    hot = tmp_path / "audio_t4.keras"
    shutil.copy(tiny_models["audio"], hot)
    card = json.loads((tiny_models["audio"].parent / "audio.keras.json").read_text())
    write_card(hot, "audio", card["labels"], features=card["features"], calibration={"temperature": 4.0})
    assert AudioModel(hot).temperature == 4.0 and AudioModel(tiny_models["audio"]).temperature == 1.0
    wav = write_wav(tmp_path / "voice.wav", 4.0)
    seen = {}
    for name, model in (("plain", tiny_models["audio"]), ("hot", hot)):
        seg = multimodal.analyze(wav, audio_model=model, visual_model=tiny_models["visual"]).segments
        seen[name] = seg[[c for c in seg.columns if c.startswith("audio_")]].to_numpy(float)
    assert not np.isnan(seen["plain"]).any()
    # flatter: the largest probability of every segment moves towards uniform
    assert (seen["hot"].max(1) < seen["plain"].max(1)).all()


def test_crowd_targets_soften_only_what_listeners_heard_otherwise():
    from training.train_audio import crowd_targets
    items = [Utterance(Path("a.wav"), "sad", "cremad-1001", 1, {"voice_vote": "neutral", "voice_vote_agreement": "80"}),
             Utterance(Path("b.wav"), "angry", "cremad-1001", 1, {"voice_vote": "angry", "voice_vote_agreement": "90"}),
             Utterance(Path("c.wav"), "happy", "cremad-1001", 1, {"voice_vote": "", "voice_vote_agreement": "50"}),
             Utterance(Path("d.wav"), "fear", "ravdess-01", 0)]
    t = crowd_targets(items, 0.5)
    assert t.shape == (4, len(SPEECH_LABELS)) and np.allclose(t.sum(1), 1)
    assert t[0, SPEECH_LABELS.index("sad")] == pytest.approx(0.6)
    assert t[0, SPEECH_LABELS.index("neutral")] == pytest.approx(0.4)
    for row, label in ((1, "angry"), (2, "happy"), (3, "fear")):  # heard as meant, split vote, no vote
        assert t[row, SPEECH_LABELS.index(label)] == 1
    assert np.array_equal(crowd_targets(items, 0.0), np.eye(len(SPEECH_LABELS), dtype=np.float32)[
        [SPEECH_LABELS.index(u.label) for u in items]])


def test_mixup_blends_windows_and_targets_alike():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10, 6)).astype(np.float32)
    t = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 64)]
    xm, tm = mixup(x, t, 0.3, np.random.default_rng(1))
    assert xm.shape == x.shape and xm.dtype == np.float32 and tm.shape == t.shape
    np.testing.assert_allclose(tm.sum(axis=1), 1.0, rtol=1e-6)
    assert (tm[np.arange(64), t.argmax(1)] >= 0.5 - 1e-6).all()
    # a window and its target are the same blend of the same two rows
    r = np.random.default_rng(1)
    lam = r.beta(0.3, 0.3, 64)
    lam = np.maximum(lam, 1 - lam)
    perm = r.permutation(64)
    np.testing.assert_allclose(xm, lam[:, None, None] * x + (1 - lam[:, None, None]) * x[perm], atol=1e-5)
    np.testing.assert_allclose(tm, lam[:, None] * t + (1 - lam[:, None]) * t[perm], atol=1e-5)
    assert not np.allclose(xm, x)


@pytest.mark.data
def test_shared_cremad_and_tess_opus_load():
    items = load_cremad(SHARED_DATA / "cremad")
    assert len(items) == 4907 and len({u.speaker for u in items}) == 60
    assert {u.fold for u in items} == {0, 1, 2, 3, 4}
    assert len(load_tess(SHARED_DATA / "tess")) >= 1399


def _tiny_corpora(root: Path) -> Path:
    """Four RAVDESS-named recordings of one actor of each of folds 0-2 and four EmoDB-named ones of
    speakers 03 and 08 (EmoDB's fold 0)."""
    from training.speech_datasets import RAVDESS_FOLDS
    for fold in (0, 1, 2):
        actor = RAVDESS_FOLDS[fold][0]
        d = root / "ravdess" / f"Actor_{actor:02d}"
        d.mkdir(parents=True)
        for e in (1, 3, 4, 5):
            sf.write(d / f"03-01-{e:02d}-01-01-01-{actor:02d}.wav", speech_like(1.0, seed=e), 16000)
    (root / "emodb").mkdir()
    for speaker in ("03", "08"):
        for letter in ("W", "F", "T", "N"):
            sf.write(root / "emodb" / f"{speaker}a01{letter}a.wav", speech_like(1.0, seed=ord(letter)), 16000)
    return root


def test_train_audio_leaving_one_corpus_out(tmp_path, capsys):
    """A tiny run: RAVDESS-named and EmoDB-named files, EmoDB held out whole, balanced sampling, calibrated."""
    from multimodal.cli import main
    root = _tiny_corpora(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "audio", "--data", str(root), "--hold-out-corpus", "emodb", "--val-fold", "0",
                 "--balance", "--time-masks", "2", "--coefficient-masks", "1", "--utterance-norm",
                 "--crowd-targets", "0.5", "--mixup", "0.3", "--spectral-warp", "1.5", "--reverb", "0.5",
                 "--channel", "0.5", "--epochs", "1",
                 "--pooling", "attention", "--widths", "4", "8", "8", "8",
                 "--cache-dir", str(tmp_path / "shared-cache"),
                 "--out", str(out)]) == 0
    assert len(list((tmp_path / "shared-cache").glob("speech-features-*.npy"))) == 1
    assert not (out / "cache").exists()
    printed = capsys.readouterr().out
    assert "all of emodb: 8-class accuracy" in printed and "ravdess" not in printed.split("report in")[0]
    card = json.loads((out / "model.keras.json").read_text())
    assert card["training"]["held_out_corpus"] == "emodb" and card["training"]["balanced_sampling"]
    assert card["training"]["training_utterances"] == {"ravdess": 8}
    assert card["training"]["masks"] == {"time": 2, "coefficients": 1} and card["training"]["utterance_norm"]
    assert card["training"]["crowd_targets"] == 0.5 and card["training"]["mixup"] == 0.3
    assert card["training"]["spectral_warp_semitones"] == 1.5
    assert card["training"]["pooling"] == "attention" and card["training"]["widths"] == [4, 8, 8, 8]
    assert card["training"]["augmentation"]["reverb"] == 0.5 and card["training"]["augmentation"]["channel"] == 0.5
    # The network ignores a constant added to every frame of a feature (a microphone's colouring).
    model = AudioModel(out / "model.keras")
    x = np.random.default_rng(0).normal(size=(1, 200, 120)).astype(np.float32)
    shift = np.zeros(120, np.float32)
    shift[:40] = 3.0
    np.testing.assert_allclose(model.model.predict_on_batch(x), model.model.predict_on_batch(x + shift), atol=1e-5)
    assert card["calibration"]["temperature"] > 0 and "ece_uncalibrated" in card["metrics"]
    assert card["metrics"]["split"].startswith("all of emodb")


def test_training_without_validation_speakers_runs_every_epoch_and_records_the_given_temperature(tmp_path, capsys):
    from multimodal.cli import main
    root = _tiny_corpora(tmp_path / "data")
    common = ["train", "audio", "--data", str(root), "--hold-out-corpus", "emodb", "--val-fold", "0",
              "--widths", "4", "8", "8", "8", "--epochs", "2", "--patience", "1"]
    # one without the other is a usage error, before anything is written
    assert main([*common, "--no-validation", "--out", str(tmp_path / "bad")]) == 2
    assert main([*common, "--temperature", "2", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists() and "go together" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main([*common, "--no-validation", "--temperature", "2.5", "--schedule-epochs", "6", "--out", str(out)]) == 0
    card = json.loads((out / "model.keras.json").read_text())
    # the validation fold's speakers trained too: all twelve RAVDESS files (with validation: eight)
    assert card["training"]["training_utterances"] == {"ravdess": 12}
    assert card["training"]["no_validation"] and card["training"]["validation_fold"] is None
    # no early stopping without a validation set (patience 1 would otherwise allow a stop), the last epoch kept
    assert card["training"]["epochs_run"] == 2 and card["training"]["best_epoch"] == 2
    assert card["training"]["schedule_epochs"] == 6
    assert card["calibration"]["temperature"] == 2.5 and "given" in card["calibration"]["fitted_on"]
    assert AudioModel(out / "model.keras").temperature == 2.5
    assert card["metrics"]["split"].startswith("all of emodb")


def test_utterance_mean_implies_utterance_norm_and_is_recorded(tmp_path):
    from multimodal.cli import main
    root = _tiny_corpora(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "audio", "--data", str(root), "--hold-out-corpus", "emodb", "--val-fold", "0",
                 "--utterance-mean", "--widths", "4", "8", "8", "8", "--epochs", "1", "--out", str(out)]) == 0
    card = json.loads((out / "model.keras.json").read_text())
    assert card["training"]["utterance_norm"] and card["training"]["utterance_mean"]
    assert AudioModel(out / "model.keras").model.get_layer("utterance_mean").units == 16


def test_corpus_adversary_trains_two_heads_and_ships_the_emotion_alone(tmp_path, capsys):
    from multimodal.cli import main
    root = _tiny_corpora(tmp_path / "data")
    common = ["train", "audio", "--data", str(root), "--widths", "4", "8", "8", "8", "--epochs", "2",
              "--corpus-adversary", "0.3"]
    # RAVDESS's fold 0 and EmoDB's speakers train; RAVDESS's fold 2 selects, fold 1 is the test
    out = tmp_path / "run"
    assert main([*common, "--test-fold", "1", "--val-fold", "2", "--out", str(out)]) == 0
    card = json.loads((out / "model.keras.json").read_text())
    assert card["training"]["corpus_adversary"] == 0.3
    assert card["training"]["training_utterances"] == {"ravdess": 4, "emodb": 8}
    log = (out / "train.log").read_text()
    assert "val_accuracy=" in log and "corpus_loss=" in log  # selected on the emotion; the corpus head trained
    model = AudioModel(out / "model.keras")
    assert len(model.model.outputs) == 1 and model.model.outputs[0].shape[-1] == len(SPEECH_LABELS)
    assert "corpus" not in {layer.name for layer in model.model.layers}
    # with one training corpus there is nothing to tell apart: the data given cannot serve (exit 3)
    assert main([*common, "--hold-out-corpus", "emodb", "--val-fold", "0", "--out", str(tmp_path / "one")]) == 3
    assert "at least two training corpora" in capsys.readouterr().err


def test_added_channels_are_trained_recorded_and_computed_by_analyze(tiny_models, tmp_path):
    """``--log-mel --pitch``: the card asks for both, the network takes 120 + 64 + 3 features, each
    option's cache is its own, and ``analyze`` computes the same features from the card."""
    from multimodal.cli import main
    from training.train_audio import feature_cache_key
    root = _tiny_corpora(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "audio", "--data", str(root), "--hold-out-corpus", "emodb", "--val-fold", "0",
                 "--pitch", "--log-mel", "--widths", "4", "8", "8", "8", "--epochs", "1", "--out", str(out)]) == 0
    card = json.loads((out / "model.keras.json").read_text())
    assert card["features"]["pitch"] is True and card["features"]["log_mel"] is True
    assert card["input"]["shape"] == ["time", 187]
    model = AudioModel(out / "model.keras")
    assert model.features.pitch and model.features.log_mel
    wav = write_wav(tmp_path / "voice.wav", 4.0)
    seg = multimodal.analyze(wav, audio_model=out / "model.keras", visual_model=tiny_models["visual"]).segments
    assert seg[[c for c in seg.columns if c.startswith("audio_")]].notna().all().all()
    items = load_speech_corpus(root)
    plain = AudioFeatureConfig()
    keys = {feature_cache_key(items, f, AugmentConfig(), 1)
            for f in (plain, AudioFeatureConfig(pitch=True), AudioFeatureConfig(log_mel=True))}
    assert len(keys) == 3


def test_protocol_tables_score_before_and_after_calibration_over_the_same_classes(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "speech_protocols", Path(__file__).resolve().parents[1] / "benchmarks" / "speech_protocols.py")
    protocols = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocols)
    run = tmp_path / "loco_cremad"

    def report(folder: str, ece7: float) -> None:
        section = {"n": 10, "accuracy": 0.3, "uar": 0.3, "per_class": {"angry": {"recall": 0.5, "support": 5}}}
        path = run / folder / "cremad" / "report.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"sections": {"8-class": {**section, "ece": 0.9},
                                                 "7-class (calm = neutral)": {**section, "ece": ece7}}}))

    report("report", 0.2)
    report("report_uncalibrated", 0.5)
    (run / "model.keras.json").write_text(json.dumps({"metrics": {"ece_uncalibrated": 0.9}}))  # eight-class
    got = protocols.held_out(run)["cremad"]
    assert got["ece"] == 0.2 and got["ece_uncalibrated"] == 0.5 and got["recall"] == {"angry": 0.5}


def test_ensemble_of_runs_averages_calibrated_members_and_checks_their_split(tmp_path):
    """Two tiny runs of fold 0 averaged into one model: its output is the mean of the members'
    distributions after their own temperatures; it gets a temperature, test figures and a card naming
    its members; a run of another split is refused."""
    from multimodal.cli import main as cli
    from training.ensemble import main
    root = _tiny_corpora(tmp_path / "data")
    runs = []
    for name, options in (("a", []), ("b", ["--seed", "2", "--pooling", "attention"])):
        runs.append(tmp_path / name)
        assert cli(["train", "audio", "--data", str(root), "--test-fold", "0", "--val-fold", "1", *options,
                    "--widths", "4", "8", "8", "8", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
                    "--out", str(runs[-1])]) == 0
    def rewrite_card(run: Path, change) -> None:
        fields = json.loads((run / "model.keras.json").read_text())
        change(fields)
        write_card(run / "model.keras", "audio", SPEECH_LABELS,
                   **{k: v for k, v in fields.items() if k not in ("kind", "file", "labels", "sha256", "size_bytes")})

    def copy_run(name: str, change) -> Path:
        shutil.copytree(runs[0], tmp_path / name)
        rewrite_card(tmp_path / name, change)
        return tmp_path / name

    other = copy_run("other", lambda f: f["training"].update(validation_fold=2))  # as if selected on fold 2
    coarser = copy_run("coarser", lambda f: f["features"].update(n_mfcc=13))
    # A card written before the pitch option existed omits it: the same features as pitch=False.
    rewrite_card(runs[1], lambda f: f["features"].pop("pitch", None))
    out = tmp_path / "ensemble"
    assert main([str(out), str(runs[0]), str(runs[1]), "--data", str(root)]) == 0
    card = json.loads((out / "model.keras.json").read_text())
    members = card["training"]["ensemble"]
    assert [m["sha256"] for m in members] == [json.loads((r / "model.keras.json").read_text())["sha256"]
                                              for r in runs[:2]]
    assert card["training"]["test_fold"] == 0 and card["training"]["validation_fold"] == 1
    assert card["calibration"]["temperature"] > 0 and card["metrics"]["split"].startswith("RAVDESS fold 0")
    assert (out / "report" / "ravdess" / "report.json").exists()
    x = np.random.default_rng(5).normal(size=(3, 150, 120)).astype(np.float32)
    expected = np.mean([apply_temperature(AudioModel(r / "model.keras").model.predict_on_batch(x).astype(np.float64),
                                          m["temperature"]) for r, m in zip(runs[:2], members)], axis=0)
    assert AudioModel(out / "model.keras").model.predict_on_batch(x) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="another split"):
        main([str(tmp_path / "mixed"), str(runs[0]), str(other), "--data", str(root)])
    with pytest.raises(ValueError, match="other features"):
        main([str(tmp_path / "mixed"), str(runs[0]), str(coarser), "--data", str(root)])


def test_ensemble_member_without_log_mel_reads_the_mfcc_channels_of_one_with_them(tmp_path):
    """A run with ``--log-mel`` and one without, averaged: the ensemble computes the log-mel run's
    features, and the other member reads their first 120 channels, the MFCC blocks it was trained on."""
    from multimodal.cli import main as cli
    from training.ensemble import main
    root = _tiny_corpora(tmp_path / "data")
    runs = []
    for name, options in (("mfcc", []), ("log_mel", ["--log-mel"])):
        runs.append(tmp_path / name)
        assert cli(["train", "audio", "--data", str(root), "--test-fold", "0", "--val-fold", "1", *options,
                    "--widths", "4", "8", "8", "8", "--epochs", "1", "--out", str(runs[-1])]) == 0
    out = tmp_path / "ensemble"
    assert main([str(out), *map(str, runs), "--data", str(root)]) == 0
    ensemble = AudioModel(out / "model.keras")
    assert ensemble.features.log_mel
    x = np.random.default_rng(6).normal(size=(2, 150, 184)).astype(np.float32)
    members = json.loads((out / "model.keras.json").read_text())["training"]["ensemble"]
    expected = np.mean([apply_temperature(AudioModel(r / "model.keras").model.predict_on_batch(x[:, :, :width])
                                          .astype(np.float64), m["temperature"])
                        for r, m, width in zip(runs, members, (120, 184))], axis=0)
    assert ensemble.model.predict_on_batch(x) == pytest.approx(expected, abs=1e-5)


def test_novelty_law_tempers_each_segment_and_weighs_recordings_by_duration():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "novelty_temperature", Path(__file__).resolve().parents[1] / "benchmarks" / "novelty_temperature.py")
    novelty = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(novelty)

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    temps = np.array([1.0, 2.0, 50.0])
    got = novelty.tempered(probs, temps)
    for row, t in enumerate(temps):
        assert np.allclose(got[row], apply_temperature(probs[row:row + 1], t)[0])
    # Recording 0 has segments of 3 s and 1 s, recording 1 none (no speech): uniform, as analyze's evidence rule.
    segs = {"recording": np.array([0, 0]), "duration": np.array([3.0, 1.0]), "probs": probs[:2],
            "labels": np.array([0, 1])}
    dist = novelty.recording_distributions(segs, np.ones(2))
    assert np.allclose(dist[0], 0.75 * probs[0] + 0.25 * probs[1]) and np.allclose(dist[1], 1 / 3)
    # The temperature rises only for segments further out than the validation median (r > 0).
    run = {"temperature": 2.0, "test": {"r": np.array([-1.0, 0.0, 5.0])}}
    assert np.allclose(novelty.law(run, 0.5, "test"), [2.0, 2.0, 2.0 * np.exp(2.5)])


def test_distance_from_reference_grows_away_from_it_and_ignores_feature_units():
    from training.metrics import distance_from

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((500, 8)) * np.array([1, 1, 1, 1, 1, 1, 1, 1000.0])
    distance = distance_from(reference)
    near, far = np.zeros((1, 8)), np.zeros((1, 8))
    far[0, 0] = 6.0
    assert distance(near)[0] < 1.0 < 5.0 < distance(far)[0]
    # A feature a thousand times wider counts as one of the same spread: its six spreads out are as far.
    far_wide = np.zeros((1, 8))
    far_wide[0, 7] = 6000.0
    assert np.isclose(distance(far_wide)[0], distance(far)[0], rtol=0.2)
