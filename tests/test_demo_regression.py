"""The demo clip's results with the shipped models, against the ones kept in tests/golden/.

A change that alters what users get on the demo fails here. When a change is
meant to (a new shipped model), regenerate the files:

    multimodal analyze data/demo/demo.mp4 -o /tmp/demo --no-pictures
    cp /tmp/demo/demo/segments.csv tests/golden/demo_segments.csv
    cp /tmp/demo/demo/faces.csv tests/golden/demo_faces.csv
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from multimodal.cli import main
from tests.media import DEMO

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_demo_outputs_are_unchanged(tmp_path):
    assert main(["analyze", str(DEMO), "-o", str(tmp_path), "--no-pictures", "--quiet"]) == 0
    for name in ("segments", "faces"):
        got = pd.read_csv(tmp_path / "demo" / f"{name}.csv")
        want = pd.read_csv(GOLDEN / f"demo_{name}.csv")
        # Runtimes may round the last digit differently on other machines.
        pd.testing.assert_frame_equal(got, want, check_exact=False, atol=2e-3, check_dtype=False)
