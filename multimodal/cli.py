"""The ``multimodal`` command line.

Every failure the user can cause ends in a one-line ``error: …`` message and
an exit code from :mod:`multimodal.errors`; no traceback reaches the user.
Each command imports what it needs when it runs, so ``--help`` and
``analyze`` start without loading the training code or TensorFlow.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from dataclasses import fields, replace
from pathlib import Path

from multimodal.batch import Job, default_jobs
from multimodal.config import MEDIA_EXTENSIONS, AnalyzeConfig, LiveConfig
from multimodal.errors import (
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    InputError,
    ModelError,
    MultimodalError,
    OutputError,
    UsageError,
)
from multimodal.version import __version__


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names it in "invalid float value: 'abc'"
    return parse


def _fraction(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


_fraction.__name__ = "float"  # argparse names it in "invalid float value: 'abc'"


def _semitones(text):
    value = float(text)
    if not 0 <= value <= 12:  # beyond an octave the voice is no longer a person's
        raise argparse.ArgumentTypeError(f"must be between 0 and 12, got {text}")
    return value


_semitones.__name__ = "float"


ANALYZE_EPILOG = """\
examples:
  multimodal analyze talk.mp4 -o results            one video: results/talk/
  multimodal analyze recordings/ -o results         every video, audio file and photo under recordings/
  multimodal analyze group.jpg -o results --annotate   the faces of a photo, boxes drawn on a copy
  multimodal analyze talk.mp4 -o - --format csv     segments as CSV on stdout, nothing written

exit codes:
  0    every input analysed
  1    some inputs of a batch failed (the others are complete), or an internal error
  2    bad command line, or a missing optional dependency
  3    unusable input (missing, not media, truncated, no faces and no speech)
  4    a model file is missing, corrupt, or fails its checksum
  5    results cannot be written (exist without --force, or not writable)
  130  interrupted
"""


def config_from_args(kind, args: argparse.Namespace, **extra):
    """A configuration dataclass from the parsed options named as its fields
    (the parser takes its defaults from the dataclass, so nothing is copied twice)."""
    values = {f.name: getattr(args, f.name) for f in fields(kind) if hasattr(args, f.name)}
    return kind(**{**values, **extra})


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command; defaults come from the configuration dataclasses."""
    defaults = AnalyzeConfig()
    p = argparse.ArgumentParser(prog="multimodal", description="Audio-visual emotion recognition over time.")
    p.add_argument("--version", action="version", version=f"multimodal {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser(
        "analyze", help="emotions per time segment of video or audio files, or the faces of photos",
        description="Emotions over time in videos and audio files (faces and voice, fused per segment), "
                    "or the faces in photos. Each input gets a folder of results in OUTDIR: segments.csv, "
                    "faces.csv, analysis.json, timeline.png and report.html.",
        epilog=ANALYZE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("inputs", nargs="+", metavar="INPUT", help="media files, photos, or directories of them")
    a.add_argument("-o", "--out", required=True, type=Path, metavar="OUTDIR",
                   help="output directory; '-' writes to stdout in --format instead")
    a.add_argument("--format", choices=("jsonl", "json", "csv"), default="jsonl",
                   help="with -o -: one JSON line per segment, one JSON document per input, or segment CSV "
                        "rows; each names its input (%(default)s)")
    a.add_argument("--fps", type=_positive(float), default=defaults.fps, help="frames sampled per second (%(default)s)")
    a.add_argument("--segment", type=_positive(float), default=defaults.segment,
                   help="segment length in seconds (%(default)s)")
    from multimodal.fusion import STRATEGIES
    a.add_argument("--fusion", choices=sorted(STRATEGIES), default=defaults.fusion,
                   help="decision-level fusion strategy (%(default)s)")
    a.add_argument("--visual-model", type=Path, default=defaults.visual_model, help="facial-expression model file")
    a.add_argument("--audio-model", type=Path, default=defaults.audio_model, help="speech-emotion model file")
    from multimodal.faces import DETECTORS
    a.add_argument("--detector", choices=list(DETECTORS), default=defaults.detector,
                   help="face detector (%(default)s)")
    a.add_argument("--max-faces", type=_positive(int), default=defaults.max_faces,
                   help="faces per frame, largest first (%(default)s)")
    a.add_argument("--small-face-fps", type=_positive(float), default=defaults.small_face_fps,
                   help="times per second small faces are searched for (%(default)s); "
                        "as high as --fps searches every sampled frame")
    a.add_argument("--min-speech", type=_positive(float), default=defaults.min_speech,
                   help="seconds of speech a segment needs for the voice to count (%(default)s)")
    a.add_argument("--no-pictures", action="store_true", help="skip timeline.png and report.html")
    a.add_argument("--annotate", action="store_true",
                   help="also write annotated.mp4: boxes, person ids and labels drawn on the video")
    a.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    a.add_argument("--jobs", "-j", type=_positive(int), default=default_jobs(),
                   help="inputs analysed at once, each in its own process (%(default)s here: one per two cores)")
    a.add_argument("--skip-existing", action="store_true",
                   help="leave inputs whose complete results are already in OUTDIR (resume a batch)")
    a.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="'ray' runs the --jobs workers as Ray actors (pip install -e \".[ray]\")")
    a.add_argument("--address", default=None,
                   help="with --engine ray: the cluster to join (default: start Ray on this machine)")
    a.add_argument("--force", action="store_true", help="replace existing results")

    lv = sub.add_parser(
        "live", help="emotions from a webcam or a stream as they happen, one JSON line per segment",
        description="Follow a webcam, a stream or a file played at its own pace; every --hop seconds print "
                    "the last --segment seconds as one JSON line (the columns of segments.csv, plus wall_time "
                    "and source). Ctrl-C or the end of the stream stops, after the last segment.",
        epilog="examples:\n  multimodal live 0                               the first webcam\n"
               "  multimodal live rtsp://camera.local/stream -o live\n"
               "  multimodal live talk.mp4 --realtime --verbose   a file at its own pace\n\n"
               "exit codes: 0 stopped (end of stream or Ctrl-C), 2 bad options or no display for --show,\n"
               "3 the source cannot be opened or a stream stayed down, 4 a model file is bad",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    lv.add_argument("source", metavar="SOURCE", help="webcam index (0), device path, stream URL "
                    "(rtsp://, http://, udp://...) or media file")
    lv.add_argument("-o", "--out", type=Path, default=None, help="also append the rows to OUTDIR/segments.jsonl")
    ld = LiveConfig("")
    lv.add_argument("--fps", type=_positive(float), default=defaults.fps, help="frames analysed per second (%(default)s)")
    lv.add_argument("--segment", type=_positive(float), default=defaults.segment,
                    help="seconds each emitted result covers (%(default)s)")
    lv.add_argument("--hop", type=_positive(float), default=ld.hop, help="seconds between results (%(default)s)")
    lv.add_argument("--realtime", action="store_true", help="play a file at its own pace, as a camera delivers")
    lv.add_argument("--show", action="store_true", help="a window with boxes, labels and the fused result")
    lv.add_argument("--verbose", "-v", action="store_true", help="delays and dropped frames on stderr")
    lv.add_argument("--retries", type=int, default=ld.retries, help="reconnections to a stream that drops")
    lv.add_argument("--fusion", choices=sorted(STRATEGIES), default=defaults.fusion)
    lv.add_argument("--visual-model", type=Path, default=defaults.visual_model)
    lv.add_argument("--audio-model", type=Path, default=defaults.audio_model)
    lv.add_argument("--max-faces", type=_positive(int), default=defaults.max_faces)
    lv.add_argument("--min-speech", type=_positive(float), default=defaults.min_speech)

    sv = sub.add_parser("serve", help="a local web page and HTTP API for analyses (pip install -e \".[serve]\")",
                        description="Serve the web page and HTTP API on this machine. Prints the address to open; "
                                    "it carries an access token that every request needs.")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (%(default)s: this machine only; another host is reachable from "
                         "the network, still behind the token)")
    sv.add_argument("--port", type=_positive(int), default=8000)
    sv.add_argument("--data-dir", type=Path, default=Path("multimodal-data"),
                    help="where uploads, results and the job database are kept (%(default)s)")
    sv.add_argument("--jobs", "-j", type=_positive(int), default=1,
                    help="analyses running at once, each in its own process with its own models (%(default)s)")
    sv.add_argument("--max-upload-mb", type=_positive(float), default=2048.0,
                    help="largest upload accepted, in MB (%(default)s)")
    sv.add_argument("--token", default=None, help="the access token (default: a new random one each start)")
    sv.add_argument("--visual-model", type=Path, default=defaults.visual_model)
    sv.add_argument("--audio-model", type=Path, default=defaults.audio_model)

    t = sub.add_parser("train", help="train a model")
    tsub = t.add_subparsers(dest="modality", required=True, metavar="MODALITY")
    from training.config import AUGMENTATIONS, POOLINGS, AudioTrainConfig, VisualTrainConfig
    vd, ad = VisualTrainConfig(Path(), Path()), AudioTrainConfig((), Path())
    tv = tsub.add_parser("visual", help="facial-expression model on FER2013, with other face sets if given")
    tv.add_argument("--data", required=True, type=Path, help="fer2013.csv or the folder with train/ and test/")
    tv.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, log, model, report)")
    tv.add_argument("--backbone", default=vd.backbone, choices=("compact", "inception_resnet_v2"))
    tv.add_argument("--weights", default=vd.weights, help="inception_resnet_v2 only: 'imagenet' (from the local "
                    "Keras cache) or a weights file; default random initialisation")
    tv.add_argument("--init", type=Path, default=vd.init, help="start from this .keras model (fine-tuning)")
    tv.add_argument("--faces", type=Path, default=vd.faces,
                    help="a folder of labelled face sets (<set>/<label>/<image>) to train on as well")
    tv.add_argument("--ferplus", choices=("soft", "majority"), default=vd.ferplus,
                    help="train on FER+'s votes (ferplus.csv, or fer2013new.csv beside fer2013.csv) instead of "
                         "FER2013's labels: their distribution (soft) or majority label")
    tv.add_argument("--rafdb", type=Path, default=vd.rafdb,
                    help="RAF-DB's folder (EmoLabel/, Image/aligned/): its train partition joins training "
                         "(each face twice an epoch, as face-set photos), less a fixed 15%% carve used for selection")
    tv.add_argument("--hold-out", nargs="+", default=vd.hold_out, metavar="SET",
                    help="face sets never trained or selected on; the run reports its accuracy on them")
    tv.add_argument("--augment", choices=list(AUGMENTATIONS), default=vd.augment,
                    help="'video' adds blur, noise, compression, lighting and occlusion (%(default)s)")
    tv.add_argument("--label-smoothing", type=float, default=vd.label_smoothing)
    tv.add_argument("--subtle", action="store_true",
                    help="with --faces: also train on weaker expressions, each posed face blended with the "
                         "same subject's neutral face")
    tv.add_argument("--teacher", dest="teachers", action="append", type=Path, default=None, metavar="MODEL",
                    help="distil from this visual model (repeat for an ensemble): each training target "
                         "mixes the label with the teachers' mean prediction")
    tv.add_argument("--distill", type=float, default=vd.distill,
                    help="weight of the teachers' prediction in each target (%(default)s)")
    tv.add_argument("--fer-per-epoch", type=_positive(int), default=vd.fer_per_epoch,
                    help="FER2013 images drawn afresh each epoch (default all)")
    tv.add_argument("--workers", type=_positive(int), default=vd.workers,
                    help="threads building augmented batches (%(default)s); raise it on a GPU machine")
    tv.add_argument("--time-limit", type=_positive(float), default=vd.time_limit, metavar="MINUTES",
                    help="start no epoch that would end after this many minutes; --resume goes on later")
    tv.add_argument("--epochs", type=_positive(int), default=vd.epochs)
    tv.add_argument("--batch-size", type=_positive(int), default=vd.batch_size)
    tv.add_argument("--learning-rate", "--lr", type=_positive(float), default=vd.learning_rate)
    tv.add_argument("--patience", type=_positive(int), default=vd.patience)
    tv.add_argument("--seed", type=int, default=vd.seed)
    tv.add_argument("--limit", type=_positive(int), default=vd.limit, help="train on a random subset of N images")
    ta = tsub.add_parser("audio", help="speech-emotion model on RAVDESS, CREMA-D, TESS and/or EmoDB")
    ta.add_argument("--data", required=True, type=Path, nargs="+",
                    help="folders with RAVDESS Actor_XX/, CREMA-D, TESS and/or EmoDB files")
    ta.add_argument("--out", required=True, type=Path)
    ta.add_argument("--test-fold", type=int, default=ad.test_fold, choices=range(5))
    ta.add_argument("--val-fold", type=int, default=ad.val_fold, choices=range(5))
    ta.add_argument("--cv", action="store_true", help="train and test on all five folds; report mean and std")
    ta.add_argument("--hold-out-corpus", default=ad.hold_out_corpus, metavar="CORPUS",
                    help="leave one corpus out (ravdess, cremad, tess, emodb): train on the others, test on all of it")
    ta.add_argument("--balance", action="store_true",
                    help="draw every epoch equally from each corpus and, within a corpus, from each class")
    ta.add_argument("--time-masks", type=int, default=ad.time_masks, metavar="N",
                    help="mask N spans of up to 0.3 s in every training window (SpecAugment-style; default %(default)s, 0: none)")
    ta.add_argument("--coefficient-masks", type=int, default=ad.coefficient_masks, metavar="N",
                    help="mask N bands of up to 8 MFCCs, with their deltas, in every training window (default %(default)s)")
    ta.add_argument("--utterance-norm", action="store_true",
                    help="the network first subtracts each input's own mean over time (cepstral mean normalisation)")
    ta.add_argument("--utterance-mean", action="store_true",
                    help="--utterance-norm, and the subtracted means reach the classifier by a narrow side path "
                         "dropped whole for half the training windows")
    ta.add_argument("--crowd-targets", type=_fraction, default=ad.crowd_targets, metavar="WEIGHT",
                    help="soft targets: where CREMA-D's listeners heard another emotion than the intended one, "
                         "move WEIGHT x their agreement of the target to it (0 to 1; default %(default)s)")
    ta.add_argument("--mixup", type=_fraction, default=ad.mixup, metavar="ALPHA",
                    help="blend each training window and its target with another's, weights drawn from "
                         "Beta(ALPHA, ALPHA) (0 to 1, 0.2 to 0.4 is usual; default %(default)s: off)")
    ta.add_argument("--spectral-warp", type=_semitones, default=ad.spectral_warp, metavar="SEMITONES",
                    help="move each training window's spectral envelope (its formants) up or down by up to "
                         "SEMITONES, drawn anew every epoch, as a shorter or longer vocal tract would "
                         "(vocal tract length perturbation; default %(default)s, the shipped model's recipe; 0: off)")
    ta.add_argument("--corpus-adversary", type=_fraction, default=ad.corpus_adversary, metavar="STRENGTH",
                    help="domain-adversarial training: a classifier of the training corpora reads the pooled "
                         "features through a gradient reversal of this strength, so the network learns features "
                         "by which the corpora look alike (0 to 1; default %(default)s: off); the model file "
                         "keeps the emotion output only")
    ta.add_argument("--reverb", type=_fraction, default=ad.augment.reverb, metavar="P",
                    help="chance that an augmented copy is played in a synthetic room (reverberation time "
                         "0.2-0.8 s; default %(default)s)")
    ta.add_argument("--channel", type=_fraction, default=ad.augment.channel, metavar="P",
                    help="chance that an augmented copy passes a random band-pass, as through a phone or a "
                         "small microphone (default %(default)s)")
    ta.add_argument("--pitch", action="store_true",
                    help="add the voice's pitch contour (three channels after the MFCCs); analyze computes "
                         "what the model's card asks for")
    ta.add_argument("--log-mel", action="store_true",
                    help="add the log-mel energies the MFCCs are computed from (n_mels channels after the "
                         "MFCC blocks); analyze computes what the model's card asks for")
    ta.add_argument("--pooling", choices=POOLINGS, default=ad.pooling,
                    help="over time: mean and maximum (avgmax, default) or attentive statistics pooling "
                         "(attention: a learnt weight per frame, weighted mean and standard deviation)")
    ta.add_argument("--widths", type=_positive(int), nargs=4, default=ad.widths, metavar="N",
                    help=f"filters of the four convolution stages (default {' '.join(map(str, ad.widths))}; "
                         "the narrower model it replaced: 64 128 128 256)")
    ta.add_argument("--epochs", type=_positive(int), default=ad.epochs)
    ta.add_argument("--schedule-epochs", type=_positive(int), default=ad.schedule_epochs, metavar="N",
                    help="the learning rate's cosine decay spans N epochs (default: --epochs); with "
                         "--no-validation, stop where the recipe's runs chose their epoch on the same schedule")
    ta.add_argument("--no-validation", action="store_true",
                    help="train on the validation fold's speakers too, for exactly --epochs epochs (nothing is left "
                         "to stop early on); needs --temperature, as no held-out speakers are left to fit it on")
    ta.add_argument("--temperature", type=_positive(float), default=ad.temperature, metavar="T",
                    help="with --no-validation: the calibration temperature the card records, chosen beforehand "
                         "(e.g. the median of the recipe's fold runs)")
    ta.add_argument("--patience", type=_positive(int), default=ad.patience)
    ta.add_argument("--cache-dir", type=Path, default=ad.cache_dir, metavar="DIR",
                    help="where the features of every recording are kept (default OUT/cache); runs on the same "
                         "corpora with the same seed can share one")
    ta.add_argument("--seed", type=int, default=ad.seed)
    for parser in (tv, ta):
        again = parser.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        again.add_argument("--force", action="store_true", help="start afresh in an existing --out, replacing it")

    e = sub.add_parser("evaluate", help="score a model on held-out data")
    esub = e.add_subparsers(dest="modality", required=True, metavar="MODALITY")
    ev = esub.add_parser("visual", help="on FER2013 (PrivateTest by default) or on folders of labelled face photos")
    ev.add_argument("--model", type=Path, default=defaults.visual_model,
                    help="a .keras or .tflite model with its card (default: the shipped model)")
    ev.add_argument("--data", required=True, type=Path,
                    help="FER2013 (fer2013.csv or train/ and test/ folders), or face photos: <label>/<image> "
                         "folders or a manifest.csv, one set or a folder of sets")
    ev.add_argument("--out", required=True, type=Path, help="report directory")
    ev.add_argument("--split", default=None, choices=("PrivateTest", "PublicTest", "Training", "test", "validation"),
                    help="FER2013: PrivateTest (default), PublicTest or Training; RAF-DB: test (default, the "
                         "official test partition) or validation (the fixed carve of train)")
    ev.add_argument("--labels", choices=("fer2013", "ferplus"), default="fer2013",
                    help="FER2013: its own labels or FER+'s majority labels (ferplus.csv or fer2013new.csv beside)")
    ev.add_argument("--flip", action="store_true", help="also report test-time flip averaging")
    ea = esub.add_parser("audio", help="on the held-out speakers of one fold, as analyze scores files")
    ea.add_argument("--model", type=Path, default=defaults.audio_model,
                    help="a .keras or .tflite model with its card (default: the shipped model)")
    ea.add_argument("--data", required=True, type=Path, nargs="+", help="folders with RAVDESS, CREMA-D and/or EmoDB files")
    ea.add_argument("--out", required=True, type=Path)
    ea.add_argument("--test-fold", type=int, choices=range(5),
                    help="the speakers' fold (default: the model's own test fold, from its card; 0 if it has none)")
    ea.add_argument("--snr-db", type=float, help="add white noise this many dB below each recording's level first")

    c = sub.add_parser("compare-fusion", help="score every fusion strategy on the same paired data")
    c.add_argument("--fer", type=Path, help="FER2013 (csv or folders), for pseudo-pairs")
    c.add_argument("--speech", "--ravdess", type=Path, nargs="+",
                   help="speech corpora (RAVDESS, CREMA-D, EmoDB folders) whose voices of the audio model's test "
                        "and validation folds (from its card) pair with faces")
    c.add_argument("--clips", type=Path, help="labelled audio-visual clips (RAVDESS video names or manifest.csv)")
    c.add_argument("--loco-runs", type=Path,
                   help="leave-one-corpus-out runs (loco_<corpus>/); with --rafdb and --speech, pairs whose voice "
                        "comes from a corpus its model never heard and whose face from RAF-DB")
    c.add_argument("--rafdb", type=Path, help="RAF-DB (EmoLabel/ and Image/), faces for --loco-runs pairs")
    c.add_argument("--visual-model", type=Path, default=defaults.visual_model)
    c.add_argument("--audio-model", type=Path, default=defaults.audio_model)
    c.add_argument("--out", required=True, type=Path, help="report directory")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--bootstrap", type=_positive(int), default=1000)
    c.add_argument("--save", action="store_true", help="store the fitted strategies as models/fusion.json")
    c.add_argument("--force", action="store_true")
    return p


def collect_inputs(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Media files named or found (recursively) in named directories, and errors for the rest."""
    files, errors = [], []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                errors.append(f"{p}: directory holds no media files ({', '.join(sorted(MEDIA_EXTENSIONS))})")
            files += found
        elif p.exists():
            files.append(p)
        else:
            errors.append(f"{p}: no such file or directory")
    return files, errors


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else ""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_analyze(args) -> int:
    """``analyze``: every input in turn or in parallel; a failed file is reported and the batch goes on."""
    from multimodal.report import ensure_output_dir, output_dir_for
    to_stdout = str(args.out) == "-"
    cfg = config_from_args(AnalyzeConfig, args, quiet=args.quiet or to_stdout)
    files, errors = collect_inputs(args.inputs)
    for msg in errors:
        _say(f"error: {msg}")
    if not files:
        return EXIT_INPUT
    if to_stdout:
        return _analyze_to_stdout(cfg, files, args.format, len(errors))
    ensure_output_dir(args.out)
    if not args.no_pictures:
        # Importing matplotlib takes over half a second: do it while the first file is analysed.
        from multimodal.plots import import_pyplot
        threading.Thread(target=import_pyplot, daemon=True).start()
    taken: set[str] = set()
    jobs = [Job(path, output_dir_for(args.out, path, taken)) for path in files]
    return _run_batch(cfg, jobs, errors, args)


def _run_batch(cfg: AnalyzeConfig, jobs: list, input_errors: list[str], args) -> int:
    """Run ``jobs`` on the chosen engine, keeping ``OUT/batch.csv`` current; returns the exit code."""
    from multimodal.batch import (
        ENGINES,
        WriteOptions,
        is_complete,
        model_error,
        read_batch_csv,
        run_serial,
        write_batch_csv,
    )
    index = args.out / "batch.csv"
    earlier = read_batch_csv(index)
    rows: dict[str, dict] = {str(j.source): {"input": str(j.source), "output": str(j.target), "status": "pending"}
                             for j in jobs}
    rows.update({msg: {"input": msg.split(": ")[0], "status": "failed", "error": msg, "exit_code": EXIT_INPUT}
                 for msg in input_errors})
    todo = []
    for job in jobs:
        if args.skip_existing and is_complete(job.target):
            before = earlier.get(str(job.source), {})
            rows[str(job.source)] = {**before, **rows[str(job.source)],
                                     "status": "done" if before.get("status") == "done" else "skipped"}
        else:
            todo.append(job)
    if len(todo) < len(jobs) and not cfg.quiet:
        _say(f"{len(jobs) - len(todo)} of {len(jobs)} inputs already have results; analysing the other {len(todo)}")
    write = WriteOptions(force=cfg.force, pictures=not args.no_pictures, annotate=args.annotate)
    workers = max(1, min(args.jobs, len(todo)))
    if args.engine == "ray":
        results = ENGINES["ray"](cfg, todo, write, workers, args.address)
    elif workers > 1:
        results = ENGINES["local"](cfg, todo, write, workers)
    else:
        results = run_serial(cfg, todo, write)
    write_batch_csv(index, list(rows.values()))
    for row in results:
        rows[row["input"]] = row
        write_batch_csv(index, list(rows.values()))
        for w in row["warnings"]:
            _say(f"warning: {w}")
        if row["status"] == "failed":
            _say(f"error: {row['error']}")
            if model_error(row):  # every later file would fail the same way
                raise ModelError(row["error"])
        elif not cfg.quiet:
            print(row["summary"], flush=True)
    failures = [int(r["exit_code"]) for r in rows.values() if r["status"] == "failed"]
    done = sum(r["status"] in ("done", "skipped") for r in rows.values())
    if not failures:
        return EXIT_OK
    if len(failures) == 1 and done == 0:
        return failures[0]
    if not cfg.quiet:
        _say(f"{done} of {done + len(failures)} inputs analysed, {len(failures)} failed; see {index}")
    return EXIT_FAILED


def _analyze_to_stdout(cfg: AnalyzeConfig, files: list[Path], fmt: str, input_errors: int) -> int:
    """``-o -``: results as text on stdout, one input after another, nothing written to disk."""
    from multimodal.pipeline import Analyzer
    from multimodal.report import write_stream
    analyzer = Analyzer(cfg)
    failures: list[int] = [EXIT_INPUT] * input_errors
    done = 0
    for path in files:
        try:
            result = analyzer.analyze(path)
            for w in result.warnings:
                _say(f"warning: {w}")
            write_stream(result, fmt, sys.stdout, header=done == 0)
            done += 1
        except ModelError:
            raise
        except MultimodalError as err:
            _say(f"error: {err}")
            failures.append(err.exit_code)
    if not failures:
        return EXIT_OK
    return failures[0] if len(failures) == 1 and done == 0 else EXIT_FAILED


def cmd_serve(args) -> int:
    """``serve``: the web page and HTTP API until interrupted."""
    import importlib.util
    if not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "python_multipart")):
        from multimodal.errors import MissingDependencyError
        raise MissingDependencyError('serve needs its extra: pip install -e ".[serve]"')
    from multimodal.server import ServeConfig, serve
    for model in (args.visual_model, args.audio_model):
        if not model.is_file():
            raise ModelError(f"{model}: model file not found")
    analysis = AnalyzeConfig(visual_model=args.visual_model, audio_model=args.audio_model, quiet=True)
    cfg = ServeConfig(data_dir=args.data_dir, host=args.host, port=args.port, jobs=args.jobs,
                      max_upload_mb=args.max_upload_mb, analysis=analysis,
                      **({"token": args.token} if args.token else {}))
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{cfg.data_dir}: cannot create the data directory ({err.strerror})") from None
    serve(cfg)
    return EXIT_OK


def cmd_live(args) -> int:
    """``live``: follow a source, one JSON line per segment on stdout, status on stderr."""
    from multimodal.live import jsonl_sink, run_live
    cfg = LiveConfig(source=args.source, analysis=config_from_args(AnalyzeConfig, args, quiet=True),
                     hop=args.hop, realtime=args.realtime, out=args.out, show=args.show, verbose=args.verbose,
                     retries=args.retries)
    run_live(cfg, jsonl_sink(args.out), _say)
    return EXIT_OK


def cmd_train(args) -> int:
    """``train visual|audio``: one run into ``--out`` (refused if a run is there, unless resumed or forced)."""
    if args.modality == "audio" and args.no_validation != (args.temperature is not None):
        raise UsageError("--no-validation and --temperature go together: without validation speakers the "
                         "temperature must be given, and with them it is fitted")
    if args.out.exists() and not args.out.is_dir():
        raise OutputError(f"{args.out}: exists and is not a directory")
    if args.out.exists() and any(args.out.iterdir()):
        if not (args.resume or args.force):
            raise OutputError(f"{args.out}: a run is already there (--resume to continue it, --force to start afresh)")
        is_run = (args.out / "train.log").exists() or (args.out / "checkpoints").is_dir()
        if args.force and not is_run:  # never delete a folder that is not a run
            raise OutputError(f"{args.out}: not a training run folder; --force replaces only runs")
        if args.force:
            import shutil
            shutil.rmtree(args.out)
    if args.modality == "visual":
        from training.config import VisualTrainConfig
        from training.train_visual import train_visual
        summary = train_visual(config_from_args(VisualTrainConfig, args, hold_out=tuple(args.hold_out),
                                                  teachers=tuple(args.teachers or ())))
        print(f"PrivateTest accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f}; "
              f"report in {args.out / 'report'}")
        for name, m in summary.get("held_out", {}).items():
            print(f"held-out {name}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}")
        return EXIT_OK
    from training.config import AudioTrainConfig
    from training.train_audio import cross_validate, train_audio
    defaults = AudioTrainConfig((), Path())
    cfg = config_from_args(AudioTrainConfig, args, data=tuple(args.data), widths=tuple(args.widths),
                           utterance_norm=args.utterance_norm or args.utterance_mean,
                           augment=replace(defaults.augment, reverb=args.reverb, channel=args.channel),
                           features=replace(defaults.features, pitch=args.pitch, log_mel=args.log_mel))
    if args.cv:
        cv = cross_validate(cfg)
        for k, v in cv.items():
            print(f"{k}: {v['mean']:.4f} ± {v['std']:.4f}")
    else:
        s = train_audio(cfg)
        for corpus, r in s["by_corpus"].items():
            where = f"all of {corpus}" if args.hold_out_corpus else f"fold {args.test_fold}, {corpus}"
            print(f"{where}: 8-class accuracy {r['accuracy_8class']:.4f}, 7-class {r['accuracy_7class']:.4f}, "
                  f"UAR {r['uar']:.4f}, ECE {r['ece']:.4f}")
        print(f"report in {args.out / 'report'}")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    """``evaluate visual|audio``: score a model on held-out data and write its report."""
    from training.evaluate import (
        evaluate_audio_model,
        evaluate_face_sets,
        evaluate_visual_model,
    )
    from training.face_sets import is_fer2013
    from training.rafdb import is_rafdb
    if not args.model.is_file():
        raise ModelError(f"{args.model}: model file not found")
    for path in args.data if isinstance(args.data, list) else [args.data]:
        if not path.exists():
            raise InputError(f"{path}: no such file or directory")
    if args.modality == "visual" and not is_fer2013(args.data) and not is_rafdb(args.data):
        results = evaluate_face_sets(args.model, args.data, args.out)
        name = args.model.name
        if results["trained_on"]:
            _say(f"warning: {name} was trained on {', '.join(results['trained_on'])}: its figures there are not "
                 "held out (score a model trained without them, train visual --hold-out)")
        for set_name, count in results["no_face"].items():
            m = results[name][set_name]
            print(f"{set_name}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
                  f"{m['called_neutral']:.1%} of non-neutral faces called neutral, "
                  f"{count} of {m['n']} photos with no face found")
        print(f"mean of the per-set accuracies {results[name]['mean_accuracy']:.4f}; report in {args.out}")
    elif args.modality == "visual":
        split = args.split or ("test" if is_rafdb(args.data) else "PrivateTest")
        try:
            s = evaluate_visual_model(args.model, args.data, args.out, split=split, flip=args.flip,
                                      labels=args.labels)
        except (ValueError, FileNotFoundError) as e:
            raise InputError(_first_line(e)) from None
        print(f"{s['split']}: accuracy {s['accuracy']:.4f}, macro-F1 {s['macro_f1']:.4f}, "
              f"ECE {s['ece']:.4f}, {s['called_neutral']:.1%} of non-neutral faces called neutral, "
              f"{s['ms_per_face']:.2f} ms/face; report in {args.out}")
    else:
        from multimodal.models import read_card
        fold = args.test_fold
        if fold is None:
            # the speakers this model was tested on; other folds may be ones it trained on
            fold = read_card(args.model, "audio").data.get("training", {}).get("test_fold") or 0
        results = evaluate_audio_model(args.model, args.data, args.out, test_fold=fold, snr_db=args.snr_db)
        for corpus, s in results.items():
            print(f"fold {fold}, {corpus}: 8-class accuracy {s['accuracy_8class']:.4f}, 7-class "
                  f"{s['accuracy_7class']:.4f}, UAR {s['uar']:.4f}, {s['no_evidence']} of {s['n']} recordings "
                  f"with no audio evidence; report in {args.out / corpus}")
    return EXIT_OK


def cmd_compare_fusion(args) -> int:
    """``compare-fusion``: score every fusion strategy on the same paired data."""
    from training.compare_fusion import CompareFusionConfig, run_compare_fusion
    run_compare_fusion(config_from_args(CompareFusionConfig, args))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see :mod:`multimodal.errors`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    handlers = {"analyze": cmd_analyze, "live": cmd_live, "train": cmd_train, "evaluate": cmd_evaluate,
                "compare-fusion": cmd_compare_fusion, "serve": cmd_serve}
    try:
        if args.command not in ("analyze", "live", "serve"):  # these import Keras only if a model needs it
            from multimodal.models import import_keras
            import_keras()
        return handlers[args.command](args)
    except MultimodalError as err:
        _say(f"error: {err}")
        return err.exit_code
    except (FileNotFoundError, ValueError) as err:  # raised while reading datasets and model files
        _say(f"error: {_first_line(err)}")
        return EXIT_INPUT
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except Exception as err:  # the last guard: one line, never a traceback
        _say(f"error: unexpected {type(err).__name__}: {_first_line(err)} (please report this)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
