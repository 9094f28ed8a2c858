"""Many inputs: one after another, in worker processes, or on a Ray cluster.

Every engine runs :func:`analyze_one` on whole files with models loaded once
per worker, and the driver keeps ``OUT/batch.csv`` (one row per input)
up to date, rewritten atomically after each input, so a batch that is killed
and restarted with ``skip_existing`` only does what is left: a result folder
either exists complete or not at all (see :func:`multimodal.report.write_analysis`).
"""
from __future__ import annotations

import csv
import io
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from multimodal.atomic import write_text_atomic
from multimodal.config import AnalyzeConfig
from multimodal.errors import EXIT_FAILED, EXIT_MODEL, MultimodalError

BATCH_COLUMNS = ["input", "output", "status", "error", "exit_code", "duration", "seconds", "dominant"]


@dataclass(frozen=True)
class Job:
    """One input and where its results go."""

    source: Path
    target: Path


@dataclass(frozen=True)
class WriteOptions:
    """What to write besides the tables (see :func:`multimodal.report.write_analysis`)."""

    force: bool = False
    pictures: bool = True
    annotate: bool = False


def analyze_one(analyzer, job: Job, write: WriteOptions, progress=None, written=None) -> dict:
    """Analyse one input and write its results; never raises for a bad input.

    Returns a row of ``batch.csv`` plus ``warnings`` (list) and ``summary``
    (the printed lines): ``status`` is ``done`` or ``failed`` with a one-line
    ``error`` and the ``exit_code`` the CLI documents. ``progress`` goes to
    :meth:`multimodal.pipeline.Analyzer.analyze`; ``written(analysis)`` is
    called once the results are in place.
    """
    from multimodal.report import check_writable, overall, summary_text, write_analysis
    started = time.perf_counter()
    row = {"input": str(job.source), "output": str(job.target), "status": "failed", "error": "",
           "exit_code": EXIT_FAILED, "duration": None, "seconds": None, "dominant": None,
           "warnings": [], "summary": ""}
    try:
        check_writable(job.target, write.force)
        analysis = analyzer.analyze(job.source, progress)
        write_analysis(analysis, job.target, force=write.force, pictures=write.pictures, annotate=write.annotate)
        if written is not None:
            written(analysis)
        warnings = list(analysis.warnings)
        if write.annotate and not analysis.info.has_video:
            warnings.append(f"{job.source.name}: --annotate needs video or a photo; nothing drawn for audio")
        row.update(status="done", exit_code=0, duration=round(analysis.info.duration, 3),
                   dominant=overall(analysis)["dominant"], warnings=warnings,
                   summary=summary_text(analysis, job.target))
    except MultimodalError as err:
        row.update(error=str(err), exit_code=err.exit_code)
    except Exception as err:  # a bug met on one file must not stop the batch
        first = (str(err).strip().splitlines() or [""])[0][:300]
        row.update(error=f"{job.source}: unexpected {type(err).__name__}: {first} (please report this)")
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def default_jobs() -> int:
    """Worker processes worth running here: one per two cores (``analyze`` keeps about
    two cores busy with its decoding, detection and audio threads), at least one."""
    return max(1, (os.cpu_count() or 1) // 2)


# -- engines: each yields finished rows, in any order --------------------------------------

def run_serial(cfg: AnalyzeConfig, jobs: list[Job], write: WriteOptions) -> Iterator[dict]:
    """Every job in this process, one after another."""
    from multimodal.pipeline import Analyzer
    analyzer = Analyzer(cfg)
    for job in jobs:
        yield analyze_one(analyzer, job, write)


class _Worker:
    """The analyzer of one worker process, built once when the process starts.

    A class attribute because a process pool's initializer can hand state to
    its tasks no other way; each worker process has its own.
    """

    analyzer = None

    @classmethod
    def start(cls, cfg: AnalyzeConfig) -> None:
        from multimodal.pipeline import Analyzer
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        cls.analyzer = Analyzer(cfg)

    @classmethod
    def run(cls, job: Job, write: WriteOptions) -> dict:
        return analyze_one(cls.analyzer, job, write)


def run_processes(cfg: AnalyzeConfig, jobs: list[Job], write: WriteOptions, workers: int) -> Iterator[dict]:
    """Jobs spread over ``workers`` processes, each loading the models once.

    Processes are spawned, not forked: the parent may hold threads (and
    TensorFlow, in tests) that a fork would copy in a broken state. At most
    ``2 * workers`` jobs are queued at a time, so an interrupted batch leaves
    little started work behind.
    """
    ctx = multiprocessing.get_context("spawn")
    pending = iter(jobs)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_Worker.start,
                             initargs=(replace(cfg, quiet=True),)) as pool:
        running: set = set()
        try:
            while True:
                while len(running) < 2 * workers:
                    job = next(pending, None)
                    if job is None:
                        break
                    running.add(pool.submit(_Worker.run, job, write))
                if not running:
                    return
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BaseException:
            for future in running:
                future.cancel()
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()  # a worker deep in a file would otherwise finish it first
            raise


def run_ray(cfg: AnalyzeConfig, jobs: list[Job], write: WriteOptions, workers: int,
            address: str | None = None) -> Iterator[dict]:
    """Jobs on a Ray cluster (``address``), or on Ray started on this machine.

    An actor pool of ``workers`` actors, each holding one analyzer; every
    actor reads its inputs and writes its results itself, so inputs and the
    output folder must be paths all nodes see (a shared filesystem).
    """
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        from multimodal.errors import MissingDependencyError
        raise MissingDependencyError('--engine ray needs Ray: pip install -e ".[ray]"') from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)

    @ray.remote(num_cpus=max(1, (os.cpu_count() or 2) // max(1, workers)) if address is None else 2)
    class Analyst:
        def __init__(self, cfg):
            _Worker.start(cfg)

        def run(self, job, write):
            return _Worker.run(job, write)

    try:
        pool = ActorPool([Analyst.remote(replace(cfg, quiet=True))  # type: ignore[attr-defined]
                          for _ in range(workers)])
        yield from pool.map_unordered(lambda actor, job: actor.run.remote(job, write), jobs)
    finally:
        if started:  # leave a cluster we joined running, stop one we started
            ray.shutdown()


ENGINES: dict[str, Callable] = {"local": run_processes, "ray": run_ray}


# -- the batch index ----------------------------------------------------------------------

def write_batch_csv(path: Path, rows: list[dict]) -> None:
    """``batch.csv``: one row per input, in input order, written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=BATCH_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: "" if row.get(k) is None else row[k] for k in BATCH_COLUMNS})
    write_text_atomic(path, buf.getvalue())


def read_batch_csv(path: Path) -> dict[str, dict]:
    """The rows of an earlier ``batch.csv`` by input path ({} when there is none)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {row["input"]: row for row in csv.DictReader(fh)}


def is_complete(target: Path) -> bool:
    """Whether ``target`` holds a finished result (written atomically, so analysis.json means done)."""
    return (target / "analysis.json").is_file()


def model_error(row: dict) -> bool:
    """A failure that every later input would meet too."""
    return row["status"] == "failed" and row["exit_code"] == EXIT_MODEL
