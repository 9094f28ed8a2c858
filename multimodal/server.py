"""``multimodal serve``: the web page and the HTTP API over :mod:`multimodal.jobs`.

Import this module only where the ``serve`` extra is installed.

Built on FastAPI (routing, request validation and the OpenAPI description
at ``/openapi.json``), served by uvicorn; python-multipart
parses uploads. Every request but the page's static files needs the access
token: in the page's cookie (set when the printed URL is opened), an
``Authorization: Bearer`` header, or a ``token`` query parameter. Errors are
JSON ``{"error": "one line"}``, never a stack trace.
"""
from __future__ import annotations

import hmac
import secrets
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from multimodal.config import AUDIO_EXTENSIONS, EMOTION_COLORS, EMOTIONS, VIDEO_EXTENSIONS, AnalyzeConfig
from multimodal.errors import InputError
from multimodal.jobs import RESULT_FILES, JobOptions, JobRunner, JobStore, new_id

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
COOKIE = "multimodal_token"
# Image formats by their first bytes: the content decides, never the file name.
_IMAGE_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp"),
                (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


@dataclass(frozen=True)
class ServeConfig:
    """Options of ``multimodal serve``."""

    data_dir: Path = Path("multimodal-data")
    host: str = "127.0.0.1"
    port: int = 8000
    jobs: int = 1  # analyses running at once, each in its own worker process
    max_upload_mb: float = 2048.0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    analysis: AnalyzeConfig = AnalyzeConfig(quiet=True)  # models and detector for every analysis


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def sniff_kind(path: Path) -> tuple[str, str]:
    """What an uploaded file is, from its content: ``(kind, extension)``, kind one of
    "photo", "video", "audio". Raises :class:`InputError` for anything else."""
    import cv2

    from multimodal.decode import probe
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head:
        raise InputError("the file is empty (0 bytes)")
    ext = next((e for magic, e in _IMAGE_MAGIC if head.startswith(magic)), None)
    if ext is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        ext = ".webp"
    if ext is not None:
        if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
            raise InputError("the file looks like an image but cannot be decoded")
        return "photo", ext
    try:
        info = probe(path)
    except InputError:
        raise InputError("not a video, audio file or photo that this tool can read") from None
    if info.has_video:
        return "video", ".video"
    if info.has_audio:
        return "audio", ".audio"
    raise InputError("the file holds neither video nor audio")


def safe_name(name: str | None) -> str:
    """The uploaded name for display only: its last path part, control characters removed, at most 200."""
    base = (name or "upload").replace("\\", "/").split("/")[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return (base or "upload")[:200]


class _TooLarge(Exception):
    pass


class UploadLimit:
    """ASGI middleware: a request body past ``limit`` bytes gets 413 before it is all read."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _json_asgi(send, 413, self._message())
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched_send)
        except _TooLarge:
            if not started:
                await _json_asgi(send, 413, self._message())

    def _message(self) -> str:
        return f"the upload is larger than the server's limit of {self.limit / 2**20:g} MB (--max-upload-mb)"


async def _json_asgi(send, status: int, message: str) -> None:
    import json
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(cfg: ServeConfig, runner: JobRunner | None = None):
    """The FastAPI application: the page, the API and, unless given, a job runner of its own.

    Rows left running by an earlier server are marked interrupted and rows
    still queued are queued again.
    """
    from multimodal.fusion import STRATEGIES

    fusions = sorted(STRATEGIES)
    store = JobStore(cfg.data_dir)
    owned = runner is None
    runner = runner or JobRunner(store, cfg.jobs, cfg.analysis)

    @asynccontextmanager
    async def lifespan(app):
        for job_id in store.recover():
            runner.submit(job_id)
        yield
        if owned:
            runner.shutdown()

    # No /docs page: FastAPI's fetches its scripts from a CDN, and this server works offline.
    app = FastAPI(title="multimodal", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Audio-visual emotion recognition over time. Every call needs the access token "
                              "printed by `multimodal serve`: `Authorization: Bearer TOKEN` or `?token=TOKEN`.")
    app.add_middleware(UploadLimit, limit=int(cfg.max_upload_mb * 2**20))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # never a stack trace to the client
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"},
                            status_code=500)

    def authorised(request: Request) -> bool:
        given = request.cookies.get(COOKIE) or request.query_params.get("token") or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), cfg.token.encode())

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        path = request.url.path
        if path.startswith("/static/") or path in ("/", "/favicon.ico") or authorised(request):
            return await call_next(request)
        return JSONResponse({"error": "missing or wrong access token: open the URL that `multimodal serve` "
                                      "printed, or send Authorization: Bearer TOKEN"}, status_code=401)

    def job_or_404(job_id: str) -> dict:
        row = store.get(job_id) if job_id.isalnum() else None
        if row is None:
            raise HTTPException(404, f"no analysis {job_id!r}")
        return row

    def public(row: dict) -> dict:
        folder = store.folder(row["id"]) / "result"
        files = [f for f in RESULT_FILES if (folder / f).is_file()] if row["status"] == "done" else []
        return {k: row[k] for k in ("id", "name", "kind", "status", "stage", "progress", "error", "exit_code",
                                    "dominant", "duration", "warnings", "options", "created", "started",
                                    "finished")} | {"files": files}

    @app.get("/", include_in_schema=False)
    async def page(request: Request):
        token = request.query_params.get("token")
        if token is not None:
            if not hmac.compare_digest(token.encode(), cfg.token.encode()):
                return HTMLResponse(_NO_TOKEN_PAGE, status_code=401)
            response = RedirectResponse("/", status_code=303)  # the token leaves the address bar
            response.set_cookie(COOKIE, cfg.token, httponly=True, samesite="strict")
            return response
        if not authorised(request):
            return HTMLResponse(_NO_TOKEN_PAGE, status_code=401)
        return HTMLResponse((WEB_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in STATIC_FILES:
            raise HTTPException(404, "no such file")
        return FileResponse(WEB_DIR / name, media_type=STATIC_FILES[name])

    @app.get("/api/options", summary="The analysis options the page offers, with their defaults")
    async def options():
        d = JobOptions()
        return {"fps": d.fps, "segment": d.segment, "fusion": d.fusion, "annotate": d.annotate,
                "labels": list(EMOTIONS), "colors": dict(EMOTION_COLORS),
                "fusions": fusions, "max_upload_mb": cfg.max_upload_mb, "jobs": cfg.jobs}

    @app.post("/api/analyses", status_code=201, summary="Upload a video, audio file or photo to analyse")
    def create(file: Annotated[UploadFile, File(description="the media file")],
               fps: Annotated[float, Form(gt=0, le=60)] = JobOptions.fps,
               segment: Annotated[float, Form(gt=0, le=3600)] = JobOptions.segment,
               fusion: Annotated[str, Form()] = JobOptions.fusion,
               annotate: Annotated[bool, Form()] = JobOptions.annotate):
        if fusion not in fusions:
            raise HTTPException(422, f"fusion: {fusion!r} is not one of {', '.join(fusions)}")
        job_id, name = new_id(), safe_name(file.filename)
        folder = store.folder(job_id)
        folder.mkdir(parents=True)
        upload = folder / "upload.tmp"
        try:
            with open(upload, "wb") as fh:
                shutil.copyfileobj(file.file, fh, 1 << 20)
            try:
                kind, ext = sniff_kind(upload)
            except InputError as err:
                status = 400 if "empty" in str(err) else 415
                raise HTTPException(status, f"{name}: {err}") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if kind != "photo":  # a known extension helps a browser play the input back
            suffix = Path(name).suffix.lower()
            known = VIDEO_EXTENSIONS if kind == "video" else AUDIO_EXTENSIONS
            ext = suffix if suffix in known else ext
        upload.rename(folder / f"input{ext}")
        row = store.create(job_id, name, kind, f"input{ext}", JobOptions(fps, segment, fusion, annotate))
        runner.submit(job_id)
        return public(row)

    @app.get("/api/analyses", summary="Every analysis, newest first")
    async def list_analyses():
        return [public(r) for r in store.all()]

    @app.get("/api/analyses/{job_id}", summary="One analysis: status, stage, progress, files")
    async def get_analysis(job_id: str):
        return public(job_or_404(job_id))

    @app.get("/api/analyses/{job_id}/document", summary="The analysis.json document of a finished analysis")
    async def document(job_id: str):
        row = job_or_404(job_id)
        path = store.folder(job_id) / "result" / "analysis.json"
        if row["status"] != "done" or not path.is_file():
            raise HTTPException(409, f"analysis {job_id} is {row['status']}, not done")
        return FileResponse(path, media_type="application/json")

    @app.get("/api/analyses/{job_id}/people", summary="Each person's thumbnails (PNG data URIs)")
    async def people(job_id: str):
        job_or_404(job_id)
        path = store.folder(job_id) / "people.json"
        return FileResponse(path, media_type="application/json") if path.is_file() else {}

    @app.get("/api/analyses/{job_id}/files/{name}", summary="A result file, or 'input' for the uploaded file")
    async def result_file(job_id: str, name: str):
        row = job_or_404(job_id)
        folder = store.folder(job_id)
        if name == "input":
            path = folder / row["input"]
        elif name in RESULT_FILES:
            path = folder / "result" / name
        else:
            raise HTTPException(404, f"no file {name!r}; one of input, {', '.join(RESULT_FILES)}")
        if not path.is_file():
            raise HTTPException(404, f"analysis {job_id} has no {name}")
        download = Path(row["name"]).stem + ("" if name == "input" else f"-{name}")
        headers = {"Content-Disposition": "inline" if name in ("input", "annotated.mp4", "timeline.png")
                   else f"attachment; filename*=UTF-8''{_quote(download)}"}
        return FileResponse(path, headers=headers, media_type=_media_type(name, row))

    @app.delete("/api/analyses/{job_id}", status_code=204, summary="Delete an analysis and its files")
    async def delete(job_id: str):
        row = job_or_404(job_id)
        if row["status"] == "running":
            raise HTTPException(409, f"analysis {job_id} is running; delete it when it has finished")
        store.delete(job_id)
        return Response(status_code=204)

    @app.post("/api/analyses/{job_id}/rerun", summary="Run an interrupted or failed analysis again")
    async def rerun(job_id: str):
        row = job_or_404(job_id)
        if row["status"] not in ("interrupted", "failed"):
            raise HTTPException(409, f"analysis {job_id} is {row['status']}; only interrupted or failed ones rerun")
        shutil.rmtree(store.folder(job_id) / "result", ignore_errors=True)
        store.update(job_id, status="queued", stage="", progress=0.0, error="", exit_code=None, finished=None)
        runner.submit(job_id)
        return public(job_or_404(job_id))

    return app


def _version() -> str:
    from multimodal.version import __version__
    return __version__


def _quote(name: str) -> str:
    from urllib.parse import quote
    return quote(name, safe="")


def _media_type(name: str, row: dict) -> str | None:
    types = {"analysis.json": "application/json", "segments.csv": "text/csv", "faces.csv": "text/csv",
             "report.html": "text/html", "timeline.png": "image/png", "annotated.mp4": "video/mp4"}
    if name in types:
        return types[name]
    ext = Path(row["input"]).suffix.lower()
    return {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime",
            ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".opus": "audio/ogg",
            ".flac": "audio/flac", ".m4a": "audio/mp4", ".jpg": "image/jpeg", ".png": "image/png",
            ".webp": "image/webp", ".bmp": "image/bmp", ".tif": "image/tiff"}.get(ext, "application/octet-stream")


_NO_TOKEN_PAGE = """<!doctype html><meta charset="utf-8"><title>multimodal</title>
<p>This page needs its access token. Open the address that <code>multimodal serve</code> printed
when it started (it ends in <code>?token=…</code>).</p>"""


def serve(cfg: ServeConfig) -> None:
    """Run the server until interrupted; prints the address to open, token included."""
    import uvicorn

    app = create_app(cfg)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    url = f"http://{host}:{cfg.port}/?token={cfg.token}"
    print(f"multimodal serve: open {url}", flush=True)
    print(f"  data in {cfg.data_dir.resolve()}; {cfg.jobs} analysis at a time; the API's OpenAPI description "
          f"at http://{host}:{cfg.port}/openapi.json (with the token)", flush=True)
    if not is_loopback(cfg.host):
        print(f"  warning: listening on {cfg.host}, reachable from other machines; every request needs the "
              "token, and traffic is not encrypted", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
