"""Visual models on labelled talking-face clips, as ``analyze`` labels a clip.

Each clip (``manifest.csv`` with ``file`` and ``label``; labels outside the
seven emotions, such as MEAD's contempt, are skipped) is analysed with each
model and labelled by the mean of its segments' visual distributions. Prints
per model: clips right per folder, per class, and the share of non-neutral
clips called neutral.

    python benchmarks/bench_talking_faces.py ../shared/data/video/mead ../shared/data/video/styletalk \
        --model models/visual_default.keras --model runs/x/model.keras [--json out.json]

A model without a card gets one written beside it (its checksum), since
``analyze`` loads only checked models.
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from multimodal.api import analyze
from multimodal.config import EMOTIONS
from multimodal.models import card_path, write_card


def pooled(frames: np.ndarray, how: str) -> np.ndarray:
    """One distribution from a clip's per-frame face distributions (n, 7).

    ``mean``: every frame alike; ``top25``: the mean of the quarter of frames
    least like neutral (a brief expression is not drowned by talking and
    resting frames); ``max``: each class's peak, renormalised; ``baseline``:
    the mean after removing the clip's own typical frame (its median), so
    what stays is what departs from the person's resting face.
    """
    if how == "mean":
        return frames.mean(axis=0)
    if how == "top25":
        k = max(1, len(frames) // 4)
        keep = np.argsort(frames[:, EMOTIONS.index("neutral")])[:k]
        return frames[keep].mean(axis=0)
    if how == "max":
        peak = frames.max(axis=0)
        return peak / peak.sum()
    if how == "baseline":
        shifted = np.clip(frames.mean(axis=0) - np.median(frames, axis=0), 0, None) + 1e-6
        return shifted / shifted.sum()
    raise ValueError(how)


POOLINGS = ("segments", "mean", "top25", "max", "baseline")


def clip_labels(model: Path, clip: Path) -> dict[str, str]:
    """The label of a whole clip under each pooling: ``segments`` is what ``analyze`` gives (the
    argmax of the mean segment distribution); the others pool the faces' frames (see :func:`pooled`)."""
    result = analyze(clip, visual_model=model, quiet=True, force=True)
    seg = result.segments
    dist = seg[[f"visual_{e}" for e in EMOTIONS]].to_numpy(dtype=float)
    dist = dist[~np.isnan(dist).any(axis=1)]
    if not len(dist):
        return dict.fromkeys(POOLINGS, "no face")
    labels = {"segments": EMOTIONS[int(np.argmax(dist.mean(axis=0)))]}
    frames = result.faces[[f"p_{e}" for e in EMOTIONS]].to_numpy(dtype=float)
    for how in POOLINGS[1:]:
        labels[how] = EMOTIONS[int(np.argmax(pooled(frames, how)))]
    return labels


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--model", action="append", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pooling", choices=POOLINGS, nargs="+", default=["segments"],
                        help="how a clip's frames become one label (default: as analyze)")
    args = parser.parse_args(argv)
    results: dict = {}
    for model in args.model:
        if not card_path(model).exists():
            write_card(model, "visual", EMOTIONS, input={"shape": [48, 48, 1]})
        clips = []
        for folder in args.folders:
            with open(folder / "manifest.csv", newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r["label"] in EMOTIONS]
            for r in rows:
                clips.append({"folder": folder.name, "file": r["file"], "label": r["label"],
                              "predicted": clip_labels(model, folder / r["file"])})
        for how in args.pooling:
            per_folder: dict = defaultdict(lambda: [0, 0])
            per_class: dict = defaultdict(lambda: [0, 0])
            called_neutral = [0, 0]
            for c in clips:
                got = c["predicted"][how]
                for counts in (per_folder[c["folder"]], per_class[c["label"]]):
                    counts[0] += got == c["label"]
                    counts[1] += 1
                if c["label"] != "neutral":
                    called_neutral[0] += got == "neutral"
                    called_neutral[1] += 1
            results[f"{model} ({how})"] = {"per_folder": dict(per_folder), "per_class": dict(per_class),
                                           "called_neutral": called_neutral, "clips": clips}
            print(f"{model} ({how}): " + ", ".join(f"{k} {a} of {n}" for k, (a, n) in per_folder.items())
                  + "; per class " + ", ".join(f"{k} {a}/{n}" for k, (a, n) in sorted(per_class.items()))
                  + f"; non-neutral clips called neutral {called_neutral[0]} of {called_neutral[1]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
