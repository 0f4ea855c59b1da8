"""From a logit to a probability: prior correction for upsampled positives, then Platt or temperature scaling.

Prior correction: training at positive odds multiplied by `factor` shifts the logit by log(factor); removing
it restores the true base rate. Platt scaling (a·z + b) or temperature scaling (z / T) fitted on validation
then fixes what the model still over- or under-states.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def prior_correct(logits: np.ndarray, factor: float) -> np.ndarray:
    return np.asarray(logits, dtype=float) - np.log(factor)


def _nll(z: np.ndarray, y: np.ndarray, a: float, b: float) -> float:
    s = a * z + b
    return float(np.mean(np.logaddexp(0, s) - y * s))


def fit(logits: np.ndarray, y: np.ndarray, factor: float = 1.0, method: str = "platt") -> dict:
    """Calibration parameters fitted on validation logits (minimum log-loss)."""
    z = prior_correct(logits, factor)
    y = np.asarray(y, dtype=float)
    out = {"prior_factor": float(factor), "method": method, "a": 1.0, "b": 0.0}
    if method == "none" or not 0 < y.sum() < len(y):
        out["method"] = "none" if method == "none" else f"none ({method} needs both labels in validation)"
        return out
    if method == "temperature":
        res = minimize(lambda v: _nll(z, y, np.exp(v[0]), 0.0), x0=[0.0], method="L-BFGS-B")
        out["a"] = float(np.exp(res.x[0]))
    elif method == "platt":
        res = minimize(lambda v: _nll(z, y, v[0], v[1]), x0=[1.0, 0.0], method="L-BFGS-B")
        out["a"], out["b"] = float(res.x[0]), float(res.x[1])
    else:
        raise ValueError(f"unknown calibration {method!r}; expected platt, temperature or none")
    return out


def apply(logits: np.ndarray, cal: dict) -> np.ndarray:
    z = prior_correct(logits, cal.get("prior_factor", 1.0))
    return sigmoid(cal.get("a", 1.0) * z + cal.get("b", 0.0))
