"""A self-contained HTML page of one analysis: pictures are embedded, no server needed."""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path

import cv2
import numpy as np

from multimodal.config import EMOTION_COLORS as COLORS
from multimodal.config import EMOTIONS
from multimodal.formatting import plural

MAX_PEOPLE = 24

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.muted{color:#666} table{border-collapse:collapse;font-size:.9em} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.bar{display:flex;height:14px;width:260px;border-radius:3px;overflow:hidden;background:#f4f4f4}
.person{display:flex;gap:1em;align-items:center;margin:.6em 0;padding:.5em;border:1px solid #eee;border-radius:6px}
.person img{width:72px;height:72px;border-radius:4px;image-rendering:auto}
.chip{display:inline-block;padding:1px 7px;border-radius:9px;color:#000;font-size:.85em}
.timeline{max-width:100%;border:1px solid #eee}
"""


def _png_data(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def _file_data(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _bar(dist: dict[str, float]) -> str:
    parts = "".join(f'<span title="{e} {dist[e]:.0%}" style="width:{100 * dist[e]:.1f}%;background:{COLORS[e]}"></span>'
                    for e in EMOTIONS if dist.get(e))
    return f'<div class="bar">{parts}</div>'


def _chip(label: str | None) -> str:
    if not label:
        return '<span class="muted">–</span>'
    return f'<span class="chip" style="background:{COLORS[label]}">{escape(label)}</span>'


def _audio_note(doc: dict) -> str:
    """How much the audio track said: 'no audio', 'audio, no speech heard', or 'audio (speech in k of n segments)'."""
    if not doc["input"]["has_audio"]:
        return "no audio"
    heard = sum(1 for row in doc["segments"] if row["audio_happy"] is not None)
    if not heard:
        return "audio, <b>no speech heard</b>"
    return f"audio (speech in {heard} of {len(doc['segments'])} segments)"


def html_report(a, doc: dict, timeline: Path | None) -> str:
    """The page for analysis ``a`` whose JSON document is ``doc``."""
    s = doc["summary"]
    info = doc["input"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(Path(info['path']).name)} — emotions"
           f"</title><style>{_CSS}</style></head><body>",
           f"<h1>{escape(Path(info['path']).name)}</h1>",
           f"<p class='muted'>{info['duration']:.1f} s · {plural(len(doc['segments']), 'segment')} of "
           f"{doc['options']['segment']:g} s · {plural(len(doc['tracks']), 'person', 'people')} · "
           f"{'video' if info['has_video'] else 'no video'} + {_audio_note(doc)}</p>",
           "<h2>Summary</h2>",
           f"<p>Dominant emotion: {_chip(s['dominant'])} ({s['mean'][s['dominant']]:.0%} of fused probability)</p>",
           _bar(s["mean"]),
           "<p>Over time: " + ", ".join(f"{r['start']:.0f}–{r['end']:.0f} s {_chip(r['label'])}" for r in s["runs"])
           + "</p>"]
    if timeline is not None and timeline.exists():
        out += ["<h2>Timeline</h2>", f"<img class='timeline' alt='timeline' src='{_file_data(timeline)}'>"]
    if doc["tracks"]:
        out.append("<h2>People</h2>")
        tracks = sorted(doc["tracks"], key=lambda t: -t["detections"])[:MAX_PEOPLE]
        for t in tracks:
            thumbs = "".join(f"<img alt='person {t['track_id']} at {tt:.1f} s' title='{tt:.1f} s' src='{_png_data(img)}'>"
                             for _, tt, img in a.thumbnails.get(t["track_id"], []))
            out.append(f"<div class='person'>{thumbs}<div><b>Person {t['track_id']}</b> · "
                       f"{t['seconds_on_screen']:.1f} s on screen ({t['first_seen']:.1f}–{t['last_seen']:.1f} s) · "
                       f"mostly {_chip(t['dominant'])}{_bar(t['mean'])}</div></div>")
        if len(doc["tracks"]) > MAX_PEOPLE:
            out.append(f"<p class='muted'>{len(doc['tracks']) - MAX_PEOPLE} more people with fewer detections "
                       "are in analysis.json.</p>")
    out += ["<h2>Segments</h2>", "<table><tr><th>time</th><th>fused</th><th>confidence</th><th>faces</th>"
            "<th>voice</th><th>group valence (+ / − / 0)</th><th>modalities</th></tr>"]
    for row in doc["segments"]:
        audio = max(EMOTIONS, key=lambda e: row[f"audio_{e}"]) if row["audio_happy"] is not None else None
        voice = _chip(audio) if audio or row["speech"] is None else '<span class="muted">no speech</span>'
        faces = max(EMOTIONS, key=lambda e: row[f"visual_{e}"]) if row["visual_happy"] is not None else None
        val = (f"{row['group_valence_positive']:.2f} / {row['group_valence_negative']:.2f} / "
               f"{row['group_valence_neutral']:.2f}" if row["group_valence_positive"] is not None else "–")
        conf = f"{row['confidence']:.0%}" if row["confidence"] is not None else "–"
        out.append(f"<tr><td>{row['start']:.1f}–{row['end']:.1f} s</td><td>{_chip(row['label'])}</td><td>{conf}</td>"
                   f"<td>{_chip(faces)}</td><td>{voice}</td><td>{val}</td><td>{row['modalities']}</td></tr>")
    out.append("</table>")
    models = doc["models"]
    out += ["<h2>Models and options</h2><ul>"]
    for kind in ("visual", "audio"):
        if kind in models:
            m = models[kind]
            acc = m["metrics"].get("accuracy", m["metrics"].get("accuracy_8class"))
            split = m["metrics"].get("split", "")
            out.append(f"<li>{kind}: {escape(m['file'])}" + (f" — {acc:.1%} accuracy on {escape(str(split))}"
                                                            if isinstance(acc, float) else "") + "</li>")
    out.append(f"<li>fusion: {escape(models['fusion']['strategy'])}</li>")
    out.append("<li>options: " + escape(", ".join(f"{k}={v}" for k, v in doc["options"].items())) + "</li></ul>")
    out.append(f"<p class='muted'>multimodal {escape(doc['tool']['version'])}, schema {doc['schema_version']}</p>")
    out.append("</body></html>")
    return "\n".join(out)
