"""Classification metrics and the reports every evaluation writes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from multimodal.atomic import atomic_path, write_text_atomic


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence over ``bins`` equal-width bins."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = (pred == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def cross_entropy(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels, probabilities clipped at 1e-7."""
    p = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def distance_from(reference: np.ndarray):
    """A function giving the Mahalanobis distance of rows from ``reference`` (n, features).

    Each feature is first standardised by the reference's mean and spread; the
    covariance is Ledoit-Wolf's, which stays invertible with fewer rows than a
    plain estimate needs. Returns ``f(x)``: distances (len(x),) of the rows of x.
    """
    from sklearn.covariance import LedoitWolf

    centre, scale = reference.mean(0), reference.std(0) + 1e-6
    gauss = LedoitWolf().fit((reference - centre) / scale)
    return lambda x: np.sqrt(gauss.mahalanobis((x - centre) / scale))


def classification_metrics(y: np.ndarray, probs: np.ndarray, labels: tuple[str, ...] | list[str]) -> dict:
    """Accuracy, macro-F1, unweighted average recall, cross-entropy, ECE,
    per-class precision/recall/F1 and the confusion matrix.

    ``y`` holds class indices (n,), ``probs`` probabilities (n, len(labels)).
    """
    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    k = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=k, zero_division=0)
    present = s > 0
    return {
        "n": int(len(y)),
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(f1_score(y, pred, labels=k, average="macro", zero_division=0)),
        "uar": float(np.mean(r[present])),
        "cross_entropy": cross_entropy(y, probs),
        "ece": expected_calibration_error(y, probs),
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                             "support": int(s[i])} for i, name in enumerate(labels)},
        "confusion_matrix": confusion_matrix(y, pred, labels=k).tolist(),
        "labels": list(labels),
    }


def bootstrap_ci(y: np.ndarray, probs: np.ndarray, metric, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(y, probs)`` over resampled items."""
    rng = np.random.default_rng(seed)
    n = len(y)
    values = [metric(y[idx], probs[idx]) for idx in (rng.integers(0, n, n) for _ in range(n_boot))]
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def plot_confusion(cm, labels, path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix as a PNG, with counts in each cell."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def metrics_markdown(m: dict) -> str:
    """The headline figures and the per-class table of one metrics dict."""
    lines = ["| metric | value |", "|---|---|"]
    for key in ("n", "accuracy", "macro_f1", "uar", "cross_entropy", "ece"):
        v = m[key]
        lines.append(f"| {key} | {v if isinstance(v, int) else f'{v:.4f}'} |")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, c in m["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    return "\n".join(lines)


def write_report(out_dir: str | Path, title: str, sections: dict[str, dict], notes: list[str],
                 extra: dict | None = None) -> dict:
    """Write ``report.md``, ``report.json`` and one confusion PNG per section."""
    out_dir = Path(out_dir)
    md = [f"# {title}", ""] + [f"- {n}" for n in notes] + [""]
    for name, m in sections.items():
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        png = plot_confusion(m["confusion_matrix"], m["labels"], out_dir / f"confusion_{slug}.png",
                             f"{title}\n{name}")
        md += [f"## {name}", "", metrics_markdown(m), "", f"![confusion matrix]({png.name})", ""]
    report = {"title": title, "notes": notes, "sections": sections, **(extra or {})}
    write_text_atomic(out_dir / "report.md", "\n".join(md))
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2))
    return report
