"""Pictures of an analysis: the timeline."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from multimodal.atomic import atomic_path
from multimodal.config import EMOTION_COLORS as COLORS
from multimodal.config import EMOTIONS
from multimodal.formatting import mmss


def _matrix(segments, attr):
    return np.array([getattr(s, attr) if getattr(s, attr) is not None else np.full(len(EMOTIONS), np.nan) for s in segments])


def import_pyplot():
    """matplotlib's pyplot with the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def timeline_png(a, path: Path) -> Path:
    """Fused probabilities as stacked areas over time, visual and audio rows
    beneath, then one row per person (their per-frame top emotion)."""
    from matplotlib.patches import Patch
    plt = import_pyplot()

    segs = a.segments
    edges = np.array([s.start for s in segs] + [segs[-1].end])
    tracks = sorted({r.track_id for r in a.faces})
    shown_tracks = tracks[:12]
    rows = 3 + len(shown_tracks)
    heights = [3, 1, 1] + [0.45] * len(shown_tracks)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.2 + sum(heights) * 0.9), sharex=True,
                             gridspec_kw={"height_ratios": heights})
    colors = [COLORS[e] for e in EMOTIONS]

    def stacked(ax, m, title, no_speech=None):
        x = np.repeat(edges, 2)[1:-1]  # step-shaped areas: constant within a segment
        y = np.repeat(np.nan_to_num(m, nan=0.0), 2, axis=0).T
        ax.stackplot(x, y, colors=colors, linewidth=0)
        missing = np.isnan(m).any(axis=1)
        for i in np.flatnonzero(missing):
            if no_speech is not None and no_speech[i]:
                ax.axvspan(edges[i], edges[i + 1], color="#eeeeee", hatch="...", ec="#999999", lw=0)
            else:
                ax.axvspan(edges[i], edges[i + 1], color="white", hatch="///", ec="#cccccc", lw=0)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_ylabel(title, rotation=0, ha="right", va="center")

    stacked(axes[0], _matrix(segs, "fused"), "fused")
    stacked(axes[1], _matrix(segs, "visual"), "faces")
    no_speech = np.array([s.audio is None and s.audio_dbfs is not None for s in segs])
    stacked(axes[2], _matrix(segs, "audio"), "voice", no_speech)
    half = 0.5 / a.config.fps
    for ax, tid in zip(axes[3:], shown_tracks):
        recs = [r for r in a.faces if r.track_id == tid]
        times = np.array([r.time for r in recs])
        top = np.array([int(np.argmax(r.probs)) for r in recs])
        for k, emotion in enumerate(EMOTIONS):  # one bar collection per colour: fast for long videos
            t = times[top == k]
            if t.size:
                ax.broken_barh(np.stack([t - half, np.full(t.size, 2 * half)], axis=1), (0, 1),
                               color=COLORS[emotion], lw=0)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_ylabel(f"person {tid}", rotation=0, ha="right", va="center")
    axes[-1].set_xlim(edges[0], edges[-1])
    if a.info.duration >= 120:  # minutes:seconds read better than thousands of seconds
        from matplotlib.ticker import FuncFormatter, MaxNLocator
        axes[-1].xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 3, 6, 10]))
        axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda t, _: mmss(t)))
        axes[-1].set_xlabel("time (m:ss)")
    else:
        axes[-1].set_xlabel("time (s)")
    title = f"{a.info.path.name}: emotions over time"
    if len(tracks) > len(shown_tracks):
        title += f" (first {len(shown_tracks)} of {len(tracks)} people shown)"
    axes[0].set_title(title)
    fig.legend(handles=[Patch(color=COLORS[e], label=e) for e in EMOTIONS] +
               [Patch(facecolor="white", hatch="///", edgecolor="#aaaaaa", label="no evidence")] +
               ([Patch(facecolor="#eeeeee", hatch="...", edgecolor="#999999", label="no speech")]
                if no_speech.any() else []),
               loc="lower center", ncol=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
