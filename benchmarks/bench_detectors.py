"""Face detectors compared: time per frame and faces found.

    python benchmarks/bench_detectors.py VIDEO [VIDEO ...] [--fps 2] [--frames 40]

Frames are sampled and scaled exactly as ``analyze`` does (at most 640 px
wide). Prints, per detector and video, milliseconds per frame and the mean
number of faces per frame.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("videos", nargs="+", type=Path)
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--frames", type=int, default=40)
    args = p.parse_args()
    from multimodal.decode import iter_frames, probe
    from multimodal.faces import make_detector, to_gray
    print("| video | detector | ms per frame | faces per frame |")
    print("|---|---|---|---|")
    for name in ("haar", "mtcnn"):
        det = make_detector(name)
        color = getattr(det, "needs_color", False)
        for video in args.videos:
            frames = [f for _, f in zip(range(args.frames), (fr for _, fr in iter_frames(probe(video), args.fps, color=True)))]
            inputs = frames if color else [to_gray(f) for f in frames]
            det.detect(inputs[0])  # warm-up (MTCNN builds its graphs)
            start = time.perf_counter()
            found = sum(len(det.detect(f)) for f in inputs)
            ms = (time.perf_counter() - start) / len(inputs) * 1000
            print(f"| {video.name} | {name} | {ms:.1f} | {found / len(inputs):.2f} |", flush=True)


if __name__ == "__main__":
    main()
