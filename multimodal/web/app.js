// The page of `multimodal serve`: uploads, the list of analyses and one analysis's report.
// Every text from a file or a user goes in through textContent, never as HTML.
"use strict";

const api = (path, init) => fetch(path, Object.assign({ credentials: "same-origin" }, init));
let options = null;       // /api/options: defaults, fusions, colours
let openId = null;        // the analysis shown in the report view
let pollTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function chip(label) {
  const colour = (options && options.colors[label]) || "#607d8b";
  return el("span", { class: "chip", style: `background:${colour}` }, label);
}

function bars(mean) {
  const box = el("div", { class: "bars" });
  for (const [label, p] of Object.entries(mean)) {
    if (p > 0) box.append(el("div", { title: `${label} ${(100 * p).toFixed(0)}%`,
      style: `width:${100 * p}%;background:${options.colors[label] || "#999"}` }));
  }
  return box;
}

function say(text) { document.getElementById("message").textContent = text || ""; }

async function errorText(response) {
  try { return (await response.json()).error || response.statusText; } catch (e) { return response.statusText; }
}

// -- uploads --------------------------------------------------------------------------

async function upload(files) {
  say("");
  const form = new FormData(document.getElementById("options"));
  for (const file of files) {
    const body = new FormData();
    body.append("file", file, file.name);
    body.append("fps", form.get("fps"));
    body.append("segment", form.get("segment"));
    body.append("fusion", form.get("fusion"));
    body.append("annotate", form.get("annotate") ? "true" : "false");
    const response = await api("/api/analyses", { method: "POST", body });
    if (!response.ok) say(await errorText(response));
  }
  refresh();
}

function setUpUploads() {
  const drop = document.getElementById("drop");
  const picker = document.getElementById("picker");
  drop.addEventListener("click", (e) => { if (e.target.tagName !== "LABEL") picker.click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") picker.click(); });
  picker.addEventListener("change", () => { upload([...picker.files]); picker.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over"); upload([...e.dataTransfer.files]);
  });
}

// -- the list -------------------------------------------------------------------------

async function refresh() {
  const response = await api("/api/analyses");
  if (!response.ok) { say(await errorText(response)); return; }
  const rows = await response.json();
  const body = document.querySelector("#analyses tbody");
  body.replaceChildren();
  document.getElementById("empty").hidden = rows.length > 0;
  for (const a of rows) {
    let status;
    if (a.status === "running" || a.status === "queued") {
      status = el("span", {}, el("progress", { max: "1", value: String(a.progress) }),
        ` ${a.stage || a.status} ${(100 * a.progress).toFixed(0)}%`);
    } else {
      status = el("span", { class: a.status }, a.status, a.error ? `: ${a.error}` : "");
    }
    const actions = el("td");
    if (a.status === "done") actions.append(el("button", { onclick: () => openReport(a.id) }, "open"), " ");
    if (a.status === "interrupted" || a.status === "failed") {
      actions.append(el("button", { onclick: () => rerun(a.id) }, "run again"), " ");
    }
    if (a.status !== "running") actions.append(el("button", { onclick: () => remove(a.id, a.name) }, "delete"));
    body.append(el("tr", { "data-id": a.id, "data-status": a.status }, el("td", {}, a.name), el("td", {}, a.kind),
      el("td", {}, status), el("td", {}, a.dominant ? chip(a.dominant) : ""), actions));
  }
  clearTimeout(pollTimer);
  if (rows.some((a) => a.status === "running" || a.status === "queued")) pollTimer = setTimeout(refresh, 1000);
}

async function rerun(id) {
  const response = await api(`/api/analyses/${id}/rerun`, { method: "POST" });
  if (!response.ok) say(await errorText(response));
  refresh();
}

async function remove(id, name) {
  if (!confirm(`Delete the analysis of ${name} and its files?`)) return;
  const response = await api(`/api/analyses/${id}`, { method: "DELETE" });
  if (!response.ok) say(await errorText(response));
  refresh();
}

// -- the report -----------------------------------------------------------------------

function mmss(t) { const s = Math.floor(t); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; }

function argmax(row, prefix) {
  if (row[`${prefix}_happy`] === null || row[`${prefix}_happy`] === undefined) return null;
  return options.labels.reduce((best, l) => (row[`${prefix}_${l}`] > row[`${prefix}_${best}`] ? l : best));
}

async function openReport(id) {
  const [meta, doc, people] = await Promise.all([
    api(`/api/analyses/${id}`).then((r) => r.json()),
    api(`/api/analyses/${id}/document`).then((r) => (r.ok ? r.json() : null)),
    api(`/api/analyses/${id}/people`).then((r) => (r.ok ? r.json() : {})),
  ]);
  if (!doc) { say(`${meta.name}: no results`); return; }
  openId = id;
  location.hash = id;
  document.getElementById("new").hidden = true;
  document.getElementById("list").hidden = true;
  document.getElementById("report").hidden = false;
  document.getElementById("report-title").textContent = meta.name;
  const files = `/api/analyses/${id}/files`;

  const s = doc.summary;
  const summary = document.getElementById("summary");
  summary.replaceChildren(
    el("p", {}, "Dominant emotion: ", chip(s.dominant), ` (${(100 * s.mean[s.dominant]).toFixed(0)}% of fused probability)`),
    bars(s.mean),
    el("p", {}, "Over time: ", ...s.runs.flatMap((r, i) => [i ? ", " : "", `${mmss(r.start)}–${mmss(r.end)} `, chip(r.label)])));

  const segments = doc.segments;
  const tbody = document.querySelector("#segments tbody");
  tbody.replaceChildren();
  for (const row of segments) {
    const faces = argmax(row, "visual"), voice = argmax(row, "audio");
    tbody.append(el("tr", { "data-start": row.start, "data-end": row.end },
      el("td", {}, `${mmss(row.start)}–${mmss(row.end)}`), el("td", {}, chip(row.label)),
      el("td", {}, row.confidence.toFixed(2)), el("td", {}, faces ? chip(faces) : "–"),
      el("td", {}, voice ? chip(voice) : (row.speech === null ? "–" : "no speech")), el("td", {}, row.modalities)));
  }

  const player = document.getElementById("player");
  const banner = document.getElementById("banner");
  player.replaceChildren();
  let media = null;
  if (meta.kind === "photo") {
    player.append(el("img", { src: `${files}/input`, alt: meta.name }));
  } else if (meta.kind === "audio") {
    media = el("audio", { src: `${files}/input`, controls: "" });
  } else {
    const src = meta.files.includes("annotated.mp4") ? `${files}/annotated.mp4` : `${files}/input`;
    media = el("video", { src, controls: "", preload: "metadata" });
  }
  if (media) {
    player.append(media);
    const follow = () => {
      const t = media.currentTime;
      let current = null;
      for (const tr of tbody.children) {
        const on = t >= Number(tr.dataset.start) && t < Number(tr.dataset.end);
        tr.classList.toggle("current", on);
        if (on) current = tr;
      }
      const row = segments.find((r) => t >= r.start && t < r.end) || segments[segments.length - 1];
      banner.replaceChildren(`${mmss(t)}  `, chip(row.label), ` ${(100 * row.confidence).toFixed(0)}%`);
      if (current && !media.paused) current.scrollIntoView({ block: "nearest" });
    };
    media.addEventListener("timeupdate", follow);
    media.addEventListener("seeked", follow);
    follow();
  } else {
    banner.replaceChildren(chip(segments[0].label), ` ${(100 * segments[0].confidence).toFixed(0)}%`);
  }

  const timeline = document.getElementById("timeline");
  timeline.hidden = !meta.files.includes("timeline.png");
  if (!timeline.hidden) timeline.src = `${files}/timeline.png`;

  const peopleBox = document.getElementById("people");
  peopleBox.replaceChildren();
  for (const t of doc.tracks.slice().sort((a, b) => b.detections - a.detections).slice(0, 12)) {
    const thumbs = (people[String(t.track_id)] || []).map((p) =>
      el("img", { src: p.src, alt: `person ${t.track_id} at ${p.time} s`, title: `${p.time} s` }));
    peopleBox.append(el("div", { class: "person" }, ...thumbs, el("div", {},
      el("b", {}, `Person ${t.track_id}`), ` · ${t.seconds_on_screen.toFixed(1)} s on screen · mostly `,
      chip(t.dominant), bars(t.mean))));
  }
  if (!doc.tracks.length) peopleBox.append(el("p", { class: "muted" }, "No faces."));

  const downloads = document.getElementById("downloads");
  downloads.replaceChildren(...meta.files.map((f) => el("li", {}, el("a", { href: `${files}/${f}`, download: "" }, f))));
  document.getElementById("warnings").replaceChildren(...meta.warnings.map((w) => el("li", {}, w)));
}

function closeReport() {
  openId = null;
  const media = document.querySelector("#player video, #player audio");
  if (media) media.pause();
  document.getElementById("report").hidden = true;
  document.getElementById("new").hidden = false;
  document.getElementById("list").hidden = false;
  history.replaceState(null, "", "/");
  refresh();
}

// -- start ----------------------------------------------------------------------------

async function start() {
  const response = await api("/api/options");
  if (!response.ok) { say(await errorText(response)); return; }
  options = await response.json();
  const form = document.getElementById("options");
  form.fps.value = options.fps;
  form.segment.value = options.segment;
  for (const f of options.fusions) form.fusion.append(el("option", { value: f }, f));
  form.fusion.value = options.fusion;
  form.annotate.checked = options.annotate;
  setUpUploads();
  document.getElementById("back").addEventListener("click", (e) => { e.preventDefault(); closeReport(); });
  await refresh();
  if (location.hash.length > 1) openReport(location.hash.slice(1));
}

// a server that went away while the page loaded leaves a message, not a silently empty form
start().catch((e) => say(`the server did not answer (${e.message}): is \`multimodal serve\` still running? Reload the page to try again.`));
