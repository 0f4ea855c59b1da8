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


def paired_bootstrap(y, groups, clusters, scores, baseline, n: int = 2000, seed: int = 0) -> dict[str, Any]:
    """`scores` minus `baseline` on per-row AUROC, mean within-group AUROC and the Spearman between each group's
    mean score and its positive rate, with 95 % intervals from resampling clusters with replacement.

    Rows of one cluster are resampled together: where every group (a model) answers the same prompts, one
    prompt's rows are not independent (a hard prompt is lost by every model), so the prompt is the cluster.
    Both scorers are measured on the same resample (paired), which cancels what the resample does to both.
    This is the evaluation set's sampling noise only; it says nothing about retraining with another seed.
    (scipy.stats.bootstrap resamples observations, not clusters of rows with group-level statistics, hence
    this loop.)
    """
    from tqdm.auto import tqdm

    y, groups, scores, baseline = (np.asarray(a) for a in (y, groups, scores, baseline))
    names = np.unique(groups)
    _, codes = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    rows_of = [np.flatnonzero(codes == i) for i in range(codes.max() + 1)]

    def rank_auroc(yi: np.ndarray, si: np.ndarray) -> float:
        # Mann-Whitney U from ranks (ties averaged, as roc_auc_score): sklearn's input checks cost more than
        # the sum itself at ~16 calls per resample, thousands of resamples.
        pos = int(yi.sum())
        if pos == 0 or pos == len(yi):
            return np.nan
        return (stats.rankdata(si)[yi == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(yi) - pos))

    def measures(idx: np.ndarray, s: np.ndarray) -> np.ndarray:
        yi, si, gi = y[idx], s[idx], groups[idx]
        masks = [gi == g for g in names]
        within = [rank_auroc(yi[k], si[k]) for k in masks]
        means, rates = [si[k].mean() for k in masks], [yi[k].mean() for k in masks]
        rho = stats.spearmanr(means, rates)[0] if np.ptp(means) > 0 and np.ptp(rates) > 0 else np.nan
        return np.array([rank_auroc(yi, si), np.nanmean(within) if not np.all(np.isnan(within)) else np.nan, rho])

    everything = np.arange(len(y))
    point = measures(everything, scores) - measures(everything, baseline)
    rng = np.random.default_rng(seed)
    diffs = np.empty((n, 3))
    for b in tqdm(range(n), desc="paired bootstrap", leave=False, disable=None):
        idx = np.concatenate([rows_of[i] for i in rng.integers(0, len(rows_of), len(rows_of))])
        diffs[b] = measures(idx, scores) - measures(idx, baseline)
    out: dict[str, Any] = {"resamples": n}
    for i, k in enumerate(("auroc", "within_group_auroc", "group_spearman")):
        d = diffs[:, i][~np.isnan(diffs[:, i])]  # undefined where a resample has one class or equal means
        out[k] = {"difference": None if np.isnan(point[i]) else float(point[i]),
                  "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))] if len(d) else None,
                  # ties reported apart: group-level Spearman over a few groups takes few values, so equal
                  # rankings are common and "not ahead" would read as "behind"
                  "share_ahead": float(np.mean(d > 0)) if len(d) else None,
                  "share_tied": float(np.mean(d == 0)) if len(d) else None}
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
