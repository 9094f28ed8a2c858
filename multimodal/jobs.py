"""Analyses submitted to ``multimodal serve``: their state in SQLite, their work in processes.

Every analysis lives in ``DATA/analyses/<id>/``: the uploaded file as
``input<ext>`` (the extension chosen from what the content is, never from the
uploaded name), the results in ``result/`` (written atomically by
:func:`multimodal.report.write_analysis`, so it exists complete or not at
all) and ``people.json`` (each person's thumbnails). Its state is a row of
``DATA/analyses.sqlite``. Worker processes load the models once, run
:func:`multimodal.batch.analyze_one` and write the state and progress
themselves, so the state on disk is the truth after any crash: a row left
``running`` by a server that died is ``interrupted`` when the next one starts.
"""
from __future__ import annotations

import base64
import json
import multiprocessing
import os
import secrets
import shutil
import sqlite3
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

import cv2

from multimodal.config import AnalyzeConfig
from multimodal.errors import EXIT_FAILED

STATES = ("queued", "running", "done", "failed", "interrupted")
#: The result files a client may fetch, by name; nothing else is ever served.
RESULT_FILES = ("analysis.json", "segments.csv", "faces.csv", "report.html", "timeline.png", "annotated.mp4")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS analyses (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,          -- the uploaded file's name, for display only
    kind TEXT NOT NULL,          -- video, audio or photo, from probing the content
    input TEXT NOT NULL,         -- the stored file's name inside the analysis folder
    options TEXT NOT NULL,       -- JSON: the JobOptions
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    dominant TEXT,
    duration REAL,
    warnings TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    started REAL,
    finished REAL
)
"""


@dataclass(frozen=True)
class JobOptions:
    """The options of ``analyze`` that the web page offers, with the command line's defaults."""

    fps: float = AnalyzeConfig.fps
    segment: float = AnalyzeConfig.segment
    fusion: str = AnalyzeConfig.fusion
    annotate: bool = False

    def analyze_config(self, base: AnalyzeConfig) -> AnalyzeConfig:
        return replace(base, fps=self.fps, segment=self.segment, fusion=self.fusion, quiet=True)


def new_id() -> str:
    """An analysis id: random, URL-safe and never derived from anything a user sent."""
    return secrets.token_hex(8)


class JobStore:
    """The analyses' rows in ``analyses.sqlite`` under ``data_dir``.

    One short-lived connection per call, so the server's threads and the
    worker processes can all use the same file safely (SQLite's WAL mode).
    """

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "analyses"
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.data_dir / "analyses.sqlite"
        with closing(self._connect()) as con, con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db, timeout=30)
        con.row_factory = sqlite3.Row
        return con

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def create(self, job_id: str, name: str, kind: str, input_name: str, options: JobOptions) -> dict:
        with closing(self._connect()) as con, con:
            con.execute("INSERT INTO analyses (id, name, kind, input, options, status, created) "
                        "VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                        (job_id, name, kind, input_name, json.dumps(asdict(options)), time.time()))
        return self.get(job_id) or {}

    def update(self, job_id: str, **values) -> None:
        if not values:
            return
        cols = ", ".join(f"{k} = ?" for k in values)
        with closing(self._connect()) as con, con:
            con.execute(f"UPDATE analyses SET {cols} WHERE id = ?", (*values.values(), job_id))

    def get(self, job_id: str) -> dict | None:
        with closing(self._connect()) as con:
            row = con.execute("SELECT * FROM analyses WHERE id = ?", (job_id,)).fetchone()
        return _as_dict(row) if row else None

    def all(self) -> list[dict]:
        with closing(self._connect()) as con:
            rows = con.execute("SELECT * FROM analyses ORDER BY created DESC").fetchall()
        return [_as_dict(r) for r in rows]

    def delete(self, job_id: str) -> None:
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM analyses WHERE id = ?", (job_id,))
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def recover(self) -> list[str]:
        """After a start: rows left running are marked interrupted (their half-written
        result folders removed); returns the ids still queued, to queue again."""
        with closing(self._connect()) as con, con:
            running = [r["id"] for r in con.execute("SELECT id FROM analyses WHERE status = 'running'")]
            con.execute("UPDATE analyses SET status = 'interrupted', stage = '', "
                        "error = 'the server stopped while this analysis ran' WHERE status = 'running'")
            queued = [r["id"] for r in con.execute("SELECT id FROM analyses WHERE status = 'queued' "
                                                   "ORDER BY created")]
        for job_id in running:
            for tmp in self.folder(job_id).glob(".result.*"):
                shutil.rmtree(tmp, ignore_errors=True)
        return queued


def _as_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["options"] = json.loads(d["options"])
    d["warnings"] = json.loads(d["warnings"])
    return d


# -- the worker side ------------------------------------------------------------------------

class _ServerWorker:
    """One worker process's analyzers, one per distinct option set, loaded on first use.

    A class attribute, as in :class:`multimodal.batch._Worker`: a process
    pool hands state to its tasks no other way.
    """

    analyzers: dict = {}
    base: AnalyzeConfig = AnalyzeConfig()

    @classmethod
    def start(cls, base: AnalyzeConfig) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        cls.base = base

    @classmethod
    def analyzer(cls, cfg: AnalyzeConfig):
        from multimodal.pipeline import Analyzer
        if cfg not in cls.analyzers:
            if len(cls.analyzers) >= 2:  # option sets seldom vary; keep memory bounded
                cls.analyzers.pop(next(iter(cls.analyzers)))
            cls.analyzers[cfg] = Analyzer(cfg)
        return cls.analyzers[cfg]


def run_job(data_dir: Path, job_id: str) -> str:
    """Run one queued analysis in this (worker) process; returns its final status.

    The row's status, stage and progress are written as the work advances
    (progress at most twice a second); errors become the row's one-line
    message, with the uploaded file's name in place of the stored path.
    """
    from multimodal.batch import Job, WriteOptions, analyze_one

    store = JobStore(data_dir)
    row = store.get(job_id)
    if row is None or row["status"] != "queued":  # deleted, or already handled
        return row["status"] if row else "deleted"
    folder = store.folder(job_id)
    options = JobOptions(**{f.name: row["options"][f.name] for f in fields(JobOptions) if f.name in row["options"]})
    store.update(job_id, status="running", stage="loading models", progress=0.0, started=time.time())
    last = [0.0]

    def progress(stage: str, fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            store.update(job_id, stage=stage, progress=round(min(fraction, 1.0) * 0.95, 3))

    def written(analysis) -> None:
        write_people(analysis, folder / "people.json")

    try:
        analyzer = _ServerWorker.analyzer(options.analyze_config(_ServerWorker.base))
    except Exception as err:  # a model that cannot load fails every job alike; say so on each
        store.update(job_id, status="failed", stage="", error=_one_line(err), exit_code=EXIT_FAILED,
                     finished=time.time())
        return "failed"
    source = folder / row["input"]
    result = analyze_one(analyzer, Job(source, folder / "result"), WriteOptions(annotate=options.annotate),
                         progress, written)
    error = result["error"].replace(str(source), row["name"])
    status = "done" if result["status"] == "done" else "failed"
    warnings = [w.replace(source.name, row["name"]) for w in result.get("warnings", [])]
    store.update(job_id, status=status, stage="", progress=1.0 if status == "done" else 0.0, error=error,
                 exit_code=result["exit_code"], dominant=result["dominant"], duration=result["duration"],
                 warnings=json.dumps(warnings), finished=time.time())
    return status


def _one_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def write_people(analysis, path: Path) -> None:
    """Each person's thumbnails (PNG data URIs, with their times) as JSON, for the web page."""
    people = {}
    for track, kept in analysis.thumbnails.items():
        people[str(track)] = [{"time": round(t, 2), "src": "data:image/png;base64,"
                               + base64.b64encode(cv2.imencode(".png", img)[1].tobytes()).decode()}
                              for _, t, img in kept]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(people))
    os.replace(tmp, path)


class JobRunner:
    """At most ``workers`` analyses at a time, in spawned processes that keep their models.

    Parameters
    ----------
    store : where the analyses are
    workers : processes, hence analyses running at once
    base : the analysis options other than the web form's (models, detector)
    """

    def __init__(self, store: JobStore, workers: int = 1, base: AnalyzeConfig | None = None):
        self.store, self.workers = store, workers
        self.base = replace(base or AnalyzeConfig(), quiet=True)
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # Spawned, not forked: the server holds threads that a fork would copy broken.
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_ServerWorker.start, initargs=(self.base,))

    def submit(self, job_id: str) -> None:
        try:
            future = self.pool.submit(run_job, self.store.data_dir, job_id)
        except BrokenProcessPool:  # a worker died (killed, out of memory): start afresh
            self.pool = self._new_pool()
            future = self.pool.submit(run_job, self.store.data_dir, job_id)
        future.add_done_callback(partial(self._check, job_id=job_id))

    def _check(self, future: Future, job_id: str) -> None:
        """A worker that died (killed, out of memory) leaves its row running: fail it, truthfully."""
        err = None if future.cancelled() else future.exception()
        if err is None:
            return
        row = self.store.get(job_id)
        if row and row["status"] in ("queued", "running"):
            self.store.update(job_id, status="failed", stage="", error=f"the analysis stopped: {_one_line(err)}",
                              exit_code=EXIT_FAILED, finished=time.time())

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
