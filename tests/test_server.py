"""``multimodal serve``: the HTTP API through FastAPI's test client, a restart, and a real browser."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

import multimodal  # noqa: E402
from multimodal.config import EMOTIONS, AnalyzeConfig  # noqa: E402
from multimodal.server import ServeConfig, create_app  # noqa: E402
from tests.media import write_video  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = ROOT / "test-artifacts"


def wait_for(client, job_id: str, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = client.get(f"/api/analyses/{job_id}", headers=AUTH).json()
        if row["status"] not in ("queued", "running"):
            return row
        time.sleep(0.3)
    raise AssertionError(f"analysis {job_id} still {row['status']} after {timeout} s")


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    data = tmp_path_factory.mktemp("serve")
    analysis = AnalyzeConfig(visual_model=tiny_models["visual"], audio_model=tiny_models["audio"], quiet=True)
    cfg = ServeConfig(data_dir=data, jobs=1, max_upload_mb=2, token=TOKEN, analysis=analysis)
    with TestClient(create_app(cfg)) as client:
        yield client, cfg


def test_upload_progress_and_results_equal_analyze(server, face_video, tiny_models):
    client, cfg = server
    with open(face_video, "rb") as fh:
        r = client.post("/api/analyses", headers=AUTH, files={"file": ("talk.mp4", fh, "video/mp4")},
                        data={"fps": "2", "segment": "2.5", "fusion": "mean"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "queued" and created["kind"] == "video" and created["name"] == "talk.mp4"
    seen = set()
    deadline = time.time() + 180
    while time.time() < deadline:
        row = client.get(f"/api/analyses/{created['id']}", headers=AUTH).json()
        seen.add(row["status"])
        assert 0 <= row["progress"] <= 1
        if row["status"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert row["status"] == "done", row
    assert row["progress"] == 1 and "running" in seen
    assert {"analysis.json", "segments.csv", "report.html", "timeline.png"} <= set(row["files"])
    doc = client.get(f"/api/analyses/{created['id']}/document", headers=AUTH).json()
    direct = multimodal.analyze(face_video, fps=2.0, segment=2.5, fusion="mean",
                                visual_model=tiny_models["visual"], audio_model=tiny_models["audio"]).to_dict()
    assert [s["label"] for s in doc["segments"]] == [s["label"] for s in direct["segments"]]
    for ours, theirs in zip(doc["segments"], direct["segments"]):
        assert np.allclose([ours[f"fused_{e}"] for e in EMOTIONS], [theirs[f"fused_{e}"] for e in EMOTIONS],
                           atol=1e-4)
    assert doc["options"]["segment"] == 2.5 and doc["options"]["fusion"] == "mean"
    csv = client.get(f"/api/analyses/{created['id']}/files/segments.csv", headers=AUTH)
    assert csv.status_code == 200 and csv.text.startswith("segment,start,end")
    assert "attachment" in csv.headers["content-disposition"]
    people = client.get(f"/api/analyses/{created['id']}/people", headers=AUTH).json()
    assert people and all(p["src"].startswith("data:image/png;base64,") for v in people.values() for p in v)
    listed = client.get("/api/analyses", headers=AUTH).json()
    assert created["id"] in [a["id"] for a in listed]


def test_bad_uploads_get_clear_errors(server, tmp_path):
    client, cfg = server
    before = set((cfg.data_dir / "analyses").iterdir())
    r = client.post("/api/analyses", headers=AUTH, files={"file": ("notes.mp4", b"just some text, not a video",
                                                                    "video/mp4")})
    assert r.status_code == 415 and r.json() == {"error": "notes.mp4: not a video, audio file or photo that this "
                                                          "tool can read"}
    r = client.post("/api/analyses", headers=AUTH, files={"file": ("empty.wav", b"", "audio/wav")})
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = client.post("/api/analyses", headers=AUTH, files={"file": ("big.mp4", b"\0" * (3 * 2**20), "video/mp4")})
    assert r.status_code == 413 and "larger than the server's limit of 2 MB" in r.json()["error"]
    r = client.post("/api/analyses", headers=AUTH, files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 50)})
    assert r.status_code == 415 and "cannot be decoded" in r.json()["error"]
    r = client.post("/api/analyses", headers=AUTH, data={"fps": "-1"},
                    files={"file": ("x.mp4", b"x", "video/mp4")})
    assert r.status_code == 422 and r.json()["error"].startswith("fps:")
    assert set((cfg.data_dir / "analyses").iterdir()) == before  # nothing of a refused upload is kept
    assert len(client.get("/api/analyses", headers=AUTH).json()) == len(before)


def test_token_is_required_everywhere_but_the_static_files(server):
    client, _ = server
    for path in ("/api/analyses", "/api/options", "/openapi.json"):
        r = client.get(path)
        assert r.status_code == 401 and "access token" in r.json()["error"]
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/options", params={"token": TOKEN}).status_code == 200
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 401 and "access token" in page.text
    assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
    opened = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/"
    assert "httponly" in opened.headers["set-cookie"].lower() and "samesite=strict" in opened.headers["set-cookie"].lower()
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../server.py").status_code == 404
    assert client.get("/openapi.json", headers=AUTH).json()["paths"]["/api/analyses"]


def test_hostile_file_names_are_harmless(server, face_video):
    client, cfg = server
    names = ["../../../../tmp/evil.mp4", "<img src=x onerror=alert(1)>.mp4"]
    for name in names:
        with open(face_video, "rb") as fh:
            r = client.post("/api/analyses", headers=AUTH, files={"file": (name, fh, "video/mp4")})
        assert r.status_code == 201
        row = wait_for(client, r.json()["id"])
        assert row["status"] == "done"
        folder = cfg.data_dir / "analyses" / row["id"]
        assert sorted(p.name for p in folder.iterdir()) == ["input.mp4", "people.json", "result"]
    assert not Path("/tmp/evil.mp4").exists()
    shown = {a["name"] for a in client.get("/api/analyses", headers=AUTH).json()}
    assert {"evil.mp4", "<img src=x onerror=alert(1)>.mp4"} <= shown
    # a file outside the allow-list is never served, whatever the path
    job = client.get("/api/analyses", headers=AUTH).json()[0]["id"]
    for name in ("..%2F..%2Fanalyses.sqlite", "people.json", "input.mp4"):
        assert client.get(f"/api/analyses/{job}/files/{name}", headers=AUTH).status_code == 404
    assert client.get("/api/analyses/..%2F..%2F/files/input", headers=AUTH).status_code == 404


def test_delete_and_rerun(server, face_video):
    client, cfg = server
    with open(face_video, "rb") as fh:
        job = client.post("/api/analyses", headers=AUTH, files={"file": ("d.mp4", fh)}).json()["id"]
    wait_for(client, job)
    assert client.post(f"/api/analyses/{job}/rerun", headers=AUTH).status_code == 409  # done: nothing to rerun
    assert client.delete(f"/api/analyses/{job}", headers=AUTH).status_code == 204
    assert not (cfg.data_dir / "analyses" / job).exists()
    assert client.get(f"/api/analyses/{job}", headers=AUTH).status_code == 404
    assert client.delete(f"/api/analyses/{job}", headers=AUTH).json()["error"] == f"no analysis {job!r}"


def test_a_worker_that_dies_fails_its_job_and_the_next_one_runs(server, face_video, tmp_path):
    import psutil
    client, _ = server
    long_clip = write_video(tmp_path / "long.mp4", seconds=30.0, fps=25, size=(640, 480))
    with open(long_clip, "rb") as fh:
        job = client.post("/api/analyses", headers=AUTH, files={"file": ("long.mp4", fh)}, data={"fps": "25"}).json()
    deadline = time.time() + 60
    while client.get(f"/api/analyses/{job['id']}", headers=AUTH).json()["status"] != "running":
        assert time.time() < deadline
        time.sleep(0.05)
    workers = [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert workers
    for p in workers:
        p.kill()
    row = wait_for(client, job["id"], timeout=60)
    assert row["status"] == "failed" and row["error"].startswith("the analysis stopped")
    with open(face_video, "rb") as fh:
        after = client.post("/api/analyses", headers=AUTH, files={"file": ("after.mp4", fh)}).json()
    assert wait_for(client, after["id"])["status"] == "done"


# -- a real server process: restart and browser -------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, port: int, tiny_models) -> subprocess.Popen:
    """Start `multimodal serve` on `port` and wait until it, not another program on that port, answers.

    Its output goes to ``serve.log`` beside `data`: a pipe nobody reads could fill and stall the server.
    """
    cmd = [sys.executable, "-m", "multimodal", "serve", "--data-dir", str(data), "--port", str(port),
           "--token", TOKEN, "--visual-model", str(tiny_models["visual"]), "--audio-model", str(tiny_models["audio"])]
    log = data.parent / "serve.log"
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    import httpx
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/api/options", headers=AUTH, timeout=2)
            if r.status_code == 200 and "fusions" in r.json():
                assert f"open http://127.0.0.1:{port}/?token={TOKEN}" in log.read_text()
                return proc
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    if proc.poll() is None:
        kill(proc)
    raise AssertionError(f"the server did not answer on port {port}:\n{log.read_text()}")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the server and its workers, as a crash or a power cut would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_restart_keeps_finished_analyses_and_marks_the_interrupted(tiny_models, face_video, tmp_path):
    import httpx
    port, data = free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    long_clip = write_video(tmp_path / "long.mp4", seconds=40.0, fps=25, size=(640, 480))
    proc = start_server(data, port, tiny_models)
    try:
        with open(face_video, "rb") as fh:
            done_id = httpx.post(f"{base}/api/analyses", headers=AUTH, files={"file": ("short.mp4", fh)}).json()["id"]
        wait_for(httpx.Client(base_url=base), done_id)
        with open(long_clip, "rb") as fh:
            long_id = httpx.post(f"{base}/api/analyses", headers=AUTH, files={"file": ("long.mp4", fh)},
                                 data={"fps": "25"}).json()["id"]
        deadline = time.time() + 60
        while httpx.get(f"{base}/api/analyses/{long_id}", headers=AUTH).json()["status"] != "running":
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        kill(proc)
    proc = start_server(data, port, tiny_models)
    try:
        rows = {a["id"]: a for a in httpx.get(f"{base}/api/analyses", headers=AUTH).json()}
        assert rows[done_id]["status"] == "done" and "analysis.json" in rows[done_id]["files"]
        assert rows[long_id]["status"] == "interrupted" and rows[long_id]["files"] == []
        assert "stopped" in rows[long_id]["error"]
        doc = httpx.get(f"{base}/api/analyses/{done_id}/document", headers=AUTH)
        assert doc.status_code == 200 and doc.json()["segments"]
        assert httpx.post(f"{base}/api/analyses/{long_id}/rerun", headers=AUTH).json()["status"] == "queued"
    finally:
        kill(proc)


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no browser: install Debian's chromium and chromium-driver (.ci/run does)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,2000",
                "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_page_in_a_real_browser(tiny_models, tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    demo = ROOT / "data" / "demo" / "demo.mp4"
    hostile = tmp_path / "<img src=x onerror=alert(1)>.mp4"
    shutil.copy(demo, hostile)
    browser = _browser()
    try:
        # the port is chosen after the browser's driver has taken its own, so the two cannot meet
        port = free_port()
        proc = start_server(tmp_path / "data", port, tiny_models)
    except BaseException:
        browser.quit()
        raise
    try:
        browser.get(f"http://127.0.0.1:{port}/?token={TOKEN}")
        wait = WebDriverWait(browser, 180)
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#options select option")))
        browser.find_element(By.ID, "picker").send_keys(str(demo))
        browser.find_element(By.ID, "picker").send_keys(str(hostile))
        done = "#analyses tbody tr[data-status='done']"
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, done)) == 2)
        # the hostile name is text in the list, not markup
        assert not browser.find_elements(By.CSS_SELECTOR, "#analyses img")
        assert "<img src=x onerror=alert(1)>.mp4" in browser.find_element(By.ID, "analyses").text
        row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#analyses tbody tr")
                   if r.find_element(By.CSS_SELECTOR, "td").text == "demo.mp4")
        row.find_element(By.XPATH, ".//button[text()='open']").click()
        wait.until(seen.visibility_of_element_located((By.ID, "report")))
        wait.until(lambda b: b.execute_script("return document.getElementById('timeline').naturalWidth") > 0)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#segments tbody tr")) == 7  # 19.3 s in 3 s segments
        video = browser.find_element(By.CSS_SELECTOR, "#player video")
        assert video.is_displayed() and video.get_attribute("src").endswith("/files/input")
        browser.execute_script("const v = document.querySelector('#player video'); v.currentTime = 13;"
                               "v.dispatchEvent(new Event('timeupdate'));")
        current = browser.find_element(By.CSS_SELECTOR, "#segments tr.current td").text
        assert current == "0:12–0:15" and "0:13" in browser.find_element(By.ID, "banner").text
        assert browser.find_elements(By.CSS_SELECTOR, "#people .person img")
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "serve_report.png"))
        logs = json.dumps(browser.get_log("browser")) if hasattr(browser, "get_log") else "[]"
        assert "SEVERE" not in logs, logs
    except TimeoutException:
        page = browser.find_element(By.TAG_NAME, "body").text[:800]
        raise AssertionError(f"the page at {browser.current_url} did not get there; it shows:\n{page}\n"
                             f"the server said:\n{(tmp_path / 'serve.log').read_text()}") from None
    finally:
        browser.quit()
        kill(proc)
