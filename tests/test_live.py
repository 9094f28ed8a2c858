"""``multimodal live`` on generated media played at its own pace and served as a stream."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multimodal.cli import main
from multimodal.decode import ffmpeg_exe
from multimodal.errors import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from tests.media import write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("live") / "talk.mp4", seconds=5.0)


def live_cmd(tiny_models, *args) -> list[str]:
    return [sys.executable, "-m", "multimodal", "live", *map(str, args), "--visual-model",
            str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])]


def test_a_file_at_its_own_pace(tiny_models, clip, tmp_path, capsys):
    started = time.monotonic()
    assert main(["live", str(clip), "--realtime", "--verbose", "-o", str(tmp_path), "--visual-model",
                 str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])]) == EXIT_OK
    assert time.monotonic() - started >= 4.5  # played at its own pace, not as fast as possible
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    # Windows of 3 s every 1 s: ending at 3, 4, 5 s, then the last (flushed) one at the end.
    assert [r["end"] for r in rows[:3]] == [3.0, 4.0, 5.0] and len(rows) in (3, 4)
    assert all(r["modalities"] == "visual+audio" and r["faces"] > 0 and r["label"] for r in rows[:3])
    assert {"wall_time", "source", "fused_happy", "audio_dbfs"} <= set(rows[0])
    assert "face-label delay" in captured.err and "frames dropped" in captured.err
    # -o appends the same rows to a file.
    written = [json.loads(line) for line in (tmp_path / "segments.jsonl").read_text().splitlines()]
    assert written == rows


def test_ctrl_c_flushes_the_last_segment(tiny_models, clip):
    proc = subprocess.Popen(live_cmd(tiny_models, clip, "--realtime", "--segment", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # the window ending at 2 s
    assert json.loads(first)["end"] == 2.0
    time.sleep(0.7)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_OK, err
    rest = [json.loads(line) for line in out.splitlines()]
    assert rest and rest[-1]["end"] > 2.0 and "Traceback" not in err


def test_a_stream_on_the_loopback_interface(tiny_models, clip):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"udp://127.0.0.1:{port}?timeout=2000000"  # microseconds without data before ffmpeg gives up
    sender = subprocess.Popen([ffmpeg_exe(), "-v", "error", "-re", "-stream_loop", "10", "-i", str(clip), "-c:v",
                               "mpeg2video", "-q:v", "4", "-c:a", "mp2", "-f", "mpegts",
                               f"udp://127.0.0.1:{port}?pkt_size=1316"])
    proc = subprocess.Popen(live_cmd(tiny_models, url, "--retries", "0", "--segment", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        rows = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        sender.kill()  # the stream stops
        sender.wait()
    out, err = proc.communicate(timeout=60)
    assert all(r["source"] == url for r in rows) and [r["end"] - r["start"] for r in rows] == [2.0] * 3
    assert any(r["faces"] > 0 for r in rows) and any(r["audio_dbfs"] is not None for r in rows)
    # With no reconnections allowed, a lost stream is the documented input error.
    assert proc.returncode == EXIT_INPUT and "stream lost" in err


def test_a_source_that_cannot_be_opened(tiny_models, tmp_path, capsys):
    assert main(["live", str(tmp_path / "nothing.mp4")]) == EXIT_INPUT
    assert "no such file, device or stream URL" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 500)
    assert main(["live", str(bad)]) == EXIT_INPUT
    assert "cannot open" in capsys.readouterr().err
    from tests.media import write_wav
    voice = write_wav(tmp_path / "voice.wav", 2.0)
    assert main(["live", str(voice)]) == EXIT_INPUT
    assert "has no video stream" in capsys.readouterr().err


def test_show_without_a_display_is_a_clear_error(tiny_models, clip, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["live", str(clip), "--show", "--visual-model", str(tiny_models["visual"]),
                 "--audio-model", str(tiny_models["audio"])]) == EXIT_USAGE
    assert "--show needs" in capsys.readouterr().err
