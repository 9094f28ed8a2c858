"""Throughput of ``multimodal analyze`` on a batch: serial, worker processes, Ray.

    python benchmarks/bench_batch.py [--clips 10] [--seconds 60] [--jobs 1 2] [--ray]

Generates ``--clips`` 720p clips with speech (as bench_analyze.py does; each
its own file, so nothing is cached between them), analyses the folder once
per setting and prints video seconds per wall-clock second, the speed-up over
``--jobs 1``, and the peak resident memory of the whole process tree (driver,
workers, ffmpeg) divided by the number of workers. Then a paper estimate for
10,000 hours of video on N such machines, from the measured throughput.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_analyze import loop_clip, make_base_clip, timed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=10)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ray", action="store_true", help="also Ray started on this machine, with the largest --jobs")
    p.add_argument("--keep", type=Path, help="keep the clips and results here")
    args = p.parse_args()
    import os

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    base = work / "base.mp4"
    if not base.exists():
        make_base_clip(base)
    for i in range(args.clips):
        clip = clips / f"clip{i:02d}.mp4"
        if not clip.exists():
            loop_clip(base, clip, args.seconds)
    video = args.clips * args.seconds
    settings = [(f"--jobs {j}", ["--jobs", str(j)], j) for j in args.jobs]
    if args.ray:
        j = max(args.jobs)
        settings.append((f"--engine ray --jobs {j} (Ray on this machine)", ["--engine", "ray", "--jobs", str(j)], j))
    rows = []
    for name, extra, workers in settings:
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        wall, peak = timed([sys.executable, "-m", "multimodal", "analyze", str(clips), "-o", str(out), "--quiet",
                            "--no-pictures", *extra])
        rows.append((name, wall, video / wall, peak / workers))
    serial = next((r[2] for r in rows if r[0] == "--jobs 1"), None)
    print(f"{args.clips} clips of {args.seconds} s, 1280x720 30 fps H.264 with speech; {os.cpu_count()} CPU cores; "
          "default analyze settings, no pictures")
    print("| setting | wall s | video s per wall s | vs --jobs 1 | peak RSS per worker MB |")
    print("|---|---|---|---|---|")
    for name, wall, rate, per_worker in rows:
        speedup = f"{rate / serial:.2f}x" if serial else "–"
        print(f"| {name} | {wall:.1f} | {rate:.2f} | {speedup} | {per_worker:.0f} |")
    best = max(r[2] for r in rows)
    cores = os.cpu_count() or 1
    hours = 10_000 * 3600
    print(f"\nPaper estimate, 10,000 hours of video at {best / cores:.2f} video s per wall s per core "
          f"(the best setting above on {cores} cores):")
    for machines, machine_cores in ((1, cores), (10, 16), (100, 16)):
        seconds = hours / (best / cores * machine_cores * machines)
        took = f"{seconds / 86400:.1f} days" if seconds >= 2 * 86400 else f"{seconds / 3600:.1f} hours"
        print(f"- {machines} machine{'s' * (machines > 1)} of {machine_cores} cores: {took}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
