"""The speech model under three speaker-independent protocols, as tables.

1. RAVDESS, 5 folds by actor (the published folds), eight classes;
2. CREMA-D, 5 folds by actor (actor number modulo 5), six classes;
3. leave one corpus out: trained on the other corpora, tested on all of one.

Protocols 1 and 2 share their runs: the run of fold k holds out RAVDESS's
fold k, CREMA-D's fold k and EmoDB's fold k together (TESS only trains), so
five runs give both. Protocol 3 is one run per corpus. With ``--train``,
runs missing from ``--runs`` are trained (``multimodal train audio``; a run
cut short resumes); without, the tables are made from the runs there.
``--train-options`` passes a recipe's options to every run it trains, so
one ``--runs`` folder holds one recipe; the runs share one feature cache.

    python benchmarks/speech_protocols.py --runs runs/protocols --data PATH/ravdess_speech PATH/cremad \\
        PATH/tess PATH/emodb [--train] [--train-options "--mixup 0.3"] \\
        [--only fold0 loco_cremad]

Each table gives, per held-out set, accuracy (eight classes for RAVDESS,
the corpus's own classes otherwise, calm counted as neutral), unweighted
average recall, the expected calibration error before and after the
temperature of the run's card, and per-class recall.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

CORPORA = ("ravdess", "cremad", "tess", "emodb")
CHANCE = {"ravdess": 1 / 8, "cremad": 1 / 6, "tess": 1 / 7, "emodb": 1 / 6}


def run_names(only: list[str] | None) -> list[str]:
    names = [f"fold{k}" for k in range(5)] + [f"loco_{c}" for c in CORPORA]
    return [n for n in names if not only or n in only]


def train(run: Path, data: list[Path], options: list[str]) -> None:
    cmd = [sys.executable, "-m", "multimodal", "train", "audio", "--data", *map(str, data), "--out", str(run),
           "--cache-dir", str(run.parent / "cache"), *options]
    if run.name.startswith("fold"):
        k = int(run.name[4:])
        cmd += ["--test-fold", str(k), "--val-fold", str((k + 1) % 5)]
    else:
        cmd += ["--hold-out-corpus", run.name[5:], "--val-fold", "0"]
    if run.exists():
        cmd.append("--resume")
    subprocess.run(cmd, check=False)


def held_out(run: Path) -> dict[str, dict]:
    """``{corpus: figures}`` of a finished run, from its card and reports."""
    card_file = run / "model.keras.json"
    if not card_file.exists():
        return {}
    card = json.loads(card_file.read_text())
    metrics = card.get("metrics", {})
    # the card's top-level metrics are the first held-out set's, the others under their corpus
    first = run.name[5:] if run.name.startswith("loco_") else "ravdess"
    out = {}
    for corpus in CORPORA:
        report = run / "report" / corpus / "report.json"
        if not report.exists():
            continue
        name = "8-class" if corpus == "ravdess" else "7-class (calm = neutral)"
        section = json.loads(report.read_text())["sections"][name]
        # Before the temperature, scored over the same classes as after it (the card's figure is eight-class).
        uncalibrated = run / "report_uncalibrated" / corpus / "report.json"
        m = metrics if corpus == first else metrics.get(corpus, {})
        before = (json.loads(uncalibrated.read_text())["sections"][name]["ece"] if uncalibrated.exists()
                  else m.get("ece_uncalibrated"))
        out[corpus] = {"n": section["n"], "accuracy": section["accuracy"], "uar": section["uar"],
                       "ece": section["ece"], "ece_uncalibrated": before,
                       "recall": {k: v["recall"] for k, v in section["per_class"].items() if v["support"]}}
    return out


def table(title: str, rows: list[tuple[str, dict]]) -> str:
    lines = [f"## {title}", "", "| run | set | n | accuracy | UAR | ECE before → after | per-class recall |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        before = f"{r['ece_uncalibrated']:.3f}" if r["ece_uncalibrated"] is not None else "–"
        recall = ", ".join(f"{k} {v:.2f}" for k, v in r["recall"].items())
        lines.append(f"| {name} | {r['set']} | {r['n']} | {r['accuracy']:.3f} | {r['uar']:.3f} | "
                     f"{before} → {r['ece']:.3f} | {recall} |")
    if len(rows) > 1:
        lines.append(mean_row([r for _, r in rows]))
    return "\n".join(lines) + "\n"


def mean_row(rows: list[dict]) -> str:
    """Unweighted mean over the rows (folds or corpora), as protocols are usually summarised."""
    def mean(key):
        return sum(r[key] for r in rows) / len(rows)
    return (f"| **mean of {len(rows)}** | | {sum(r['n'] for r in rows)} | **{mean('accuracy'):.3f}** | "
            f"**{mean('uar'):.3f}** | → {mean('ece'):.3f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--train", action="store_true", help="train the runs that are missing or unfinished")
    parser.add_argument("--balance", action="store_true", help="train with corpus- and class-balanced sampling")
    parser.add_argument("--train-options", default="", metavar="OPTIONS",
                        help="further options of 'multimodal train audio' for every run trained, in one string "
                             "(one that starts with a dash is given with '=': --train-options=--pitch)")
    parser.add_argument("--only", nargs="+", help="these runs only (fold0 … fold4, loco_ravdess …)")
    parser.add_argument("--json", type=Path, help="also write the figures of every run here")
    args = parser.parse_args()
    names = run_names(args.only)
    if args.train:
        for name in names:
            if not (args.runs / name / "model.keras.json").exists():
                train(args.runs / name, args.data,
                      ["--balance"] * args.balance + shlex.split(args.train_options))
    results = {name: held_out(args.runs / name) for name in names}
    for corpus, title in (("ravdess", "RAVDESS, 5 folds by actor"), ("cremad", "CREMA-D, 5 folds by actor"),
                          ("emodb", "EmoDB, 5 folds of two speakers")):
        rows = [(n, {**r[corpus], "set": f"{corpus} fold {n[4:]}"}) for n, r in results.items()
                if n.startswith("fold") and corpus in r]
        print(table(title, rows))
    rows = [(n, {**r[n[5:]], "set": f"all of {n[5:]} (chance {CHANCE[n[5:]]:.2f})"}) for n, r in results.items()
            if n.startswith("loco_") and n[5:] in r]
    print(table("Leave one corpus out", rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    missing = [n for n in names if not results[n]]
    if missing:
        print(f"not run yet: {', '.join(missing)}")


if __name__ == "__main__":
    main()
