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


def wilson(k: float, n: int, z: float = 1.959964) -> list[float] | None:
    """Wilson score interval of a proportion k / n (k may be fractional: ties scored 0.5)."""
    if n == 0:
        return None
    p, z2 = k / n, z * z
    mid, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [float(max(0.0, mid - half)), float(min(1.0, mid + half))]


def pairwise_baselines(chosen_length, rejected_length, chosen_is_reference=None, r_chosen=None, r_rejected=None,
                       groups=None, clusters=None, n: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Pairwise accuracy of the reward model beside two scorers that read no text: "the longer answer wins"
    (equal lengths score 0.5) and, where one side is a fixed reference answer, "the reference wins" (its
    accuracy is the share of pairs the reference won). Each with a 95 % interval; overall and per group.

    Why: on AlpacaEval most models lose to the reference almost always, so a held-out set of them rewards a
    scorer that always prefers the reference or the longer answer; the model's accuracy is read against these.

    Intervals: with `clusters` (AlpacaEval: the instruction, which every model answers, so one instruction's
    pairs are not independent), a percentile bootstrap resampling clusters with replacement, `n` resamples,
    every scorer on the same resample; then `model_minus_*` are paired differences with their intervals.
    Without clusters, Wilson intervals per scorer (pairs independent) and no differences.
    """
    lc, lr = np.asarray(chosen_length, dtype=float), np.asarray(rejected_length, dtype=float)
    scorers: dict[str, np.ndarray] = {}
    if r_chosen is not None:
        scorers["model"] = (np.asarray(r_chosen) > np.asarray(r_rejected)).astype(float)  # as pairwise_metrics
    scorers["longer_wins"] = np.where(lc == lr, 0.5, (lc > lr).astype(float))
    if chosen_is_reference is not None:
        scorers["reference_wins"] = np.asarray(chosen_is_reference, dtype=float)
    rows = len(lc)
    masks = {"all": np.ones(rows, dtype=bool)}
    if groups is not None:
        g = np.asarray(groups, dtype=object)
        masks |= {str(k): g == k for k in sorted(set(g.tolist()))}
    counts = codes = None
    if clusters is not None and rows:
        _, codes = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
        c = int(codes.max()) + 1
        draws = np.random.default_rng(seed).integers(0, c, size=(n, c))
        counts = np.bincount((draws + c * np.arange(n)[:, None]).ravel(), minlength=n * c).reshape(n, c)

    def measure(mask: np.ndarray) -> dict[str, Any]:
        m = int(mask.sum())
        out: dict[str, Any] = {"n": m}
        if counts is None:
            for k, v in scorers.items():
                out[k] = {"accuracy": float(v[mask].mean()) if m else None, "ci95": wilson(float(v[mask].sum()), m)}
            return out
        size = counts @ np.bincount(codes[mask], minlength=counts.shape[1])
        ok = size > 0  # a group can miss every drawn cluster
        boot = {k: (counts @ np.bincount(codes[mask], weights=v[mask], minlength=counts.shape[1]))[ok] / size[ok]
                for k, v in scorers.items()}
        for k, v in scorers.items():
            b = boot[k]
            out[k] = {"accuracy": float(v[mask].mean()) if m else None,
                      "ci95": [float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))] if len(b) else None}
        if "model" in scorers and m:
            for k in scorers:
                if k != "model":
                    d = boot["model"] - boot[k]
                    out[f"model_minus_{k}"] = {"difference": out["model"]["accuracy"] - out[k]["accuracy"],
                                               "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]}
        return out

    res = {"interval": f"bootstrap over {counts.shape[1]} clusters, {n} resamples" if counts is not None
           else "Wilson", **measure(masks.pop("all"))}
    if groups is not None:
        res["by_group"] = {k: measure(v) for k, v in masks.items()}
    return res


def fmt_ci(d: dict[str, Any] | None, key: str = "accuracy") -> str:
    """{"accuracy": 0.8, "ci95": [0.77, 0.83]} → "0.800 [0.770, 0.830]"; "–" when absent."""
    if not d or d.get(key) is None:
        return "–"
    ci = d.get("ci95")
    return f"{d[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def baselines_md(b: dict[str, Any]) -> list[str]:
    """Markdown table of a pairwise_baselines result: overall, then one row per group."""
    cols = [k for k in ("model", "longer_wins", "reference_wins") if k in b]
    names = {"model": "model", "longer_wins": "longer answer wins", "reference_wins": "reference wins"}
    lines = ["| pairs | n | " + " | ".join(names[k] for k in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for name, m in [("all", b), *b.get("by_group", {}).items()]:
        lines.append(f"| {name} | {m['n']} | " + " | ".join(fmt_ci(m.get(k)) for k in cols) + " |")
    return lines + ["", f"95 % intervals: {b['interval']}."]


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
        if m.get("baselines"):
            lines += ["", f"Pairwise accuracy beside scorers that read no text ({name}):", "",
                      *baselines_md(m["baselines"])]
    lines += [""] + [f"![{i}]({i})" for i in images]
    return "\n".join(lines) + "\n"
