"""Batches: worker processes, resuming, the batch index, and Ray."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from multimodal.cli import main
from multimodal.errors import EXIT_FAILED, EXIT_OK
from tests.media import write_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for i, seconds in enumerate((3.0, 4.0, 5.0)):
        write_video(folder / f"clip{i}.mp4", seconds=seconds)
    return folder


def analyze(tiny_models, *args) -> int:
    return main(["analyze", *map(str, args), "--visual-model", str(tiny_models["visual"]),
                 "--audio-model", str(tiny_models["audio"]), "--quiet", "--no-pictures"])


def batch_rows(out: Path) -> list[dict]:
    with open(out / "batch.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def same_results(a: Path, b: Path, names) -> None:
    for name in names:
        for table in ("segments.csv", "faces.csv"):
            pd.testing.assert_frame_equal(pd.read_csv(a / name / table), pd.read_csv(b / name / table))


def test_two_workers_give_the_serial_results(tiny_models, clips, tmp_path):
    assert analyze(tiny_models, clips, "-o", tmp_path / "serial", "--jobs", "1") == EXIT_OK
    assert analyze(tiny_models, clips, "-o", tmp_path / "parallel", "--jobs", "2") == EXIT_OK
    same_results(tmp_path / "serial", tmp_path / "parallel", ["clip0", "clip1", "clip2"])
    rows = batch_rows(tmp_path / "parallel")
    assert [r["input"] for r in rows] == [str(clips / f"clip{i}.mp4") for i in range(3)]  # input order
    assert {r["status"] for r in rows} == {"done"} and [float(r["duration"]) for r in rows] == [3.0, 4.0, 5.0]
    assert all(float(r["seconds"]) > 0 and r["dominant"] for r in rows)


def test_a_failure_is_recorded_and_the_batch_goes_on(tiny_models, clips, tmp_path, capsys):
    inputs = tmp_path / "in"
    shutil.copytree(clips, inputs)
    (inputs / "broken.mp4").write_bytes(b"\x00" * 1000)
    assert analyze(tiny_models, inputs, tmp_path / "missing.mp4", "-o", tmp_path / "out", "--jobs", "2") == EXIT_FAILED
    rows = {Path(r["input"]).name: r for r in batch_rows(tmp_path / "out")}
    assert rows["broken.mp4"]["status"] == "failed" and rows["broken.mp4"]["exit_code"] == "3"
    assert "\n" not in rows["broken.mp4"]["error"] and "broken.mp4" in rows["broken.mp4"]["error"]
    assert rows["missing.mp4"]["status"] == "failed" and "no such file" in rows["missing.mp4"]["error"]
    assert [rows[f"clip{i}.mp4"]["status"] for i in range(3)] == ["done"] * 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_a_restarted_batch_does_only_what_is_left(tiny_models, clips, tmp_path):
    out = tmp_path / "out"
    assert analyze(tiny_models, clips, "-o", out) == EXIT_OK
    kept = (out / "clip0" / "analysis.json").stat().st_mtime_ns
    shutil.rmtree(out / "clip2")  # as if the batch had been killed before its last input
    assert analyze(tiny_models, clips, "-o", out, "--skip-existing") == EXIT_OK
    assert (out / "clip0" / "analysis.json").stat().st_mtime_ns == kept  # not redone
    assert (out / "clip2" / "segments.csv").exists()
    assert [r["status"] for r in batch_rows(out)] == ["done"] * 3
    # Without --skip-existing, existing results are an error, as for one file.
    assert analyze(tiny_models, clips, "-o", out) == EXIT_FAILED


def test_killing_the_driver_then_restarting_finishes_the_batch(tiny_models, clips, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        shutil.copy(clips / "clip2.mp4", inputs / f"c{i}.mp4")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "multimodal", "analyze", str(inputs), "-o", str(out), "--quiet", "--no-pictures",
           "--jobs", "1", "--skip-existing", "--visual-model", str(tiny_models["visual"]),
           "--audio-model", str(tiny_models["audio"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "c0" / "analysis.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    finished = {p.name for p in out.iterdir() if (p / "analysis.json").exists()}
    assert "c0" in finished and len(finished) < 4
    assert subprocess.run(cmd, capture_output=True).returncode == EXIT_OK
    rows = {Path(r["input"]).stem: r for r in batch_rows(out)}
    assert all((out / f"c{i}" / "segments.csv").exists() for i in range(4))
    for name, row in rows.items():
        if name in finished:  # kept: done in the first run (or skipped if killed before its row was written)
            assert row["status"] in ("done", "skipped")
        else:
            assert row["status"] == "done" and float(row["seconds"]) > 0


def test_ray_engine_in_local_mode(tiny_models, clips, tmp_path):
    pytest.importorskip("ray", reason='the ray extra is not installed (pip install -e ".[ray]")')
    two = tmp_path / "two"
    two.mkdir()
    for i in (0, 1):
        shutil.copy(clips / f"clip{i}.mp4", two)
    assert analyze(tiny_models, two, "-o", tmp_path / "serial", "--jobs", "1") == EXIT_OK
    assert analyze(tiny_models, two, "-o", tmp_path / "ray", "--engine", "ray", "--jobs", "1") == EXIT_OK
    same_results(tmp_path / "serial", tmp_path / "ray", ["clip0", "clip1"])
    assert [r["status"] for r in batch_rows(tmp_path / "ray")] == ["done", "done"]
