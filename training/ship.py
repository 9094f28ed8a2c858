"""Copy a training run's model into ``models/`` with its card and report.

    python -m training.ship RUN_DIR models/NAME.keras [--metric accuracy] [--extra card-extra.json]
                            [--fer DATA | --ravdess DATA] [--weights float32|float16|int8]
                            [--max-diff 1e-4] [--max-changed 0]

The model is re-saved without optimizer state, its card carried over with a
new checksum, and the run's report copied to ``models/reports/NAME/``. An
existing model is replaced only if the new one scores higher on ``--metric``
(or with ``--force``). Its TFLite export ``NAME.tflite``, which ``analyze``
runs, is written next to it (``training/export_tflite.py``), checked on the
model's test data when ``--fer`` or ``--ravdess`` is given, else on random
inputs, within the limits given (see ``training.export_tflite``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from multimodal.models import card_path, write_card
from training.export_tflite import add_export_arguments, export
from training.loop import export_model


def ship(run: Path, target: Path, metric: str, force: bool = False, extra: dict | None = None,
         fer: Path | None = None, ravdess: Path | None = None, **export_limits) -> str:
    """Copy a run's model into ``models/`` with its card and report, and export it to TFLite.

    ``export_limits`` (``weights``, ``max_diff``, ``max_changed``) go to
    :func:`training.export_tflite.export`.
    """
    card = json.loads(card_path(run / "model.keras").read_text())
    new = card["metrics"][metric]
    if target.exists() and card_path(target).exists() and not force:
        old = json.loads(card_path(target).read_text())["metrics"].get(metric, float("-inf"))
        if new <= old:
            return f"kept {target.name}: {metric} {old:.4f} >= new {new:.4f}"
    export_model(run / "model.keras", target)
    fields = {k: v for k, v in card.items() if k not in ("kind", "file", "labels", "sha256", "size_bytes")}
    fields.update(extra or {})
    reports = target.parent / "reports" / target.stem
    if (run / "report").is_dir():
        # Replace what the run reports, keep what else is there (cross-validation, cross-corpus write-ups).
        for entry in (run / "report").iterdir():
            old = reports / entry.name
            if old.is_dir():
                shutil.rmtree(old)
            if entry.is_dir():
                shutil.copytree(entry, old)
            else:
                reports.mkdir(parents=True, exist_ok=True)
                shutil.copy2(entry, old)
        # An audio run reports per corpus (report/ravdess/report.md): point at the first.
        main = next(iter(sorted(reports.rglob("report.md"), key=lambda p: len(p.parts))), reports / "report.md")
        fields.setdefault("report", str(main.relative_to(target.parent)))  # ``extra`` may name another
    write_card(target, card["kind"], card["labels"], **fields)
    return f"shipped {target.name}: {metric} {new:.4f}; {export(target, fer, ravdess, **export_limits)}"


def main(argv=None) -> int:
    """Command line of :func:`ship`; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("target", type=Path)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--extra", type=Path, help="JSON object merged into the card")
    p.add_argument("--force", action="store_true")
    p.add_argument("--fer", type=Path, help="FER2013, to check a visual model's export on PrivateTest")
    p.add_argument("--ravdess", type=Path, help="RAVDESS speech, to check an audio model's export on its test fold")
    add_export_arguments(p)
    a = p.parse_args(argv)
    extra = json.loads(a.extra.read_text()) if a.extra else None
    print(ship(a.run, a.target, a.metric, a.force, extra, a.fer, a.ravdess,
               weights=a.weights, max_diff=a.max_diff, max_changed=a.max_changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
