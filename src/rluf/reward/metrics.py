"""Metrics of a probabilistic binary scorer, with the plots a person checks (reliability, histograms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    y = np.asarray(y)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-mass bins (sparse positives make equal-width bins empty)."""
    order = np.argsort(p)
    err = 0.0
    for idx in np.array_split(order, bins):
        if len(idx):
            err += len(idx) / len(p) * abs(p[idx].mean() - y[idx].mean())
    return float(err)


def binary_metrics(y, p, lengths, groups=None) -> dict[str, Any]:
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "n": int(len(y)), "positives": int(y.sum()), "base_rate": float(y.mean()) if len(y) else None,
        "mean_score": float(p.mean()) if len(p) else None,
        "auroc": auroc(y, p),
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
        "ece": ece(y, p) if len(y) else None,
        "length_pearson": float(stats.pearsonr(p, lengths)[0]) if len(y) > 2 and np.std(lengths) > 0 else None,
    }
    if groups is not None:
        g = np.asarray(groups, dtype=object)
        out["auroc_by_group"] = {str(k): auroc(y[g == k], p[g == k]) for k in sorted(set(g.tolist()))}
    return out


def pairwise_metrics(r_chosen, r_rejected, groups=None) -> dict[str, Any]:
    """Pairwise accuracy: how often the chosen answer gets the higher reward (per group too)."""
    win = np.asarray(r_chosen) > np.asarray(r_rejected)
    out: dict[str, Any] = {"n": int(len(win)), "pairwise_accuracy": float(win.mean()) if len(win) else None,
                           "mean_margin": float(np.mean(np.asarray(r_chosen) - np.asarray(r_rejected)))
                           if len(win) else None}
    if groups is not None:
        g = np.asarray(groups, dtype=object)
        out["accuracy_by_group"] = {str(k): float(win[g == k].mean()) for k in sorted(set(g.tolist()))}
    return out


def plots(y, p, out_dir: Path, prefix: str = "") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    files = []
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    order = np.argsort(p)
    xs, ys = [], []
    for idx in np.array_split(order, 10):
        if len(idx):
            xs.append(p[idx].mean())
            ys.append(y[idx].mean())
    hi = max(max(xs + ys, default=0.01), 0.01) * 1.1
    ax.plot([0, hi], [0, hi], "--", color="grey", label="perfect")
    ax.plot(xs, ys, "o-", label="model (deciles)")
    ax.set(xlabel="predicted P[Love]", ylabel="observed love rate", title="Reliability", xlim=(0, hi), ylim=(0, hi))
    ax.legend()
    f = out_dir / f"{prefix}reliability.png"
    fig.tight_layout()
    fig.savefig(f, dpi=110)
    plt.close(fig)
    files.append(f.name)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, max(p.max(initial=0.01), 0.01), 40)
    ax.hist(p[y == 0], bins=bins, alpha=0.6, density=True, label="no reaction")
    ax.hist(p[y == 1], bins=bins, alpha=0.6, density=True, label="reaction")
    ax.set(xlabel="predicted P[Love]", ylabel="density", title="Scores by label")
    ax.legend()
    f = out_dir / f"{prefix}score_hist.png"
    fig.tight_layout()
    fig.savefig(f, dpi=110)
    plt.close(fig)
    files.append(f.name)
    return files


def report_md(title: str, sections: dict[str, dict[str, Any]], images: list[str]) -> str:
    keys = ("n", "positives", "base_rate", "mean_score", "auroc", "pr_auc", "log_loss", "brier", "ece",
            "length_pearson", "pairwise_accuracy", "mean_margin")
    lines = [f"# {title}", "", "| metric | " + " | ".join(sections) + " |", "|---|" + "---:|" * len(sections)]
    for k in keys:
        if not any(k in m for m in sections.values()):
            continue
        vals = []
        for m in sections.values():
            v = m.get(k)
            vals.append("–" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
        lines.append(f"| {k} | " + " | ".join(vals) + " |")
    for name, m in sections.items():
        if m.get("auroc_by_group"):
            lines += ["", f"AUROC by group ({name}):", ""]
            lines += [f"- {g}: {'–' if a is None else f'{a:.4f}'}" for g, a in m["auroc_by_group"].items()]
    lines += [""] + [f"![{i}]({i})" for i in images]
    return "\n".join(lines) + "\n"
