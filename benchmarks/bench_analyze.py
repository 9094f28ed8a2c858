"""Speed and memory of ``multimodal analyze`` on generated 720p clips with speech.

    python benchmarks/bench_analyze.py [--minutes 1 10] [--repeat 3] [--keep DIR]

For each length it prints wall time, real-time factor (clip seconds per
wall-clock second), peak resident memory of the analysis process and its
ffmpeg children, and two floors: ffmpeg decoding every frame of the clip,
and the decode step exactly as ``analyze`` runs it (sampled, scaled, RGB).
Each figure is the median of ``--repeat`` runs, as timings on a shared
machine vary by 10-20% from run to run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_base_clip(path: Path, seconds: int = 10) -> Path:
    """10 s of 1280x720 at 30 fps: two faces drifting over a textured background, with speech."""
    import cv2
    import imageio_ffmpeg
    import soundfile as sf

    from tests.media import face_image, speech_like
    wav = path.with_suffix(".wav")
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav),
                        "This is a benchmark of the analysis. " * 4], check=True, capture_output=True)
        y, sr = sf.read(wav, dtype="float32")
        y = np.resize(y, int(seconds * sr))
        sf.write(wav, y, sr)
    else:
        sf.write(wav, speech_like(seconds, 16000), 16000)
    face = cv2.resize(face_image(), (240, 250))
    rng = np.random.default_rng(0)
    bg = cv2.resize(rng.integers(60, 160, (72, 128, 3)).astype(np.uint8), (1280, 720))
    writer = imageio_ffmpeg.write_frames(str(path), (1280, 720), fps=30, codec="libx264", audio_path=str(wav),
                                         audio_codec="aac", ffmpeg_log_level="error",
                                         output_params=["-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"])
    writer.send(None)
    for i in range(seconds * 30):
        frame = bg.copy()
        for k, x0 in enumerate((200, 800)):
            x = int(x0 + 40 * np.sin(i / 30 + k))
            frame[235:485, x:x + 240] = face
        writer.send(frame)
    writer.close()
    wav.unlink()
    return path


def loop_clip(base: Path, out: Path, seconds: int) -> Path:
    from multimodal.decode import ffmpeg_exe
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(base), "-t", str(seconds),
                    "-c", "copy", str(out)], check=True)
    return out


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, process tree summed) of a command."""
    import psutil
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, peak / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    p.add_argument("--keep", type=Path, help="keep the clips and results here")
    p.add_argument("--args", default="", help="extra analyze options, e.g. '--fps 5'")
    p.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is printed")
    args = p.parse_args()
    from multimodal.config import AnalyzeConfig
    from multimodal.decode import ffmpeg_exe, probe, sampling_command

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base.mp4"
    if not base.exists():
        make_base_clip(base)
    cfg = AnalyzeConfig()
    rows = []
    for minutes in args.minutes:
        seconds = int(minutes * 60)
        clip = loop_clip(base, work / f"clip_{seconds}s.mp4", seconds)
        info = probe(clip)
        full, sampled, walls, peaks, inner = [], [], [], [], []
        out = work / f"out_{seconds}"
        for _ in range(args.repeat):
            full.append(timed([ffmpeg_exe(), "-v", "error", "-i", str(clip), "-f", "null", "-"])[0])
            sampled.append(timed(sampling_command(info, cfg.fps, cfg.detect_width, color=True)[:-1] + ["-"])[0])
            shutil.rmtree(out, ignore_errors=True)
            wall, peak = timed([sys.executable, "-m", "multimodal", "analyze", str(clip), "-o", str(out), "--quiet",
                                *args.args.split()])
            walls.append(wall)
            peaks.append(peak)
            inner.append(json.loads((out / clip.stem / "analysis.json").read_text())["seconds"])
        full_decode, sampled_decode = float(np.median(full)), float(np.median(sampled))
        wall, peak = float(np.median(walls)), max(peaks)
        doc = json.loads((out / clip.stem / "analysis.json").read_text())
        rows.append((seconds, wall, float(np.median(inner)), peak, full_decode, sampled_decode, len(doc["faces"])))
    print(f"analyze at default settings (fps {cfg.fps}, segment {cfg.segment} s, detector {cfg.detector}) "
          f"{args.args}; 1280x720 30 fps H.264 with speech; medians of {args.repeat} runs, peak memory the largest")
    print("| clip | wall s | of which analysis s | real-time factor | peak RSS MB | full decode s | "
          "sampled decode s | wall / full decode | faces |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seconds, wall, inner, peak, full, sampled, faces in rows:
        print(f"| {seconds} s | {wall:.1f} | {inner:.1f} | {seconds / wall:.1f}x | {peak:.0f} | {full:.1f} | "
              f"{sampled:.1f} | {wall / full:.2f} | {faces} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
