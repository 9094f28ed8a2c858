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


def clip_label(model: Path, clip: Path) -> tuple[str, np.ndarray]:
    """The label ``analyze`` gives a whole clip from its faces: the argmax of the mean segment distribution."""
    result = analyze(clip, visual_model=model, quiet=True, force=True)
    seg = result.segments
    dist = seg[[f"visual_{e}" for e in EMOTIONS]].to_numpy(dtype=float)
    dist = dist[~np.isnan(dist).any(axis=1)]
    mean = dist.mean(axis=0) if len(dist) else np.full(len(EMOTIONS), np.nan)
    return (EMOTIONS[int(np.nanargmax(mean))] if len(dist) else "no face"), mean


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--model", action="append", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict = {}
    for model in args.model:
        if not card_path(model).exists():
            write_card(model, "visual", EMOTIONS, input={"shape": [48, 48, 1]})
        per_folder, per_class, called_neutral, clips = {}, defaultdict(lambda: [0, 0]), [0, 0], []
        for folder in args.folders:
            with open(folder / "manifest.csv", newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r["label"] in EMOTIONS]
            right = 0
            for r in rows:
                got, _ = clip_label(model, folder / r["file"])
                right += got == r["label"]
                per_class[r["label"]][0] += got == r["label"]
                per_class[r["label"]][1] += 1
                if r["label"] != "neutral":
                    called_neutral[0] += got == "neutral"
                    called_neutral[1] += 1
                clips.append({"folder": folder.name, "file": r["file"], "label": r["label"], "predicted": got})
            per_folder[folder.name] = [right, len(rows)]
        results[str(model)] = {"per_folder": per_folder, "per_class": dict(per_class),
                               "called_neutral": called_neutral, "clips": clips}
        print(f"{model}: " + ", ".join(f"{k} {a} of {n}" for k, (a, n) in per_folder.items())
              + "; per class " + ", ".join(f"{k} {a}/{n}" for k, (a, n) in sorted(per_class.items()))
              + f"; non-neutral clips called neutral {called_neutral[0]} of {called_neutral[1]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
