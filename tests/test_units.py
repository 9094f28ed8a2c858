"""Unit tests of the stages: decoding, faces, tracking, aggregation, audio, model cards."""
from __future__ import annotations

import json

import numpy as np
import pytest

from multimodal.config import EMOTIONS
from multimodal.models import card_path


def test_probe_and_stream_frames(face_video):
    from multimodal.decode import iter_frames, probe
    info = probe(face_video)
    assert info.has_video and info.has_audio and info.duration == pytest.approx(7.0, abs=0.1)
    assert (info.width, info.height) == (480, 320)
    frames = list(iter_frames(info, fps=2.0, max_width=240))
    assert len(frames) == 14
    t, f = frames[3]
    assert t == pytest.approx(1.5) and f.shape == (160, 240) and f.dtype == np.uint8
    t, rgb = next(iter_frames(info, fps=1.0, color=True))
    assert rgb.shape == (320, 480, 3)


def test_audio_extraction_reads_segments(face_video, tmp_path):
    from multimodal.decode import AudioReader, extract_audio, probe
    wav = extract_audio(probe(face_video), tmp_path / "a.wav", 16000)
    with AudioReader(wav) as r:
        assert r.sample_rate == 16000 and r.duration == pytest.approx(7.0, abs=0.1)
        assert r.read(1.0, 3.0).shape == (32000,)
        assert r.read(6.5, 9.0).size == pytest.approx(8000, abs=200)


def test_haar_finds_the_fixture_face_and_crops():
    import cv2

    from multimodal.faces import HaarDetector, crop_faces
    from tests.media import face_image
    gray = cv2.cvtColor(face_image(), cv2.COLOR_RGB2GRAY)
    faces = HaarDetector().detect(gray)
    assert len(faces) == 1 and 0 < faces[0].score <= 1 and faces[0].w > 40
    crops = crop_faces(gray, faces + [faces[0].scaled(3.0)], 48)  # the second runs off the frame
    assert crops.shape == (2, 48, 48) and crops.dtype == np.uint8
    assert not HaarDetector().detect(np.full((200, 200), 128, np.uint8))


def test_tracker_keeps_ids_and_opens_new_ones():
    from multimodal.faces import Face
    from multimodal.tracking import IoUTracker
    tr = IoUTracker(max_gap=1.0)
    a, b = Face(10, 10, 50, 50, 1), Face(200, 10, 50, 50, 1)
    assert tr.update(0.0, [a]) == [1]
    ids = [tr.update(t / 2, [Face(10 + 3 * t, 10, 50, 50, 1), Face(200 - 3 * t, 10, 50, 50, 1)]) for t in range(1, 6)]
    assert ids[0] == [1, 2] and all(i == [1, 2] for i in ids)  # stable while moving slowly
    assert tr.update(4.0, [b]) == [3]  # after the gap, a face in an old place is a new person
    assert tr.update(4.5, [Face(500, 300, 40, 40, 1), Face(203, 12, 50, 50, 1)]) == [4, 3]


def test_tracker_follows_a_face_that_moves_further_than_it_overlaps():
    from multimodal.faces import Face
    from multimodal.tracking import IoUTracker
    tr = IoUTracker(max_gap=2.0)
    assert tr.update(0.0, [Face(100, 100, 50, 50, 1), Face(400, 100, 50, 50, 1)]) == [1, 2]
    # 40 px to the right (IoU 0.11): the same person; the other one stays put.
    assert tr.update(0.5, [Face(140, 100, 50, 50, 1), Face(400, 100, 50, 50, 1)]) == [1, 2]
    # Too far (90 px) or too different in size: new people.
    assert tr.update(1.0, [Face(230, 100, 50, 50, 1)]) == [3]
    assert tr.update(1.5, [Face(405, 95, 120, 120, 1)]) == [4]
    # An overlapping match is never taken over by a near one.
    assert tr.update(2.0, [Face(235, 100, 50, 50, 1), Face(200, 100, 50, 50, 1)]) == [3, 5]


def test_group_distribution_weights_by_size_and_score():
    from multimodal.aggregate import group_distribution, label_runs, valence
    p = np.eye(7)[[3, 4]]
    g = group_distribution(p, areas=np.array([300, 100]), scores=np.array([1.0, 1.0]))
    np.testing.assert_allclose(g[[3, 4]], [0.75, 0.25])
    g = group_distribution(p, areas=np.array([100, 100]), scores=np.array([0.2, 0.6]))
    np.testing.assert_allclose(g[[3, 4]], [0.25, 0.75])
    assert group_distribution(np.zeros((0, 7)), np.zeros(0), np.zeros(0)) is None
    v = valence(np.array([0.1, 0.1, 0.1, 0.3, 0.1, 0.1, 0.2]))
    assert v == pytest.approx({"positive": 0.4, "negative": 0.4, "neutral": 0.2})
    assert label_runs([(0, 3), (3, 6), (6, 9), (9, 10)], ["happy", "happy", None, "sad"]) == \
        [(0, 6, "happy"), (9, 10, "sad")]


def test_mfcc_features_shape_and_label_mapping():
    from multimodal.audio import mfcc_features, rms_dbfs, to_project_labels
    from multimodal.config import AudioFeatureConfig
    from tests.media import speech_like
    y = speech_like(3.0)
    f = mfcc_features(y)
    assert f.shape == (301, 120) and f.dtype == np.float32 and np.isfinite(f).all()
    assert mfcc_features(np.zeros(100, np.float32), AudioFeatureConfig(deltas=False)).shape[1] == 40
    assert rms_dbfs(np.zeros(10)) == -100.0 and -30 < rms_dbfs(y) < 0
    labels = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
    p = to_project_labels(np.array([[0.1, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]), labels)
    assert p.shape == (1, 7) and p[0, EMOTIONS.index("neutral")] == pytest.approx(0.4)


def test_pitch_contour_follows_a_glide_and_fills_pauses():
    from dataclasses import replace

    from multimodal.audio import mfcc_features, pitch_contour
    from multimodal.config import AudioFeatureConfig
    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr
    hz = 220 * 2 ** (t / 1.5)  # one octave up, 220 to 440 Hz
    tone = 0.3 * np.sin(2 * np.pi * np.cumsum(hz) / sr)
    y = np.concatenate([np.zeros(4000), tone, np.zeros(4000)]).astype(np.float32)
    p = pitch_contour(y)
    assert p.shape == (201, 3) and np.isfinite(p).all()
    sounding = slice(35, 160)  # frames well inside the tone
    expected = np.log2(220 * 2 ** ((np.arange(201)[sounding] * 160 - 4000) / sr / 1.5) / 200)
    np.testing.assert_allclose(p[sounding, 0], expected, atol=0.03)
    assert (np.diff(p[sounding, 1]) > 0).mean() > 0.9 and (p[sounding, 2] > 0).all()
    # pauses take the median pitch: octaves re 200 Hz as the tone's middle, melody zero
    np.testing.assert_allclose(p[:10, 1], 0.0)
    np.testing.assert_allclose(p[-10:, 1], 0.0)
    assert p[0, 0] == pytest.approx(np.log2(np.sqrt(220 * 440) / 200), abs=0.05)
    with_pitch = mfcc_features(y, replace(AudioFeatureConfig(), pitch=True))
    assert with_pitch.shape == (201, 123)
    np.testing.assert_array_equal(with_pitch[:, :120], mfcc_features(y))
    np.testing.assert_allclose(with_pitch[:, 120:], p, atol=1e-4)  # p of the level-normalised clip


def test_log_mel_channels_are_the_spectrum_the_mfccs_come_from():
    from dataclasses import replace

    import librosa

    from multimodal.audio import mfcc_features, normalize_level
    from multimodal.config import AudioFeatureConfig
    y = (0.1 * np.random.default_rng(0).normal(size=16000)).astype(np.float32)
    cfg = replace(AudioFeatureConfig(), log_mel=True)
    f = mfcc_features(y, cfg)
    assert f.shape == (101, 120 + 64)
    np.testing.assert_array_equal(f[:, :120], mfcc_features(y))
    level = normalize_level(y, -20.0)
    # the MFCCs are librosa's from the waveform, as models trained before this option were given
    np.testing.assert_allclose(f[:, :40], librosa.feature.mfcc(y=level, sr=16000, n_mfcc=40, n_fft=512,
                                                               hop_length=160, n_mels=64).T, rtol=1e-5, atol=1e-4)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=level, sr=16000, n_fft=512, hop_length=160, n_mels=64))
    np.testing.assert_allclose(f[:, 120:], mel.T, rtol=1e-5, atol=1e-4)


def test_audio_loader_takes_any_rate_and_channels(tmp_path):
    import soundfile as sf

    from multimodal.audio import load_audio
    from tests.media import speech_like
    y = speech_like(1.0, 48000)
    sf.write(tmp_path / "s.wav", np.stack([y, y], 1), 48000)
    sf.write(tmp_path / "m.flac", y, 48000)
    for name in ("s.wav", "m.flac"):
        out = load_audio(tmp_path / name, 16000)
        assert out.ndim == 1 and out.size == pytest.approx(16000, abs=5)


def test_model_card_checks(tiny_models, tmp_path):
    import shutil

    from multimodal.errors import ModelError
    from multimodal.models import read_card
    from multimodal.visual import VisualModel
    vm = VisualModel(tiny_models["visual"])
    p = vm.predict_proba(np.random.default_rng(0).integers(0, 255, (5, 48, 48)).astype(np.uint8))
    assert p.shape == (5, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(ModelError, match="expected 'audio'"):
        read_card(tiny_models["visual"], "audio")
    copy = tmp_path / "v.keras"
    shutil.copy(tiny_models["visual"], copy)
    with pytest.raises(ModelError, match="card"):
        read_card(copy, "visual")
    card = json.loads(card_path(tiny_models["visual"]).read_text())
    card["sha256"] = "0" * 64
    card_path(copy).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="checksum mismatch"):
        read_card(copy, "visual")


def test_unsafe_model_is_refused(tmp_path):
    """A model with a Lambda layer (arbitrary code) must not load."""
    import keras

    from multimodal.errors import ModelError
    from multimodal.models import load_keras_model, read_card, write_card
    inp = keras.Input((48, 48, 1))
    out = keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inp))
    path = tmp_path / "evil.keras"
    keras.Model(inp, keras.layers.Dense(7, activation="softmax")(out)).save(path)
    write_card(path, "visual", EMOTIONS)
    with pytest.raises(ModelError, match="cannot load"):
        load_keras_model(read_card(path, "visual"))


def test_shipped_models_match_their_cards():
    from multimodal.config import DEFAULT_AUDIO_MODEL, DEFAULT_VISUAL_MODEL
    from multimodal.models import read_card
    for path, kind in ((DEFAULT_VISUAL_MODEL, "visual"), (DEFAULT_AUDIO_MODEL, "audio")):
        card = read_card(path, kind)
        assert card.data["metrics"], f"{path.name}: card has no metrics"
        assert path.stat().st_size < 10_000_000


def test_mtcnn_detector_finds_the_fixture_face():
    pytest.importorskip("mtcnn")
    from multimodal.faces import MTCNNDetector
    from tests.media import face_image
    faces = MTCNNDetector().detect(face_image())
    assert len(faces) == 1 and faces[0].score > 0.9 and faces[0].w > 40


def test_streamed_webm_without_duration_in_header(face_video, tmp_path):
    import subprocess

    from multimodal.decode import ffmpeg_exe, probe
    webm = tmp_path / "live.webm"
    with open(webm, "wb") as fh:  # written to a pipe, the muxer cannot go back to store the duration
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(face_video), "-c:v", "libvpx", "-deadline", "realtime",
                        "-c:a", "libopus", "-f", "webm", "-"], stdout=fh, check=True)
    header = subprocess.run([ffmpeg_exe(), "-i", str(webm)], capture_output=True, text=True).stderr
    assert "Duration: N/A" in header
    info = probe(webm)
    assert info.duration == pytest.approx(7.0, abs=0.2) and info.has_audio and info.has_video


def test_sampled_frames_keep_their_times_when_unreferenced_frames_are_skipped(tmp_path):
    # H.264 with B-frames at 30 fps sampled at 2 fps: the decoder skips frames
    # nothing refers to, and each sample must still come from within two frames of its time.
    import imageio_ffmpeg

    from multimodal.decode import SKIPPABLE_CODECS, iter_frames, probe
    path = tmp_path / "ramp.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (64, 64), fps=30, codec="libx264", macro_block_size=1,
                                         output_params=["-bf", "3"], ffmpeg_log_level="error")
    writer.send(None)
    for i in range(120):
        writer.send(np.full((64, 64, 3), 10 + 2 * i, np.uint8))
    writer.close()
    info = probe(path)
    assert info.video_codec in SKIPPABLE_CODECS
    frames = list(iter_frames(info, fps=2.0))
    assert len(frames) == 8
    for t, f in frames:
        assert abs((f.mean() - 10) / 2 - t * 30) <= 2
