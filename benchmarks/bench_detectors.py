"""Face detectors compared: speed, recall, framing and what it does to classification.

    python benchmarks/bench_detectors.py --videos VIDEO [VIDEO ...] [--fps 2] [--frames 40]
    python benchmarks/bench_detectors.py --fer ../shared/data/fer2013 [--split PrivateTest] [--frames 150]
    python benchmarks/bench_detectors.py --portrait [--frames 60]

``--videos``: frames are sampled and scaled exactly as ``analyze`` does (at
most 640 px wide); prints milliseconds per frame and faces per frame.

``--fer``: FER2013 faces of a split are pasted, at known places and sizes
(40-300 px on a 1280x720 frame), onto textured 720p frames, which are then
scaled to the detection width as ``analyze`` does. Prints per detector:
milliseconds per frame, recall per face size, false detections per frame,
how far its boxes sit from FER2013's framing (the fit behind each detector's
``box_scale`` / ``box_shift``; fit on PublicTest), and the shipped visual
model's accuracy on the faces as found and cropped, against its accuracy on
the original crops. FER2013's crops are tight (no hair, ears or neck),
which detectors trained on whole scenes find harder than real faces;
``--portrait`` pastes a head-and-shoulders picture instead (recall only).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = (40, 60, 90, 135, 200, 300)  # face side, pixels on the 1280x720 frame


def detector_for(name: str, min_size: int):
    """The detector behind ``name`` and whether it looks for small faces.

    "NAME:large" runs a detector without its search for small faces, as
    analyze does between those searches (``small_face_fps``).
    """
    from multimodal.faces import make_detector
    return make_detector(name.split(":")[0], min_size=min_size), not name.endswith(":large")


def bench_videos(videos: list[Path], detectors: list[str], fps: float, frames: int) -> None:
    from multimodal.decode import iter_frames, probe
    from multimodal.faces import to_gray
    print("| video | detector | ms per frame | faces per frame |")
    print("|---|---|---|---|")
    for name in detectors:
        det, look_small = detector_for(name, min_size=32)  # analyze's minimum
        color = getattr(det, "needs_color", False)
        for video in videos:
            rgb = [f for _, f in zip(range(frames), (fr for _, fr in iter_frames(probe(video), fps, color=True)))]
            inputs = rgb if color else [to_gray(f) for f in rgb]
            det.detect(inputs[0])  # warm-up (MTCNN builds its graphs)
            start = time.perf_counter()
            found = sum(len(det.detect(f, small=look_small)) for f in inputs)
            ms = (time.perf_counter() - start) / len(inputs) * 1000
            print(f"| {video.name} | {name} | {ms:.1f} | {found / len(inputs):.2f} |", flush=True)


def pasted_frames(images: np.ndarray, n_frames: int, seed: int = 0):
    """Yield (rgb 1280x720 frame, [(index, x, y, side)]) with up to 4 faces, sizes cycling through SIZES."""
    import cv2
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))  # the files are sorted by class
    k = 0
    for _ in range(n_frames):
        bg = rng.integers(40, 200, (18 + rng.integers(0, 54), 32 + rng.integers(0, 96), 3)).astype(np.uint8)
        frame = cv2.resize(bg, (1280, 720), interpolation=cv2.INTER_CUBIC)
        placed = []
        for _ in range(4):
            side = SIZES[k % len(SIZES)]
            for _ in range(20):  # find a free place
                x, y = int(rng.integers(0, 1280 - side)), int(rng.integers(0, 720 - side))
                if all(x + side + 10 < px or px + ps + 10 < x or y + side + 10 < py or py + ps + 10 < y
                       for _, px, py, ps in placed):
                    break
            else:
                continue
            idx = int(order[k % len(images)])
            face = cv2.resize(images[idx], (side, side), interpolation=cv2.INTER_CUBIC)
            frame[y:y + side, x:x + side] = face if face.ndim == 3 else face[..., None]
            placed.append((idx, x, y, side))
            k += 1
        yield frame, placed


def bench_pasted(images: np.ndarray, labels: np.ndarray | None, title: str, detectors: list[str], n_frames: int,
                 detect_width: int) -> None:
    """Recall, false detections and speed on pasted faces; framing and accuracy when ``labels`` are given."""
    import cv2

    from multimodal.config import DEFAULT_VISUAL_MODEL
    from multimodal.faces import crop_faces, to_gray
    from multimodal.visual import VisualModel

    frames = list(pasted_frames(images, n_frames))
    scale = detect_width / 1280
    small = [cv2.resize(f, (detect_width, round(720 * scale)), interpolation=cv2.INTER_AREA) for f, _ in frames]
    pasted = [i for _, placed in frames for i, *_ in placed]
    model = VisualModel(DEFAULT_VISUAL_MODEL) if labels is not None else None
    print(f"{title}: {len(pasted)} faces on {n_frames} frames, detection at {detect_width} px wide")
    header = ("| detector | ms/frame | " + " | ".join(f"recall {s} px" for s in SIZES) + " | false/frame |"
              + (" side ratio | centre shift | acc. of found | acc. of all |" if model else ""))
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in detectors:
        det, look_small = detector_for(name, min_size=16)  # report recall below analyze's minimum too
        color = getattr(det, "needs_color", False)
        inputs = small if color else [to_gray(f) for f in small]
        det.detect(inputs[0])  # warm-up
        start = time.perf_counter()
        found = [det.detect(f, small=look_small) for f in inputs]
        ms = (time.perf_counter() - start) / len(inputs) * 1000
        hits = {s: [0, 0] for s in SIZES}
        false, ratios, shifts, crops, truth = 0, [], [], [], []
        for (_, placed), faces, frame in zip(frames, found, small):
            gray = to_gray(frame)
            used = set()
            for idx, x, y, side in placed:
                cx, cy, s = (x + side / 2) * scale, (y + side / 2) * scale, side * scale
                match = [j for j, f in enumerate(faces) if j not in used and f.x <= cx <= f.x + f.w
                         and f.y <= cy <= f.y + f.h and 0.3 < f.w / s < 2.5]
                hits[side][1] += 1
                if not match:
                    continue
                f = faces[max(match, key=lambda j: faces[j].score)]
                used.add(faces.index(f))
                hits[side][0] += 1
                if model:
                    # crop_faces widens a box by 10% a side, so FER's framing is a box of side / 1.2.
                    ratios.append(max(f.w, f.h) * 1.2 / s)
                    shifts.append((cy - (f.y + f.h / 2)) / max(f.w, f.h))
                    crops.append(crop_faces(gray, [f], 48)[0])
                    truth.append(labels[idx])
            false += len(faces) - len(used)
        recall = " | ".join(f"{hits[s][0] / max(1, hits[s][1]):.2f}" for s in SIZES)
        row = f"| {name} | {ms:.1f} | {recall} | {false / len(frames):.2f} |"
        if model:
            correct = int(np.sum(model.predict_proba(np.array(crops), 256).argmax(1) == np.array(truth))) if crops else 0
            row += (f" {np.median(ratios):.3f} | {np.median(shifts):+.3f} | {correct / max(1, len(crops)):.3f} |"
                    f" {correct / len(pasted):.3f} |")
        print(row, flush=True)
    if model:
        original = np.mean(model.predict_proba(images[pasted], 256).argmax(1) == labels[pasted])
        print(f"visual model on all pasted faces' original 48x48 crops: {original:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", nargs="+", type=Path, default=[])
    p.add_argument("--fer", type=Path, help="FER2013 (fer2013.csv or the folder layout)")
    p.add_argument("--split", default="PrivateTest")
    p.add_argument("--portrait", action="store_true", help="paste data/fixtures/face.png instead")
    p.add_argument("--detectors", nargs="+", default=["blazeface", "blazeface:large", "haar", "mtcnn"])
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--detect-width", type=int, default=640)
    args = p.parse_args()
    if args.videos:
        bench_videos(args.videos, args.detectors, args.fps, args.frames)
    if args.fer:
        from training.fer2013 import load_fer2013
        images, labels = load_fer2013(args.fer, args.split)
        bench_pasted(images, labels, f"FER2013 {args.split}", args.detectors, args.frames, args.detect_width)
    if args.portrait:
        from tests.media import face_image
        bench_pasted(face_image()[None], None, "the fixture portrait (head and shoulders; sizes are the picture's side)",
                     args.detectors, args.frames, args.detect_width)
    if not (args.videos or args.fer or args.portrait):
        p.error("give --videos, --fer or --portrait")


if __name__ == "__main__":
    main()
