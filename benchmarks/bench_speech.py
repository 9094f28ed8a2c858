"""Speech presence and the audio model, measured the way ``analyze`` uses them.

    python benchmarks/bench_speech.py [--data ../shared/data] [--model models/audio_default.tflite]
                                      [--cv RUN_DIR ...] [--limit N] [--only evidence non-speech cost accuracy]

Prints, unless ``--only`` names some of them:

1. Recordings with no audio evidence, per corpus (RAVDESS, TESS, EmoDB),
   at their own level, scaled to -60 and -10 dBFS, and with white noise at
   10 dB SNR. A recording is cut into segments as ``analyze`` cuts a file; it
   gives evidence when any segment holds at least ``min_speech`` seconds of
   speech.
2. Seconds of "speech" heard in generated non-speech: digital silence,
   room tone, mains hum, fan noise, white noise, synthetic music and drums,
   a door slam, at several levels (3 s each).
3. Cost per minute of speech: the speech detector, then the model's
   features and network as ``analyze`` runs them (one batch of 3 s segments;
   median of 5 runs), and the network alone.
4. Accuracy through the ``analyze`` path (:func:`training.evaluate.evaluate_recordings`)
   on the speakers the model was not trained on, as its card names them, at
   their own level and scaled to -60 and -10 dBFS, and the cross-validation
   tables of the given training runs (``cv.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import signal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SR = 16000
TABLES = ("evidence", "non-speech", "cost", "accuracy")


def set_rms(y: np.ndarray, dbfs: float) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(y, dtype=np.float64))) + 1e-12
    return (y * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def non_speech(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """3 s of each kind of sound that is not speech, at the levels named."""
    t = np.arange(3 * SR) / SR
    white = rng.standard_normal(t.size)
    pink = signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                          [1, -2.494956002, 2.017265875, -0.522189400], rng.standard_normal(t.size))
    fan = signal.lfilter(*signal.butter(4, 300 / (SR / 2)), rng.standard_normal(t.size)) \
        + 0.3 * np.sin(2 * np.pi * 120 * t)

    def hum(f0):
        return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))

    melody = np.zeros_like(t)  # plucked notes, two a second
    for i, f in enumerate((261.6, 329.6, 392.0, 523.3, 392.0, 329.6)):
        start = int(i * 0.5 * SR)
        n = min(SR, t.size - start)
        tone = sum(np.sin(2 * np.pi * f * k * t[:n]) / k ** 1.5 for k in range(1, 6)) * np.exp(-4 * t[:n])
        melody[start:start + n] += tone
    chord = sum(np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t) for f in (220, 277.2, 329.6)) \
        * (1 + 0.3 * np.sin(2 * np.pi * 5 * t))
    drums = np.zeros_like(t)  # a noise burst (kick and snare, roughly) every half second
    for start in range(0, t.size - 2400, SR // 2):
        drums[start:start + 2400] += rng.standard_normal(2400) * np.exp(-np.arange(2400) / 500)
    drums += 1e-3 * rng.standard_normal(t.size)
    door = np.zeros_like(t)  # one slam and its ring, in a quiet room
    door[SR:SR + 8000] = rng.standard_normal(8000) * np.exp(-np.arange(8000) / 2000)
    door += 1e-3 * rng.standard_normal(t.size)
    out = {"digital silence": np.zeros(t.size, np.float32), "dither -90 dBFS": set_rms(white, -90)}
    for level in (-60, -45):
        out[f"room tone (pink noise) {level} dBFS"] = set_rms(pink, level)
    for f0, level in ((50, -30), (60, -20)):
        out[f"mains hum {f0} Hz {level} dBFS"] = set_rms(hum(f0), level)
    for level in (-35, -20):
        out[f"fan noise {level} dBFS"] = set_rms(fan, level)
    for level in (-60, -30, -10):
        out[f"white noise {level} dBFS"] = set_rms(white, level)
    out["synthetic melody -20 dBFS"] = set_rms(melody, -20)
    out["synthetic chord -20 dBFS"] = set_rms(chord, -20)
    out["synthetic drum loop -20 dBFS"] = set_rms(drums, -20)
    out["door slam in a quiet room"] = set_rms(door, -30)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "audio_default.tflite")
    p.add_argument("--cv", type=Path, nargs="*", default=[], help="training runs whose cv.json to print")
    p.add_argument("--limit", type=int, default=None, help="every k-th file, to have about N per corpus")
    p.add_argument("--only", nargs="+", choices=TABLES, default=TABLES, help="the tables to print")
    args = p.parse_args()

    from multimodal.aggregate import segment_bounds
    from multimodal.audio import AudioModel, load_audio, mfcc_features
    from multimodal.config import AnalyzeConfig
    from multimodal.models import read_card
    from multimodal.speech import SpeechDetector
    from training.speech_datasets import load_emodb, load_ravdess, load_tess
    cfg = AnalyzeConfig()
    speech = SpeechDetector()
    rng = np.random.default_rng(0)

    def evidence(y: np.ndarray) -> bool:
        bounds = segment_bounds(y.size / SR, cfg.segment)
        return any(speech.speech_seconds(y[int(a * SR):int(b * SR)]) >= cfg.min_speech for a, b in bounds)

    corpora = {"RAVDESS": load_ravdess(args.data / "ravdess_speech"), "TESS": load_tess(args.data / "tess"),
               "EmoDB": load_emodb(args.data / "emodb")}
    conditions = {"own level": lambda y: y, "-60 dBFS": lambda y: set_rms(y, -60),
                  "-10 dBFS": lambda y: set_rms(y, -10),
                  "white noise, 10 dB SNR": lambda y: (y + rng.standard_normal(y.size).astype(np.float32)
                                                       * np.sqrt(np.mean(y ** 2) / 10)).astype(np.float32)}
    if "evidence" in args.only:
        print(f"## Recordings with no audio evidence ({cfg.segment:g} s segments, >= {cfg.min_speech:g} s of speech, "
              f"frame threshold {speech.threshold})\n")
        print("| corpus | recordings | " + " | ".join(conditions) + " |")
        print("|---|---|" + "---|" * len(conditions))
        for name, items in corpora.items():
            if not items:
                continue
            if args.limit:
                items = items[::max(1, len(items) // args.limit)]
            missed = {c: [] for c in conditions}
            for u in items:
                y = load_audio(u.path, SR)
                for c, f in conditions.items():
                    if not evidence(f(y)):
                        missed[c].append(u.path.name)
            print(f"| {name} | {len(items)} | " + " | ".join(str(len(m)) for m in missed.values()) + " |")
            for c, m in missed.items():
                if m:
                    print(f"  {name}, {c}: {', '.join(m[:8])}{' …' if len(m) > 8 else ''}", file=sys.stderr)

    if "non-speech" in args.only:
        print("\n## Speech heard in sounds that are not speech (3 s each)\n")
        print("| sound | seconds of speech | audio evidence |")
        print("|---|---|---|")
        for name, y in non_speech(rng).items():
            s = speech.speech_seconds(y)
            print(f"| {name} | {s:.2f} | {'yes' if s >= cfg.min_speech else 'no'} |")

    if "cost" in args.only:
        minute = np.concatenate([load_audio(u.path, SR) for u in corpora["RAVDESS"][:20]])[:60 * SR]
        segments = [minute[int(a * SR):int(b * SR)] for a, b in segment_bounds(60.0, cfg.segment)]
        model = AudioModel(args.model)
        feats = np.stack([mfcc_features(y, model.features) for y in segments])
        stages = {"speech detection": lambda: [speech.speech_seconds(y) for y in segments],
                  f"{args.model.name}: features and network": lambda: model.predict_proba(segments),
                  f"{args.model.name}: network alone": lambda: model.model.predict_on_batch(feats)}
        print(f"\n## Cost per minute of speech ({len(segments)} segments of {cfg.segment:g} s, median of 5 runs)\n")
        print("| stage | ms per minute of audio |")
        print("|---|---|")
        for name, stage in stages.items():
            times = []
            for _ in range(5):
                started = time.perf_counter()
                stage()
                times.append(time.perf_counter() - started)
            print(f"| {name} | {np.median(times) * 1000:.0f} |")

    if "accuracy" in args.only:
        from training.evaluate import evaluate_recordings
        card = read_card(args.model, "audio").data
        training = card.get("training", {})
        trained = set(training.get("datasets") or ["ravdess"])
        fold = training.get("test_fold", 0)
        held_out = {"RAVDESS": [u for u in corpora["RAVDESS"] if u.fold == fold],
                    "TESS": corpora["TESS"] if "tess" not in trained else [],
                    "EmoDB": [u for u in corpora["EmoDB"] if "emodb" not in trained or u.fold == fold]}
        items = [u for group in held_out.values() for u in group]
        print(f"\n## {args.model.name} through the analyze path, on speakers it was not trained on\n")
        print("| corpus | level | held-out speakers | recordings | no evidence | 8-class accuracy | 7-class accuracy "
              "| UAR |")
        print("|---|---|---|---|---|---|---|---|")
        for level in (None, -60.0, -10.0):
            with tempfile.TemporaryDirectory() as tmp:
                results = evaluate_recordings(args.model, items, tmp, "benchmark", level_dbfs=level)
            for name, group in held_out.items():
                r = results.get(name.lower())
                shown = "own" if level is None else f"{level:g} dBFS"
                if r is None:
                    print(f"| {name} | {shown} | none (trained on all its speakers) | | | | | |")
                    continue
                speakers = len({u.speaker for u in group})
                print(f"| {name} | {shown} | {speakers} | {r['n']} | {r['no_evidence']} | {r['accuracy_8class']:.3f} | "
                      f"{r['accuracy_7class']:.3f} | {r['uar']:.3f} |")

    for run in args.cv:
        cv = json.loads((run / "cv.json").read_text())
        print(f"\n## Cross-validation: {run}\n")
        print("| metric | mean | std | per fold |")
        print("|---|---|---|---|")
        for k, v in cv.items():
            print(f"| {k} | {v['mean']:.4f} | {v['std']:.4f} | {', '.join(f'{x:.3f}' for x in v['per_fold'])} |")


if __name__ == "__main__":
    main()
