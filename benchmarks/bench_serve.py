"""Load check of ``multimodal serve``: many uploads at once, all must finish, memory bounded by --jobs.

Starts a server on a free loopback port with a fresh data directory, uploads
``--uploads`` short generated clips at the same moment (one thread each),
waits until every analysis has finished, and prints: uploads accepted,
analyses done, failed or lost, wall time, and the peak memory (RSS) of the
server with all its worker processes, sampled every 0.2 s.

    python benchmarks/bench_serve.py --uploads 20 --jobs 1
    python benchmarks/bench_serve.py --uploads 20 --jobs 2

Only 127.0.0.1 is ever contacted; the loops are bounded in count and time.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.media import write_video  # noqa: E402

TOKEN = "bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int) -> int:
    """Bytes of resident memory of a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each generated clip")
    parser.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    clip = write_video(work / "clip.mp4", seconds=args.seconds)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "multimodal", "serve", "--data-dir", str(work / "data"),
                               "--port", str(port), "--token", TOKEN, "--jobs", str(args.jobs)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss(server.pid))
            time.sleep(0.2)

    try:
        server.stdout.readline()
        for _ in range(300):
            try:
                httpx.get(f"{base}/api/options", headers=AUTH, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        idle = tree_rss(server.pid)
        threading.Thread(target=sample, daemon=True).start()
        started = time.time()
        data = clip.read_bytes()

        def post(i: int):
            r = httpx.post(f"{base}/api/analyses", headers=AUTH, files={"file": (f"clip{i}.mp4", data)}, timeout=120)
            return r.status_code, r.json().get("id")

        with ThreadPoolExecutor(args.uploads) as pool:
            posted = list(pool.map(post, range(args.uploads)))
        ids = {job for code, job in posted if code == 201}
        accepted = time.time() - started
        rows: dict = {}
        while time.time() - started < args.timeout:
            rows = {a["id"]: a for a in httpx.get(f"{base}/api/analyses", headers=AUTH, timeout=30).json()}
            if all(rows.get(j, {}).get("status") not in ("queued", "running") for j in ids):
                break
            time.sleep(0.5)
        wall = time.time() - started
        done = sum(rows.get(j, {}).get("status") == "done" for j in ids)
        failed = sum(rows.get(j, {}).get("status") == "failed" for j in ids)
        lost = len(ids) - len(ids & rows.keys())
        print(f"uploads {args.uploads} of {args.seconds:g} s clips, --jobs {args.jobs}: accepted {len(ids)} "
              f"(all posted in {accepted:.1f} s); done {done}, failed {failed}, lost {lost}, "
              f"unfinished {len(ids) - done - failed - lost}")
        print(f"wall time {wall:.1f} s ({wall / max(1, done):.2f} s per analysis); memory of the server and its "
              f"workers: idle {idle / 2**20:.0f} MiB, peak {peak[0] / 2**20:.0f} MiB; {os.cpu_count()} cores")
    finally:
        stop.set()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    main()
