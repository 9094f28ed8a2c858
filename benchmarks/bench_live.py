"""How closely ``multimodal live`` follows a 720p 30 fps stream with speech.

    python benchmarks/bench_live.py [--seconds 60] [--args "--fps 2"]

Plays a generated clip (as bench_analyze.py makes them) at its own pace
(``--realtime``, as a camera delivers frames), and prints the face-label
delay (frame captured to its faces classified), the segment delay (stream
reaching a window's end to its row printed), frames dropped, rows emitted
against rows expected, and the peak resident memory at the start and the end
(flat memory means nothing queues up).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_analyze import loop_clip, make_base_clip  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--args", default="", help="extra live options")
    args = p.parse_args()
    import psutil
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    base = make_base_clip(work / "base.mp4")
    clip = loop_clip(base, work / "stream.mp4", args.seconds)
    cmd = [sys.executable, "-m", "multimodal", "live", str(clip), "--realtime", "--verbose", *args.args.split()]
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = []
    started = time.perf_counter()
    while proc.poll() is None:
        try:
            memory.append((time.perf_counter() - started,
                           proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))))
        except psutil.Error:
            pass
        time.sleep(0.5)
    out, err = proc.communicate()
    rows = out.splitlines()
    early = max((m for t, m in memory if t < 15), default=0) / 1e6
    late = max((m for t, m in memory if t > args.seconds - 10), default=0) / 1e6
    print(f"live on a {args.seconds} s 1280x720 30 fps H.264 clip with speech, played at its own pace "
          f"{args.args}; wall {time.perf_counter() - started:.1f} s")
    print(f"- {err.strip().splitlines()[-1] if err.strip() else 'no statistics printed'}")
    print(f"- rows emitted {len(rows)} (one per second after the first 3 s, plus the last: "
          f"{args.seconds - 3 + 1} expected)")
    print(f"- peak memory of the process tree: {early:.0f} MB in the first 15 s, {late:.0f} MB in the last 10 s")


if __name__ == "__main__":
    main()
