"""``live``: emotions from a camera or a stream as they happen.

ffmpeg reads the source (a webcam, a stream URL, or a file played at its own
pace) in two processes, one for frames sampled at ``fps`` and one for the
audio, each drained by its own thread. The analysis thread always takes the
newest frame: when it falls behind, older frames are dropped, never queued,
so memory stays flat and the delay stays bounded. Every ``hop`` seconds of
stream time the last ``segment`` seconds are fused and emitted as one row
with the columns of ``segments.csv``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from multimodal.aggregate import build_segments
from multimodal.audio import audio_evidence, to_project_labels
from multimodal.config import LiveConfig
from multimodal.decode import _AUDIO, _VIDEO, decode_size, ffmpeg_exe
from multimodal.errors import InputError, UsageError
from multimodal.faces import crop_faces, largest, to_gray
from multimodal.pipeline import fuse, load_fusion
from multimodal.report import segment_row
from multimodal.results import AudioSegment, FaceRecord
from multimodal.stages import AudioStage, VideoStage
from multimodal.tracking import IoUTracker


def input_args(cfg: LiveConfig) -> list[str]:
    """ffmpeg's input options for the source."""
    src = cfg.source
    if src.isdigit() or src.startswith("/dev/video"):
        device = f"/dev/video{src}" if src.isdigit() else src
        if sys.platform == "darwin":
            return ["-f", "avfoundation", "-i", src if src.isdigit() else device]
        if sys.platform == "win32":
            return ["-f", "dshow", "-i", f"video={src}"]
        return ["-f", "v4l2", "-i", device]
    if "://" in src:
        return ["-rw_timeout", "10000000", "-i", src] if src.split("://")[0] in ("http", "https", "rtsp") else [
            "-i", src]
    if not Path(src).exists():
        raise InputError(f"{src}: no such file, device or stream URL")
    return (["-re"] if cfg.realtime else []) + ["-i", src]


def is_stream(source: str) -> bool:
    """A network stream, which may drop and come back."""
    return "://" in source


def open_source(cfg: LiveConfig) -> tuple[int, int, bool]:
    """Width, height and whether the source has audio, read from ffmpeg's description of it."""
    try:
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *input_args(cfg), "-t", "0", "-f", "null", "-"],
                              capture_output=True, text=True, errors="replace", timeout=20)
    except subprocess.TimeoutExpired:
        raise InputError(f"{cfg.source}: no answer within 20 s") from None
    video = _VIDEO.search(proc.stderr)
    if video is None and _AUDIO.search(proc.stderr):
        raise InputError(f"{cfg.source}: has no video stream; live follows faces and voice together, "
                         "so an audio-only source is not supported (analyze takes audio files)")
    if video is None:
        last = (proc.stderr.strip().splitlines() or ["no video stream"])[-1]
        raise InputError(f"{cfg.source}: cannot open ({last.strip()[:200]})")
    return int(video.group(2)), int(video.group(3)), _AUDIO.search(proc.stderr) is not None


class LatestFrame:
    """A one-frame mailbox: a new frame replaces one not yet taken (which counts as dropped)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self.dropped = 0
        self.closed = False

    def put(self, item) -> None:
        with self._cond:
            self.dropped += self._item is not None
            self._item = item
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()

    def take(self, timeout: float = 1.0):
        """The newest frame, or None at the end of the stream (or after ``timeout`` s)."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self.closed, timeout)
            item, self._item = self._item, None
            return item


class Drain(threading.Thread):
    """Reads fixed-size records from a pipe as they come and hands each to ``sink(record, clock)``."""

    def __init__(self, pipe, record_bytes: int, sink: Callable[[bytes, float], None]):
        super().__init__(daemon=True)
        self.pipe, self.record_bytes, self.sink = pipe, record_bytes, sink

    def run(self) -> None:
        with self.pipe:
            while True:
                buf = self.pipe.read(self.record_bytes)
                if len(buf) < self.record_bytes:
                    return
                self.sink(buf, time.monotonic())


@dataclass
class Stats:
    """Delays (seconds) measured while running."""

    face_delays: deque = field(default_factory=lambda: deque(maxlen=500))
    segment_delays: deque = field(default_factory=lambda: deque(maxlen=500))

    def line(self, dropped: int) -> str:
        def ms(values, q):
            return f"{1000 * np.percentile(values, q):.0f}" if values else "–"
        return (f"face-label delay median {ms(self.face_delays, 50)} ms, 95th {ms(self.face_delays, 95)} ms; "
                f"segment delay median {ms(self.segment_delays, 50)} ms; frames dropped {dropped}")


def run_live(cfg: LiveConfig, emit: Callable[[dict], None], say: Callable[[str], None]) -> Stats:
    """Follow the source until it ends (or Ctrl-C), calling ``emit(row)`` for each segment.

    Returns the measured delays. Raises :class:`InputError` when the source
    cannot be opened, or a stream stays down after ``cfg.retries`` attempts.
    """
    a = cfg.analysis
    video, audio = VideoStage(a), AudioStage(a)
    video.load()
    audio.load()  # before the source is opened: a live stream does not wait for librosa's import
    width, height, has_audio = open_source(cfg)
    window = ShowWindow() if cfg.show else None
    fusion = load_fusion(a.fusion)
    stats = Stats()
    attempt = 0
    state = _Stream(cfg, video, audio, fusion, emit, stats, window)
    try:
        while True:
            ended_cleanly = state.follow(width, height, has_audio)
            if ended_cleanly or not is_stream(cfg.source) or attempt >= cfg.retries:
                if not ended_cleanly and is_stream(cfg.source):
                    raise InputError(f"{cfg.source}: stream lost ({state.last_error}); gave up after "
                                     f"{cfg.retries} reconnections")
                break
            attempt += 1
            say(f"warning: {cfg.source}: stream lost ({state.last_error}); reconnecting ({attempt} of {cfg.retries})")
            time.sleep(2.0)
    except KeyboardInterrupt:
        pass
    finally:
        state.flush()
        if window is not None:
            window.close()
    if cfg.verbose:
        say(stats.line(state.dropped))
    return stats


class _Stream:
    """The running analysis: faces and audio of the last ``segment`` seconds of stream time."""

    def __init__(self, cfg: LiveConfig, video: VideoStage, audio: AudioStage, fusion, emit, stats: Stats, window):
        self.cfg, self.video, self.audio, self.fusion = cfg, video, audio, fusion
        self.emit, self.stats, self.window = emit, stats, window
        self.tracker = IoUTracker(max_gap=max(2.0, 2.5 / cfg.analysis.fps))
        self.offset = 0.0  # stream time already followed, across reconnections
        self.faces: deque[FaceRecord] = deque()
        self.frame_times: deque[float] = deque()
        self.audio_chunks: deque[tuple[float, np.ndarray]] = deque()
        self.audio_time = 0.0
        self.next_end = cfg.analysis.segment
        self.dropped = 0
        self.last_error = ""
        self.now = 0.0  # stream time of the newest analysed frame
        self.reached: dict[float, float] = {}  # monotonic clock when the stream reached a time
        self.emitted_end = 0.0  # stream time up to which rows were emitted
        self.last_row: dict | None = None  # shown in the window's banner

    def follow(self, width: int, height: int, has_audio: bool) -> bool:
        """Read the source until it ends; True when it ended cleanly (end of file, or Ctrl-C)."""
        a = self.cfg.analysis
        w, h = decode_size_of(width, height, a.detect_width)
        # One ffmpeg process, one connection to the source (cameras often allow few):
        # frames on stdout, audio on a second pipe.
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *input_args(self.cfg),
               "-map", "0:v:0", "-vf", f"fps={a.fps},scale={w}:{h}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        mailbox = LatestFrame()
        start = self.offset
        counter = {"n": 0}

        def on_frame(buf: bytes, clock: float) -> None:
            t = start + counter["n"] / a.fps
            counter["n"] += 1
            mailbox.put((t, clock, np.frombuffer(buf, np.uint8).reshape(h, w, 3)))

        audio_read = audio_write = None
        has_audio = has_audio and sys.platform != "win32"  # passing a second pipe needs POSIX
        if has_audio:
            sr = self.audio.model.sample_rate
            audio_read, audio_write = os.pipe()
            cmd += ["-map", "0:a:0", "-ac", "1", "-ar", str(sr), "-f", "s16le", f"pipe:{audio_write}"]

            def on_audio(buf: bytes, clock: float) -> None:
                y = np.frombuffer(buf, np.int16).astype(np.float32) / 32768
                self.audio_chunks.append((self.audio_time, y))
                self.audio_time += len(y) / sr

            self.audio_time = start
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                    pass_fds=(audio_write,) if audio_write is not None else ())
            drains = [Drain(proc.stdout, w * h * 3, on_frame)]
            if audio_read is not None and audio_write is not None:
                os.close(audio_write)  # the child holds it now; its end of stream is ffmpeg's
                drains.append(Drain(os.fdopen(audio_read, "rb"), sr // 10 * 2, on_audio))  # 100 ms records
            for d in drains:
                d.start()

            def close_when_done() -> None:
                drains[0].join()
                mailbox.close()

            threading.Thread(target=close_when_done, daemon=True).start()
            try:
                while True:
                    item = mailbox.take()
                    if item is None:
                        if mailbox.closed:
                            break
                        continue
                    self._analyse(*item)
                    self._emit_ready(has_audio)
            finally:
                if proc.poll() is None:
                    proc.terminate()
                code = proc.wait()
                for d in drains:
                    d.join(timeout=5)
                self.dropped += mailbox.dropped
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()
        self.offset = self.now + 1 / a.fps
        # ffmpeg ends a network input that stopped sending (a UDP timeout, a dropped
        # connection) with exit status 0 but an error message: that is a lost stream.
        lost = code != 0 or (is_stream(self.cfg.source) and any("rror" in line for line in lines))
        self.last_error = (lines[-1].strip()[:200] if lines else f"ffmpeg exited with {code}") if lost else ""
        return not lost

    def _analyse(self, t: float, clock: float, frame: np.ndarray) -> None:
        a = self.cfg.analysis
        self.now = t
        self.reached[t] = clock
        self.frame_times.append(t)
        color = getattr(self.video.detector, "needs_color", False)
        found = largest(self.video.detector.detect(frame if color else to_gray(frame), small=True), a.max_faces)
        records = []
        if found:
            probs = self.video.visual.predict_proba(crop_faces(to_gray(frame), found, self.video.visual.input_size))
            records = [FaceRecord(t, track, face, p) for face, track, p in
                       zip(found, self.tracker.update(t, found), probs)]
            self.faces.extend(records)
            self.stats.face_delays.append(time.monotonic() - clock)
        if self.window is not None:
            self.window.show(frame, records, self.last_row)

    def _emit_ready(self, has_audio: bool) -> None:
        """Emit every window whose end the stream (video, and audio if any) has passed."""
        while self.now >= self.next_end and (not has_audio or self.audio_time >= self.next_end):
            self._emit_window(self.next_end - self.cfg.analysis.segment, self.next_end, has_audio)
            self.next_end += self.cfg.hop

    def flush(self) -> None:
        """At the end: the last, possibly shorter, window if it holds anything not yet emitted."""
        end = self.now + 1 / self.cfg.analysis.fps
        if self.frame_times and end > self.emitted_end + 1e-6:
            self._emit_window(max(0.0, end - self.cfg.analysis.segment), end, bool(self.audio_chunks))

    def _emit_window(self, start: float, end: float, has_audio: bool) -> None:
        a = self.cfg.analysis
        while self.faces and self.faces[0].time < start:
            self.faces.popleft()
        while self.frame_times and self.frame_times[0] < start:
            self.frame_times.popleft()
        faces = [r for r in self.faces if r.time < end]
        times = [t for t in self.frame_times if t < end]
        audio = None
        if has_audio:
            while self.audio_chunks and self.audio_chunks[0][0] + 0.1 < start:
                self.audio_chunks.popleft()
            clip = np.concatenate([y for t0, y in self.audio_chunks if start <= t0 < end] or [np.zeros(0, np.float32)])
            e = audio_evidence([clip], self.audio.model, self.audio.speech, a.min_speech)[0]
            probs = None if e.probs is None else to_project_labels(e.probs[None], self.audio.model.card.labels)[0]
            audio = [AudioSegment(e.dbfs if clip.size else None, min(1.0, e.speech / max(end - start, 1e-9)), probs)]
        # Times relative to the window's start, so the window is segment 0 of its own.
        shifted = [FaceRecord(r.time - start, r.track_id, r.face, r.probs) for r in faces]
        seg = fuse(build_segments([(0.0, end - start)], end - start, [t - start for t in times], shifted, audio),
                   self.fusion)[0]
        row = segment_row(seg)
        row.update(start=round(start, 3), end=round(end, 3), segment=int(round(end / self.cfg.hop)) - 1)
        # The delay counts from when the stream reached the window's end: the capture of
        # the first frame at or after it (the frame that triggered this row).
        reached = self.reached.get(min((t for t in self.reached if t >= end - 1e-6), default=-1.0))
        row = {"wall_time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "source": self.cfg.source,
               **row}
        if reached is not None:
            self.stats.segment_delays.append(time.monotonic() - reached)
        for t in [t for t in self.reached if t < start]:
            del self.reached[t]
        self.last_row, self.emitted_end = row, end
        self.emit(row)


def decode_size_of(width: int, height: int, max_width: int) -> tuple[int, int]:
    """Frame size after downscaling to at most ``max_width`` (both even)."""
    from multimodal.decode import MediaInfo
    return decode_size(MediaInfo(Path("live"), 0.0, True, False, width, height), max_width)


class ShowWindow:
    """An OpenCV window with boxes, labels and the fused banner."""

    def __init__(self):
        import cv2
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UsageError("--show needs a display (no DISPLAY is set)")
        try:
            cv2.namedWindow("multimodal live", cv2.WINDOW_NORMAL)
        except cv2.error:
            raise UsageError("--show needs OpenCV with window support: pip install opencv-python "
                             "(the headless build cannot open windows)") from None
        self.cv2 = cv2

    def show(self, frame: np.ndarray, records: list[FaceRecord], row: dict | None) -> None:
        from multimodal.annotate import _draw_face
        img = frame.copy()
        for r in records:
            _draw_face(img, r, 1.0)
        if row and row.get("label"):
            self.cv2.putText(img, f"{row['label']} {row['confidence']:.0%} ({row['modalities']})", (8, 24),
                             self.cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, self.cv2.LINE_AA)
        self.cv2.imshow("multimodal live", self.cv2.cvtColor(img, self.cv2.COLOR_RGB2BGR))
        if self.cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            raise KeyboardInterrupt

    def close(self) -> None:
        self.cv2.destroyAllWindows()


def jsonl_sink(out: Path | None) -> Callable[[dict], None]:
    """``emit`` for :func:`run_live`: one JSON line on stdout per row, and appended to
    ``out/segments.jsonl`` when given (each line flushed: a reader can follow the file)."""
    fh = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fh = open(out / "segments.jsonl", "a")

    def emit(row: dict) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if fh is not None:
            fh.write(line + "\n")
            fh.flush()
    return emit
